"""The serving deployable's settings (LLM_TWIN_*); the model's own are llm.settings."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LLM_TWIN_", extra="ignore")

    api_keys: SecretStr | None = Field(
        default=None,
        description='API keys: a JSON object from key to the author slugs it may use ("*": '
        "all); unset: serve binds to loopback with a local key under LLM_TWIN_HOME",
    )
    retrieval_k: int = Field(default=5, ge=0, le=50, description="Passages retrieved per request")
    context_tokens: int = Field(
        default=1500, ge=0, le=100_000, description="Token budget of retrieved text in a prompt"
    )
    expand_queries: int = Field(
        default=0,
        ge=0,
        le=5,
        description="Extra search queries the backend writes per request (query expansion); 0: off",
    )
    request_timeout_s: float = Field(
        default=120.0, gt=0, le=3600, description="A request's deadline, from when it is sent"
    )
    reply_partition: int | None = Field(
        default=None,
        ge=0,
        description="This process's partition of twin.generation.tokens; unset: claim a free "
        "one under LLM_TWIN_HOME (set it per API process when several hosts share a broker)",
    )
    api_key: SecretStr | None = Field(
        default=None, description="The key the CLI sends to a running API; unset: the local key"
    )
    # The largest legitimate body is a chat of long turns: the prompt alone is at most
    # 32,000 characters (up to 192 KB as JSON escapes); 1 MiB leaves room for history.
    max_request_bytes: int = Field(
        default=1 << 20,
        ge=1024,
        le=64 << 20,
        description="The API's largest request body; larger ones get 413 before they are read",
    )
    # The local backend runs 2 generations at once (LLM_TWIN_LOCAL_CONCURRENCY) and queues
    # the rest: 16 in flight is 8 deep, the most a 120 s deadline sensibly waits behind.
    max_generations: int = Field(
        default=16, ge=1, le=10_000, description="The API's generations in flight, all keys"
    )
    max_generations_per_key: int = Field(
        default=4, ge=1, le=10_000, description="The API's generations in flight for one key"
    )
    max_prompt_tokens: int = Field(
        default=4096,
        ge=1,
        le=1_000_000,
        description="The longest prompt (the user's text, in the backend's tokens) a request "
        "may send; longer ones get 413",
    )
    api_docs: bool = Field(
        default=False, description="Serve /docs, /redoc and /openapi.json (off: not served)"
    )
