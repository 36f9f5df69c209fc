"""Vector stores: every output embedding with its metadata, searchable by cosine similarity.

Two backends sit behind one small set of verbs (like chroma's `Collection`): each verb checks its input here, once,
then hands off to the backend, so both refuse the same bad input with the same message.

- `LocalVectorStore` (the default): an embedded store in a folder under `data/vectorstores/`; works offline.
- `PineconeVectorStore` (`e2p_lib.store.pinecone`): a Pinecone serverless index, for stores that outgrow a machine.

    >>> store = make_vector_store("local", name="alpaca-minilm", dimensions=384, embedder=ds.model)
    >>> store.upsert(ds.ids, ds.vectors, ds.frame.to_dict("records"))      # batched, with a progress bar
    >>> store.query(ds.vectors[:2], top_k=5, filter={"type": "alpaca"}, exclude_ids=ds.ids[:2])
    [[Match(id='alpaca-17', score=0.83, metadata={...}), ...], [...]]      # one list per query vector
    >>> store.fetch(["alpaca-0"])["alpaca-0"].vector.shape, store.count(), store.namespaces()
    ((384,), 4965, [''])

The verbs
- `upsert(ids, vectors, metadata=None, namespace="")`: an existing id is replaced. A vector of the wrong dimension,
  NaN/inf, an all-zero vector (it has no direction), a duplicate id inside one call, or metadata Pinecone cannot store
  (None values, nested dicts, keys starting with "$") raise ValueError/TypeError naming the ids.
- `query(vectors, top_k=10, filter=None, exclude_ids=None, namespace="")`: one (d,) vector or many (m, d); always
  returns one list of `Match(id, score, metadata)` per query, best first; `score` is the cosine similarity.
  `exclude_ids` has one entry per query (an id, a list of ids, or None), e.g. each target's own row.
  `filter` uses Pinecone's metadata filter language: `{"type": "alpaca"}` (plain equality), `$eq $ne $gt $gte $lt
  $lte $in $nin $exists`, combined with `$and` / `$or`; both backends evaluate it the same way.
- `fetch(ids)` -> {id: Record(id, vector, metadata)} for the ids that exist; `delete(ids)`; `count()`;
  `namespaces()`. Every verb takes `namespace=`: separate sets of records in one store (e.g. one per embedder run).

A store records the embedder that filled it (`embedder=` when it is made; `store.embedder` reads it back), and a
handle opened with another embedder's name is refused, so 384-d vectors of two models never share a store. A local
store in a read-only folder (a shared copy of a finished run) answers count, query and fetch; a write there raises
`DataFileError` (`e2p_lib.errors`) naming the folder, as a full disk or a damaged file does.

Record metadata follows the seed: `{"id": "alpaca-{i}", "output": ..., "prompt": ..., "tokens": ..., "type": "alpaca"}`.
Pinecone stores numbers as 64-bit floats, so `tokens` may come back as 12.0 there (it still equals 12).
"""

from __future__ import annotations

from typing import Any

from e2p_lib.store.base import (
    DEFAULT_NAMESPACE,
    MAX_ID_LENGTH,
    MAX_TOP_K,
    METRIC,
    Match,
    Record,
    VectorStore,
    check_ids,
    check_query_vectors,
)
from e2p_lib.store.filters import compile_filter
from e2p_lib.store.local import LocalVectorStore
from e2p_lib.store.pinecone import PineconeVectorStore

__all__ = [
    "BACKENDS",
    "DEFAULT_NAMESPACE",
    "MAX_ID_LENGTH",
    "MAX_TOP_K",
    "METRIC",
    "LocalVectorStore",
    "Match",
    "PineconeVectorStore",
    "Record",
    "VectorStore",
    "check_ids",
    "check_query_vectors",
    "compile_filter",
    "make_vector_store",
]

# --- factory ------------------------------------------------------------------------------------------------------

BACKENDS = ("local", "pinecone")


def make_vector_store(
    backend: str = "local",
    name: str | None = None,
    dimensions: int | None = None,
    *,
    embedder: str | None = None,
    **kwargs: Any,
) -> VectorStore:
    """Build a store by backend name: "local" (default, offline; `LocalVectorStore`) or "pinecone".

    `name` is the local store's folder or the Pinecone index name (lowercase letters, digits and '-' there), so a
    notebook switches backends by changing one parameter. `embedder` is the name of the embedder whose vectors
    go in and come as queries (`Embedder.name`, `EmbeddedDataset.model`): recorded with a new store, checked
    against an existing one (ValueError naming both); None skips the check.
    """
    named = {} if name is None else {"name" if backend == "local" else "index_name": name}
    if backend == "local":
        return LocalVectorStore(dimensions=dimensions, embedder=embedder, **named, **kwargs)
    if backend == "pinecone":
        return PineconeVectorStore(dimensions=dimensions, embedder=embedder, **named, **kwargs)
    raise ValueError(f"Unknown vector store backend {backend!r}: use one of {BACKENDS}.")
