"""What every vector store is (`VectorStore`, the verbs), its records (`Match`, `Record`) and the checks of its input.

Each verb checks its input here, once, then hands off to the backend, so every backend refuses the same bad input
with the same message.
"""

from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from e2p_lib.checks import check_int
from e2p_lib.store.filters import compile_filter

DEFAULT_NAMESPACE = ""
METRIC = "cosine"  # the only metric: every e2p embedder returns unit vectors, and cosine is what the seed used
MAX_ID_LENGTH = 512  # characters; Pinecone's limit on a record id, kept by every backend so a store can move
MAX_TOP_K = 10_000  # Pinecone's ceiling on top_k


# --- records and input checks ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Match:
    """One query result: a stored record and its cosine similarity to the query (1.0 = same direction)."""

    id: str
    score: float
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class Record:
    """A stored record as `fetch` returns it."""

    id: str
    vector: np.ndarray  # (dimensions,) float32, as upserted (not normalised)
    metadata: dict[str, Any]


def shown(items: Sequence[Any], limit: int = 5) -> str:
    """`'a', 'b' (and 3 more)`: enough of a list to find the culprits without flooding the message."""
    head = ", ".join(repr(x) for x in items[:limit])
    return head + (f" (and {len(items) - limit} more)" if len(items) > limit else "")


def _is_valid_id(value: Any) -> bool:
    return type(value) is str and 0 < len(value) <= MAX_ID_LENGTH and value.isascii() and "\x00" not in value


def check_ids(ids: Sequence[str], what: str = "ids") -> list[str]:
    """`ids` as a list; raises if any is not a non-empty ASCII string of at most 512 characters (Pinecone's rule)."""
    if isinstance(ids, str):
        raise TypeError(f"{what} must be a list of strings, not one string: wrap it as [{ids!r}].")
    ids = list(ids)
    bad = [x for x in ids if not _is_valid_id(x)]
    if bad:
        raise ValueError(
            f"{len(bad)} of {what} are not valid record ids ({shown(bad)}). An id is a non-empty ASCII string of "
            f"at most {MAX_ID_LENGTH} characters without NUL (Pinecone's rule, kept by every backend)."
        )
    return ids


def check_unique(ids: Sequence[str]) -> None:
    """Raise if an id appears twice in one write: which row should win would be an accident of batching."""
    if len(set(ids)) != len(ids):
        duplicates = [i for i, n in Counter(ids).items() if n > 1]
        raise ValueError(
            f"{len(duplicates)} ids appear more than once in one upsert ({shown(duplicates)}). Each id may appear "
            "once per call; deduplicate first (e.g. frame.drop_duplicates('id'))."
        )


def check_vectors(vectors: Any, dimensions: int, ids: Sequence[str] | None = None, what: str = "vectors") -> np.ndarray:
    """(n, dimensions) float32, C-contiguous; raises on a wrong shape or dimension, NaN/inf, or an all-zero row."""
    array = np.ascontiguousarray(vectors, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"{what} must be a 2-D array of shape (n, {dimensions}); got shape {array.shape}.")
    if array.shape[1] != dimensions:
        raise ValueError(
            f"{what} have dimension {array.shape[1]}, but this store holds {dimensions}-dimensional vectors. Embed "
            "with the model the store was built for, or use another store: a store's dimension is fixed when it "
            "is created."
        )
    names = ids if ids is not None else range(len(array))
    not_finite = np.flatnonzero(~np.isfinite(array).all(axis=1))
    if len(not_finite):
        raise ValueError(
            f"{len(not_finite)} {what} contain NaN or infinity (rows {shown([names[i] for i in not_finite])}). "
            "Re-embed those texts; a store never holds them."
        )
    zero = np.flatnonzero(~array.any(axis=1))
    if len(zero):
        raise ValueError(
            f"{len(zero)} {what} are all zeros (rows {shown([names[i] for i in zero])}): a zero vector has no "
            "direction, so its cosine similarity is undefined. Re-embed those texts."
        )
    return array


def check_query_vectors(vectors: Any, dimensions: int) -> np.ndarray:
    """One (d,) query or many (m, d) as a checked (m, d) float32 array."""
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim == 1:
        array = array[None, :]
    return check_vectors(array, dimensions, what="query vectors")


