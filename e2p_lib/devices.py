"""Which torch device to use: one meaning of device="auto" for every model in e2p (trainers, policy, local LM).

"auto" asks accelerate's `PartialState`, so under `accelerate launch` each process gets its own GPU, and a single
process picks CUDA when present, else MPS, else CPU. A named device ("cpu", "cuda:1", "mps") is checked against the
hardware here, so a missing GPU fails with a message instead of deep inside a model load.

    >>> resolve_device("auto")          # device(type='cuda', index=0) on a GPU box, device(type='cpu') elsewhere
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

DEVICE_KINDS = ("cpu", "cuda", "mps")


def check_device_name(device: str) -> None:
    """Raise ValueError unless `device` is "auto" or a torch device name (whether it exists is checked later)."""
    if device == "auto":
        return
    try:
        kind = torch.device(device).type if isinstance(device, str) else None
    except RuntimeError:
        kind = None
    if kind not in DEVICE_KINDS:
        raise ValueError(f"device={device!r} is not a device name; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'.")


def resolve_device(device: str = "auto") -> torch.device:
    """The torch device for `device`: "auto" as described above, else the named device once it is found here.

    Raises ValueError when a named device is not present (e.g. "cuda" on a machine without a GPU).
    """
    check_device_name(device)
    if device == "auto":
        from accelerate import PartialState

        return PartialState().device
    resolved = torch.device(device)
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = resolved.index or 0
        if index >= count:
            raise ValueError(
                f"device={device!r} but this machine has {count} CUDA GPU(s) visible to torch "
                f"{torch.__version__}; use device='auto' (falls back to CPU) or 'cpu'."
            )
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={device!r} but MPS is not available here; use device='auto' or 'cpu'.")
    return resolved


@contextmanager
def torch_threads(count: int | None = None) -> Iterator[None]:
    """torch's CPU thread count set to `count` inside the block (None: left as it is) and put back after it, because
    the count is process-wide: whatever changes it in passing (a library's OpenMP setting, a test that wants one
    thread) would otherwise slow or speed every later torch step of the process."""
    threads = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
