"""Inversion: the instruction whose answer lands near a target embedding (e2p's public API).

- `config`: `SearchConfig`, every option of the search, its defaults the method 05_eval reports;
- `search`: the search in named phases (candidate pools, pasting calls, retrieved calls, corrector rounds, final
  pick); `sampling`: best-of-N and refinement from the policy, and interpolation;
- `pasting`: the opt-in track whose prompts carry stored outputs' text (echo, grounded);
- `inverter`: `Inverter`, the trained pieces held together; `results`: `Candidate`, `InversionResult`;
- `api`: `load_inverter`, `invert_strings`, `invert_embeddings`, and where the trained pieces are on disk.

Names are imported on first use, so that `from e2p_lib.inversion.config import SearchConfig` (the CLI's) loads no
model library.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "SearchConfig": "config",
    "Inverter": "inverter",
    "Candidate": "results",
    "InversionResult": "results",
    "results_frame": "results",
    "slerp": "sampling",
    "load_inverter": "api",
    "default_inverter": "api",
    "invert_embeddings": "api",
    "invert_strings": "api",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
