"""The optional LLM judge: a configured model rates how much drafts read like the author.

Off unless ``LLM_TWIN_JUDGE_BACKEND`` is set (tgi or openai, with its URL and
model). Each draft is shown to the judge beside excerpts of the author's
held-out writing and rated from 1 (another writer) to 5 (indistinguishable);
the score is the mean rating, or None when the judge answered nothing usable.
The judge is a second opinion: the stylometric score is the measurement.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable

from pydantic import ValidationError

from llm.backend import Backend, ChatMessage, Piece, Sampling
from trainer.errors import Refused

EXCERPTS = 3
EXCERPT_CHARACTERS = 800
_RATING = re.compile(r"\b([1-5])\b")

Judge = Callable[[list[str], list[str]], float | None]


def judge_with(backend: Backend) -> Judge:
    """A judge: (the author's reference texts, drafts) -> mean rating in [1, 5], or None."""

    async def rate(reference: list[str], drafts: list[str]) -> float | None:
        excerpts = "\n\n---\n\n".join(text[:EXCERPT_CHARACTERS] for text in reference[:EXCERPTS])
        ratings = []
        for draft in drafts:
            messages: list[ChatMessage] = [
                {
                    "role": "system",
                    "content": "You judge writing style. Answer with one digit from 1 to 5.",
                },
                {
                    "role": "user",
                    "content": (
                        f"Excerpts by one author:\n\n{excerpts}\n\n=====\n\nA draft:\n\n{draft}\n\n"
                        "=====\n\nHow much does the draft read like the same author (vocabulary, "
                        "tone, sentence rhythm, punctuation)? 1: clearly someone else; "
                        "5: indistinguishable. Answer with the digit only."
                    ),
                },
            ]
            pieces = [
                event.text
                async for event in backend.stream(
                    messages, Sampling(max_new_tokens=4, temperature=0.0)
                )
                if isinstance(event, Piece)
            ]
            found = _RATING.search("".join(pieces))
            if found:
                ratings.append(int(found.group(1)))
        return sum(ratings) / len(ratings) if ratings else None

    return lambda reference, drafts: asyncio.run(rate(reference, drafts))


def configured_judge() -> Judge | None:
    """The judge LLM_TWIN_JUDGE_* configure, None without a backend, or :class:`Refused`."""
    from llm.remote import OpenAIBackend, TgiBackend
    from trainer.settings import JudgeSettings

    try:
        settings = JudgeSettings()
    except ValidationError as error:
        raise Refused(f"bad judge settings: {error.errors()[0]['msg']}") from None
    if settings.backend is None:
        return None
    if not settings.url:
        raise Refused("LLM_TWIN_JUDGE_URL is needed with LLM_TWIN_JUDGE_BACKEND")
    key = settings.api_key.get_secret_value() if settings.api_key else None
    if settings.backend == "tgi":
        return judge_with(TgiBackend(settings.url, api_key=key))
    return judge_with(OpenAIBackend(settings.url, model=settings.model, api_key=key))
