"""Vector stores: every output embedding with its metadata, searchable by cosine similarity.

Two backends sit behind one small set of verbs (like chroma's `Collection`): each verb checks its input here, once,
then hands off to the backend, so both refuse the same bad input with the same message.

- `LocalVectorStore` (the default): an embedded store in a folder under `data/vectorstores/`; works offline.
- `PineconeVectorStore` (`e2p_lib.pinecone_store`): a Pinecone serverless index, for stores that outgrow a machine.

    >>> store = make_vector_store("local", name="alpaca-minilm", dimensions=384)
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

Record metadata follows the seed: `{"id": "alpaca-{i}", "output": ..., "prompt": ..., "tokens": ..., "type": "alpaca"}`.
Pinecone stores numbers as 64-bit floats, so `tokens` may come back as 12.0 there (it still equals 12).

LocalVectorStore: format and why
- `<root>/<name>/store.json` fixes the dimension. Each namespace is a folder `ns-<quoted name>/` holding append-only
  *segments* (`000001.npy`: the (n, d) float32 vectors; `000001.json`: ids and metadata, or the ids of a delete) and a
  `manifest.json` listing the live segments in order. A write puts new segment files in place (temp file, fsync,
  `os.replace`), then replaces the manifest; a crash at any point leaves the previous manifest and its files intact
  and the half-written files unreferenced (they are swept on the next write). When dead rows outnumber live ones, or
  there are more than `MAX_SEGMENTS` segments, the namespace is compacted into one segment the same way.
- Append-only segments make an upsert cost what it writes, not the size of the store: 52,002 x 1,024 upserts in
  1-2 s on 2 cores and reloads in about 1 s (bench/store.py), and a long upload commits batch by batch. `.npy` plus
  JSON (orjson) meets the goals with nothing beyond numpy, so no database is used; lancedb and chromadb were not
  tried (chromadb's HNSW index would make search approximate by default).
- Search is exact by default: one matrix product (numpy/BLAS) against all live rows, in blocks of queries. faiss'
  flat index was slower than numpy here (32 ms vs 14 ms per query at 52k x 1,024), so it is not used. Exact search
  at 52k x 1,024 reads 213 MB per query and is memory-bound (~14 ms); `search="binary"` ranks candidates by the Hamming
  distance of sign bits (1 bit per dimension, 32x less memory traffic), then re-scores the best `rerank_candidates`
  exactly; bench/store.py prints its recall@10 against exact search.
- Several processes may use one store: writes take an exclusive `fcntl` lock on the namespace and first reload
  anything another process committed; readers notice a new manifest and reload.

Outline: records and checks -> metadata filters -> `VectorStore` (the verbs) -> `LocalVectorStore` -> factory.
"""

from __future__ import annotations

import fcntl
import math
import numbers
import os
import re
import threading
from abc import ABC, abstractmethod
from collections import Counter
from contextlib import contextmanager
from functools import lru_cache
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence
from urllib.parse import quote, unquote

import numpy as np
import orjson
from tqdm.auto import tqdm

from e2p_lib import config
from e2p_lib.atomic import atomic_file

DEFAULT_NAMESPACE = ""
METRIC = "cosine"  # the only metric: every e2p embedder returns unit vectors, and cosine is what the seed used
MAX_ID_LENGTH = 512  # characters; Pinecone's limit on a record id, kept by every backend so a store can move
MAX_TOP_K = 10_000  # Pinecone's ceiling on top_k
SEARCH_MODES = ("exact", "binary")


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


def _shown(items: Sequence[Any], limit: int = 5) -> str:
    """`'a', 'b' (and 3 more)`: enough of a list to find the culprits without flooding the message."""
    head = ", ".join(repr(x) for x in items[:limit])
    return head + (f" (and {len(items) - limit} more)" if len(items) > limit else "")


def _is_valid_id(value: Any) -> bool:
    return (type(value) is str and 0 < len(value) <= MAX_ID_LENGTH and value.isascii()
            and "\x00" not in value)


