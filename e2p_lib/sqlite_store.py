"""SQLite as e2p's crash-safe, multi-process cache store: the three pieces every cache here needs.

- `connect(path)`: WAL journal (readers never block the writer; a commit survives SIGKILL) with `synchronous=NORMAL`
  (durable across process kills, which is what a cache needs), autocommit off so transactions are explicit, and a
  60 s wait for other writers instead of an instant "database is locked".
- `write_transaction(db)`: `BEGIN IMMEDIATE` takes the write lock up front, so concurrent writers queue rather than
  fail half-way; the block is committed whole, or rolled back on any exception (a killed process commits nothing).
- `select_in(db, query, keys)`: rows for a `WHERE key IN (...)` query over any number of keys, in chunks that stay
  under SQLite's cap on bound parameters.

    >>> db = connect(path)
    >>> with write_transaction(db):
    ...     db.executemany("INSERT OR IGNORE INTO answers VALUES (?, ?)", rows)
    >>> dict(select_in(db, "SELECT key, answer FROM answers WHERE key IN ({})", keys))
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

# SQLite's default SQLITE_MAX_VARIABLE_NUMBER is 999 on older builds; stay under it.
MAX_PARAMETERS_PER_QUERY = 900


def connect(path: str | Path, timeout_seconds: float = 60.0) -> sqlite3.Connection:
    """A connection to the cache file at `path` (created with its folder), set up as the module docstring says."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=timeout_seconds, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db


@contextmanager
def write_transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction: all of it is committed, or (on error or a killed process) none of it."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def select_in(db: sqlite3.Connection, query: str, keys: Sequence[str]) -> list[tuple]:
    """All rows of `query` (with one "{}" where the IN list goes) for the distinct `keys`, chunk by chunk."""
    unique = list(dict.fromkeys(keys))
    rows: list[tuple] = []
    for start in range(0, len(unique), MAX_PARAMETERS_PER_QUERY):
        part = unique[start : start + MAX_PARAMETERS_PER_QUERY]
        rows.extend(db.execute(query.format(",".join("?" * len(part))), part).fetchall())
    return rows
