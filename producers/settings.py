"""Settings of the producers: the crawler's politeness and limits (``llm-twin crawl``) and the
importer's limits (``llm-twin import``), all overridable."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from producers.exports.archive import ImportLimits
from producers.fetch import FetchPolicy
from schemas.common import MiB


class CrawlSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LLM_TWIN_CRAWL_", extra="ignore")

    per_host_concurrency: int = Field(default=2, ge=1, le=16)
    per_host_delay_s: float = Field(default=1.0, ge=0, description="Pause between requests")
    timeout_s: float = Field(default=30.0, gt=0, description="Whole request, body included")
    max_bytes: int = Field(default=8 * MiB, gt=0, description="Largest response read")
    max_redirects: int = Field(default=5, ge=0, le=20)
    retries: int = Field(default=3, ge=0, le=10, description="On timeouts, 429 and 5xx")

    def policy(self, *, allow_private_networks: bool) -> FetchPolicy:
        return FetchPolicy(
            per_host_concurrency=self.per_host_concurrency,
            per_host_delay_s=self.per_host_delay_s,
            total_timeout_s=self.timeout_s,
            max_bytes=self.max_bytes,
            max_redirects=self.max_redirects,
            retries=self.retries,
            allow_private_networks=allow_private_networks,
        )


class ImportSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LLM_TWIN_IMPORT_", extra="ignore")

    max_file_bytes: int = Field(
        default=ImportLimits.max_file_bytes, gt=0, description="Largest file read whole"
    )
    max_zip_bytes: int = Field(
        default=ImportLimits.max_zip_bytes,
        gt=0,
        description="Bytes decompressed from one zip in all, counted as they come out",
    )
    max_zip_ratio: float = Field(
        default=ImportLimits.max_zip_ratio,
        ge=1,
        description="Decompressed per compressed byte, of each zip member read and of the zip",
    )

    def limits(self) -> ImportLimits:
        return ImportLimits(
            max_file_bytes=self.max_file_bytes,
            max_zip_bytes=self.max_zip_bytes,
            max_zip_ratio=self.max_zip_ratio,
        )
