"""The one async streaming interface every generation backend speaks.

A backend turns chat messages into a stream of :class:`Piece` (text as it is
generated) followed by exactly one :class:`Finish` (token counts, why it
stopped). Backends raise only :mod:`llm.errors`; cancelling the consuming task
stops generation (the local backend stops its thread, the HTTP backends close
the connection).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, TypedDict, runtime_checkable


class ChatMessage(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int = 512
    # 0: greedy decoding (deterministic), as OpenAI and TGI read it.
    temperature: float = 0.7
    top_p: float = 0.95
    seed: int | None = None
    # Against loops. None: the backend's default (llm/local.py measures its own; a
    # server keeps its own unless a request asks). The local model and TGI read both;
    # an OpenAI-compatible server reads the penalty as frequency_penalty = penalty - 1.
    repetition_penalty: float | None = None
    no_repeat_ngram_size: int | None = None


@dataclass(frozen=True)
class Piece:
    text: str


@dataclass(frozen=True)
class Finish:
    prompt_tokens: int
    completion_tokens: int
    # "length": max_new_tokens reached; "stop": the model ended its answer.
    reason: str


Event = Piece | Finish


class Backend(Protocol):
    """Streams a completion of ``messages``; ``adapter`` names a LoRA adapter to apply."""

    name: str

    def stream(
        self, messages: list[ChatMessage], sampling: Sampling, *, adapter: str | None = None
    ) -> AsyncIterator[Event]: ...

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` as the model counts them, or an estimate where it cannot."""
        ...

    async def ready(self) -> None:
        """Return once the model is loaded (or the server answers); raise BackendError if not."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class LoadsAdapters(Protocol):
    """A backend that holds adapters itself (local); remote servers are given adapter ids."""

    @property
    def adapters(self) -> frozenset[str]: ...

    async def add_adapter(self, adapter_id: str, path: Path) -> None: ...
