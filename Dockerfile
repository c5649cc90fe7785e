# The one image every llm-twin deployable runs; docker-compose.yml builds it as llm-twin:latest.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A fixed uid so files on named volumes keep one owner across rebuilds. LLM_TWIN_HOME exists
# and belongs to that user before a volume is mounted on it: Docker copies the ownership of
# the image's directory into a new named volume, so the user can write there.
RUN useradd --create-home --uid 10001 llmtwin \
    && mkdir -p /var/lib/llm-twin \
    && chown llmtwin:llmtwin /var/lib/llm-twin

WORKDIR /app

# Exact pins first, in their own layer: the dependencies (GBs with torch) are reinstalled only
# when requirements.lock changes, not on every source edit.
COPY requirements.lock ./
RUN pip install --no-cache-dir -r requirements.lock

COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY infra ./infra
COPY vectorstore ./vectorstore
COPY producers ./producers
COPY streams ./streams
COPY serving ./serving
COPY trainer ./trainer
COPY llm_twin ./llm_twin
# --no-deps: everything the project needs came from the lock above; nothing resolves again.
RUN pip install --no-cache-dir --no-deps .

USER llmtwin
ENV LLM_TWIN_HOME=/var/lib/llm-twin
CMD ["llm-twin", "--help"]
