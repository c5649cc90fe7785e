"""The trainer's settings (LLM_TWIN_TRAIN_*); which base model is llm.settings' LLM_TWIN_MODEL."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from trainer.lora import TrainConfig


class TrainSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LLM_TWIN_TRAIN_", extra="ignore")

    rank: int = Field(default=16, ge=1, le=512, description="LoRA rank")
    alpha: int = Field(default=32, ge=1, description="LoRA alpha (scale = alpha / rank)")
    learning_rate: float = Field(default=2e-4, gt=0, lt=1, description="AdamW learning rate")
    epochs: int = Field(default=2, ge=1, le=100, description="Passes over the training split")
    batch_size: int = Field(default=4, ge=1, le=512, description="Examples per step")
    max_seq_tokens: int = Field(
        default=512, ge=16, le=32_768, description="Tokens per packed sequence, prompt included"
    )
    checkpoint_every: int = Field(default=50, ge=1, description="Steps between checkpoints")
    seed: int = Field(default=0, description="Shuffling and LoRA initialisation")
    dpo: bool = Field(default=False, description="A DPO stage on the snapshot's preference pairs")
    dpo_beta: float = Field(default=0.1, gt=0, description="DPO's beta")
    eval_samples: int = Field(
        default=8,
        ge=0,
        le=1000,
        description="Held-out documents the trainer drafts to gate promotion (0: no evaluation)",
    )
    eval_max_new_tokens: int = Field(
        default=128, ge=1, le=2048, description="Tokens per draft in that evaluation"
    )

    def config(self, base_model: str) -> TrainConfig:
        return TrainConfig(
            base_model=base_model,
            rank=self.rank,
            alpha=self.alpha,
            learning_rate=self.learning_rate,
            epochs=self.epochs,
            batch_size=self.batch_size,
            max_seq_tokens=self.max_seq_tokens,
            checkpoint_every=self.checkpoint_every,
            seed=self.seed,
            dpo=self.dpo,
            dpo_beta=self.dpo_beta,
        )


class JudgeSettings(BaseSettings):
    """The optional LLM judge of ``eval`` (LLM_TWIN_JUDGE_*); unset backend: no judge."""

    model_config = SettingsConfigDict(env_prefix="LLM_TWIN_JUDGE_", extra="ignore")

    backend: Literal["tgi", "openai"] | None = Field(
        default=None, description="tgi or openai: the judge's server; unset: no judge"
    )
    url: str | None = Field(default=None, description="The judge server's URL")
    model: str = Field(default="tgi", description="The model name sent to an OpenAI server")
    api_key: SecretStr | None = Field(default=None, description="Bearer token for the judge")
