"""The bundled MiniLM through Embedder: vector shape and norm, and the tokenizer's spans."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from vectorstore.embedder import BUNDLED_MODEL_NAME, Embedder, bundled_model_path

SENTENCES = [
    "Kafka partitions let several consumers in a group share the load of one topic.",
    "A sourdough loaf needs a lively starter and a long, cool overnight proof.",
    "Marathon training builds mileage slowly.",
]


def test_the_bundled_model_describes_itself(embedder: Embedder) -> None:
    assert embedder.model_name == BUNDLED_MODEL_NAME
    assert embedder.dimensions == 384
    assert embedder.max_tokens == 256
    # [CLS] and [SEP] take two of the 256.
    assert embedder.max_text_tokens == 254


def test_encode_gives_one_unit_vector_per_text(embedder: Embedder) -> None:
    vectors = embedder.encode(SENTENCES, batch_size=2)
    assert vectors.shape == (len(SENTENCES), 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Distinct texts, distinct vectors.
    assert float(vectors[0] @ vectors[1]) < 0.5
    assert embedder.encode([]).shape == (0, 384)


def test_a_query_lands_nearest_its_text(embedder: Embedder) -> None:
    documents = embedder.encode(SENTENCES)
    query = np.asarray(embedder.encode_query("baking bread at home"), dtype=np.float32)
    assert query.shape == (384,)
    np.testing.assert_allclose(np.linalg.norm(query), 1.0, atol=1e-5)
    assert int(np.argmax(documents @ query)) == 1
    # MiniLM has no query prompt: a query is embedded like a document.
    np.testing.assert_allclose(query, embedder.encode(["baking bread at home"])[0], atol=1e-5)


def test_token_offsets_cover_the_words_in_order(embedder: Embedder) -> None:
    text = "Tokenization splits   unbelievably long words, doesn't it?"
    spans = embedder.token_offsets(text)
    assert embedder.count_tokens(text) == len(spans)
    # In order, not overlapping, inside the text.
    assert all(0 <= start < end <= len(text) for start, end in spans)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))
    # Together they are every character but the spaces: no word is lost or split wrongly.
    assert "".join(text[start:end] for start, end in spans) == text.replace(" ", "")
    # Sub-word pieces: "unbelievably" is more than one token, each a piece of it.
    word = text.index("unbelievably")
    inside = [span for span in spans if word <= span[0] < word + len("unbelievably")]
    assert len(inside) > 1
    assert text[inside[0][0] : inside[-1][1]] == "unbelievably"


def test_token_offsets_are_not_truncated_or_padded(embedder: Embedder) -> None:
    # tokenizer.json sets truncation and padding to 128: spans must cover a long text whole.
    text = " ".join(["stream"] * 600)
    spans = embedder.token_offsets(text)
    assert len(spans) == 600
    assert spans[-1] == (len(text) - len("stream"), len(text))
    assert embedder.token_offsets("") == []
    assert embedder.count_tokens("") == 0


def test_a_model_directory_is_loaded_from_disk_under_a_stable_name() -> None:
    loaded = Embedder.load(str(bundled_model_path()), device="cpu")
    assert loaded.model_name == BUNDLED_MODEL_NAME
    assert loaded.encode(["one"]).shape == (1, 384)


@pytest.mark.parametrize("text", ["", "Ünïcödé façade naïve café", "emoji 🙂 and tabs\tand\nlines"])
def test_count_tokens_matches_the_offsets(embedder: Embedder, text: str) -> None:
    assert embedder.count_tokens(text) == len(embedder.token_offsets(text))
