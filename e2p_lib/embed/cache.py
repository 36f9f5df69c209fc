"""The embedding cache: every text is embedded (and paid for) once, and a killed run resumes where it stopped.

One SQLite file per vector space, `<cache_dir>/<model>-<dimensions>d.sqlite`, holds

- `meta`: the embedder's name and dimensions, when the file was made, the schema version. Opening a file with
  another embedder or dimension raises: vectors from two spaces are never silently mixed.
- `vectors`: one row per distinct text, keyed by the sha256 of the text, with its float32 vector and token count.
  Keying by content means a repeated text (the same answer to two prompts, a text in two datasets) is embedded
  and paid for once.
- `records`: the dataset rows last embedded into this file (`id`, `prompt`, `output`, `tokens`, `type`, text key),
  so later notebooks load ids, metadata and vectors from this one file without re-reading Alpaca.

Why SQLite rather than .npy chunks: each batch is committed in one transaction, so a SIGKILL at any point leaves either
the whole batch or none of it (no lost or duplicated rows, no half-written file), and several processes may write to
the same cache at once. It ships with Python.

    >>> from e2p_lib.data import load_alpaca
    >>> from e2p_lib.embed import make_embedder
    >>> ds = embed_dataset(load_alpaca(limit=100), make_embedder("local"))
    >>> ds.vectors.shape, ds.frame.columns.tolist()
    ((100, 384), ['id', 'prompt', 'output', 'tokens', 'type'])
    >>> ds = load_embedded_dataset(model="local/all-MiniLM-L6-v2", dimensions=384)   # in the next notebook
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from e2p_lib import config
from e2p_lib.embed.base import Embedder, check_texts
from e2p_lib.errors import DataFileError
from e2p_lib.sqlite_store import SQLiteCache
from e2p_lib.tokens import count_tokens

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
RECORD_COLUMNS = ["id", "prompt", "output", "tokens", "type"]
# Rows handed to an embedder without an `iter_embed` of its own, and so committed, at a time: small enough that a
# crash loses little work, large enough that the per-commit cost (~1 ms) is noise next to embedding them.
DEFAULT_CHUNK_ROWS = 512
# How far a cached vector's norm may stray from 1: float32 normalisation is off by ~1e-7, so more means damage.
UNIT_NORM_TOLERANCE = 1e-3


def text_key(text: str) -> str:
    """Content key of a text: sha256 of its UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def embedding_cache_path(model: str, dimensions: int, cache_dir: str | Path | None = None) -> Path:
    """File that holds the vectors of `model` at `dimensions` (a readable, filesystem-safe name)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model).strip("_")
    return Path(cache_dir or config.embeddings_dir()) / f"{slug}-{int(dimensions)}d.sqlite"


def _check_rows(blobs: Sequence[bytes], dimensions: int) -> tuple[np.ndarray, list[str | None]]:
    """(n, dimensions) vectors of stored blobs, and per row None or what is wrong with it (bad rows are zeros).

    A row is sound when it holds `dimensions` finite float32 values of unit norm: every embedder L2-normalises, so
    anything else was damaged on disk and must not reach a store or a reward.
    """
    sizes_ok = np.fromiter((isinstance(b, bytes) and len(b) == 4 * dimensions for b in blobs), bool, len(blobs))
    vectors = np.zeros((len(blobs), dimensions), np.float32)
    if sizes_ok.any():
        joined = b"".join(b for b, ok in zip(blobs, sizes_ok) if ok)
        vectors[sizes_ok] = np.frombuffer(joined, np.float32).reshape(-1, dimensions)
    finite = np.isfinite(vectors).all(axis=1)
    with np.errstate(over="ignore", invalid="ignore"):
        norms = np.linalg.norm(np.where(finite[:, None], vectors, 0), axis=1)
    problems: list[str | None] = [None] * len(blobs)
    for row in np.flatnonzero(~sizes_ok | ~finite | (np.abs(norms - 1) > UNIT_NORM_TOLERANCE)):
        if not sizes_ok[row]:
            problems[row] = f"{len(blobs[row])} bytes, not {4 * dimensions} ({dimensions} float32 values)"
        elif not finite[row]:
            problems[row] = "NaN or infinite values"
        else:
            problems[row] = f"norm {norms[row]:.6g}, not 1"
        vectors[row] = 0
    return vectors, problems


class EmbeddingCache(SQLiteCache):
    """Vectors of one embedder at one dimension, keyed by text content; safe against crashes and concurrent writers.

    Every vector read is checked (`_check_rows`): a damaged one is logged and treated as missing, so it is embedded
    again and replaced, never returned. `model` and `dimensions` None: those the file records (it must exist).
    """

    def __init__(self, path: str | Path, model: str | None = None, dimensions: int | None = None):
        recorded = {
            "model": model,
            "dimensions": None if dimensions is None else str(int(dimensions)),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "schema_version": str(SCHEMA_VERSION),
        }
        super().__init__(  # WAL, explicit transactions (one per batch), waits for other writers
            path,
            [
                "CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, vector BLOB NOT NULL, "
                "tokens INTEGER, created_at REAL NOT NULL)",
                "CREATE TABLE IF NOT EXISTS records (position INTEGER NOT NULL, id TEXT PRIMARY KEY, prompt TEXT, "
                "output TEXT, tokens INTEGER, type TEXT, key TEXT NOT NULL)",
            ],
            recorded if model is not None and dimensions is not None else {},
            rebuild="Delete it and rerun notebooks/01_embed.ipynb (or the call that embedded these texts): "
            "every text in it is embedded again.",
        )
        meta = self.meta()
        if "model" not in meta or "dimensions" not in meta:
            self.close()
            raise DataFileError(self.path, f"its meta table records no model or dimensions ({meta})", self.rebuild)
        self.model = meta["model"] if model is None else model
        self.dimensions = int(meta["dimensions"] if dimensions is None else dimensions)
        if meta["model"] != self.model or int(meta["dimensions"]) != self.dimensions:
            self.close()
            raise ValueError(
                f"The embedding cache {self.path} holds vectors of {meta['model']!r} at {meta['dimensions']} "
                f"dimensions, not {self.model!r} at {self.dimensions}. Use another cache_dir, or delete the file "
                "to re-embed."
            )
        self.created_at = meta.get("created_at", "")

    def __len__(self) -> int:
        return self.read("SELECT COUNT(*) FROM vectors")[0][0]

    def _sound(self, keys: Sequence[str], log_damage: bool = True) -> dict[str, np.ndarray]:
        """{key: vector} for the keys whose stored vector passes `_check_rows`; damaged rows are logged and left out."""
        rows = self.read_in("SELECT key, vector FROM vectors WHERE key IN ({})", keys)
        vectors, problems = _check_rows([blob for _, blob in rows], self.dimensions)
        sound = {}
        for (key, _), vector, problem in zip(rows, vectors, problems):
            if problem is None:
                sound[key] = vector
            elif log_damage:
                log.warning(
                    "%s: the cached vector of text %s… is damaged (%s); it is embedded again, never returned.",
                    self.path,
                    key[:12],
                    problem,
                )
        return sound

    def missing(self, keys: Sequence[str]) -> list[str]:
        """The keys (deduplicated, first-seen order) that have no sound vector yet (damaged ones are logged)."""
        have = self._sound(keys)
        return [k for k in dict.fromkeys(keys) if k not in have]

    def put(self, keys: Sequence[str], vectors: np.ndarray, tokens: Sequence[int | None] | None = None) -> None:
        """Store vectors for `keys` in one transaction (all or nothing); an existing key keeps its first vector
        unless that one is damaged, which is replaced."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape != (len(keys), self.dimensions):
            raise ValueError(
                f"put() got vectors of shape {vectors.shape} for {len(keys)} keys; this cache holds "
                f"{self.dimensions}-d vectors of {self.model!r}."
            )
        _, problems = _check_rows([v.tobytes() for v in vectors], self.dimensions)
        bad = [(i, p) for i, p in enumerate(problems) if p is not None]
        if bad:
            raise ValueError(
                f"put() got {len(bad)} vector(s) that are not finite unit vectors (row {bad[0][0]}: {bad[0][1]}); "
                f"the embedder {self.model!r} returned a broken vector (every e2p embedder L2-normalises)."
            )
        tokens = list(tokens) if tokens is not None else [None] * len(keys)
        now = time.time()
        with self.write(f"store {len(keys)} new embedding(s)") as db:
            kept = self._sound(keys, log_damage=False)  # read inside the write lock: another writer's rows count
            db.executemany(
                "INSERT OR REPLACE INTO vectors VALUES (?, ?, ?, ?)",
                [(k, v.tobytes(), t, now) for k, v, t in zip(keys, vectors, tokens) if k not in kept],
            )

    def get(self, keys: Sequence[str]) -> np.ndarray:
        """Vectors for `keys` in order, (len(keys), dimensions); KeyError names any key not cached (or damaged)."""
        found = self._sound(keys)
        absent = [k for k in dict.fromkeys(keys) if k not in found]
        if absent:
            raise KeyError(
                f"{len(absent)} text(s) are not in {self.path.name}, or their vectors are damaged (first key "
                f"{absent[0][:12]}…): embed them with embed_texts, which caches them."
            )
        out = np.empty((len(keys), self.dimensions), dtype=np.float32)
        for i, k in enumerate(keys):
            out[i] = found[k]
        return out

    def write_records(self, frame: pd.DataFrame, keys: Sequence[str]) -> None:
        """Replace the stored dataset rows with `frame` (one transaction), remembering row order."""
        rows = [
            (pos, r.id, r.prompt, r.output, int(r.tokens), r.type, k)
            for pos, (r, k) in enumerate(zip(frame[RECORD_COLUMNS].itertuples(index=False), keys))
        ]
        with self.write(f"record {len(rows)} dataset rows") as db:
            db.execute("DELETE FROM records")
            db.executemany("INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?)", rows)

    def read_records(self) -> tuple[pd.DataFrame, list[str]]:
        rows = self.read(f"SELECT {', '.join(RECORD_COLUMNS)}, key FROM records ORDER BY position")
        frame = pd.DataFrame([r[:-1] for r in rows], columns=RECORD_COLUMNS)
        return frame, [r[-1] for r in rows]


