"""PineconeVectorStore: the `VectorStore` verbs on a Pinecone serverless index, through the official SDK (v10, REST).

For stores that outgrow one machine. Same verbs, same checks and same filter language as `LocalVectorStore`
(`e2p_lib.store`), so code and tests move between the two unchanged.

    >>> # PINECONE_API_KEY in the environment or in .env (never in code, logs or reprs)
    >>> store = make_vector_store("pinecone", index_name="e2p-alpaca", dimensions=1024)
    >>> store.upsert(ds.ids, ds.vectors, ds.frame.to_dict("records"))    # resumable; progress bar
    >>> store.query(ds.vectors[0], top_k=10, filter={"tokens": {"$lt": 200}})

Index: created when missing (cosine metric, serverless) and waited for until ready; an existing index must have
the same dimension and metric, or the constructor raises naming both. The embedder's name (`embedder=`) is kept in
the index's `e2p_embedder` tag and checked the same way.

Upload, within Pinecone's limits:
- at most 1,000 records and 2 MB (of encoded JSON) per upsert request; requests are packed by their encoded size,
  `max_concurrent_requests` in flight, a bounded number built ahead so memory stays flat at 52k x 1,024;
- metadata at most 40 KB per record: longer string fields (the output, in practice) are cut to fit, and the record
  gets `truncated: True` and `truncated_fields: [...]`. The full text stays in the embedding cache;
- null metadata values are refused before sending (Pinecone would silently drop the key);
- 429 and 5xx answers are retried with backoff by the SDK itself (3 retries, decorrelated jitter, honouring
  `Retry-After`); what still fails is reported after the other requests finish;
- resumable: each acknowledged record's digest (id, vector, metadata) is appended to a journal under
  `data/pinecone_uploads/` (one per index host and namespace), so rerunning an interrupted `upsert` with the same
  arguments sends only what is missing (or changed). If the index holds fewer records than the journal claims (it
  was recreated or cleared), the journal is dropped and everything is sent again.

Queries: Pinecone answers one vector per request; many query vectors go out concurrently. `exclude_ids` is applied
client-side (Pinecone cannot filter on ids): each query asks for `top_k` + the number excluded. `count()` and
`namespaces()` read `describe_index_stats`, which Pinecone updates eventually, not instantly, after a write.
Metadata numbers come back as floats (Pinecone stores numbers as 64-bit floats).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import orjson
from tqdm.auto import tqdm

from e2p_lib import config
from e2p_lib.atomic import atomic_file, fsync_dir
from e2p_lib.errors import naming_os_errors
from e2p_lib.store.base import (
    MAX_TOP_K,
    METRIC,
    Match,
    Record,
    VectorStore,
    check_embedder,
    check_embedder_name,
    shown,
)

log = logging.getLogger(__name__)

# Pinecone's documented limits (docs.pinecone.io, "Limits"): 1,000 records and 2 MB per upsert request, 40 KB of
# metadata per record.
MAX_RECORDS_PER_REQUEST = 1_000
MAX_REQUEST_BYTES = 2 * 1024 * 1024
MAX_METADATA_BYTES = 40 * 1024
# We pack requests to this many encoded bytes: 64 KB below the limit leaves room for the envelope and for any
# difference between our size estimate and the server's count.
REQUEST_BYTES_BUDGET = MAX_REQUEST_BYTES - 64 * 1024
FETCH_IDS_PER_REQUEST = 100  # fetch sends ids in the URL of a GET: 100 x 512 characters stays under URL limits
DELETE_IDS_PER_REQUEST = 1_000
DENSE_FIELD = "_values"  # the schema field name the vectors API reads dense values from (SDK 10's legacy schema)
EMBEDDER_TAG = "e2p_embedder"  # the index tag that records the embedder's name
MAX_TAG_VALUE_CHARACTERS = 120  # Pinecone's limit on a tag value (printable ASCII)


# --- metadata within 40 KB ----------------------------------------------------------------------------------------


def fit_metadata(record_id: str, metadata: dict[str, Any], max_bytes: int = MAX_METADATA_BYTES) -> dict[str, Any]:
    """`metadata` unchanged if its JSON fits in `max_bytes`; else its longest strings cut until it does.

    A cut record carries `truncated: True` and `truncated_fields` (the keys cut). Raises ValueError if cutting strings
    cannot make it fit (e.g. a huge list of strings).
    """
    if len(orjson.dumps(metadata)) <= max_bytes:
        return metadata
    fitted = dict(metadata, truncated=True, truncated_fields=[])
    string_keys = [k for k, v in metadata.items() if isinstance(v, str)]
    for _ in range(4 * len(string_keys)):  # bounded: each pass removes at least the measured excess from one field
        excess = len(orjson.dumps(fitted)) - max_bytes
        if excess <= 0:
            return fitted
        key = max(string_keys, key=lambda k: len(fitted[k]))
        encoded = fitted[key].encode("utf-8")
        if not encoded:
            break
        # JSON escapes (\n, \") make a character cost more than its UTF-8 bytes: cut in proportion, plus a margin.
        json_bytes_per_byte = (len(orjson.dumps(fitted[key])) - 2) / len(encoded)
        cut = int(excess / json_bytes_per_byte) + 16
        fitted[key] = encoded[: max(0, len(encoded) - cut)].decode("utf-8", errors="ignore")
        if key not in fitted["truncated_fields"]:
            fitted["truncated_fields"].append(key)
    raise ValueError(
        f"Metadata of id {record_id!r} is {len(orjson.dumps(metadata)):,} bytes as JSON, over Pinecone's "
        f"{max_bytes:,}-byte limit, and cutting its strings does not make it fit: shrink its non-string values."
    )


# --- requests within 1,000 records and 2 MB -------------------------------------------------------------------


def pack_requests(
    records: Iterable[dict[str, Any]], max_records: int = MAX_RECORDS_PER_REQUEST, max_bytes: int = REQUEST_BYTES_BUDGET
) -> Iterator[list[dict[str, Any]]]:
    """Group wire records ({"id", "values", "metadata"}) into requests of at most `max_records` and `max_bytes`.

    The size is that of the JSON the SDK sends (orjson, as it uses), plus a comma per record.
    """
    batch: list[dict[str, Any]] = []
    batch_bytes = 0
    for record in records:
        size = len(orjson.dumps(record)) + 1
        if size > max_bytes:
            raise ValueError(
                f"Record {record['id']!r} alone is {size:,} bytes as JSON, over the {max_bytes:,}-byte request "
                "budget; its vector is too wide for one Pinecone request."
            )
        if batch and (len(batch) == max_records or batch_bytes + size > max_bytes):
            yield batch
            batch, batch_bytes = [], 0
        batch.append(record)
        batch_bytes += size
    if batch:
        yield batch


def record_digest(record_id: str, vector: np.ndarray, metadata: Mapping[str, Any]) -> str:
    """Content digest of a record: a rerun skips a record only if this exact id, vector and metadata landed."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(orjson.dumps([record_id, metadata], option=orjson.OPT_SORT_KEYS))
    digest.update(np.ascontiguousarray(vector, np.float32).tobytes())
    return digest.hexdigest()