def check_ids(ids: Sequence[str], what: str = "ids") -> list[str]:
    """`ids` as a list; raises if any is not a non-empty ASCII string of at most 512 characters (Pinecone's rule)."""
    if isinstance(ids, str):
        raise TypeError(f"{what} must be a list of strings, not one string: wrap it as [{ids!r}].")
    ids = list(ids)
    bad = [x for x in ids if not _is_valid_id(x)]
    if bad:
        raise ValueError(
            f"{len(bad)} of {what} are not valid record ids ({_shown(bad)}). An id is a non-empty ASCII string of "
            f"at most {MAX_ID_LENGTH} characters without NUL (Pinecone's rule, kept by every backend)."
        )
    return ids


def check_unique(ids: Sequence[str]) -> None:
    """Raise if an id appears twice in one write: which row should win would be an accident of batching."""
    if len(set(ids)) != len(ids):
        duplicates = [i for i, n in Counter(ids).items() if n > 1]
        raise ValueError(
            f"{len(duplicates)} ids appear more than once in one upsert ({_shown(duplicates)}). Each id may appear "
            "once per call; deduplicate first (e.g. frame.drop_duplicates('id'))."
        )


def check_vectors(vectors: Any, dimensions: int, ids: Sequence[str] | None = None,
                  what: str = "vectors") -> np.ndarray:
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
            f"{len(not_finite)} {what} contain NaN or infinity (rows {_shown([names[i] for i in not_finite])}). "
            "Re-embed those texts; a store never holds them."
        )
    zero = np.flatnonzero(~array.any(axis=1))
    if len(zero):
        raise ValueError(
            f"{len(zero)} {what} are all zeros (rows {_shown([names[i] for i in zero])}): a zero vector has no "
            "direction, so its cosine similarity is undefined. Re-embed those texts."
        )
    return array


def check_query_vectors(vectors: Any, dimensions: int) -> np.ndarray:
    """One (d,) query or many (m, d) as a checked (m, d) float32 array."""
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim == 1:
        array = array[None, :]
    return check_vectors(array, dimensions, what="query vectors")


def check_top_k(top_k: Any) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or not 1 <= top_k <= MAX_TOP_K:
        raise ValueError(f"top_k must be an integer from 1 to {MAX_TOP_K:,} (Pinecone's limit); got {top_k!r}.")
    return int(top_k)


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


# --- metadata filters (Pinecone's language, evaluated locally) ---------------------------------------------------

FILTER_OPERATORS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists")
_MISSING = object()
Predicate = Callable[[Mapping[str, Any]], bool]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _same(stored: Any, wanted: Any) -> bool:
    """Equality as Pinecone sees it: numbers compare as numbers, but a bool never equals a number."""
    if isinstance(stored, bool) or isinstance(wanted, bool):
        return isinstance(stored, bool) and isinstance(wanted, bool) and stored == wanted
    if _is_number(stored) and _is_number(wanted):
        return stored == wanted
    return isinstance(stored, str) and isinstance(wanted, str) and stored == wanted


def _equals(stored: Any, wanted: Any) -> bool:
    """A list field matches when any of its elements does (Pinecone's rule for arrays of strings)."""
    if isinstance(stored, list):
        return any(_same(x, wanted) for x in stored)
    return _same(stored, wanted)


def _check_scalar(field_name: str, operator: str, value: Any) -> None:
    if not (isinstance(value, (str, bool)) or _is_number(value)):
        raise ValueError(f"Filter on {field_name!r}: {operator} takes a string, number or bool; got {value!r}.")


_COMPARISONS = {"$gt": float.__gt__, "$gte": float.__ge__, "$lt": float.__lt__, "$lte": float.__le__}
_NEGATIONS = {"$ne": "$eq", "$nin": "$in"}  # $ne is "not $eq", $nin is "not $in"


