"""All of an author's writing trains the twin: documents cut into examples, packed apart.

- the splitter (infra/examples.py) covers every document end to end, within its budget,
  at the document's own structure (generated documents, hypothesis);
- a snapshot from the real warehouse puts every word of a training document in some
  training example, and nothing of a held-out document in any;
- each kind of document gets its own instruction;
- training (trainer/lora.py) labels every token of a response longer than a sequence,
  and packs examples so that none attends to another.
"""

from __future__ import annotations

import itertools
import random
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pymongo.database import Database

from infra import examples, snapshots, warehouse
from schemas.documents import Author, DocumentKind, RawDocument
from schemas.training import Split
from tests import tiny_model
from trainer.lora import IGNORE, TrainConfig, _collate_packed, encode, load_base, pack
from trainer.lora import examples as training_examples

CASES = settings(max_examples=150, deadline=None, derandomize=True)
WORDS = ["kettle", "moorland", "drizzle", "indeed", "quietly", "lantern", "bramble", "x"]


def _words(text: str) -> str:
    """The text without its whitespace: a word cut in two (a run of 1 200 letters) still counts."""
    return "".join(text.split())


@st.composite
def prose(draw: st.DrawFn) -> str:
    """Markdown-ish prose: headings, paragraphs, a fenced block, and over-long sentences."""
    parts = []
    for _ in range(draw(st.integers(1, 12))):
        shape = draw(st.sampled_from(["heading", "paragraph", "fence", "run-on", "underlined"]))
        words = draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=120))
        sentence = " ".join(words)
        if shape == "heading":
            parts.append(f"{'#' * draw(st.integers(1, 3))} {sentence[:60]}")
        elif shape == "underlined":
            parts.append(f"{sentence[:40]}\n{'=' * 8}")
        elif shape == "fence":
            parts.append(f"```\n{sentence}\n\n{sentence}\n```")
        elif shape == "run-on":
            parts.append("".join(draw(st.sampled_from(WORDS)) for _ in range(300)))
        else:
            parts.append(". ".join([sentence] * draw(st.integers(1, 8))) + ".")
    return "\n\n".join(parts)


@st.composite
def code(draw: st.DrawFn) -> str:
    blocks = []
    for n in range(draw(st.integers(1, 15))):
        body = draw(st.integers(1, 60))
        blocks.append(f"def f{n}(x):\n" + "".join(f"    x = x + {i}\n" for i in range(body)))
    return "\n\n".join(blocks)


@CASES
@given(st.one_of(prose().map(lambda t: ("article", t)), code().map(lambda t: ("code", t))))
def test_pieces_cover_the_document_end_to_end_within_the_budget(case: tuple[str, str]) -> None:
    kind, text = case
    kind = "repository_file" if kind == "code" else kind
    found = examples.pieces(text, kind, budget=400)
    assert _words(" ".join(p.text for p in found)) == _words(text)
    assert all(0 < len(p.text) <= 400 for p in found)
    assert [p.part for p in found] == list(range(1, len(found) + 1))
    assert all(p.parts == len(found) for p in found)
    assert all(p.context == "" for p in found[:1])
    for before, after in itertools.pairwise(found):
        assert after.context.lstrip("\u2026") in before.text  # the end of the text before it


def test_a_long_article_is_cut_at_its_headings_and_each_piece_knows_its_section() -> None:
    rng = random.Random(4)
    sections = ["Why Kafka", "What broke", "What we kept"]
    text = "\n\n".join(
        f"## {name}\n\n"
        + "\n\n".join(" ".join(rng.choice(WORDS) for _ in range(40)) + "." for _ in range(6))
        for name in sections
    )
    found = examples.pieces(text, "article")
    assert len(found) > 3
    assert {p.section for p in found} == set(sections)
    for piece in found:
        assert piece.text.startswith("## ") == (piece.text.split("\n")[0][3:] in sections)
    # A heading always begins a piece of its own section, never ends one.
    assert not any(re.search(r"##[^\n]*\s*$", p.text) for p in found)


def test_code_is_cut_at_definitions() -> None:
    text = "\n\n".join(
        f"def step_{n}(x):\n" + "".join(f"    x = x * {i} + {n}\n" for i in range(25))
        for n in range(6)
    )
    found = examples.pieces(text, "repository_file")
    assert len(found) > 1
    assert all(p.text.startswith("def step_") for p in found)
    assert all(p.section.startswith("def step_") for p in found)


def _long_text(rng: random.Random, sections: int = 4) -> str:
    return "\n\n".join(
        f"## part {s}\n\n"
        + "\n\n".join(
            " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 80))) + "."
            for _ in range(rng.randint(2, 7))
        )
        for s in range(sections)
    )


def _index(
    db: Database[warehouse.Document],
    author: str,
    texts: list[str],
    kind: DocumentKind = DocumentKind.ARTICLE,
) -> list[RawDocument]:
    now = datetime.now(UTC)
    documents = [
        RawDocument.build(
            author=Author(slug=author, display_name="Zed Moor"),
            kind=kind,
            platform="medium",
            canonical_source=f"https://{author}.example/{kind.value}/{n}",
            title=f"piece {n}",
            content=text,
            crawled_at=now,
        )
        for n, text in enumerate(texts)
    ]
    warehouse.save_indexed(db, [warehouse.Cleaned(d, d.content, 1, None) for d in documents], now)
    return documents