# --- the upload journal -------------------------------------------------------------------------------------------


class UploadJournal:
    """Which records Pinecone acknowledged, for one index and namespace, so an interrupted upload resumes.

    One JSON line `[digest, id]` per acknowledged record, appended and fsynced after each request; the last line
    for an id wins. A line torn by a crash is ignored on reading (its record is simply sent again).
    """

    def __init__(self, path: Path):
        self.path = path
        self._digest_of: dict[str, str] = {}
        self._lock = threading.Lock()  # requests finish on several threads
        if path.exists():
            for line in path.read_bytes().splitlines():
                try:
                    digest, record_id = orjson.loads(line)
                except (orjson.JSONDecodeError, ValueError, TypeError):
                    continue  # a torn last line from a crash: that record is re-sent
                self._digest_of[record_id] = digest

    def __len__(self) -> int:
        return len(self._digest_of)

    def holds(self, record_id: str, digest: str) -> bool:
        return self._digest_of.get(record_id) == digest

    def record(self, pairs: Sequence[tuple[str, str]]) -> None:
        """Append (id, digest) pairs Pinecone has acknowledged."""
        with self._lock, naming_os_errors(self.path, "record the upload in its journal"):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "ab") as handle:
                handle.write(b"".join(orjson.dumps([d, i]) + b"\n" for i, d in pairs))
                handle.flush()
                os.fsync(handle.fileno())
            self._digest_of.update(pairs)

    def forget(self, ids: Iterable[str]) -> None:
        """Drop ids (deleted from the index), rewriting the journal atomically."""
        with self._lock:
            removed = [i for i in ids if self._digest_of.pop(i, None) is not None]
            if removed or not self._digest_of:
                self._rewrite()

    def clear(self) -> None:
        with self._lock:
            self._digest_of.clear()
            self._rewrite()

    def _rewrite(self) -> None:
        if not self.path.exists():
            return
        with atomic_file(self.path) as handle:
            handle.write(b"".join(orjson.dumps([d, i]) + b"\n" for i, d in self._digest_of.items()))
        fsync_dir(self.path.parent)


