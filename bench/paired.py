"""The table the search and policy benchmarks print: per method, its mean answer cosine on the same targets with the
bootstrap interval, and its paired difference to the baselines it is compared with."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from e2p_lib.evaluate.metrics import mean_ci, paired_difference


def paired_table(
    cosines: Mapping[str, np.ndarray],
    versus: Mapping[str, Sequence[str]],
    columns: Mapping[str, Mapping[str, object]] | None = None,
) -> pd.DataFrame:
    """One row per method of `cosines` (per-target answer cosines, same targets in the same order): mean, interval,
    the `columns[method]` values, and a "vs <baseline>" column per baseline in `versus[method]` that `cosines` holds."""
    rows = []
    for name, values in cosines.items():
        low, high = mean_ci(values)
        row = {"method": name, "mean": values.mean(), "low": low, "high": high, **(columns or {}).get(name, {})}
        for baseline in versus.get(name, ()):
            if baseline in cosines and baseline != name:
                mean, low, high = paired_difference(values, cosines[baseline])
                row[f"vs {baseline}"] = f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]"
        rows.append(row)
    return pd.DataFrame(rows).round(3)