def check_embedder_name(name: Any) -> str | None:
    """An embedder name as stores record it (`Embedder.name`, e.g. "local/all-MiniLM-L6-v2"), or None for none."""
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise TypeError(
            f"embedder must be an embedder's name (Embedder.name, e.g. 'local/all-MiniLM-L6-v2') or None; got {name!r}."
        )
    return name


def check_embedder(recorded: str | None, claimed: str | None, store: str) -> None:
    """Raise when `store` (worded for the message) records vectors of one embedder and the caller claims another:
    vectors of two embedders are not comparable, even at one dimension."""
    if recorded is not None and claimed is not None and recorded != claimed:
        raise ValueError(
            f"{store} holds vectors of the embedder {recorded!r}, not {claimed!r}: the two are different vector "
            f"spaces, so neither upserts nor queries can mix them. Use the embedder {recorded!r} with this store, "
            f"or another store for {claimed!r}."
        )


def check_top_k(top_k: Any) -> int:
    return check_int(top_k, "top_k", maximum=MAX_TOP_K, hint=" (Pinecone's limit)")


def check_namespace(namespace: Any) -> str:
    if not isinstance(namespace, str):
        raise TypeError(f"namespace must be a string ('' is the default namespace); got {namespace!r}.")
    return namespace


def _clean_value(record_id: str, key: str, value: Any) -> Any:
    """A metadata value as a plain JSON type Pinecone accepts (str, number, bool, list of str), or raise."""
    if type(value) is str:  # the common case first: 52k rows x 5 keys add up
        return value
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(
                f"Metadata {key!r} of id {record_id!r} is {number}; NaN and infinity are not JSON. A NaN from pandas "
                "usually means a missing value: leave the key out instead."
            )
        return number
    if isinstance(value, (list, tuple)) and all(isinstance(x, str) for x in value):
        return list(value)
    if value is None:
        raise ValueError(
            f"Metadata {key!r} of id {record_id!r} is None. Pinecone does not store null metadata values (the key "
            "would silently vanish), so no backend does: leave the key out instead."
        )
    raise TypeError(
        f"Metadata {key!r} of id {record_id!r} is a {type(value).__name__}; allowed are str, int, float, bool and "
        "lists of str (Pinecone's metadata types: no nested dicts)."
    )


def clean_metadata(metadata: Sequence[Mapping[str, Any] | None] | None, ids: Sequence[str]) -> list[dict[str, Any]]:
    """One plain dict per id (numpy scalars become Python numbers); raises naming the id and key of a bad value."""
    if metadata is None:
        return [{} for _ in ids]
    if isinstance(metadata, Mapping):
        raise TypeError("metadata takes one dict per id: pass a list of dicts (e.g. frame.to_dict('records')).")
    metadata = list(metadata)
    if len(metadata) != len(ids):
        raise ValueError(f"Got {len(metadata)} metadata dicts for {len(ids)} ids; give one per id (or None).")
    cleaned = []
    for record_id, entry in zip(ids, metadata):
        if entry is None:
            cleaned.append({})
            continue
        if not isinstance(entry, Mapping):
            raise TypeError(f"Metadata of id {record_id!r} is a {type(entry).__name__}, not a dict.")
        for key in entry:
            if not isinstance(key, str) or not key or key.startswith("$"):
                raise ValueError(
                    f"Metadata key {key!r} of id {record_id!r} is not allowed: keys are non-empty strings that do "
                    "not start with '$' (that prefix marks filter operators)."
                )
        cleaned.append({key: _clean_value(record_id, key, value) for key, value in entry.items()})
    return cleaned


def exclusion_sets(exclude_ids: Sequence[str | Iterable[str] | None] | None, n_queries: int) -> list[frozenset[str]]:
    """One set of ids to leave out per query vector, from `exclude_ids` (one entry per query, or None)."""
    if exclude_ids is None:
        return [frozenset()] * n_queries
    if isinstance(exclude_ids, str):
        raise TypeError(f"exclude_ids has one entry per query vector: pass [{exclude_ids!r}] for a single query.")
    entries = list(exclude_ids)
    if len(entries) != n_queries:
        raise ValueError(
            f"exclude_ids has {len(entries)} entries for {n_queries} query vectors; give one entry per query (an "
            "id, a list of ids, or None). To leave several ids out of a single query, nest them: [[id1, id2]]."
        )
    sets = []
    for entry in entries:
        if entry is None:
            sets.append(frozenset())
        elif isinstance(entry, str):
            sets.append(frozenset((entry,)))
        else:
            sets.append(frozenset(check_ids(entry, "exclude_ids entries")))
    return sets