def _bounded_map(
    pool: ThreadPoolExecutor, function: Callable[[Any], Any], items: Iterable[Any], in_flight: int
) -> Iterator[tuple[Any, Future]]:
    """Submit `function(item)` for each item with at most `in_flight` pending; yields (item, done future).

    Bounding what is submitted keeps memory flat: the items (request payloads) are built lazily from the iterator.
    """
    pending: dict[Future, Any] = {}
    for item in items:
        if len(pending) >= in_flight:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            yield from ((pending.pop(f), f) for f in done)
        pending[pool.submit(function, item)] = item
    while pending:
        done, _ = wait(pending, return_when=FIRST_COMPLETED)
        yield from ((pending.pop(f), f) for f in done)


# --- the store ------------------------------------------------------------------------------------------------------


class PineconeVectorStore(VectorStore):
    """A Pinecone serverless index behind the `VectorStore` verbs. The API key comes from PINECONE_API_KEY only.

    Args:
        index_name: Pinecone index name (lowercase letters, digits, "-"), e.g. "e2p-alpaca".
        dimensions: vector dimension; required to create the index, checked against an existing one.
        cloud, region: where a new serverless index lives (default "aws", "us-east-1").
        controller_host: control-plane URL; None = the SDK's default (PINECONE_CONTROLLER_HOST, then Pinecone).
        index_host: data-plane URL of the index; None = the host the control plane reports.
        ready_timeout_seconds: how long to wait for a new index to become ready before raising TimeoutError.
        ready_poll_seconds: seconds between readiness checks.
        max_concurrent_requests: upsert/query requests in flight at once.
        journal_dir: where upload journals live; default `config.data_dir() / "pinecone_uploads"`.
        batch_size: records per progress step; requests are packed to Pinecone's limits regardless.
        embedder: name of the embedder whose vectors this handle writes and queries with (`Embedder.name`). Kept
            in the index's `e2p_embedder` tag when the index is created, or by the first upsert into an index
            without one; an index tagged with another embedder raises ValueError. None: no check.
    """

    def __init__(
        self,
        index_name: str = "e2p",
        dimensions: int | None = None,
        *,
        cloud: str = "aws",
        region: str = "us-east-1",
        controller_host: str | None = None,
        index_host: str | None = None,
        ready_timeout_seconds: float = 300.0,
        ready_poll_seconds: float = 5.0,
        max_concurrent_requests: int = 4,
        journal_dir: str | Path | None = None,
        batch_size: int = 1000,
        embedder: str | None = None,
    ):
        from pinecone import Pinecone

        api_key = os.environ.get("PINECONE_API_KEY", "")
        if not api_key.strip():
            raise RuntimeError(
                "PINECONE_API_KEY is not set. Put it in the environment or in the project's .env file (never in "
                "code or a notebook), or use the offline default: make_vector_store('local', ...)."
            )
        if not 1 <= int(max_concurrent_requests) <= 64:
            raise ValueError(f"max_concurrent_requests must be from 1 to 64; got {max_concurrent_requests}.")
        self.index_name = index_name
        self.max_concurrent_requests = int(max_concurrent_requests)
        self.batch_size = int(batch_size)
        self.journal_dir = Path(journal_dir if journal_dir is not None else config.data_dir() / "pinecone_uploads")
        self._journals: dict[str, UploadJournal] = {}
        self._claimed = check_embedder_name(embedder)
        self._client = Pinecone(api_key=api_key, host=controller_host)
        description = self._ensure_index(dimensions, cloud, region, ready_timeout_seconds, ready_poll_seconds)
        recorded = (description.tags or {}).get(EMBEDDER_TAG)
        check_embedder(recorded, self._claimed, f"Pinecone index {self.index_name!r}")
        self.embedder = recorded or self._claimed
        self._recorded_claim = self._claimed is None or recorded is not None
        if not self._recorded_claim:
            log.warning(
                "Pinecone index %r has no %s tag (it was made before e2p recorded embedders); its vectors are "
                "taken to be %r's, and the next upsert tags it so.",
                self.index_name,
                EMBEDDER_TAG,
                self._claimed,
            )
        self.host = index_host or description.host
        self._index = self._client.index(host=self.host)

    def __repr__(self) -> str:
        return (
            f"PineconeVectorStore({self.index_name!r}, dimensions={self.dimensions}, embedder={self.embedder!r}, "
            f"host={self.host!r})"
        )

    # --- the index: create or check, then wait until ready ---

    def _ensure_index(
        self, dimensions: int | None, cloud: str, region: str, timeout_seconds: float, poll_seconds: float
    ) -> Any:
        from pinecone.errors.exceptions import ConflictError

        indexes = self._client.indexes
        if not indexes.exists(self.index_name):
            if dimensions is None:
                raise ValueError(f"Pinecone index {self.index_name!r} does not exist: pass dimensions= to create it.")
            try:
                indexes.create(
                    name=self.index_name,
                    schema={
                        "fields": {
                            DENSE_FIELD: {"type": "dense_vector", "dimension": int(dimensions), "metric": METRIC}
                        }
                    },
                    deployment={"deployment_type": "managed", "cloud": cloud, "region": region},
                    tags=self._embedder_tag(),
                    timeout=-1,  # we poll ourselves, at ready_poll_seconds, with a deadline
                )
                log.info(
                    "Created Pinecone index %r (%d dimensions, %s, %s/%s)",
                    self.index_name,
                    dimensions,
                    METRIC,
                    cloud,
                    region,
                )
            except ConflictError:
                pass  # another process created it first: check it like any existing index
        description = self._wait_until_ready(timeout_seconds, poll_seconds)
        self.dimensions = self._check_schema(description, dimensions)
        return description

    def _wait_until_ready(self, timeout_seconds: float, poll_seconds: float) -> Any:
        deadline = time.monotonic() + timeout_seconds
        while True:
            description = self._client.indexes.describe(self.index_name)
            if description.status.ready:
                return description
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"Pinecone index {self.index_name!r} is still {description.status.state!r} after "
                    f"{timeout_seconds} s; raise ready_timeout_seconds or try again later."
                )
            time.sleep(poll_seconds)

    def _check_schema(self, description: Any, dimensions: int | None) -> int:
        from pinecone.models.indexes.schema import DenseVectorField

        dense = [f for f in description.schema.fields.values() if isinstance(f, DenseVectorField)]
        if len(dense) != 1:
            raise ValueError(
                f"Pinecone index {self.index_name!r} has {len(dense)} dense vector fields; e2p needs an index with "
                "exactly one (created with a dimension and metric). Use another index_name."
            )
        field = dense[0]
        if field.metric != METRIC or (dimensions is not None and field.dimension != int(dimensions)):
            raise ValueError(
                f"Pinecone index {self.index_name!r} has dimension {field.dimension} and metric {field.metric!r}; "
                f"e2p needs dimension {dimensions} and metric {METRIC!r}. Use another index_name, or delete that "
                "index if it is yours to delete."
            )
        return int(field.dimension)

    # --- the embedder: a tag on the index ---

    def _embedder_tag(self) -> dict[str, str] | None:
        """{EMBEDDER_TAG: name} for the claimed embedder, or None when there is none or it cannot be a tag value."""
        name = self._claimed
        if name is None:
            return None
        if len(name) > MAX_TAG_VALUE_CHARACTERS or not (name.isascii() and name.isprintable()):
            log.warning(
                "The embedder name %r is not a Pinecone tag value (printable ASCII, at most %d characters), so "
                "index %r cannot record it; it is checked by no later handle.",
                name,
                MAX_TAG_VALUE_CHARACTERS,
                self.index_name,
            )
            return None
        return {EMBEDDER_TAG: name}

    def _record_embedder(self) -> None:
        """Tag an index without an embedder tag with the claimed one; raise if another was tagged since opening."""
        if self._recorded_claim:
            return
        recorded = (self._client.indexes.describe(self.index_name).tags or {}).get(EMBEDDER_TAG)
        check_embedder(recorded, self._claimed, f"Pinecone index {self.index_name!r}")
        tag = self._embedder_tag()
        if recorded is None and tag is not None:
            self._client.indexes.configure(self.index_name, tags=tag)  # merged into the index's other tags
        self._recorded_claim = True

    # --- upsert: pack, send concurrently, journal ---

    def _journal(self, namespace: str) -> UploadJournal:
        if namespace not in self._journals:
            # The host names the index instance: a recreated index (new host) or another server starts a new journal.
            host = hashlib.blake2b(self.host.encode(), digest_size=4).hexdigest()
            name = f"{quote(self.index_name, safe='')}-{host}.ns-{quote(namespace, safe='')}.jsonl"
            self._journals[namespace] = UploadJournal(self.journal_dir / name)
        return self._journals[namespace]

    def _upsert(
        self, namespace: str, ids: list[str], vectors: np.ndarray, metadata: list[dict[str, Any]], bar: tqdm
    ) -> None:
        from pinecone.errors.exceptions import PineconeError

        self._record_embedder()
        journal = self._journal(namespace)
        if len(journal) and self._count(namespace) < len(journal):
            log.warning(
                "Pinecone index %r holds fewer records in namespace %r than the upload journal %s lists: "
                "it was recreated or cleared, so every record is sent again.",
                self.index_name,
                namespace,
                journal.path,
            )
            journal.clear()

        digests: dict[str, str] = {}

        def wire_records() -> Iterator[dict[str, Any]]:
            skipped = 0
            for record_id, vector, entry in zip(ids, vectors, metadata):
                fitted = fit_metadata(record_id, entry)
                digest = record_digest(record_id, vector, fitted)
                if journal.holds(record_id, digest):
                    skipped += 1
                    continue
                digests[record_id] = digest
                yield {"id": record_id, "values": vector.tolist(), "metadata": fitted}
            bar.update(skipped)

        def send(request: list[dict[str, Any]]) -> None:
            self._index.upsert(vectors=request, namespace=namespace)

        failed_records: list[str] = []
        errors: list[Exception] = []
        with ThreadPoolExecutor(self.max_concurrent_requests, thread_name_prefix="pinecone-upsert") as pool:
            requests = pack_requests(wire_records())
            for request, future in _bounded_map(pool, send, requests, 2 * self.max_concurrent_requests):
                try:
                    future.result()
                except PineconeError as error:  # on purpose: finish the other requests, then report all failures
                    failed_records.extend(r["id"] for r in request)
                    errors.append(error)
                    continue
                journal.record([(r["id"], digests.pop(r["id"])) for r in request])
                bar.update(len(request))
        if errors:
            raise RuntimeError(
                f"{len(failed_records)} of {len(ids)} records were not stored in Pinecone index {self.index_name!r} "
                f"(namespace {namespace!r}) after the SDK's retries, e.g. {shown(failed_records, 3)}; first error: "
                f"{errors[0]}. Rerun the same upsert: records already stored are skipped (journal {journal.path})."
            ) from errors[0]

    # --- the other verbs ---

    def _query(
        self,
        namespace: str,
        queries: np.ndarray,
        top_k: int,
        filter: Mapping[str, Any] | None,
        exclusions: list[frozenset[str]],
        include_metadata: bool,
    ) -> list[list[Match]]:
        def one(position: int) -> list[Match]:
            excluded = exclusions[position]
            response = self._index.query(
                vector=queries[position].tolist(),
                top_k=min(top_k + len(excluded), MAX_TOP_K),
                namespace=namespace,
                filter=dict(filter) if filter is not None else None,
                include_metadata=include_metadata,
            )
            matches = [m for m in response.matches if m.id not in excluded][:top_k]
            return [Match(m.id, float(m.score), dict(m.metadata or {}) if include_metadata else {}) for m in matches]

        if len(queries) == 1:
            return [one(0)]
        with ThreadPoolExecutor(self.max_concurrent_requests, thread_name_prefix="pinecone-query") as pool:
            return list(pool.map(one, range(len(queries))))

    def _fetch(self, namespace: str, ids: list[str]) -> dict[str, Record]:
        found: dict[str, Record] = {}
        for start in range(0, len(ids), FETCH_IDS_PER_REQUEST):
            response = self._index.fetch(ids=ids[start : start + FETCH_IDS_PER_REQUEST], namespace=namespace)
            for record_id, vector in response.vectors.items():
                found[record_id] = Record(record_id, np.asarray(vector.values, np.float32), dict(vector.metadata or {}))
        return {i: found[i] for i in ids if i in found}  # in the order asked

    def _delete(self, namespace: str, ids: list[str]) -> None:
        for start in range(0, len(ids), DELETE_IDS_PER_REQUEST):
            chunk = ids[start : start + DELETE_IDS_PER_REQUEST]
            self._index.delete(ids=chunk, namespace=namespace)
            self._journal(namespace).forget(chunk)

    def _stats(self) -> dict[str, int]:
        return {ns: s.vector_count for ns, s in self._index.describe_index_stats().namespaces.items()}

    def _count(self, namespace: str) -> int:
        return self._stats().get(namespace, 0)

    def _namespaces(self) -> list[str]:
        return [ns for ns, n in self._stats().items() if n]


__all__ = ["PineconeVectorStore", "UploadJournal", "fit_metadata", "pack_requests", "record_digest"]