def _compile_operator(field_name: str, operator: str, value: Any) -> Predicate:
    """A predicate for `{field: {operator: value}}`; the value is checked now, so a bad filter fails before a search."""
    if operator in _NEGATIONS:
        # A record without the field matches $ne / $nin, as in MongoDB whose language Pinecone's follows. Not 100%
        # sure Pinecone does the same for missing fields; e2p's records always carry every seed key, so it is moot.
        positive = _compile_operator(field_name, _NEGATIONS[operator], value)
        return lambda m: not positive(m)
    if operator == "$eq":
        _check_scalar(field_name, operator, value)
        return lambda m: _equals(m.get(field_name, _MISSING), value)
    if operator == "$in":
        if not isinstance(value, list) or not value:
            raise ValueError(f"Filter on {field_name!r}: $in and $nin take a non-empty list; got {value!r}.")
        for element in value:
            _check_scalar(field_name, operator, element)
        return lambda m: any(_equals(m.get(field_name, _MISSING), v) for v in value)
    if operator in _COMPARISONS:
        if not _is_number(value):
            raise ValueError(f"Filter on {field_name!r}: {operator} compares numbers; got {value!r}.")
        compare, bound = _COMPARISONS[operator], float(value)
        return lambda m: _is_number(stored := m.get(field_name, _MISSING)) and compare(float(stored), bound)
    if operator == "$exists":
        if not isinstance(value, bool):
            raise ValueError(f"Filter on {field_name!r}: $exists takes true or false; got {value!r}.")
        return lambda m: (field_name in m) == value
    raise ValueError(
        f"Unknown filter operator {operator!r} on {field_name!r}; use one of {', '.join(FILTER_OPERATORS)}."
    )


def compile_filter(filter: Mapping[str, Any]) -> Predicate:
    """A function metadata -> bool for a Pinecone metadata filter; raises ValueError on an unknown operator or shape.

    Grammar: a dict whose keys are field names (implicitly AND-ed) or `$and` / `$or` (each a non-empty list of
    filters). A field maps to a plain value (equality) or to a dict of operators (all must hold).
    """
    if not isinstance(filter, Mapping) or not filter:
        raise ValueError(f"A filter is a non-empty dict such as {{'type': 'alpaca'}}; got {filter!r}.")
    clauses: list[Predicate] = []
    for key, value in filter.items():
        if key in ("$and", "$or"):
            if not isinstance(value, list) or not value:
                raise ValueError(f"{key} takes a non-empty list of filters; got {value!r}.")
            parts = [compile_filter(part) for part in value]
            combine = all if key == "$and" else any
            clauses.append(lambda m, parts=parts, combine=combine: combine(p(m) for p in parts))
        elif not isinstance(key, str) or key.startswith("$"):
            raise ValueError(f"{key!r} cannot stand at the top of a filter: use a field name, $and or $or.")
        elif isinstance(value, Mapping):
            if not value:
                raise ValueError(f"Filter on {key!r} is an empty dict; give an operator such as {{'$eq': ...}}.")
            clauses.extend(_compile_operator(key, op, operand) for op, operand in value.items())
        else:
            clauses.append(_compile_operator(key, "$eq", value))
    return lambda m: all(clause(m) for clause in clauses)


# --- the interface ------------------------------------------------------------------------------------------------


class VectorStore(ABC):
    """The verbs every backend offers. Each verb checks its input here, then calls the backend's `_verb`."""

    dimensions: int
    metric: str = METRIC
    batch_size: int = 1000  # records per write batch (a progress bar shows past one batch); backends override

    def upsert(self, ids: Sequence[str], vectors: Any, metadata: Sequence[Mapping[str, Any] | None] | None = None,
               *, namespace: str = DEFAULT_NAMESPACE, show_progress: bool | None = None) -> int:
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

    def query(self, vectors: Any, top_k: int = 10, *, filter: Mapping[str, Any] | None = None,
              exclude_ids: Sequence[str | Iterable[str] | None] | None = None,
              namespace: str = DEFAULT_NAMESPACE, include_metadata: bool = True) -> list[list[Match]]:
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
    def _upsert(self, namespace: str, ids: list[str], vectors: np.ndarray, metadata: list[dict[str, Any]],
                bar: tqdm) -> None: ...

    @abstractmethod
    def _query(self, namespace: str, queries: np.ndarray, top_k: int, filter: Mapping[str, Any] | None,
               exclusions: list[frozenset[str]], include_metadata: bool) -> list[list[Match]]: ...

    @abstractmethod
    def _fetch(self, namespace: str, ids: list[str]) -> dict[str, Record]: ...

    @abstractmethod
    def _delete(self, namespace: str, ids: list[str]) -> None: ...

    @abstractmethod
    def _count(self, namespace: str) -> int: ...

    @abstractmethod
    def _namespaces(self) -> list[str]: ...


