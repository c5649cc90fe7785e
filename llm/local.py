"""In-process generation with transformers: the embedded default's backend.

``generate`` runs in a worker thread and hands each new token id to the event
loop; the loop side detokenizes incrementally (the prefix/read-offset method
TGI and vLLM use, so multi-token characters and word pieces come out whole).
Cancelling the consuming task sets a stop flag the next generation step reads,
so a cancelled or abandoned request frees the model within one token.

Message contents are outside text: their control tokens, the tokenizer's own
specials among them, are broken before the chat template is applied, so only
the template itself puts special tokens into the prompt.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from llm.backend import ChatMessage, Event, Finish, Piece, Sampling
from llm.control_tokens import neutralise_messages, special_tokens
from llm.errors import BackendFailed, BackendUnavailable

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

# Never an adapter id: the gate's "unknown" state after a load.
_UNKNOWN = "\x00unknown"
# A generation on 2 busy cores runs ~11 tokens/s (measured here); two at once keep
# both cores busy without each request's first token waiting behind a queue of
# whole answers.
DEFAULT_CONCURRENCY = 2
# Decoding defaults against loops, for a request that does not set its own, measured on
# SmolLM2-135M-Instruct's greedy drafts (benchmarks/decoding.py): no repeated 3-grams lifts
# distinct-3 from 0.72 to 0.99 (the author's own text: 0.95) at the least cost in fluency
# of the settings that reach the author's level; a repetition penalty also penalises the
# prompt's words, and the drafts left the retrieved topic ("In today's world...").
REPETITION_PENALTY = 1.0
NO_REPEAT_NGRAM_SIZE = 3
# Evaluation's decoding: greedy (the same drafts every run) with the defaults above.
DECODING = Sampling(temperature=0.0)


def generation_options(sampling: Sampling, max_new_tokens: int | None = None) -> dict[str, Any]:
    """``generate``'s keyword arguments for ``sampling``, with the defaults above filled in."""
    options: dict[str, Any] = {"max_new_tokens": max_new_tokens or sampling.max_new_tokens}
    if sampling.temperature > 0:
        options |= {"do_sample": True, "temperature": sampling.temperature, "top_p": sampling.top_p}
    else:
        options |= {"do_sample": False}
    penalty = (
        REPETITION_PENALTY if sampling.repetition_penalty is None else sampling.repetition_penalty
    )
    if penalty != 1.0:
        options["repetition_penalty"] = penalty
    ngram = (
        NO_REPEAT_NGRAM_SIZE
        if sampling.no_repeat_ngram_size is None
        else sampling.no_repeat_ngram_size
    )
    if ngram > 0:
        options["no_repeat_ngram_size"] = ngram
    return options


class _Done:
    def __init__(self, error: BaseException | None) -> None:
        self.error = error


