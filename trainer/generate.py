"""Model-written parts of a snapshot: instructions (``--llm-instructions``) and the base
model's own answers, the rejected side of preference pairs (``--preferences``).

Both go through the configured backend (llm/), one text at a time: at ~11 tokens/s
on a CPU (measured here), preferences for a few dozen documents take minutes; that is
why both are opt-in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from infra.snapshots import Pair
from llm.backend import Backend, ChatMessage, Piece, Sampling
from trainer.lora import SYSTEM_PROMPT

# The instruction is one sentence; the rejected answer is as long as a post.
INSTRUCTION_TOKENS = 48
ANSWER_TOKENS = 256
# The author's text shown to the instruction writer: its opening is enough to say what it is.
EXCERPT_CHARACTERS = 1500


async def _complete(backend: Backend, messages: list[ChatMessage], sampling: Sampling) -> str:
    pieces = [
        event.text async for event in backend.stream(messages, sampling) if isinstance(event, Piece)
    ]
    return "".join(pieces).strip()


def instruction_writer(backend: Backend) -> Callable[[list[Pair]], list[str]]:
    """For each pair, the request a person would give a writer to get the author's text."""

    async def write(pairs: list[Pair]) -> list[str]:
        written = []
        for pair in pairs:
            excerpt = pair.response[:EXCERPT_CHARACTERS]
            messages: list[ChatMessage] = [
                {
                    "role": "user",
                    "content": (
                        f"Here is a {pair.kind} published on {pair.platform}, titled "
                        f"\u201c{pair.title}\u201d:\n\n{excerpt}\n\nWrite the one-sentence "
                        "request someone would give a writer to get exactly this text. "
                        "Answer with the request only."
                    ),
                }
            ]
            text = await _complete(
                backend, messages, Sampling(max_new_tokens=INSTRUCTION_TOKENS, temperature=0.0)
            )
            written.append(text.splitlines()[0].strip(' "\u201c\u201d') if text else "")
        return written

    return lambda pairs: asyncio.run(write(pairs))


def base_answers(backend: Backend) -> Callable[[list[str]], list[str]]:
    """The base model's answer to each instruction, prompted as the twin is trained."""

    async def answer(instructions: list[str]) -> list[str]:
        return [
            await _complete(
                backend,
                [
                    {"role": "system", "content": SYSTEM_PROMPT},
                    {"role": "user", "content": instruction},
                ],
                Sampling(max_new_tokens=ANSWER_TOKENS, temperature=0.7, seed=0),
            )
            for instruction in instructions
        ]

    return lambda instructions: asyncio.run(answer(instructions))
