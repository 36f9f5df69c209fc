"""LocalVectorStore: an embedded store in a folder under `data/vectorstores/`; works offline, the default.

Format and why
- `<root>/<name>/store.json` fixes the dimension and names the embedder (`embedder=`). Each namespace is a folder
  `ns-<quoted name>/` holding append-only *segments* (`000001.npy`: the (n, d) float32 vectors; `000001.json`: ids and
  metadata, or the ids of a delete) and a `manifest.json` listing the live segments in order, each with the sha256 of
  its two files. A write puts new segment files in place (temp file, fsync, `os.replace`), then replaces the manifest;
  a crash at any point leaves the previous manifest and its files intact and the half-written files unreferenced (they
  are swept on the next write). When dead rows outnumber live ones, or there are more than `MAX_SEGMENTS` segments,
  the namespace is compacted into one segment the same way.
- Damage is refused, never silently read: every file is hashed once when a namespace is loaded (not per query) and
  checked against the manifest, parsed and shape-checked, and its vectors must be finite; any failure is a
  `DataFileError` (`e2p_lib.errors`; `StoreCorruptedError` is the same class) naming the file and the fix. A namespace
  gets an empty manifest before its first segment is written, so segment files without a manifest can only mean the
  manifest was lost: the store refuses to open it (a write would otherwise start afresh and sweep the segments away)
  and `rebuild_manifest` recovers it from the segments.
- Append-only segments make an upsert cost what it writes, not the size of the store, and a long upload commits
  batch by batch. `.npy` plus JSON (orjson) needs nothing beyond numpy, so no database is used; lancedb and chromadb
  were not tried (chromadb's HNSW index would make search approximate by default).
- Search is exact by default: one matrix product (numpy/BLAS) against all live rows, in blocks of queries. faiss'
  flat index was slower than numpy here, so it is not used. Exact search is memory-bound at large sizes;
  `search="binary"` ranks candidates by the Hamming distance of sign bits (1 bit per dimension, 32x less memory
  traffic), then re-scores the best `rerank_candidates` exactly. Timings and the binary search's recall:
  docs/benchmarks.md#vector-store.
- Several processes may use one store: writes take an exclusive `fcntl` lock on the namespace and first reload
  anything another process committed; readers notice a new manifest and reload.
- A read needs no write access, so a read-only copy of a finished store (a read-only mount, shared with colleagues)
  answers count, query and fetch; a write there, or on a full disk, raises `DataFileError` naming the folder or file.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import logging
import os
import re
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import numpy as np
import orjson
from tqdm.auto import tqdm

from e2p_lib import config
from e2p_lib.atomic import atomic_file, fsync_dir
from e2p_lib.checks import check_positive_int
from e2p_lib.errors import READ_ONLY_ERRNOS, DataFileError, naming_os_errors
from e2p_lib.store.base import (
    DEFAULT_NAMESPACE,
    METRIC,
    Match,
    Record,
    VectorStore,
    check_embedder,
    check_embedder_name,
    shown,
)
from e2p_lib.store.filters import compile_filter

log = logging.getLogger(__name__)

# --- LocalVectorStore: files --------------------------------------------------------------------------------------

SEARCH_MODES = ("exact", "binary")
STORE_FORMAT = "e2p-vectorstore/1"
MAX_SEGMENTS = 32  # past this many segment files a namespace is compacted, so loading stays a handful of reads
_MANIFEST = "manifest.json"
_LOCK = ".lock"
_QUERY_BLOCK = 256  # query vectors scored at once: a (256, n) float32 score matrix is 53 MB at n = 52,002
_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_SEGMENT_NAME = re.compile(r"[0-9]{6}")
_SEGMENT_FILE = re.compile(r"[0-9]{6}\.(npy|json)")
_SEGMENT_KINDS = ("upsert", "delete")


StoreCorruptedError = DataFileError  # the name this module raised before every data file shared one error type


def _corrupted(path: Path, problem: str) -> DataFileError:
    folder = path.parent
    return DataFileError(
        path,
        problem,
        f"The vector store folder {folder} is damaged, so it is not read: restore it from a backup, or delete "
        f"{folder} and upsert its records again (notebooks/02_pinecone.ipynb builds the 'alpaca' store).",
    )


def _sha256(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def _write_bytes(path: Path, raw: bytes) -> str:
    """Write `raw` to `path` atomically; returns its sha256 for the manifest."""
    with atomic_file(path) as handle:
        handle.write(raw)
    return _sha256(raw)


def _write_json(path: Path, value: Any) -> str:
    return _write_bytes(path, orjson.dumps(value))


def _read_bytes(path: Path, sha256: str | None = None) -> bytes:
    """The bytes of `path`, checked against the manifest's `sha256` when it has one."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise _corrupted(path, "the file is missing although the manifest lists it") from None
    if sha256 is not None and _sha256(raw) != sha256:
        raise _corrupted(
            path,
            f"its checksum does not match the manifest's (sha256 {sha256[:12]}…): the file was "
            "truncated or changed after it was written",
        )
    return raw


