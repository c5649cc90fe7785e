"""The in-process backend on a tiny random Llama: real generate(), chat template and detokenizer.

Random weights write gibberish (often bytes that are no character at all), which
is what the detokenizer has to survive; greedy decoding makes every answer
reproducible, so the streamed text can be checked against ``model.generate``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from llm.backend import ChatMessage, Event, Finish, Piece, Sampling
from llm.errors import BackendFailed, BackendUnavailable
from llm.local import NO_REPEAT_NGRAM_SIZE, REPETITION_PENALTY, Detokenizer, LocalBackend
from tests.tiny_model import build

GREEDY = Sampling(max_new_tokens=24, temperature=0.0)
# ~3 ms a token here: a run this long takes seconds, so a stopped one shows.
LONG = Sampling(max_new_tokens=3000, temperature=0.0)
THREAD = "llm-twin-generate"
MULTILINGUAL = "Café naïve — jalapeño 😀 日本語 Ελληνικά"


def question(text: str) -> list[ChatMessage]:
    return [
        {"role": "system", "content": "You are the author's twin."},
        {"role": "user", "content": text},
    ]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("tiny-llama") / "model")


@pytest.fixture(scope="module")
def model(model_dir: Path) -> PreTrainedModel:
    loaded: PreTrainedModel = AutoModelForCausalLM.from_pretrained(model_dir)
    loaded.eval()  # type: ignore[no-untyped-call]
    return loaded


@pytest.fixture(scope="module")
def tokenizer(model_dir: Path) -> Any:
    return AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture
def backend(model: PreTrainedModel, tokenizer: Any) -> Iterator[LocalBackend]:
    # A backend per test: its semaphore belongs to the event loop that first waits on it.
    yield LocalBackend(model, tokenizer)
    assert no_generation_thread(within_s=5.0), "a generation thread outlived its test"


@pytest.fixture
def own_model(model_dir: Path) -> PreTrainedModel:
    """A model of the test's own, for tests that change it."""
    loaded: PreTrainedModel = AutoModelForCausalLM.from_pretrained(model_dir)
    loaded.eval()  # type: ignore[no-untyped-call]
    return loaded


