"""Ranking groups for the forward model: teach it the *order* of one target's candidates, not only their vectors.

The search asks the forward model which of a target's candidate prompts will answer nearest the target
(`ForwardModel.predict_cosine`). Regression on (prompt, answer vector) pairs learns that order only indirectly.
A ranking group is one anchor target `t` with `k` candidate prompts `p_i` whose real answers `a_i` are known; the
ranking term scores `s_i = cos(f(p_i), t)` against the labels `r_i = cos(a_i, t)` (see `ranking_loss`).

Groups come for free from the environment's answers to the forward model's own training prompts: the anchors are
training rows' output vectors, the candidates their `k` nearest training prompts by real answer cosine, leaving out
the anchor's own row and every row with the same output (as `e2p_lib.pipeline.row_hypotheses` does).

    >>> groups = index_ranking_groups(index, frame, anchor_rows, dataset.vectors, fit_ids, k=8)
    >>> config = forward_model_config("transformer", ranking_weight=1.0)
    >>> model, history = train_forward_model(fit_prompts, fit_vectors, val_prompts, val_vectors, config, embedder,
    ...                                      ranking_groups=groups)   # candidates index fit_prompts

Candidates are positions in the forward model's training prompts, so a group can only hold prompts it trains on.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from e2p_lib.checks import check_int
from e2p_lib.embed.base import l2_normalise

RANKING_LOSSES = ("listnet", "pairwise")
RANKING_STREAM = 1  # keeps the order of groups apart from the order of regression rows drawn from the same seed


# --- the groups ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RankingGroups:
    """`targets` (G, d) unit anchors; `candidates` (G, k) positions in the training prompts; `cosines` (G, k) the
    real cosine between each candidate's answer and its anchor (the labels)."""

    targets: np.ndarray
    candidates: np.ndarray
    cosines: np.ndarray

    def __post_init__(self) -> None:
        targets = np.asarray(self.targets, dtype=np.float32)
        candidates = np.asarray(self.candidates)
        cosines = np.asarray(self.cosines, dtype=np.float32)
        if targets.ndim != 2 or candidates.ndim != 2 or cosines.shape != candidates.shape:
            raise ValueError(
                f"RankingGroups needs targets (G, d), candidates (G, k) and cosines (G, k); got shapes "
                f"{targets.shape}, {candidates.shape} and {cosines.shape}."
            )
        if len(targets) != len(candidates) or len(targets) == 0:
            raise ValueError(
                f"RankingGroups has {len(targets)} targets for {len(candidates)} candidate rows; give one row of "
                "candidates per target, and at least one group."
            )
        if candidates.shape[1] < 2:
            raise ValueError(
                f"RankingGroups has k={candidates.shape[1]} candidates per group; a ranking needs k >= 2 "
                "(build them with ranking_groups(..., k=8))."
            )
        if not np.issubdtype(candidates.dtype, np.integer):
            raise ValueError(f"candidates must be integer positions in the training prompts, got {candidates.dtype}.")
        if not (np.all(np.isfinite(targets)) and np.all(np.isfinite(cosines))):
            raise ValueError("RankingGroups holds NaN or infinite targets or cosines; drop those groups.")
        object.__setattr__(self, "targets", l2_normalise(targets))
        object.__setattr__(self, "candidates", candidates.astype(np.int64))
        object.__setattr__(self, "cosines", cosines)

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def k(self) -> int:
        return self.candidates.shape[1]

    def check_against(self, num_prompts: int, dimensions: int) -> None:
        """Raise ValueError unless candidates index `num_prompts` training prompts and targets are `dimensions`-d."""
        if self.targets.shape[1] != dimensions:
            raise ValueError(
                f"ranking_groups.targets are {self.targets.shape[1]}-d but the embedder gives {dimensions}-d; "
                "anchor the groups with vectors of the space the model predicts."
            )
        low, high = int(self.candidates.min()), int(self.candidates.max())
        if low < 0 or high >= num_prompts:
            raise ValueError(
                f"ranking_groups.candidates run from {low} to {high}, but there are {num_prompts} training prompts: "
                "candidates are positions in train_prompts (build them with ranking_groups over the same ids)."
            )

    def fingerprint(self) -> str:
        """sha256 of the groups: a checkpoint trained with other groups does not resume."""
        digest = hashlib.sha256()
        for array in (self.targets, self.candidates, self.cosines):
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()


