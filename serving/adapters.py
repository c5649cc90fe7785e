"""Which adapter answers for an author: the registry's active one, switched without a restart.

The registry lives in the warehouse (infra/adapters.py), written by the trainer
alone. This keeps a copy of every author's active adapter id, read again every
``refresh_s`` and at once when an ``AdapterRegistered`` notice arrives (the
notice itself is never trusted: only the registry says what is active); a
backend that holds adapters itself (local) loads each one the first time it is
needed, from its recorded directory under the adapters directory and only if
its files' hashes match the record, while a remote one (TGI,
OpenAI-compatible) is given the adapter id. An adapter that cannot be loaded
here is reported once and the author is answered by the base model.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from pymongo.database import Database
from pymongo.errors import PyMongoError

from infra import adapters as registry
from infra.warehouse import Document
from llm.backend import Backend, LoadsAdapters
from llm.errors import BackendError
from schemas.training import AdapterRegistered

log = logging.getLogger(__name__)

REFRESH_S = 2.0


class ActiveAdapters:
    def __init__(
        self,
        db: Database[Document],
        backend: Backend,
        *,
        adapters_root: Path,
        refresh_s: float = REFRESH_S,
    ) -> None:
        self._db = db
        self._root = adapters_root
        self._backend = backend
        self._refresh_s = refresh_s
        self._active: dict[str, str] = {}
        self._read_at = float("-inf")
        self._broken: set[str] = set()
        self._loading = asyncio.Lock()

    async def for_author(self, author: str) -> str | None:
        if time.monotonic() - self._read_at > self._refresh_s:
            await self._read()
        adapter_id = self._active.get(author)
        if adapter_id is None or adapter_id in self._broken:
            return None
        if isinstance(self._backend, LoadsAdapters) and adapter_id not in self._backend.adapters:
            await self._load(adapter_id)
        return None if adapter_id in self._broken else adapter_id

    async def registered(self, adapter: AdapterRegistered) -> bool:
        """An ``AdapterRegistered`` notice: re-read the registry; True if that one is active."""
        await self._read()
        activated = self._active.get(adapter.author) == adapter.adapter_id
        log.info(
            "adapter %s for %s: %s",
            adapter.adapter_id,
            adapter.author,
            "active" if activated else "not the registry's active adapter",
        )
        return activated

    async def _read(self) -> None:
        try:
            self._active = await asyncio.to_thread(registry.active_ids, self._db)
        except PyMongoError as error:  # keep answering with what was known
            log.warning("cannot read the active adapters: %s", error)
        self._read_at = time.monotonic()

    async def _load(self, adapter_id: str) -> None:
        assert isinstance(self._backend, LoadsAdapters)
        async with self._loading:
            if adapter_id in self._backend.adapters or adapter_id in self._broken:
                return
            try:
                directory = await asyncio.to_thread(
                    registry.verified_path, self._db, adapter_id, self._root
                )
                await self._backend.add_adapter(adapter_id, directory)
            except (
                BackendError,
                registry.UnknownAdapter,
                registry.AdapterRefused,
                PyMongoError,
                OSError,
            ) as error:
                log.warning(
                    "adapter %s cannot be served, using the base model: %s", adapter_id, error
                )
                self._broken.add(adapter_id)