def no_generation_thread(*, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while any(t.name == THREAD for t in threading.enumerate()):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


async def collect(
    backend: LocalBackend, messages: list[ChatMessage], sampling: Sampling = GREEDY
) -> list[Event]:
    return [event async for event in backend.stream(messages, sampling)]


def run(
    backend: LocalBackend, messages: list[ChatMessage], sampling: Sampling = GREEDY
) -> list[Event]:
    # A hang is a failure here, not a stuck test run.
    return asyncio.run(asyncio.wait_for(collect(backend, messages, sampling), timeout=60))


def text_of(events: list[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, Piece))


def greedy_ids(
    model: PreTrainedModel, prompt: list[int], max_new_tokens: int, **options: Any
) -> list[int]:
    """The reference: transformers' own greedy generation, without the backend, with the
    local backend's decoding defaults (or ``options``)."""
    chosen = {
        "repetition_penalty": REPETITION_PENALTY,
        "no_repeat_ngram_size": NO_REPEAT_NGRAM_SIZE,
    }
    chosen |= options
    with torch.inference_mode():
        output = model.generate(  # type: ignore[operator]
            input_ids=torch.tensor([prompt]),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=2,
            **chosen,
        )
    return [int(i) for i in output[0, len(prompt) :].tolist()]


def assert_same_text_but_unfinished_bytes(streamed: str, decoded: str) -> None:
    """The stream may hold back bytes that never became a character, nothing else."""
    assert decoded.startswith(streamed), (streamed, decoded)
    assert set(decoded[len(streamed) :]) <= {"\ufffd"}, (streamed, decoded)


def test_the_prompt_is_the_models_chat_template(backend: LocalBackend, tokenizer: Any) -> None:
    messages = question("Why did we move ingestion to Kafka?")
    rendered = tokenizer.apply_chat_template(
        [dict(m) for m in messages], add_generation_prompt=True, tokenize=False
    )
    assert rendered == (
        "<|system|>You are the author's twin.<|end|>"
        "<|user|>Why did we move ingestion to Kafka?<|end|><|assistant|>"
    )
    expected = tokenizer(rendered, add_special_tokens=False)["input_ids"]
    assert backend.prompt_ids(messages) == expected


def test_a_model_without_chat_template_gets_role_labelled_turns(
    model: PreTrainedModel, tokenizer: Any
) -> None:
    plain = copy.deepcopy(tokenizer)
    plain.chat_template = None
    backend = LocalBackend(model, plain)
    ids = backend.prompt_ids(question("Why Kafka?"))
    assert (
        plain.decode(ids) == "System: You are the author's twin.\n\nUser: Why Kafka?\n\nAssistant:"
    )


def test_a_stream_is_pieces_then_one_finish_with_the_counts(backend: LocalBackend) -> None:
    messages = question("Write a LinkedIn post about Qdrant.")
    events = run(backend, messages)
    assert events, "nothing streamed"
    *pieces, finish = events
    assert pieces and all(isinstance(p, Piece) and p.text for p in pieces)
    assert isinstance(finish, Finish)
    assert finish.prompt_tokens == len(backend.prompt_ids(messages))
    # Random weights never pick the end token in this run: the budget ends it.
    assert finish.completion_tokens == GREEDY.max_new_tokens
    assert finish.reason == "length"


def test_greedy_text_is_what_generate_decodes_and_repeats(
    backend: LocalBackend, model: PreTrainedModel, tokenizer: Any
) -> None:
    messages = question("Café naïve: tell me about the feature pipeline.")
    first = run(backend, messages)
    second = run(backend, messages)
    assert first == second

    reference = greedy_ids(model, backend.prompt_ids(messages), GREEDY.max_new_tokens)
    decoded = tokenizer.decode(reference, skip_special_tokens=True)
    assert_same_text_but_unfinished_bytes(text_of(first), decoded)
    assert len(text_of(first)) > 0


def _repeated_ngrams(ids: list[int], n: int) -> int:
    grams = [tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)]
    return len(grams) - len(set(grams))


def test_the_local_defaults_break_loops_and_a_request_may_turn_them_off(
    backend: LocalBackend, model: PreTrainedModel, tokenizer: Any
) -> None:
    messages = question("Tell me about the feature pipeline, at length.")
    prompt = backend.prompt_ids(messages)
    plain = greedy_ids(model, prompt, 80, repetition_penalty=1.0, no_repeat_ngram_size=0)
    defaults = greedy_ids(model, prompt, 80)
    assert _repeated_ngrams(plain, NO_REPEAT_NGRAM_SIZE) > 0  # a random tiny model loops
    assert _repeated_ngrams(defaults, NO_REPEAT_NGRAM_SIZE) == 0
    asked_off = Sampling(
        max_new_tokens=80, temperature=0.0, repetition_penalty=1.0, no_repeat_ngram_size=0
    )
    assert_same_text_but_unfinished_bytes(
        text_of(run(backend, messages, asked_off)),
        tokenizer.decode(plain, skip_special_tokens=True),
    )
    by_default = Sampling(max_new_tokens=80, temperature=0.0)
    assert_same_text_but_unfinished_bytes(
        text_of(run(backend, messages, by_default)),
        tokenizer.decode(defaults, skip_special_tokens=True),
    )


def test_the_end_token_stops_the_answer_and_is_not_shown(
    own_model: PreTrainedModel, tokenizer: Any
) -> None:
    messages = question("Why Kafka?")
    prompt = LocalBackend(own_model, tokenizer).prompt_ids(messages)
    reference = greedy_ids(own_model, prompt, GREEDY.max_new_tokens)
    # Make a greedy token from the 6th on (one not seen before it) the model's end token.
    stop_at = next(i for i in range(5, len(reference)) if reference[i] not in reference[:i])
    own_model.generation_config.eos_token_id = [tokenizer.eos_token_id, reference[stop_at]]
    backend = LocalBackend(own_model, tokenizer)

    events = run(backend, messages)
    finish = events[-1]
    assert finish == Finish(len(prompt), stop_at + 1, "stop")
    assert_same_text_but_unfinished_bytes(
        text_of(events), tokenizer.decode(reference[:stop_at], skip_special_tokens=True)
    )