def test_every_training_document_is_in_the_training_examples_and_no_held_out_one_is(
    db: Database[warehouse.Document], tmp_path: Path
) -> None:
    author = f"zed-{uuid.uuid4().hex[:8]}"
    rng = random.Random(5)
    documents = _index(db, author, [_long_text(rng) for _ in range(20)])
    built = snapshots.build(db, author, tmp_path, datetime.now(UTC))
    train_rows = snapshots.rows(built, Split.TRAIN)
    test_rows = snapshots.rows(built, Split.TEST)
    assert built.counts.train == len(train_rows) and built.counts.test == len(test_rows)
    assert len(built.documents) == 20
    by_document: dict[str, list[dict[str, object]]] = {}
    for row in train_rows + test_rows:
        by_document.setdefault(str(row["document_id"]), []).append(row)
    held_out = {str(d.document_id) for d in built.documents if d.split == "test"}
    assert held_out and len(held_out) < 20
    for document in documents:
        rows = by_document[str(document.document_id)]
        assert len(rows) > 1  # a long document is several examples
        assert _words(" ".join(str(r["response"]) for r in rows)) == _words(document.content)
        side = {r in test_rows for r in rows}
        assert side == {str(document.document_id) in held_out}  # all on one side
    assert not held_out & {str(r["document_id"]) for r in train_rows}
    continued = [r for r in train_rows if int(str(r["part"])) > 1]
    assert continued and all(str(r["instruction"]).startswith("Continue ") for r in continued)
    assert all(r["context"] for r in continued)
    assert all(
        r["task"] == f"Write an article for Medium titled \u201c{r['title']}\u201d."
        for r in train_rows
    )


@pytest.mark.parametrize(
    ("kind", "platform", "expected"),
    [
        (DocumentKind.ARTICLE, "medium", "Write an article for Medium titled \u201cT\u201d."),
        (DocumentKind.POST, "linkedin", "Write a LinkedIn post about T."),
        (DocumentKind.REPOSITORY_FILE, "github", "Write the code of T."),
        (DocumentKind.MESSAGE, "slack", "Write a message about T."),
        (DocumentKind.NOTE, "notes", "Write a note titled \u201cT\u201d."),
    ],
)
def test_each_kind_of_document_has_its_own_instruction(
    kind: DocumentKind, platform: str, expected: str
) -> None:
    assert snapshots.instruction_for(kind.value, platform, "T") == expected
    later = snapshots.instruction_for(kind.value, platform, "T", section="S", part=2, parts=3)
    assert (
        later
        == f"Continue {expected[len('Write ') : -1]}, the part under \u201cS\u201d (part 2 of 3)."
    )


def test_every_kind_is_mapped() -> None:
    generic = snapshots.instruction_for("unknown-kind", "x", "T")
    assert all(snapshots.instruction_for(k.value, "x", "T") != generic for k in DocumentKind)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model.build(tmp_path_factory.mktemp("tiny"))


def test_a_response_longer_than_a_sequence_is_trained_on_every_token(model_dir: Path) -> None:
    _, tokenizer = load_base(str(model_dir))
    config = TrainConfig(base_model=str(model_dir), max_seq_tokens=96)
    row = {"instruction": "Write a note.", "response": " ".join(WORDS * 40), "context": "x y"}
    windows = training_examples(row, tokenizer, config)
    assert len(windows) > 3
    assert all(len(w.input_ids) <= 96 for w in windows)
    _, response = encode(row, tokenizer, config)
    labelled = [t for w in windows for t in w.labels if t != IGNORE]
    assert labelled == response  # every token, in order, once


def test_packed_examples_do_not_attend_to_each_other(model_dir: Path) -> None:
    model, tokenizer = load_base(str(model_dir))
    model.eval()
    config = TrainConfig(base_model=str(model_dir), max_seq_tokens=128)
    rows = [
        {"instruction": f"Write {n}.", "response": " ".join(WORDS[: n + 2]) * (n + 1)}
        for n in range(6)
    ]
    items = [e for row in rows for e in training_examples(row, tokenizer, config)]
    sequences = pack(items, 128)
    assert len(sequences) < len(items)  # some share a sequence
    assert sorted(len(e.input_ids) for e in items) == sorted(
        n for s in sequences for n in _lengths(s.position_ids)
    )
    batch = _collate_packed(sequences, tokenizer, "cpu")
    with torch.inference_mode():
        packed = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        shared = 0
        for index, sequence in enumerate(sequences):
            starts = [i for i, p in enumerate(sequence.position_ids) if p == 0]
            ends = [*starts[1:], len(sequence.position_ids)]
            shared += len(starts) > 1
            for start, end in zip(starts, ends, strict=True):
                alone = model(input_ids=torch.tensor([sequence.input_ids[start:end]])).logits
                assert torch.allclose(alone[0], packed[index, start:end], atol=1e-5)
    assert shared


def _lengths(positions: list[int]) -> list[int]:
    starts = [i for i, p in enumerate(positions) if p == 0]
    return [b - a for a, b in zip(starts, [*starts[1:], len(positions)], strict=True)]
