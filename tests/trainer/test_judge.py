"""The optional LLM judge: the prompt it sees and how its answers become a score."""

from __future__ import annotations

from collections.abc import AsyncIterator

from llm.backend import ChatMessage, Event, Finish, Piece, Sampling
from trainer.judge import judge_with


class Judge:
    """Stands in for the judge model (a GPU-served LLM): answers from a script."""

    name = "judge"

    def __init__(self, answers: list[str]) -> None:
        self.answers = answers
        self.seen: list[list[ChatMessage]] = []

    async def stream(
        self, messages: list[ChatMessage], sampling: Sampling, *, adapter: str | None = None
    ) -> AsyncIterator[Event]:
        self.seen.append(messages)
        yield Piece(self.answers[len(self.seen) - 1])
        yield Finish(1, 1, "stop")

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    async def ready(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


def test_the_score_is_the_mean_of_the_ratings_it_could_read() -> None:
    judge = Judge(["4", "Rating: 2.", "no idea"])
    score = judge_with(judge)(["the author's own text ~ indeed"], ["draft a", "draft b", "draft c"])
    assert score == 3.0  # (4 + 2) / 2: the unreadable answer is left out
    prompt = judge.seen[0][1]["content"]
    assert "the author's own text ~ indeed" in prompt and "draft a" in prompt


def test_a_judge_that_never_rates_gives_no_score() -> None:
    assert judge_with(Judge(["hmm", "maybe"]))(["text"], ["a", "b"]) is None