def _read_json(path: Path, sha256: str | None = None) -> Any:
    raw = _read_bytes(path, sha256)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        raise _corrupted(path, f"not valid JSON ({err})") from None


def _read_manifest(path: Path) -> dict[str, Any]:
    """The manifest at `path`, its structure checked (every entry names a segment, its kind and rows)."""
    manifest = _read_json(path)
    if (
        not isinstance(manifest, dict)
        or not isinstance(manifest.get("segments"), list)
        or not isinstance(manifest.get("next_segment"), int)
    ):
        raise _corrupted(path, 'not a manifest (expected {"next_segment": int, "segments": [...]})')
    for entry in manifest["segments"]:
        ok = (
            isinstance(entry, dict)
            and isinstance(entry.get("name"), str)
            and _SEGMENT_NAME.fullmatch(entry["name"])
            and entry.get("kind") in _SEGMENT_KINDS
            and isinstance(entry.get("rows"), int)
            and entry["rows"] >= 0
            and isinstance(entry.get("sha256", {}), dict)
        )
        if not ok:
            raise _corrupted(path, f"a manifest entry is malformed: {entry!r}")
    return manifest


def _read_segment(
    folder: Path, entry: Mapping[str, Any], dimensions: int
) -> tuple[list[str], np.ndarray | None, list[dict[str, Any]] | None]:
    """(ids, vectors, metadata) of one manifest entry, every file checked; vectors and metadata None for a delete."""
    name, kind, rows, checksums = entry["name"], entry["kind"], entry["rows"], entry.get("sha256", {})
    json_path = folder / f"{name}.json"
    payload = _read_json(json_path, checksums.get("json"))
    ids = payload.get("ids") if isinstance(payload, dict) else None
    if not isinstance(ids, list) or len(ids) != rows or not all(isinstance(i, str) for i in ids):
        raise _corrupted(json_path, f"expected a list of {rows} ids (the manifest's row count)")
    if payload.get("kind") != kind:
        raise _corrupted(json_path, f"a {payload.get('kind')!r} segment where the manifest lists a {kind!r} one")
    if kind == "delete":
        return ids, None, None
    metadata = payload.get("metadata")
    if not isinstance(metadata, list) or len(metadata) != rows or not all(isinstance(m, dict) for m in metadata):
        raise _corrupted(json_path, f"expected {rows} metadata dicts, one per id")
    npy_path = folder / f"{name}.npy"
    raw = _read_bytes(npy_path, checksums.get("npy"))
    try:
        vectors = np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, EOFError, OSError) as err:
        raise _corrupted(npy_path, f"not a readable .npy array ({err})") from None
    if vectors.dtype != np.float32 or vectors.shape != (rows, dimensions):
        raise _corrupted(
            npy_path, f"holds a {vectors.dtype} array of shape {vectors.shape}, expected float32 ({rows}, {dimensions})"
        )
    bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
    if len(bad):
        raise _corrupted(npy_path, f"{len(bad)} vectors hold NaN or infinity (ids {shown([ids[i] for i in bad])})")
    return ids, vectors, metadata


def _refuse_lost_manifest(folder: Path) -> None:
    """Raise if `folder` holds segment files but no manifest: it was lost, and a write would sweep them away."""
    segments = sorted(p.name for p in folder.iterdir() if _SEGMENT_FILE.fullmatch(p.name))
    if segments:
        raise DataFileError(
            folder,
            f"it holds {len(segments)} segment files ({shown(segments, 3)}) but no {_MANIFEST}, so which of them "
            "are committed is unknown; the store refuses to open it rather than start it empty",
            f"Restore {_MANIFEST} from a backup, or call rebuild_manifest(namespace) on the store to rebuild it "
            "from the segments (each is checked; a batch a crash left uncommitted is then included).",
        )


