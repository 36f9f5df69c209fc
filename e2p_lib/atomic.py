"""Atomic file writes: a reader sees the old file or the new one, never half of either.

Bytes go to a temporary file in the same folder (so the rename cannot cross filesystems), are flushed and fsync'd,
then `os.replace`d over the target; any failure removes the temporary file. Callers that also need the rename to
survive a power cut fsync the folder afterwards with `fsync_dir` (the vector stores do).
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary handle whose contents replace `path` when the block ends without an exception."""
    path = Path(path)
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def write_atomically(path: str | os.PathLike, data: bytes) -> None:
    """Replace `path` with `data`, all or nothing."""
    with atomic_file(path) as handle:
        handle.write(data)


def fsync_dir(path: Path) -> None:
    """Make renames inside `path` durable (a crash right after os.replace must not undo it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
