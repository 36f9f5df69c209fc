"""`DataFileError`: the one error for a data file e2p cannot use, worded so that a user knows what to do.

A bare `sqlite3.DatabaseError: file is not a database` or `OSError: [Errno 28] No space left on device` names no
file and no fix. Every store and cache raises this instead; its message is "<file>: <what is wrong>. <what to do>":

- `DataFileError(path, problem, fix)` itself for a file that is not what e2p wrote (garbage, truncated, a checksum
  mismatch): the fix says what rebuilds it (delete it and rerun the notebook that builds it);
- `read_only(path, action)`: a write was asked in a folder e2p may only read, such as a shared read-only copy of a
  finished run (every read still works there);
- `full_disk(path)`: the file system holding `path` is full;
- `named_os_error(err, path, action)`: an `OSError` of either of the last two kinds as a `DataFileError`, and
  `naming_os_errors(path, action)`, a block that raises them so.

    >>> try:
    ...     store.upsert(ids, vectors)
    ... except DataFileError as error:
    ...     print(error.path, error.problem, error.fix)
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

READ_ONLY_ERRNOS = {errno.EROFS, errno.EACCES, errno.EPERM}  # what a write where none may be made gets
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}


class DataFileError(Exception):
    """A data file (store, cache, manifest) that is damaged, read-only where a write was asked, or on a full disk."""

    def __init__(self, path: str | os.PathLike, problem: str, fix: str):
        self.path, self.problem, self.fix = Path(path), problem, fix
        super().__init__(f"{path}: {problem}. {fix}")


def read_only(path: str | os.PathLike, action: str) -> DataFileError:
    """The refusal of a write (`action`, e.g. "store 3 new embeddings") where e2p may only read."""
    return DataFileError(
        path,
        f"cannot {action}: the folder is read-only (a read-only file system, or not writable by this user)",
        "A finished data folder is read there (stores, cached embeddings and answers), but nothing new can be "
        "written. Make the folder writable, or copy the data folder somewhere writable and point E2P_DATA_DIR at it.",
    )


def full_disk(path: str | os.PathLike) -> DataFileError:
    return DataFileError(
        path,
        "the disk is full (no space left on the file system that holds it)",
        "Free space there and run again: everything committed before this write is kept.",
    )


def named_os_error(err: OSError, path: str | os.PathLike, action: str) -> OSError | DataFileError:
    """`err` as a `DataFileError` naming `path` when the disk is full or the folder read-only; else `err` as it is."""
    if err.errno in _FULL_ERRNOS:
        return full_disk(path)
    if err.errno in READ_ONLY_ERRNOS:
        return read_only(path, action)
    return err


@contextmanager
def naming_os_errors(path: str | os.PathLike, action: str) -> Iterator[None]:
    """Re-raise a full-disk or read-only `OSError` from the block as a `DataFileError` naming `path`."""
    try:
        yield
    except OSError as err:
        named = named_os_error(err, path, action)
        if named is err:
            raise
        raise named from err


def is_writable(path: str | os.PathLike) -> bool:
    """Whether `path` (a file, or the folder it would be created in) can be written: False on a read-only mount
    even for root, who ignores file modes."""
    path = Path(path)
    if path.exists():
        return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)
    for folder in path.parents:  # the nearest folder that exists is where the missing ones would be made
        if folder.exists():
            return os.access(folder, os.W_OK)
    return False