@dataclass
class EmbeddedDataset:
    """Dataset rows with their output embeddings: `frame` row i goes with `vectors[i]`."""

    frame: pd.DataFrame  # columns id, prompt, output, tokens, type
    vectors: np.ndarray  # (n, dimensions) float32, L2-normalised
    model: str
    dimensions: int
    path: Path
    created_at: str
    stats: dict = field(default_factory=dict)  # rows, embedded_now, cached, seconds

    @property
    def ids(self) -> list[str]:
        return self.frame["id"].tolist()

    def __len__(self) -> int:
        return len(self.frame)


def embed_dataset(
    frame: pd.DataFrame,
    embedder: Embedder,
    cache_dir: str | Path | None = None,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    show_progress: bool = True,
) -> EmbeddedDataset:
    """Embed `frame["output"]` into the cache of `embedder`, embedding only texts not cached yet.

    Progress is committed batch by batch, so after a crash (even SIGKILL) a rerun embeds only what is missing.
    If the embedder fails half-way, every batch finished before the failure stays cached and the error is re-raised.
    """
    missing_cols = [c for c in RECORD_COLUMNS if c not in frame.columns]
    if missing_cols:
        raise ValueError(f"embed_dataset needs columns {RECORD_COLUMNS}; missing {missing_cols}. Use load_alpaca().")
    if frame["id"].duplicated().any():
        dup = frame.loc[frame["id"].duplicated(), "id"].iloc[0]
        raise ValueError(f"Row ids must be unique; {dup!r} appears more than once.")
    texts = check_texts(frame["output"].tolist())
    keys = [text_key(t) for t in texts]
    started = time.perf_counter()

    with EmbeddingCache(
        embedding_cache_path(embedder.name, embedder.dimensions, cache_dir), embedder.name, embedder.dimensions
    ) as cache:
        embedded_now = _embed_missing(cache, embedder, texts, keys, frame["tokens"].tolist(), chunk_rows, show_progress)
        cache.write_records(frame, keys)
        vectors = cache.get(keys)
        return EmbeddedDataset(
            frame=frame[RECORD_COLUMNS].reset_index(drop=True),
            vectors=vectors,
            model=embedder.name,
            dimensions=embedder.dimensions,
            path=cache.path,
            created_at=cache.created_at,
            stats={
                "rows": len(frame),
                "embedded_now": embedded_now,
                "cached": len(set(keys)) - embedded_now,
                "seconds": round(time.perf_counter() - started, 3),
            },
        )