# --- the interface ------------------------------------------------------------------------------------------------


class VectorStore(ABC):
    """The verbs every backend offers. Each verb checks its input here, then calls the backend's `_verb`."""

    dimensions: int
    embedder: str | None = None  # name of the embedder whose vectors it holds; None where the store records none
    metric: str = METRIC
    batch_size: int = 1000  # records per write batch (a progress bar shows past one batch); backends override

    def upsert(
        self,
        ids: Sequence[str],
        vectors: Any,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        show_progress: bool | None = None,
    ) -> int:
        """Insert or replace records; returns how many were written. Progress bar by default past one batch.

        Raises:
            ValueError: a wrong dimension, NaN/inf or zero vector, an invalid or duplicated id, a count mismatch,
                or a metadata value Pinecone cannot store (None, NaN).
            TypeError: metadata that is not a dict of str/number/bool/list-of-str.
        """
        ids = check_ids(ids)
        check_unique(ids)
        vectors = np.asarray(vectors, dtype=np.float32)
        if not ids and vectors.size == 0:
            return 0
        if vectors.ndim == 2 and len(vectors) != len(ids):
            raise ValueError(f"Got {len(vectors)} vectors for {len(ids)} ids; give exactly one vector per id.")
        vectors = check_vectors(vectors, self.dimensions, ids)
        records = clean_metadata(metadata, ids)
        namespace = check_namespace(namespace)
        show = len(ids) > self.batch_size if show_progress is None else show_progress
        with tqdm(total=len(ids), desc=f"upsert into {type(self).__name__}", unit="vec", disable=not show) as bar:
            self._upsert(namespace, ids, vectors, records, bar)
        return len(ids)

    def query(
        self,
        vectors: Any,
        top_k: int = 10,
        *,
        filter: Mapping[str, Any] | None = None,
        exclude_ids: Sequence[str | Iterable[str] | None] | None = None,
        namespace: str = DEFAULT_NAMESPACE,
        include_metadata: bool = True,
    ) -> list[list[Match]]:
        """The `top_k` most similar records for each query vector, best first (fewer if fewer match).

        `vectors` is one (d,) vector or an (m, d) array; the result always has one list per query vector.
        `exclude_ids` has one entry per query vector: an id, a list of ids, or None.
        """
        queries = check_query_vectors(vectors, self.dimensions)
        top_k = check_top_k(top_k)
        if filter is not None:
            compile_filter(filter)  # fail on a bad filter here, the same way for every backend
        exclusions = exclusion_sets(exclude_ids, len(queries))
        return self._query(check_namespace(namespace), queries, top_k, filter, exclusions, include_metadata)

    def fetch(self, ids: Sequence[str], *, namespace: str = DEFAULT_NAMESPACE) -> dict[str, Record]:
        """{id: Record} for the given ids that exist (missing ids are left out, as Pinecone does)."""
        ids = list(dict.fromkeys(check_ids(ids)))
        return self._fetch(check_namespace(namespace), ids) if ids else {}

    def delete(self, ids: Sequence[str], *, namespace: str = DEFAULT_NAMESPACE) -> None:
        """Remove records by id; ids that do not exist are ignored."""
        ids = list(dict.fromkeys(check_ids(ids)))
        if ids:
            self._delete(check_namespace(namespace), ids)

    def count(self, *, namespace: str = DEFAULT_NAMESPACE) -> int:
        """Number of records in the namespace."""
        return self._count(check_namespace(namespace))

    def namespaces(self) -> list[str]:
        """Namespaces that hold at least one record, sorted."""
        return sorted(self._namespaces())

    @abstractmethod
    def _upsert(
        self, namespace: str, ids: list[str], vectors: np.ndarray, metadata: list[dict[str, Any]], bar: tqdm
    ) -> None: ...

    @abstractmethod
    def _query(
        self,
        namespace: str,
        queries: np.ndarray,
        top_k: int,
        filter: Mapping[str, Any] | None,
        exclusions: list[frozenset[str]],
        include_metadata: bool,
    ) -> list[list[Match]]: ...

    @abstractmethod
    def _fetch(self, namespace: str, ids: list[str]) -> dict[str, Record]: ...

    @abstractmethod
    def _delete(self, namespace: str, ids: list[str]) -> None: ...

    @abstractmethod
    def _count(self, namespace: str) -> int: ...

    @abstractmethod
    def _namespaces(self) -> list[str]: ...
