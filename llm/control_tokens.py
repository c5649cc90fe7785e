"""Control-token text made inert: outside text is data, never a chat turn.

A chat template marks turns with control tokens (``<|im_start|>``, ``[INST]``,
``<start_of_turn>``...). Tokenizers match those tokens as exact strings anywhere
in the text they are given, so a crawled page, a title, a display name, a prompt
or a training example that contains one would become a real turn boundary (a
forged system message) once the template is applied. Everything that did not
come from our own template goes through :func:`neutralise` before it meets one.

Covered: the configured tokenizer's own special tokens (:func:`special_tokens`),
and, for servers whose tokenizer we do not hold, the common families: ChatML,
GPT and Qwen (``<|im_start|>``, ``<|im_end|>``, ``<|endoftext|>``), Llama 2
(``[INST]``, ``<<SYS>>``, ``<s>``), Llama 3 (``<|begin_of_text|>``,
``<|start_header_id|>``, ``<|eot_id|>``, ``<|reserved_special_token_N|>``), Phi
(``<|system|>``, ``<|user|>``, ``<|end|>``), DeepSeek (the same shape with
full-width bars, U+FF5C), Mistral (``[TOOL_CALLS]``, ``[AVAILABLE_TOOLS]``,
``<SPECIAL_N>``...), Gemma (``<start_of_turn>``, ``<bos>``...) and reasoning
markers (``<think>``).

The change: inside a matched sequence, ``<`` ``>`` ``[`` ``]`` become their
look-alikes U+2039 and U+203A (single angle quotation marks) and U+27E6 and
U+27E7 (white square brackets), so ``<|im_end|>`` still reads as itself to
people and to the model. No tokenizer can merge it back into the special:
specials match on the exact characters, and none of the four has a
compatibility decomposition, so not even an NFKC normaliser turns them back
into ASCII. The prompt already marks its neutralised tags with the same angle
quotation marks. A tokenizer's special without any bracket gets a word joiner
(U+2060) after its first character instead. Text outside a match is untouched
(``a < b``, ``<div>``, ``[1]``), and the result is a fixed point: neutralising
it again changes nothing.

Every pattern has bounded repetition and no nesting: one linear pass, whatever
the input's size.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import Any

from llm.backend import ChatMessage

_LOOK_ALIKES = str.maketrans({"<": "\u2039", ">": "\u203a", "[": "\u27e6", "]": "\u27e7"})
_BRACKETS = frozenset("<>[]")
_WORD_JOINER = "\u2060"

# Case-insensitive: a server may read ``[inst]`` the way it reads ``[INST]``.
_FAMILIES = (
    # ChatML, GPT, Qwen, Llama 3, Phi; DeepSeek writes the bars full-width. The
    # inside excludes the look-alikes, so a neutralised inner token never lets an
    # outer one match on a second pass.
    r"<[|\uff5c][^|\uff5c<>\u2039\u203a\s]{1,64}[|\uff5c]>"
    # SentencePiece's markers (Llama 2, Mistral, Gemma)
    r"|</?s>|<unk>|<pad>|<mask>|<bos>|<eos>"
    # Llama 2
    r"|\[/?INST\]|<</?SYS>>"
    # Mistral
    r"|\[/?(?:SYSTEM_PROMPT|AVAILABLE_TOOLS|TOOL_CALLS|TOOL_RESULTS|TOOL_CONTENT|IMG|IMG_BREAK"
    r"|IMG_END|PREFIX|MIDDLE|SUFFIX|THINK|ARGS|CALL_ID)\]|<SPECIAL_\d{1,6}>"
    # Gemma: <start_of_turn>, <end_of_turn>, <start_of_image>...
    r"|<(?:start|end)_of_[a-z_]{1,32}>"
    # reasoning traces (Qwen 3, DeepSeek R1, SmolLM3)
    r"|</?think>"
)
_FAMILY_PATTERN = re.compile(_FAMILIES, re.IGNORECASE)


def neutralise(text: str, extra_specials: Iterable[str] = ()) -> str:
    """``text`` with every control sequence broken; ``extra_specials``: the tokenizer's own."""
    return _pattern(tuple(extra_specials)).sub(_break, text)


def neutralise_messages(
    messages: Iterable[ChatMessage], extra_specials: Iterable[str] = ()
) -> list[ChatMessage]:
    """Each message's content neutralised; the roles are ours and stay as they are."""
    extras = tuple(extra_specials)
    return [{"role": m["role"], "content": neutralise(m["content"], extras)} for m in messages]


def special_tokens(tokenizer: Any) -> tuple[str, ...]:
    """The tokenizer's special tokens: the named ones and every added token marked special."""
    found = {str(token) for token in getattr(tokenizer, "all_special_tokens", ())}
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    found.update(str(t.content) for t in added.values() if getattr(t, "special", False))
    return tuple(sorted(found))


def _extras(specials: tuple[str, ...]) -> tuple[str, ...]:
    # One character cannot be broken without removing it; where we tokenize
    # ourselves, split_special_tokens covers those. The families already match
    # most named specials (Llama 3's 250 reserved ones), so they need no entry.
    return tuple(
        sorted(
            {s for s in specials if len(s) > 1 and not _FAMILY_PATTERN.fullmatch(s)},
            key=lambda s: (-len(s), s),  # longest first: the alternation takes the first match
        )
    )


@functools.lru_cache(maxsize=16)
def _pattern(specials: tuple[str, ...]) -> re.Pattern[str]:
    extras = _extras(specials)
    if not extras:
        return _FAMILY_PATTERN
    # Exact specials match case-sensitively, as the tokenizer matches them.
    exact = "|".join(re.escape(s) for s in extras)
    return re.compile(f"{exact}|(?i:{_FAMILIES})")


def _break(match: re.Match[str]) -> str:
    found = match.group(0)
    if _BRACKETS.intersection(found):
        return found.translate(_LOOK_ALIKES)
    return found[0] + _WORD_JOINER + found[1:]