def embed_texts(
    texts: Sequence[str],
    embedder: Embedder,
    cache_dir: str | Path | None = None,
    *,
    use_cache: bool = True,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    show_progress: bool = True,
) -> np.ndarray:
    """(n, d) unit vectors of any texts (prompts, generated answers), in order, through the same cache as
    `embed_dataset` (under `cache_dir`; None: `config.embeddings_dir()`).

    Only texts never embedded before by this embedder are sent to it; nothing is written to the dataset records.
    `use_cache=False` asks the embedder directly and reads or writes no file (tests, one-off calls).
    """
    texts = check_texts(texts)
    if not use_cache:
        return embedder.embed(texts) if texts else np.zeros((0, embedder.dimensions), dtype=np.float32)
    keys = [text_key(t) for t in texts]
    with EmbeddingCache(
        embedding_cache_path(embedder.name, embedder.dimensions, cache_dir), embedder.name, embedder.dimensions
    ) as cache:
        _embed_missing(cache, embedder, texts, keys, count_tokens(texts), chunk_rows, show_progress)
        return cache.get(keys)


def _embed_missing(
    cache: EmbeddingCache,
    embedder: Embedder,
    texts: list[str],
    keys: list[str],
    tokens: list,
    chunk_rows: int,
    show_progress: bool,
) -> int:
    """Embed the texts whose keys the cache lacks, committing batch by batch; returns how many were embedded."""
    todo_keys = cache.missing(keys)
    if not todo_keys:
        return 0
    cache.check_writable(f"store {len(todo_keys)} new embedding(s)")  # before the embedder works (or is paid)
    first_text, first_tokens = dict(zip(keys, texts)), dict(zip(keys, tokens))
    todo_texts = [first_text[k] for k in todo_keys]
    log.info("%s: %d texts, %d not cached yet (cache %s)", embedder.name, len(texts), len(todo_keys), cache.path)
    # A paid embedder (OpenAI) prints its own token count and cost estimate before it sends anything.
    with tqdm(total=len(todo_texts), desc="embed", unit="text", disable=not show_progress) as bar:
        for positions, vectors in _batches(embedder, todo_texts, chunk_rows):
            batch_keys = [todo_keys[p] for p in positions]
            cache.put(batch_keys, vectors, [first_tokens[k] for k in batch_keys])
            bar.update(len(positions))
    return len(todo_keys)


