"""Floor 2: the embedder and the per-author Qdrant collections (streams, serving, trainer)."""
