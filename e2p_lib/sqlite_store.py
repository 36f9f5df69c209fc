"""SQLite as e2p's crash-safe, multi-process cache store: what every cache here (embeddings, answers) shares.

- `connect(path)`: WAL journal (readers never block the writer; a commit survives SIGKILL) with `synchronous=NORMAL`
  (durable across process kills, which is what a cache needs), autocommit off so transactions are explicit, and a
  60 s wait for other writers instead of an instant "database is locked".
- `write_transaction(db)`: `BEGIN IMMEDIATE` takes the write lock up front, so concurrent writers queue rather than
  fail half-way; the block is committed whole, or rolled back on any exception (a killed process commits nothing).
- `select_in(db, query, keys)`: rows for a `WHERE key IN (...)` query over any number of keys, in chunks that stay
  under SQLite's cap on bound parameters.
- `SQLiteCache`: one cache file built from those three. It opens a read-only folder (a shared copy of a finished
  run) for reading, and words every failure as a `DataFileError` naming the file and the fix: a file that is not
  SQLite, a write where nothing may be written, a full disk.

    >>> cache = SQLiteCache(path, ["CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, answer TEXT)"],
    ...                     {"schema_version": "1"}, rebuild="Delete it; it is rebuilt on the next run.")
    >>> with cache.write("store 2 answers") as db:
    ...     db.executemany("INSERT OR IGNORE INTO answers VALUES (?, ?)", rows)
    >>> dict(cache.read_in("SELECT key, answer FROM answers WHERE key IN ({})", keys))
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from e2p_lib.errors import DataFileError, full_disk, is_writable, naming_os_errors, read_only

# SQLite's default SQLITE_MAX_VARIABLE_NUMBER is 999 on older builds; stay under it.
MAX_PARAMETERS_PER_QUERY = 900
TIMEOUT_SECONDS = 60.0  # how long a writer waits for another process's write lock before giving up
_META_TABLE = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"


def connect(path: str | Path, timeout_seconds: float = TIMEOUT_SECONDS) -> sqlite3.Connection:
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
        if db.in_transaction:  # SQLite rolls back by itself on some errors (a full disk may)
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


def _read_only_connection(path: Path, timeout_seconds: float) -> sqlite3.Connection:
    """`path` opened for reading where nothing can be written: no lock file, `-wal` or `-shm` can be made there."""
    if not path.exists():
        # Nothing was ever cached here: an empty in-memory cache answers every read, and writes are refused.
        return sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    wal = path.with_name(path.name + "-wal")
    # `immutable` reads the file without locks or a -shm file; a WAL that still holds commits (a writer was killed
    # before its checkpoint) is only read through the -shm beside it.
    mode = "mode=ro" if wal.exists() and wal.stat().st_size else "mode=ro&immutable=1"
    return sqlite3.connect(
        f"{path.resolve().as_uri()}?{mode}",
        uri=True,
        timeout=timeout_seconds,
        isolation_level=None,
        check_same_thread=False,
    )


class SQLiteCache:
    """One SQLite cache file: a `meta` table of `meta` rows (key -> value; the first writer's kept), the tables of
    `schema` (CREATE ... IF NOT EXISTS statements), reads and all-or-nothing writes.

    In a folder it may not write (a read-only copy of a finished run), the file is opened read-only and a file that
    does not exist reads as empty; `write` (and `check_writable`) then raise `DataFileError` before any work.
    Any SQLite or OS failure is a `DataFileError` naming the file; `rebuild` is the fix for a damaged one (what to
    delete and rerun).
    """

    def __init__(
        self,
        path: str | Path,
        schema: Sequence[str],
        meta: Mapping[str, str],
        rebuild: str,
        timeout_seconds: float = TIMEOUT_SECONDS,
    ):
        self.path = Path(path)
        self.rebuild = rebuild
        self.timeout_seconds = timeout_seconds
        self.read_only = not is_writable(self.path)
        with self.named_errors("create it"):
            self._db = (
                _read_only_connection(self.path, timeout_seconds)
                if self.read_only
                else connect(self.path, timeout_seconds)
            )
            try:
                if not self.read_only or not self.path.exists():
                    with write_transaction(self._db) as db:
                        for statement in [_META_TABLE, *schema]:
                            db.execute(statement)
                        db.executemany("INSERT OR IGNORE INTO meta VALUES (?, ?)", list(meta.items()))
            except BaseException:
                self._db.close()
                raise

    @contextmanager
    def named_errors(self, action: str) -> Iterator[None]:
        """Re-raise SQLite and OS errors as `DataFileError`s naming the file (`action`: what a write was for)."""
        try:
            with naming_os_errors(self.path, action):
                yield
        except sqlite3.Error as err:
            message = str(err)
            if "disk is full" in message:
                raise full_disk(self.path) from err
            if "readonly" in message or (self.read_only and "unable to open" in message):
                raise read_only(self.path, action) from err
            if any(s in message for s in ("not a database", "malformed", "no such table", "no such column")):
                problem = f"not an e2p cache that SQLite can read ({message})"
                raise DataFileError(self.path, problem, self.rebuild) from err
            if "locked" in message:
                raise DataFileError(
                    self.path,
                    f"another process held its write lock past the {self.timeout_seconds:g} s wait ({message})",
                    "Let that process finish (or stop it), then run again.",
                ) from err
            err.add_note(f"(SQLite file {self.path})")
            raise

    def check_writable(self, action: str) -> None:
        """Raise before any slow work (embedding, generating) whose result could not be stored here."""
        if self.read_only:
            raise read_only(self.path, action)

    @contextmanager
    def write(self, action: str) -> Iterator[sqlite3.Connection]:
        """One write transaction (all or nothing); `action` words the error where nothing may be written."""
        self.check_writable(action)
        with self.named_errors(action), write_transaction(self._db) as db:
            yield db

    def read(self, query: str, parameters: Sequence = ()) -> list[tuple]:
        with self.named_errors("read it"):
            return self._db.execute(query, parameters).fetchall()

    def read_in(self, query: str, keys: Sequence[str]) -> list[tuple]:
        """`select_in` on this file."""
        with self.named_errors("read it"):
            return select_in(self._db, query, keys)

    def meta(self) -> dict[str, str]:
        return dict(self.read("SELECT key, value FROM meta"))

    def close(self) -> None:
        self._db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