def _batches(embedder: Embedder, texts: list[str], chunk_rows: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(positions, vectors) as the embedder finishes them: its own `iter_embed` if it has one, else fixed chunks."""
    if not texts:
        return
    if hasattr(embedder, "iter_embed"):
        yield from embedder.iter_embed(texts)
        return
    for start in range(0, len(texts), chunk_rows):
        chunk = texts[start : start + chunk_rows]
        yield np.arange(start, start + len(chunk)), embedder.embed(chunk)


def load_embedded_dataset(
    path: str | Path | None = None,
    *,
    model: str | None = None,
    dimensions: int | None = None,
    cache_dir: str | Path | None = None,
) -> EmbeddedDataset:
    """Read what `embed_dataset` last wrote: by file `path`, or by `model` and `dimensions` under `cache_dir`.

    Raises FileNotFoundError (saying to run 01_embed) when there is no such cache.
    """
    if path is None:
        if model is None or dimensions is None:
            raise ValueError("Give either the cache file `path`, or both `model` and `dimensions`.")
        path = embedding_cache_path(model, dimensions, cache_dir)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"No embedding cache at {path}. Run notebooks/01_embed.ipynb (or embed_dataset) with the same model "
            "and dimensions first."
        )
    with EmbeddingCache(path) as cache:
        frame, keys = cache.read_records()
        if frame.empty:
            raise ValueError(f"The embedding cache {path} holds vectors but no dataset rows; run embed_dataset.")
        return EmbeddedDataset(
            frame=frame,
            vectors=cache.get(keys),
            model=cache.model,
            dimensions=cache.dimensions,
            path=path,
            created_at=cache.created_at,
            stats={"rows": len(frame)},
        )