def test_the_detokenizer_gives_whole_characters_only(tokenizer: Any) -> None:
    ids = tokenizer(MULTILINGUAL, add_special_tokens=False)["input_ids"]
    # Some tokens are parts of a character (the emoji, CJK and Greek are several bytes each).
    assert any("\ufffd" in tokenizer.decode([i]) for i in ids)

    detokenizer = Detokenizer(tokenizer)
    pieces = [detokenizer.add(i) for i in ids]
    assert "".join(pieces) == MULTILINGUAL
    assert not any("\ufffd" in piece for piece in pieces)
    # Text comes out as soon as it is whole: the ASCII word before the first accent at once.
    assert pieces[0] == tokenizer.decode([ids[0]])


def test_the_detokenizer_skips_special_tokens(tokenizer: Any) -> None:
    detokenizer = Detokenizer(tokenizer)
    ids = [
        *tokenizer("Kafka", add_special_tokens=False)["input_ids"],
        tokenizer.convert_tokens_to_ids("<|end|>"),
        *tokenizer(" streams", add_special_tokens=False)["input_ids"],
    ]
    assert "".join(detokenizer.add(i) for i in ids) == "Kafka streams"


def test_an_answer_cut_inside_a_character_keeps_the_letters_before_it(
    own_model: PreTrainedModel, tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A byte-level token can hold a letter and the first byte of the next character
    # ("a" + half of "ï"). When max_new_tokens ends the answer right after it, the
    # letter is still the model's text and must reach the user.
    ids = tokenizer("naïve", add_special_tokens=False)["input_ids"]
    cut = next(
        k
        for k in range(1, len(ids) + 1)
        if tokenizer.decode(ids[:k]).endswith("\ufffd")
        and len(tokenizer.decode(ids[:k]).rstrip("\ufffd"))
        > len(tokenizer.decode(ids[: k - 1]).rstrip("\ufffd"))
    )
    generated = ids[:cut]

    def generate(**options: Any) -> None:
        streamer = options["streamer"]
        streamer.put(options["input_ids"])
        for token_id in generated:
            streamer.put(torch.tensor([token_id]))
        streamer.end()

    monkeypatch.setattr(own_model, "generate", generate)
    backend = LocalBackend(own_model, tokenizer)
    events = run(backend, question("Spell it."), Sampling(max_new_tokens=cut, temperature=0))
    assert events[-1] == Finish(len(backend.prompt_ids(question("Spell it."))), cut, "length")
    assert_same_text_but_unfinished_bytes(text_of(events), tokenizer.decode(generated))


def test_breaking_out_of_the_stream_stops_generation(
    model: PreTrainedModel, tokenizer: Any
) -> None:
    # One slot: the next request only runs if the abandoned one gave its slot back.
    backend = LocalBackend(model, tokenizer, concurrency=1)
    assert no_generation_thread(within_s=5.0)

    async def scenario() -> tuple[bool, list[Event]]:
        async for event in backend.stream(question("Why Kafka?"), LONG):
            assert isinstance(event, Piece)
            break
        started = time.monotonic()
        while any(t.name == THREAD for t in threading.enumerate()):
            if time.monotonic() - started > 2.0:
                return False, []
            await asyncio.sleep(0.02)
        return True, await collect(backend, question("And Qdrant?"))

    stopped, following = asyncio.run(asyncio.wait_for(scenario(), timeout=60))
    assert stopped, "the generation thread kept running after the consumer left"
    assert isinstance(following[-1], Finish)
    assert following[-1].completion_tokens == GREEDY.max_new_tokens


def test_cancelling_the_request_stops_generation(model: PreTrainedModel, tokenizer: Any) -> None:
    backend = LocalBackend(model, tokenizer, concurrency=1)
    assert no_generation_thread(within_s=5.0)

    async def scenario() -> tuple[bool, list[Event]]:
        first = asyncio.Event()

        async def consume() -> None:
            async for _ in backend.stream(question("Why Kafka?"), LONG):
                first.set()

        task = asyncio.create_task(consume())
        await first.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert task.cancelled()
        started = time.monotonic()
        while any(t.name == THREAD for t in threading.enumerate()):
            if time.monotonic() - started > 2.0:
                return False, []
            await asyncio.sleep(0.02)
        return True, await collect(backend, question("And Qdrant?"))

    stopped, following = asyncio.run(asyncio.wait_for(scenario(), timeout=60))
    assert stopped, "the generation thread kept running after the request was cancelled"
    assert isinstance(following[-1], Finish)
    assert following[-1].reason == "length"


def test_concurrent_requests_each_get_their_own_answer(backend: LocalBackend) -> None:
    topics = ["Kafka", "Qdrant", "LinkedIn", "Bytewax", "the twin", "café"]
    alone = {topic: run(backend, question(f"Tell me about {topic}.")) for topic in topics}

    async def together() -> list[list[Event]]:
        return await asyncio.gather(
            *(collect(backend, question(f"Tell me about {topic}.")) for topic in topics)
        )

    results = asyncio.run(asyncio.wait_for(together(), timeout=60))
    assert len({text_of(events) for events in alone.values()}) > 1, "prompts too alike to tell"
    for topic, events in zip(topics, results, strict=True):
        assert sum(isinstance(e, Finish) for e in events) == 1
        assert isinstance(events[-1], Finish)
        # No token of one request in another's answer.
        assert events == alone[topic], topic


def test_an_adapter_is_refused(backend: LocalBackend) -> None:
    async def with_adapter() -> list[Event]:
        return [e async for e in backend.stream(question("Hi"), GREEDY, adapter="alice")]

    with pytest.raises(BackendFailed, match="alice"):
        asyncio.run(with_adapter())


def test_a_failing_generation_raises_instead_of_hanging(
    own_model: PreTrainedModel, tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def generate(**options: Any) -> None:
        raise RuntimeError("out of memory")

    monkeypatch.setattr(own_model, "generate", generate)
    backend = LocalBackend(own_model, tokenizer)
    started = time.monotonic()
    with pytest.raises(BackendFailed, match="out of memory"):
        run(backend, question("Why Kafka?"))
    assert time.monotonic() - started < 5.0


def test_a_generation_failing_midway_delivers_its_pieces_then_raises(
    own_model: PreTrainedModel, tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    words = tokenizer("Kafka streams", add_special_tokens=False)["input_ids"]

    def generate(**options: Any) -> None:
        streamer = options["streamer"]
        streamer.put(options["input_ids"])
        for token_id in words:
            streamer.put(torch.tensor([token_id]))
        raise RuntimeError("device lost")

    monkeypatch.setattr(own_model, "generate", generate)
    backend = LocalBackend(own_model, tokenizer)
    received: list[Event] = []

    async def consume() -> None:
        async for event in backend.stream(question("Why Kafka?"), GREEDY):
            received.append(event)

    with pytest.raises(BackendFailed, match="device lost"):
        asyncio.run(asyncio.wait_for(consume(), timeout=30))
    assert text_of(received) == "Kafka streams"
    assert not any(isinstance(e, Finish) for e in received)


def test_load_reads_a_saved_model_directory(model_dir: Path) -> None:
    backend = LocalBackend.load(model_dir)
    events = run(backend, question("Why Kafka?"), Sampling(max_new_tokens=5, temperature=0))
    assert isinstance(events[-1], Finish)
    assert events[-1].completion_tokens == 5


def test_load_of_a_directory_without_a_model_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailable, match=str(tmp_path)):
        LocalBackend.load(tmp_path)