@contextmanager
def _file_lock(path: Path, exclusive: bool) -> Iterator[None]:
    """An fcntl lock on `path` (created if missing): shared for reading, exclusive for writing, across processes.

    A read needs no write access: in a read-only copy of a store the lock file is locked through a read-only handle,
    or, where it does not exist, not at all (nothing can write there). A write there is refused, naming the folder.
    """
    if exclusive:
        with naming_os_errors(path.parent, "write to the vector store"):
            handle = open(path, "a+b")
    else:
        try:
            handle = open(path, "a+b")
        except OSError as err:
            if err.errno not in READ_ONLY_ERRNOS:  # a lock file only a reader may open
                raise
            try:
                handle = open(path, "rb")
            except FileNotFoundError:
                yield
                return
    with handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _namespace_folder(namespace: str) -> str:
    # quote() maps any string (including "" and "../x") to a safe folder name, reversibly
    return "ns-" + quote(namespace, safe="")


def _name_max(folder: Path) -> int:
    """The longest file name (bytes) the file system of `folder` takes (255 on ext4, xfs, tmpfs)."""
    return os.pathconf(folder, "PC_NAME_MAX")


@lru_cache(maxsize=1)
def _blas_controller() -> Any:
    from threadpoolctl import ThreadpoolController  # scikit-learn's dependency; inspects the loaded BLAS once

    return ThreadpoolController()


def _one_blas_thread() -> Any:
    """Queries score with one BLAS thread: a matrix-vector product is memory-bound, and on busy cores waking
    OpenBLAS's other threads costs more than it saves (docs/benchmarks.md#vector-store)."""
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
            self._codes = _binary_codes(self.vectors[: self.size])
        return self._codes


