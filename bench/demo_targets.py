"""The held-out targets the bench scripts score: the first N rows of a split of 01's embedded dataset, with what the
no-leak rule leaves out for each (its own row and any row with the same output) and Alpaca's own prompt for it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from e2p_lib.answer_index import leave_out
from e2p_lib.data import add_split
from e2p_lib.embed.cache import load_embedded_dataset
from e2p_lib.pipeline import split_rows


@dataclass
class Targets:
    vectors: np.ndarray  # (n, d) embeddings of the rows' outputs
    ids: list[str]
    exclude: list[list[str]]  # per target, the ids retrieval must never return
    prompts: list[str]  # the original prompts (the oracle baseline)


def demo_targets(limit: int | None, split: str = "test") -> Targets:
    """The first `limit` rows of `split` of the MiniLM cache (the demo profile's space)."""
    dataset = load_embedded_dataset(model="local/all-MiniLM-L6-v2", dimensions=384)
    frame = add_split(dataset.frame)
    rows = split_rows(frame, split, limit)
    exclusions = leave_out(frame["id"].tolist(), frame["output"].tolist())
    return Targets(
        dataset.vectors[rows],
        frame["id"].to_numpy()[rows].tolist(),
        [exclusions[r] for r in rows],
        frame["prompt"].to_numpy()[rows].tolist(),
    )