# --- LocalVectorStore: files --------------------------------------------------------------------------------------

STORE_FORMAT = "e2p-vectorstore/1"
MAX_SEGMENTS = 32  # past this many segment files a namespace is compacted, so loading stays a handful of reads
_MANIFEST = "manifest.json"
_LOCK = ".lock"
_QUERY_BLOCK = 256  # query vectors scored at once: a (256, n) float32 score matrix is 53 MB at n = 52,002
_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _fsync_dir(path: Path) -> None:
    """Make renames inside `path` durable (a crash right after os.replace must not undo it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, value: Any) -> None:
    with atomic_file(path) as handle:
        handle.write(orjson.dumps(value))


def _read_json(path: Path) -> Any:
    return orjson.loads(path.read_bytes())


@contextmanager
def _file_lock(path: Path, exclusive: bool) -> Iterator[None]:
    """An fcntl lock on `path` (created if missing): shared for reading, exclusive for writing, across processes."""
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _namespace_folder(namespace: str) -> str:
    # quote() maps any string (including "" and "../x") to a safe folder name, reversibly
    return "ns-" + quote(namespace, safe="")


@lru_cache(maxsize=1)
def _blas_controller() -> Any:
    from threadpoolctl import ThreadpoolController  # scikit-learn's dependency; inspects the loaded BLAS once

    return ThreadpoolController()


def _one_blas_thread() -> Any:
    """Queries score with one BLAS thread. On a busy 2-core machine, waking OpenBLAS's second thread costs more than
    it saves: one query against 5,000 x 128 took 11 ms p50 with two threads, 0.08 ms with one, while other jobs ran;
    a batch of 100 against 4,965 x 384, 51 ms vs 31 ms. A matrix-vector product is memory-bound anyway."""
    return _blas_controller().limit(limits=1, user_api="blas")


def _binary_codes(vectors: np.ndarray) -> np.ndarray:
    """Sign bits of each row packed into uint64 words, (n, ceil(d / 64)): 1 bit per dimension."""
    packed = np.packbits(vectors > 0, axis=1)
    pad = (-packed.shape[1]) % 8
    if pad:
        packed = np.pad(packed, ((0, 0), (0, pad)))
    return np.ascontiguousarray(packed).view(np.uint64)


class _Namespace:
    """The live rows of one namespace in memory, mirroring its segment files on disk."""

    def __init__(self, dimensions: int):
        self.dimensions = dimensions
        self.vectors = np.empty((0, dimensions), np.float32)  # (capacity, d); rows [:size] are live
        self.inverse_norms = np.empty(0, np.float32)  # 1 / |v| per row, so raw vectors give cosines
        self.ids: list[str] = []
        self.row_of: dict[str, int] = {}
        self.metadata: list[dict[str, Any]] = []
        self.manifest: dict[str, Any] = {"next_segment": 1, "segments": []}
        self.manifest_key: tuple[int, int, int] | None = None  # (inode, mtime, size) of the manifest mirrored
        self._codes: np.ndarray | None = None

    @property
    def size(self) -> int:
        return len(self.ids)

    def _reserve(self, rows: int) -> None:
        if rows > len(self.vectors):
            capacity = max(rows, int(len(self.vectors) * 1.5))  # geometric growth: appends stay amortised O(1)
            old_capacity = len(self.vectors)  # rows past the old capacity are new: nothing to copy
            vectors = np.empty((capacity, self.dimensions), np.float32)
            vectors[:old_capacity] = self.vectors
            inverse_norms = np.empty(capacity, np.float32)
            inverse_norms[:old_capacity] = self.inverse_norms
            self.vectors, self.inverse_norms = vectors, inverse_norms

    def put(self, ids: Sequence[str], vectors: np.ndarray, metadata: Sequence[dict[str, Any]]) -> None:
        """Replace the rows whose id exists, append the others."""
        rows = np.empty(len(ids), np.int64)
        for position, record_id in enumerate(ids):
            row = self.row_of.get(record_id)
            if row is None:
                row = self.row_of[record_id] = len(self.ids)
                self.ids.append(record_id)
                self.metadata.append(metadata[position])
            else:
                self.metadata[row] = metadata[position]
            rows[position] = row
        self._reserve(self.size)
        self.vectors[rows] = vectors
        self.inverse_norms[rows] = 1.0 / np.sqrt(np.einsum("ij,ij->i", vectors, vectors))
        self._codes = None

    def remove(self, ids: Iterable[str]) -> int:
        """Drop rows by id (swap-with-last, O(d) each); returns how many existed."""
        removed = 0
        for record_id in ids:
            row = self.row_of.pop(record_id, None)
            if row is None:
                continue
            last = self.size - 1
            if row != last:
                moved = self.ids[last]
                self.vectors[row] = self.vectors[last]
                self.inverse_norms[row] = self.inverse_norms[last]
                self.ids[row], self.metadata[row] = moved, self.metadata[last]
                self.row_of[moved] = row
            self.ids.pop()
            self.metadata.pop()
            removed += 1
        self._codes = self._codes if not removed else None
        return removed

    def binary_codes(self) -> np.ndarray:
        """Sign-bit codes of the live rows, built on first use after a write."""
        if self._codes is None:
            self._codes = _binary_codes(self.vectors[:self.size])
        return self._codes


class LocalVectorStore(VectorStore):
    """An embedded on-disk store in `<root>/<name>/` (default root `data/vectorstores`); the offline default.

    Args:
        name: folder name of the store, e.g. "alpaca-minilm" (letters, digits, ".", "_", "-").
        dimensions: vector dimension; required to create a store, checked against an existing one (None = read it).
        root: parent folder; default `config.data_dir() / "vectorstores"`.
        search: "exact" (default; exact cosine by matrix product) or "binary" (sign-bit Hamming candidates,
            re-scored exactly: ~5x faster at 52k x 1,024, approximate; see bench/store.py for its recall).
        rerank_candidates: with search="binary", how many candidates per query are re-scored exactly (at least
            top_k). More is slower and closer to exact.
        batch_size: records per segment written by `upsert`; a crash loses at most the batch in flight.
    """

    def __init__(self, name: str = "default", dimensions: int | None = None, *, root: str | Path | None = None,
                 search: str = "exact", rerank_candidates: int = 256, batch_size: int = 10_000):
        if not isinstance(name, str) or not _NAME_PATTERN.fullmatch(name):
            raise ValueError(f"Store name {name!r} must be a plain folder name (letters, digits, '.', '_', '-').")
        if search not in SEARCH_MODES:
            raise ValueError(f"search must be one of {SEARCH_MODES}; got {search!r}.")
        if search == "binary" and not hasattr(np, "bitwise_count"):
            raise RuntimeError("search='binary' needs numpy >= 2.0 (np.bitwise_count); upgrade numpy or use 'exact'.")
        if int(rerank_candidates) < 1 or int(batch_size) < 1:
            raise ValueError(f"rerank_candidates ({rerank_candidates}) and batch_size ({batch_size}) must be >= 1.")
        self.name = name
        self.path = Path(root if root is not None else config.data_dir() / "vectorstores") / name
        self.search = search
        self.rerank_candidates = int(rerank_candidates)
        self.batch_size = int(batch_size)
        self.dimensions = self._open(dimensions)
        self._loaded: dict[str, _Namespace] = {}
        self._lock = threading.RLock()  # one verb at a time per process; fcntl locks order the processes

    def __repr__(self) -> str:
        return f"LocalVectorStore({self.name!r}, dimensions={self.dimensions}, search={self.search!r})"

    def _open(self, dimensions: int | None) -> int:
        """Create `store.json` on first use, else check `dimensions` against it; returns the store's dimension."""
        if dimensions is not None and (isinstance(dimensions, bool) or not isinstance(dimensions, numbers.Integral)
                                       or dimensions < 1):
            raise ValueError(f"dimensions must be a positive integer; got {dimensions!r}.")
        self.path.mkdir(parents=True, exist_ok=True)
        info_path = self.path / "store.json"
        with _file_lock(self.path / _LOCK, exclusive=True):
            if not info_path.exists():
                if dimensions is None:
                    raise ValueError(f"No store at {self.path} yet: pass dimensions= to create one.")
                _write_json(info_path, {"format": STORE_FORMAT, "dimensions": int(dimensions), "metric": METRIC})
                _fsync_dir(self.path)
            info = _read_json(info_path)
        if info.get("format") != STORE_FORMAT:
            raise ValueError(f"{info_path} is not an e2p vector store of format {STORE_FORMAT}: {info!r}.")
        if dimensions is not None and int(dimensions) != info["dimensions"]:
            raise ValueError(
                f"The store at {self.path} holds {info['dimensions']}-dimensional vectors, not {dimensions}. Use "
                "another name for vectors from another embedder, or delete that folder to start over."
            )
        return int(info["dimensions"])

    # --- namespace state: load, refresh, commit ---

    def _folder(self, namespace: str) -> Path:
        return self.path / _namespace_folder(namespace)

    @staticmethod
    def _manifest_key(folder: Path) -> tuple[int, int, int] | None:
        try:
            stat = (folder / _MANIFEST).stat()
        except FileNotFoundError:
            return None
        return stat.st_ino, stat.st_mtime_ns, stat.st_size

    def _load(self, namespace: str) -> _Namespace:
        """Rebuild a namespace by replaying its segments in order (caller holds a lock on the folder)."""
        folder = self._folder(namespace)
        state = _Namespace(self.dimensions)
        state.manifest_key = self._manifest_key(folder)
        if state.manifest_key is None:
            return state
        state.manifest = _read_json(folder / _MANIFEST)
        for segment in state.manifest["segments"]:
            payload = _read_json(folder / f"{segment['name']}.json")
            if segment["kind"] == "delete":
                state.remove(payload["ids"])
            else:
                state.put(payload["ids"], np.load(folder / f"{segment['name']}.npy"), payload["metadata"])
        return state

    def _state(self, namespace: str) -> _Namespace:
        """The namespace as committed on disk now: reloaded only if another process (or a new store) changed it."""
        state = self._loaded.get(namespace)
        folder = self._folder(namespace)
        if state is None or state.manifest_key != self._manifest_key(folder):
            if folder.is_dir():
                with _file_lock(folder / _LOCK, exclusive=False):
                    state = self._load(namespace)
            else:
                state = _Namespace(self.dimensions)
            self._loaded[namespace] = state
        return state

    def _write_segment(self, folder: Path, state: _Namespace, kind: str, ids: list[str],
                       vectors: np.ndarray | None = None, metadata: list[dict[str, Any]] | None = None) -> None:
        """Write one segment's files and a manifest that lists it (files first, so the manifest never dangles)."""
        number = state.manifest["next_segment"]
        name = f"{number:06d}"
        if vectors is not None:
            with atomic_file(folder / f"{name}.npy") as handle:
                np.save(handle, vectors)
        payload = {"kind": kind, "ids": ids} if kind == "delete" else {"kind": kind, "ids": ids, "metadata": metadata}
        _write_json(folder / f"{name}.json", payload)
        manifest = {
            "next_segment": number + 1,
            "segments": state.manifest["segments"] + [{"name": name, "kind": kind, "rows": len(ids)}],
        }
        _write_json(folder / _MANIFEST, manifest)
        _fsync_dir(folder)
        state.manifest = manifest

    @contextmanager
    def _writing(self, namespace: str) -> Iterator[tuple[Path, _Namespace]]:
        """Exclusive access to a namespace, brought up to date with what other processes committed."""
        folder = self._folder(namespace)
        folder.mkdir(parents=True, exist_ok=True)
        with _file_lock(folder / _LOCK, exclusive=True):
            state = self._loaded.get(namespace)
            if state is None or state.manifest_key != self._manifest_key(folder):
                state = self._loaded[namespace] = self._load(namespace)
            try:
                yield folder, state
                self._compact_if_needed(folder, state)
            except BaseException:
                self._loaded.pop(namespace, None)  # memory may be ahead of disk: reload from the manifest next time
                raise
            state.manifest_key = self._manifest_key(folder)

    def _compact_if_needed(self, folder: Path, state: _Namespace) -> None:
        """Rewrite the namespace as one segment when dead rows dominate or segments pile up; sweep orphan files."""
        segments = state.manifest["segments"]
        rows_on_disk = sum(s["rows"] for s in segments)
        dead_rows = rows_on_disk - state.size
        if len(segments) > MAX_SEGMENTS or dead_rows > max(state.size, 1024):
            state.manifest["segments"] = []
            if state.size:
                self._write_segment(folder, state, "upsert", list(state.ids), state.vectors[:state.size],
                                    state.metadata)
            else:
                _write_json(folder / _MANIFEST, state.manifest)
                _fsync_dir(folder)
        self._sweep(folder, state.manifest)

    @staticmethod
    def _sweep(folder: Path, manifest: Mapping[str, Any]) -> None:
        """Delete files no manifest refers to: replaced segments and leftovers of a crashed write."""
        keep = {_MANIFEST, _LOCK}
        for segment in manifest["segments"]:
            keep.update((f"{segment['name']}.json", f"{segment['name']}.npy"))
        for entry in folder.iterdir():
            if entry.name not in keep:
                entry.unlink(missing_ok=True)

    # --- the verbs ---

    def _upsert(self, namespace: str, ids: list[str], vectors: np.ndarray, metadata: list[dict[str, Any]],
                bar: tqdm) -> None:
        with self._lock:
            for start in range(0, len(ids), self.batch_size):
                stop = start + self.batch_size
                with self._writing(namespace) as (folder, state):
                    self._write_segment(folder, state, "upsert", ids[start:stop], vectors[start:stop],
                                        metadata[start:stop])
                    state.put(ids[start:stop], vectors[start:stop], metadata[start:stop])
                bar.update(len(ids[start:stop]))

    def _delete(self, namespace: str, ids: list[str]) -> None:
        with self._lock:
            if not self._folder(namespace).is_dir():
                return
            with self._writing(namespace) as (folder, state):
                present = [i for i in ids if i in state.row_of]
                if present:
                    self._write_segment(folder, state, "delete", present)
                    state.remove(present)

    def _count(self, namespace: str) -> int:
        with self._lock:
            return self._state(namespace).size

    def _namespaces(self) -> list[str]:
        with self._lock:
            names = [unquote(p.name[3:]) for p in self.path.glob("ns-*") if p.is_dir()]
            return [n for n in names if self._state(n).size]

    def _fetch(self, namespace: str, ids: list[str]) -> dict[str, Record]:
        with self._lock:
            state = self._state(namespace)
            rows = {i: state.row_of[i] for i in ids if i in state.row_of}
            return {i: Record(i, state.vectors[r].copy(), dict(state.metadata[r])) for i, r in rows.items()}

    def _query(self, namespace: str, queries: np.ndarray, top_k: int, filter: Mapping[str, Any] | None,
               exclusions: list[frozenset[str]], include_metadata: bool) -> list[list[Match]]:
        with self._lock:
            state = self._state(namespace)
            if state.size == 0:
                return [[] for _ in queries]
            allowed = None
            if filter is not None:
                predicate = compile_filter(filter)
                allowed = np.fromiter((predicate(m) for m in state.metadata), bool, state.size)
            excluded = [np.array([state.row_of[i] for i in ids if i in state.row_of], np.int64) for ids in exclusions]
            units = queries / np.linalg.norm(queries, axis=1, keepdims=True)
            search = self._exact_top_k if self.search == "exact" else self._binary_top_k
            results = []
            with _one_blas_thread():
                for start in range(0, len(units), _QUERY_BLOCK):
                    block = slice(start, start + _QUERY_BLOCK)
                    for rows, scores in search(state, units[block], top_k, allowed, excluded[block]):
                        results.append([
                            Match(state.ids[r], float(s), dict(state.metadata[r]) if include_metadata else {})
                            for r, s in zip(rows.tolist(), scores.tolist())
                        ])
            return results

    @staticmethod
    def _exact_top_k(state: _Namespace, units: np.ndarray, top_k: int, allowed: np.ndarray | None,
                     excluded: list[np.ndarray]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Exact cosines of a block of unit queries against every live row; yields (rows, scores) per query."""
        scores = units @ state.vectors[:state.size].T  # (b, n)
        scores *= state.inverse_norms[:state.size]
        if allowed is not None:
            scores[:, ~allowed] = -np.inf
        for i, rows in enumerate(excluded):
            scores[i, rows] = -np.inf
        yield from (_best(row_scores, top_k) for row_scores in scores)

    def _binary_top_k(self, state: _Namespace, units: np.ndarray, top_k: int, allowed: np.ndarray | None,
                      excluded: list[np.ndarray]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Hamming distance on sign bits picks candidates; exact cosines rank them. Approximate."""
        codes = state.binary_codes()
        unreachable = np.iinfo(np.uint32).max
        for unit, query_code, rows in zip(units, _binary_codes(units), excluded):
            distances = np.bitwise_count(codes ^ query_code).sum(axis=1, dtype=np.uint32)
            if allowed is not None:
                distances[~allowed] = unreachable
            distances[rows] = unreachable
            n_candidates = min(max(self.rerank_candidates, top_k), state.size)
            candidates = np.argpartition(distances, n_candidates - 1)[:n_candidates]
            candidates = candidates[distances[candidates] != unreachable]
            scores = (state.vectors[candidates] @ unit) * state.inverse_norms[candidates]
            best_rows, best_scores = _best(scores, top_k)
            yield candidates[best_rows], best_scores


def _best(scores: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the `top_k` largest finite scores, best first (-inf marks a row that may not match)."""
    if top_k < len(scores):
        indices = np.argpartition(-scores, top_k - 1)[:top_k]
    else:
        indices = np.arange(len(scores))
    indices = indices[np.argsort(-scores[indices], kind="stable")]
    indices = indices[np.isfinite(scores[indices])]
    return indices, scores[indices]


# --- factory ------------------------------------------------------------------------------------------------------

BACKENDS = ("local", "pinecone")


def make_vector_store(backend: str = "local", name: str | None = None, dimensions: int | None = None,
                      **kwargs: Any) -> VectorStore:
    """Build a store by backend name: "local" (default, offline; `LocalVectorStore`) or "pinecone".

    `name` is the local store's folder or the Pinecone index name (lowercase letters, digits and '-' there), so a
    notebook switches backends by changing one parameter.
    """
    named = {} if name is None else {"name" if backend == "local" else "index_name": name}
    if backend == "local":
        return LocalVectorStore(dimensions=dimensions, **named, **kwargs)
    if backend == "pinecone":
        from e2p_lib.pinecone_store import PineconeVectorStore

        return PineconeVectorStore(dimensions=dimensions, **named, **kwargs)
    raise ValueError(f"Unknown vector store backend {backend!r}: use one of {BACKENDS}.")
