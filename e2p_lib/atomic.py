"""Atomic file writes: a reader sees the old file or the new one, never half of either.

Bytes go to a temporary file in the same folder (so the rename cannot cross filesystems), are flushed and fsync'd,
then `os.replace`d over the target; any failure removes the temporary file, and a full disk or a read-only folder
is raised as a `DataFileError` naming the target. Callers that also need the rename to survive a power cut fsync
the folder afterwards with `fsync_dir` (the vector stores do).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from e2p_lib.errors import naming_os_errors


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary handle whose contents replace `path` when the block ends without an exception."""
    path = Path(path)
    with naming_os_errors(path, "write it"):
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


def sweep_staging(path: str | os.PathLike) -> None:
    """Remove what killed writes of `path` left beside it (hidden `.part` files or folders, never read).

    Only for a path that one process writes (a training run's own checkpoint or policy folder): another writer's
    staging file in progress would be removed too.
    """
    path = Path(path)
    for stale in path.parent.glob(f".{path.name}.*.part"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


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


def publish_folder(target: Path, write, is_complete, what: str) -> bool:
    """Build a folder with `write(staging)` beside `target`, check it with `is_complete`, then rename it into place.

    All or nothing: a killed build leaves only a hidden `.part` folder, never a `target` that loads. If another
    process published `target` first (the rename fails on a non-empty folder), its complete copy is kept and False
    is returned; True when this call published it. `what` names the writer in the error for an incomplete folder.
    """
    with naming_os_errors(target, "write it"):
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part"))
    try:
        with naming_os_errors(target, "write it"):
            write(staging)
        if not is_complete(staging):
            raise RuntimeError(
                f"{what} wrote {sorted(p.name for p in staging.iterdir())}, not a complete "
                f"{target.name}; its file layout changed."
            )
        try:
            os.replace(staging, target)  # atomic; fails if another process finished first (folder not empty)
        except OSError:
            if not is_complete(target):
                raise
            return False
        return True
    finally:
        shutil.rmtree(staging, ignore_errors=True)