def ranking_groups(
    targets: np.ndarray,
    exclude_ids: Sequence[Sequence[str]],
    train_ids: Sequence[str],
    answer_ids: Sequence[str],
    answer_vectors: np.ndarray,
    k: int,
) -> RankingGroups:
    """One group per target: the `k` training prompts whose real answers land nearest it (exact cosine), best first.

    `train_ids` are the ids of the forward model's training prompts, in their order (candidates are positions in
    it); `answer_ids` / `answer_vectors` the real answers known for some of them (others cannot be candidates).
    `exclude_ids[g]` are the ids target g must never get: its own row and every row with the same output
    (`e2p_lib.answer_index.leave_out`).

    Raises:
        ValueError: k < 2, mismatched lengths, or fewer than k candidates left for a target.
    """
    check_int(k, "k", minimum=2, hint=" (candidates per ranking group; a ranking needs two)")
    targets = l2_normalise(np.asarray(targets, dtype=np.float32))
    if len(exclude_ids) != len(targets):
        raise ValueError(f"Got {len(exclude_ids)} exclude_ids entries for {len(targets)} targets; give one per target.")
    answer_vectors = np.asarray(answer_vectors, dtype=np.float32)
    if len(answer_ids) != len(answer_vectors):
        raise ValueError(f"Got {len(answer_ids)} answer_ids for {len(answer_vectors)} answer vectors.")
    position = {row_id: i for i, row_id in enumerate(train_ids)}
    usable = [i for i, row_id in enumerate(answer_ids) if row_id in position]  # answers of training prompts only
    pool_ids = [answer_ids[i] for i in usable]
    pool_positions = np.array([position[row_id] for row_id in pool_ids], dtype=np.int64)
    pool_vectors = l2_normalise(answer_vectors[usable]) if usable else np.zeros((0, targets.shape[1]), np.float32)
    pool_row = {row_id: i for i, row_id in enumerate(pool_ids)}
    candidates = np.empty((len(targets), k), dtype=np.int64)
    cosines = np.empty((len(targets), k), dtype=np.float32)
    for start in range(0, len(targets), 1024):  # (1024, pool) cosines at a time
        scores = targets[start : start + 1024] @ pool_vectors.T
        for row, row_scores in enumerate(scores, start=start):
            left_out = [pool_row[i] for i in exclude_ids[row] if i in pool_row]
            row_scores[left_out] = -np.inf
            if np.isfinite(row_scores).sum() < k:
                raise ValueError(
                    f"Target {row} has fewer than k={k} candidates once its own and same-output rows are left out "
                    f"({len(pool_ids)} training prompts have answers); lower k or give more answered prompts."
                )
            best = np.argsort(-row_scores, kind="stable")[:k]
            candidates[row], cosines[row] = pool_positions[best], row_scores[best]
    return RankingGroups(targets, candidates, cosines)


def index_ranking_groups(
    index: Any, frame: Any, rows: np.ndarray, vectors: np.ndarray, train_ids: Sequence[str], k: int = 8
) -> RankingGroups:
    """Groups anchored at `vectors[rows]` (positions in `frame`, e.g. its train rows among `train_ids`), with
    candidates from `train_ids` (the forward model's training prompts, in order) and their answers from the
    `AnswerIndex` `index`. Each anchor leaves out its own row and every row of `frame` with the same output."""
    from e2p_lib.answer_index import leave_out

    exclusions = leave_out(frame["id"].tolist(), frame["output"].tolist())
    answer_ids, answer_vectors = index.answer_vectors(list(train_ids))
    rows = np.asarray(rows)
    return ranking_groups(vectors[rows], [exclusions[r] for r in rows], train_ids, answer_ids, answer_vectors, k)


# --- batches and the loss --------------------------------------------------------------------------------------


def group_batch(num_groups: int, groups_per_step: int, seed: int, step: int) -> np.ndarray:
    """Groups of optimiser step `step`: a pure function of its arguments (so a resumed run sees the same ones).

    Each pass over the groups is a fresh permutation from (seed, RANKING_STREAM, pass); the last batch of a pass
    may be short.
    """
    per_pass = math.ceil(num_groups / groups_per_step)
    epoch, position = divmod(step, per_pass)
    order = np.random.default_rng([seed, RANKING_STREAM, epoch]).permutation(num_groups)
    return order[position * groups_per_step : (position + 1) * groups_per_step]


def ranking_loss(scores: torch.Tensor, labels: torch.Tensor, temperature: float, kind: str = "listnet") -> torch.Tensor:
    """Mean ranking loss over (G, k) predicted `scores` against (G, k) real `labels` (both cosines to the anchor).

    - "listnet": KL(softmax(labels / T) || softmax(scores / T)) per group (Cao et al. 2007, ListNet, with the
      label entropy subtracted so a perfect match scores 0). Same T on both sides, so the predicted cosines must
      also match the real gaps, which keeps them calibrated with the regression.
    - "pairwise": RankNet's logistic loss log(1 + exp(-(s_i - s_j) / T)) over every pair with r_i > r_j,
      weighted by r_i - r_j, normalised by the weights' sum per group.
    """
    if kind == "listnet":
        target = F.softmax(labels / temperature, dim=-1)
        return F.kl_div(F.log_softmax(scores / temperature, dim=-1), target, reduction="batchmean")
    if kind == "pairwise":
        gaps = labels.unsqueeze(-1) - labels.unsqueeze(-2)  # (G, k, k): r_i - r_j
        margins = (scores.unsqueeze(-1) - scores.unsqueeze(-2)) / temperature  # (G, k, k): (s_i - s_j) / T
        weights = gaps.clamp(min=0)  # only pairs where i really beats j
        per_group = (weights * F.softplus(-margins)).sum(dim=(1, 2)) / weights.sum(dim=(1, 2)).clamp(min=1e-12)
        return per_group.mean()
    raise ValueError(f"ranking loss {kind!r} is not supported; use one of {RANKING_LOSSES}.")