class Detokenizer:
    """Token ids in, text out as soon as it is final (no half characters)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._prefix = 0
        self._read = 0

    def add(self, token_id: int) -> str:
        self._ids.append(token_id)
        decode = self._tokenizer.decode
        before = str(decode(self._ids[self._prefix : self._read], skip_special_tokens=True))
        after = str(decode(self._ids[self._prefix :], skip_special_tokens=True))
        # U+FFFD at the end: a byte-level token that is only part of a character.
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self._ids)
            return after[len(before) :]
        return ""

    def flush(self) -> str:
        """What is still held back at the end: whole characters only."""
        decode = self._tokenizer.decode
        before = str(decode(self._ids[self._prefix : self._read], skip_special_tokens=True))
        after = str(decode(self._ids[self._prefix :], skip_special_tokens=True))
        return after[len(before) :].rstrip("\ufffd")


class LocalBackend:
    """A causal LM loaded in this process; its tokenizer's chat template builds the prompt."""

    name = "local"

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> None:
        self._model: Any = model
        self._tokenizer = tokenizer
        self._slots = asyncio.Semaphore(concurrency)
        self._stop_ids = _stop_token_ids(model, tokenizer)
        self._adapters: set[str] = set()
        self._gate = _AdapterGate(self._activate)

    @property
    def adapters(self) -> frozenset[str]:
        return frozenset(self._adapters)

    async def add_adapter(self, adapter_id: str, path: Path) -> None:
        """Load a LoRA adapter (peft's format) under ``adapter_id``, beside any others.

        Several adapters share the one base model; a request names the one it
        wants, and requests for different adapters never run at the same time
        (peft's active adapter is one setting of the whole model). Loading
        changes the model's layers, so it waits until no generation runs.
        """
        async with self._gate.exclusive():
            await asyncio.to_thread(self._load_adapter, adapter_id, path)

    def _load_adapter(self, adapter_id: str, path: Path) -> None:
        from peft import PeftModel

        if adapter_id in self._adapters:
            return
        try:
            if isinstance(self._model, PeftModel):
                self._model.load_adapter(str(path), adapter_name=adapter_id)
            else:
                self._model = PeftModel.from_pretrained(
                    self._model, str(path), adapter_name=adapter_id
                )
        except (OSError, ValueError, KeyError) as error:
            raise BackendFailed(f"cannot load adapter {adapter_id} from {path}: {error}") from error
        self._model.eval()
        self._gate.forget()  # the load made this adapter the active one
        self._adapters.add(adapter_id)

    def _activate(self, adapter: str | None) -> None:
        if not self._adapters:
            return
        if adapter is None:
            self._model.base_model.disable_adapter_layers()
        else:
            self._model.base_model.enable_adapter_layers()
            self._model.set_adapter(adapter)

    @classmethod
    def load(cls, path: Path | str, *, concurrency: int = DEFAULT_CONCURRENCY) -> LocalBackend:
        """A model directory (``save_pretrained`` layout) or a Hugging Face model id."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        local = Path(path).is_dir()
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=local)
            model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=local)
        except (OSError, ValueError) as error:
            raise BackendUnavailable(f"cannot load the model {path}: {error}") from error
        model.eval()  # type: ignore[no-untyped-call]
        return cls(model, tokenizer, concurrency=concurrency)

    async def ready(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    def count_tokens(self, text: str) -> int:
        ids = self._tokenizer(text, add_special_tokens=False, split_special_tokens=True)
        return len(ids["input_ids"])

    def prompt_ids(self, messages: list[ChatMessage]) -> list[int]:
        return prompt_ids(self._tokenizer, messages)

    async def stream(
        self, messages: list[ChatMessage], sampling: Sampling, *, adapter: str | None = None
    ) -> AsyncIterator[Event]:
        if adapter is not None and adapter not in self._adapters:
            raise BackendFailed(f"adapter {adapter!r} is not loaded in the local backend")
        prompt = self.prompt_ids(messages)
        async with self._gate.use(adapter), self._slots:
            async for event in self._run(prompt, sampling):
                yield event

    async def _run(self, prompt: list[int], sampling: Sampling) -> AsyncIterator[Event]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[int | _Done] = asyncio.Queue()
        stop = threading.Event()
        worker = threading.Thread(
            target=self._generate,
            args=(prompt, sampling, stop, loop, queue),
            name="llm-twin-generate",
            daemon=True,
        )
        worker.start()
        detokenizer = Detokenizer(self._tokenizer)
        generated = 0
        reason = "length"
        try:
            while True:
                item = await queue.get()
                if isinstance(item, _Done):
                    if item.error is not None:
                        raise BackendFailed(f"generation failed: {item.error}") from item.error
                    # The last token can end with a letter and half a character.
                    tail = detokenizer.flush()
                    if tail:
                        yield Piece(tail)
                    break
                generated += 1
                if item in self._stop_ids:
                    reason = "stop"
                    continue
                text = detokenizer.add(item)
                if text:
                    yield Piece(text)
        finally:
            # Cancelled, abandoned or finished: the thread stops at its next step.
            stop.set()
        yield Finish(len(prompt), generated, reason)

    def _generate(
        self,
        prompt: list[int],
        sampling: Sampling,
        stop: threading.Event,
        loop: asyncio.AbstractEventLoop,
        queue: asyncio.Queue[int | _Done],
    ) -> None:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        class Stopped(StoppingCriteria):
            def __call__(
                self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any
            ) -> torch.BoolTensor:
                flags: torch.BoolTensor = torch.full(  # type: ignore[assignment]
                    (input_ids.shape[0],), stop.is_set(), dtype=torch.bool
                )
                return flags

        streamer = _TokenIds(loop, queue)
        error: BaseException | None = None
        try:
            options = generation_options(sampling)
            with torch.inference_mode():
                self._model.generate(
                    input_ids=torch.tensor([prompt]),
                    attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                    streamer=streamer,
                    stopping_criteria=StoppingCriteriaList([Stopped()]),
                    pad_token_id=self._tokenizer.pad_token_id or self._tokenizer.eos_token_id,
                    **options,
                )
        except Exception as failure:  # noqa: BLE001  # handed to the waiting request, raised there
            error = failure
        finally:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting
                loop.call_soon_threadsafe(queue.put_nowait, _Done(error))


def prompt_ids(tokenizer: PreTrainedTokenizerBase, messages: list[ChatMessage]) -> list[int]:
    """The prompt as the model was trained to read it: its chat template when it has one."""
    # The template's own specials must be parsed, so the contents cannot be
    # tokenized apart from it: they are made free of specials first.
    messages = neutralise_messages(messages, special_tokens(tokenizer))
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(
            [{"role": m["role"], "content": m["content"]} for m in messages],
            add_generation_prompt=True,
            tokenize=True,
            return_dict=False,
        )
        return [int(i) for i in cast(list[int], ids)]
    # No template, so no special of ours in the text: none is parsed from it.
    text = "".join(f"{m['role'].capitalize()}: {m['content']}\n\n" for m in messages)
    encoded = tokenizer(text + "Assistant:", split_special_tokens=True)
    return [int(i) for i in encoded["input_ids"]]


class _AdapterGate:
    """Lets generations run together only when they use the same adapter (or none).

    A request for another adapter waits until the running ones finish, and
    while it waits, newcomers for the active adapter wait behind it (no
    starvation); then the model is switched and the waiting group runs.
    """

    def __init__(self, switch: Callable[[str | None], None]) -> None:
        self._switch = switch
        self._active: str | None = None
        self._running = 0
        self._waiting: dict[str | None, int] = {}
        self._exclusive = False
        self._changed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """Nothing else runs meanwhile (the model is being changed)."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._running == 0 and not self._exclusive)
            self._exclusive = True
        try:
            yield
        finally:
            async with self._changed:
                self._exclusive = False
                self._changed.notify_all()

    def forget(self) -> None:
        """The model's active adapter changed outside the gate: switch before the next run."""
        self._active = _UNKNOWN

    def _may_run(self, adapter: str | None) -> bool:
        if self._exclusive:
            return False
        if self._running == 0:
            return True
        others = any(n for name, n in self._waiting.items() if name != adapter)
        return self._active == adapter and not others

    @contextlib.asynccontextmanager
    async def use(self, adapter: str | None) -> AsyncIterator[None]:
        async with self._changed:
            self._waiting[adapter] = self._waiting.get(adapter, 0) + 1
            try:
                await self._changed.wait_for(lambda: self._may_run(adapter))
            finally:
                self._waiting[adapter] -= 1
            if self._active != adapter:
                self._switch(adapter)
                self._active = adapter
            self._running += 1
        try:
            yield
        finally:
            async with self._changed:
                self._running -= 1
                self._changed.notify_all()


class _TokenIds:
    """A transformers streamer that forwards new token ids to the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[int | _Done]) -> None:
        self._loop = loop
        self._queue = queue
        self._skip_prompt = True

    def put(self, value: torch.Tensor) -> None:
        if self._skip_prompt:  # generate's first put is the prompt itself
            self._skip_prompt = False
            return
        for token_id in value.reshape(-1).tolist():
            self._loop.call_soon_threadsafe(self._queue.put_nowait, int(token_id))

    def end(self) -> None:
        return None


def _stop_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list):
            ids.update(int(v) for v in value)
    return ids
