"""The configured backend, built from settings (the only place that knows all three)."""

from __future__ import annotations

from pathlib import Path

from llm.backend import Backend
from llm.settings import BackendKind, LLMSettings


def open_backend(settings: LLMSettings, home: Path) -> Backend:
    """Load (local) or connect to (tgi, openai) the configured model."""
    if settings.backend is BackendKind.LOCAL:
        from llm.local import LocalBackend
        from llm.models import resolve

        return LocalBackend.load(
            resolve(settings.model, home), concurrency=settings.local_concurrency
        )

    from llm.remote import OpenAIBackend, TgiBackend, chat_template_prompt, plain_prompt

    key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
    source = settings.tokenizer or settings.model
    if settings.backend is BackendKind.TGI:
        return TgiBackend(
            settings.tgi_url,
            prompt_format=chat_template_prompt(source) if source else plain_prompt,
            api_key=key,
            timeout_s=settings.llm_timeout_s,
            retries=settings.llm_retries,
        )
    return OpenAIBackend(
        settings.openai_url,
        model=settings.openai_model,
        api_key=key,
        timeout_s=settings.llm_timeout_s,
        retries=settings.llm_retries,
    )