class LocalVectorStore(VectorStore):
    """An embedded on-disk store in `<root>/<name>/` (default root `data/vectorstores`); the offline default.

    Args:
        name: folder name of the store, e.g. "alpaca-minilm" (letters, digits, ".", "_", "-").
        dimensions: vector dimension; required to create a store, checked against an existing one (None = read it).
        root: parent folder; default `config.data_dir() / "vectorstores"`.
        search: "exact" (default; exact cosine by matrix product) or "binary" (sign-bit Hamming candidates,
            re-scored exactly: faster on large stores, approximate; its recall: docs/benchmarks.md#vector-store).
        rerank_candidates: with search="binary", how many candidates per query are re-scored exactly (at least
            top_k). More is slower and closer to exact.
        batch_size: records per segment written by `upsert`; a crash loses at most the batch in flight.
        embedder: name of the embedder whose vectors this handle writes and queries with (`Embedder.name`, e.g.
            "local/all-MiniLM-L6-v2"). Recorded in `store.json` when the store is created, or by the first upsert
            into a store made before e2p recorded it; a store that records another embedder raises ValueError.
            None: no check (the recorded name is still in `self.embedder`).
    """

    def __init__(
        self,
        name: str = "default",
        dimensions: int | None = None,
        *,
        embedder: str | None = None,
        root: str | Path | None = None,
        search: str = "exact",
        rerank_candidates: int = 256,
        batch_size: int = 10_000,
    ):
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
        self._claimed = check_embedder_name(embedder)
        info = self._open(dimensions)
        self.dimensions = info["dimensions"]
        self.embedder = info.get("embedder") or self._claimed
        if self._claimed is not None and "embedder" not in info:
            log.warning(
                "The store at %s records no embedder (it was made before e2p recorded embedders); its vectors are "
                "taken to be %r's, and the next upsert records that.",
                self.path,
                self._claimed,
            )
        self._name_max = _name_max(self.path)
        self._loaded: dict[str, _Namespace] = {}
        self._lock = threading.RLock()  # one verb at a time per process; fcntl locks order the processes
        self._recorded_claim = self._claimed is None or "embedder" in info

    def __repr__(self) -> str:
        return (
            f"LocalVectorStore({self.name!r}, dimensions={self.dimensions}, embedder={self.embedder!r}, "
            f"search={self.search!r})"
        )

    def _open(self, dimensions: int | None) -> dict[str, Any]:
        """Create `store.json` on first use, else check `dimensions` and the embedder against it; returns its info."""
        if dimensions is not None:
            check_positive_int(dimensions, "dimensions")
        info_path = self.path / "store.json"
        if not info_path.exists():
            if dimensions is None:
                raise ValueError(f"No store at {self.path} yet: pass dimensions= to create one.")
            with naming_os_errors(self.path, "create the vector store"):
                self.path.mkdir(parents=True, exist_ok=True)
            with _file_lock(self.path / _LOCK, exclusive=True):
                if not info_path.exists():
                    embedder = {} if self._claimed is None else {"embedder": self._claimed}
                    info = {"format": STORE_FORMAT, "dimensions": int(dimensions), "metric": METRIC, **embedder}
                    _write_json(info_path, info)
                    fsync_dir(self.path)
        info = self._read_info()
        if dimensions is not None and int(dimensions) != info["dimensions"]:
            raise ValueError(
                f"The store at {self.path} holds {info['dimensions']}-dimensional vectors, not {dimensions}. Use "
                "another name for vectors from another embedder, or delete that folder to start over."
            )
        check_embedder(info.get("embedder"), self._claimed, f"The store at {self.path}")
        return info

    def _read_info(self) -> dict[str, Any]:
        """`store.json`, checked: this format, a positive integer dimension, an embedder name if any."""
        info_path = self.path / "store.json"
        info = _read_json(info_path)
        if not isinstance(info, dict) or info.get("format") != STORE_FORMAT:
            raise _corrupted(info_path, f"not an e2p vector store of format {STORE_FORMAT} ({shown([info], 1)})")
        dimensions = info.get("dimensions")
        if type(dimensions) is not int or dimensions < 1:
            raise _corrupted(info_path, f"'dimensions' is {dimensions!r}, not a positive integer")
        if not isinstance(info.get("embedder", ""), str):
            raise _corrupted(info_path, f"'embedder' is {info['embedder']!r}, not a name")
        return info

    def _record_embedder(self) -> None:
        """Write the claimed embedder into `store.json` if the store records none yet (a store made before e2p
        recorded it); raise if another process recorded another one since this handle opened."""
        if self._claimed is None or self._recorded_claim:
            return
        info_path = self.path / "store.json"
        with _file_lock(self.path / _LOCK, exclusive=True):
            info = self._read_info()
            check_embedder(info.get("embedder"), self._claimed, f"The store at {self.path}")
            if "embedder" not in info:
                _write_json(info_path, {**info, "embedder": self._claimed})
                fsync_dir(self.path)
        self._recorded_claim = True

    # --- namespace state: load, refresh, commit ---

    def _folder(self, namespace: str) -> Path:
        """The namespace's folder; raises ValueError when its name is too long for the file system."""
        name = _namespace_folder(namespace)  # ASCII: quote() escapes everything else
        if len(name) > self._name_max:
            shown_name = namespace if len(namespace) <= 40 else namespace[:40] + "…"
            raise ValueError(
                f"Namespace {shown_name!r} ({len(namespace)} characters) needs a folder name of {len(name)} bytes, "
                f"over the {self._name_max}-byte limit of the file system under {self.path} (quoting turns each "
                "UTF-8 byte of a character other than a letter, digit or '_.-~' into 3). Use a shorter namespace, "
                "e.g. a hash of this one."
            )
        return self.path / name

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
            _refuse_lost_manifest(folder)
            return state
        state.manifest = _read_manifest(folder / _MANIFEST)
        for entry in state.manifest["segments"]:
            ids, vectors, metadata = _read_segment(folder, entry, self.dimensions)
            if vectors is None:
                state.remove(ids)
            else:
                state.put(ids, vectors, metadata)
        return state

    def rebuild_manifest(self, namespace: str = DEFAULT_NAMESPACE) -> int:
        """Recover a namespace whose manifest was lost from its segment files; returns how many records it holds.

        Segments are replayed in order, each checked as on open; a segment whose `.json` is missing was never
        committed (it is written after the `.npy`) and is left out. A batch a crash left uncommitted but whole is
        included, so the store may hold one batch more than it last committed.

        Raises:
            ValueError: the namespace still has a manifest (nothing to rebuild).
            StoreCorruptedError: a segment is damaged (named).
        """
        with self._lock:
            folder = self._folder(namespace)
            with _file_lock(folder / _LOCK, exclusive=True):
                if (folder / _MANIFEST).exists():
                    raise ValueError(f"{folder} has a manifest; nothing to rebuild (delete it first if it is wrong).")
                state = _Namespace(self.dimensions)
                names = sorted({p.stem for p in folder.iterdir() if _SEGMENT_FILE.fullmatch(p.name)})
                entries = []
                for name in names:
                    json_path = folder / f"{name}.json"
                    if not json_path.exists():
                        continue
                    payload = _read_json(json_path)
                    if not isinstance(payload, dict) or payload.get("kind") not in _SEGMENT_KINDS:
                        raise _corrupted(json_path, "not a segment (no 'kind' of 'upsert' or 'delete')")
                    entry = {"name": name, "kind": payload["kind"], "rows": len(payload.get("ids") or [])}
                    ids, vectors, metadata = _read_segment(folder, entry, self.dimensions)
                    files = [json_path] + ([folder / f"{name}.npy"] if vectors is not None else [])
                    entry["sha256"] = {p.suffix[1:]: _sha256(p.read_bytes()) for p in files}
                    if vectors is None:
                        state.remove(ids)
                    else:
                        state.put(ids, vectors, metadata)
                    entries.append(entry)
                next_segment = int(names[-1]) + 1 if names else 1
                _write_json(folder / _MANIFEST, {"next_segment": next_segment, "segments": entries})
                fsync_dir(folder)
                self._loaded.pop(namespace, None)
                return state.size

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

    def _write_segment(
        self,
        folder: Path,
        state: _Namespace,
        kind: str,
        ids: list[str],
        vectors: np.ndarray | None = None,
        metadata: list[dict[str, Any]] | None = None,
    ) -> None:
        """Write one segment's files and a manifest that lists it (files first, so the manifest never dangles)."""
        number = state.manifest["next_segment"]
        name = f"{number:06d}"
        checksums = {}
        if vectors is not None:
            buffer = io.BytesIO()
            np.save(buffer, np.ascontiguousarray(vectors, dtype=np.float32))
            checksums["npy"] = _write_bytes(folder / f"{name}.npy", buffer.getvalue())
        payload = {"kind": kind, "ids": ids} if kind == "delete" else {"kind": kind, "ids": ids, "metadata": metadata}
        checksums["json"] = _write_json(folder / f"{name}.json", payload)
        entry = {"name": name, "kind": kind, "rows": len(ids), "sha256": checksums}
        manifest = {"next_segment": number + 1, "segments": state.manifest["segments"] + [entry]}
        _write_json(folder / _MANIFEST, manifest)
        fsync_dir(folder)
        state.manifest = manifest

    @contextmanager
    def _writing(self, namespace: str) -> Iterator[tuple[Path, _Namespace]]:
        """Exclusive access to a namespace, brought up to date with what other processes committed."""
        folder = self._folder(namespace)
        with naming_os_errors(folder, "write to the vector store"):
            folder.mkdir(parents=True, exist_ok=True)
        with _file_lock(folder / _LOCK, exclusive=True):
            if not (folder / _MANIFEST).exists():
                # A new namespace: an empty manifest comes first, so segment files without one mean a lost manifest.
                _refuse_lost_manifest(folder)
                _write_json(folder / _MANIFEST, {"next_segment": 1, "segments": []})
                fsync_dir(folder)
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
                self._write_segment(
                    folder, state, "upsert", list(state.ids), state.vectors[: state.size], state.metadata
                )
            else:
                _write_json(folder / _MANIFEST, state.manifest)
                fsync_dir(folder)
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

    def _upsert(
        self, namespace: str, ids: list[str], vectors: np.ndarray, metadata: list[dict[str, Any]], bar: tqdm
    ) -> None:
        with self._lock:
            self._record_embedder()
            for start in range(0, len(ids), self.batch_size):
                stop = start + self.batch_size
                with self._writing(namespace) as (folder, state):
                    self._write_segment(
                        folder, state, "upsert", ids[start:stop], vectors[start:stop], metadata[start:stop]
                    )
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

    def _query(
        self,
        namespace: str,
        queries: np.ndarray,
        top_k: int,
        filter: Mapping[str, Any] | None,
        exclusions: list[frozenset[str]],
        include_metadata: bool,
    ) -> list[list[Match]]:
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
                        results.append(
                            [
                                Match(state.ids[r], float(s), dict(state.metadata[r]) if include_metadata else {})
                                for r, s in zip(rows.tolist(), scores.tolist())
                            ]
                        )
            return results

    @staticmethod
    def _exact_top_k(
        state: _Namespace, units: np.ndarray, top_k: int, allowed: np.ndarray | None, excluded: list[np.ndarray]
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Exact cosines of a block of unit queries against every live row; yields (rows, scores) per query."""
        scores = units @ state.vectors[: state.size].T  # (b, n)
        scores *= state.inverse_norms[: state.size]
        if allowed is not None:
            scores[:, ~allowed] = -np.inf
        for i, rows in enumerate(excluded):
            scores[i, rows] = -np.inf
        yield from (_top_k_scores(row_scores, top_k) for row_scores in scores)

    def _binary_top_k(
        self, state: _Namespace, units: np.ndarray, top_k: int, allowed: np.ndarray | None, excluded: list[np.ndarray]
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
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
            best_rows, best_scores = _top_k_scores(scores, top_k)
            yield candidates[best_rows], best_scores


def _top_k_scores(scores: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the `top_k` largest finite scores, best first (-inf marks a row that may not match)."""
    if top_k < len(scores):
        indices = np.argpartition(-scores, top_k - 1)[:top_k]
    else:
        indices = np.arange(len(scores))
    indices = indices[np.argsort(-scores[indices], kind="stable")]
    indices = indices[np.isfinite(scores[indices])]
    return indices, scores[indices]
