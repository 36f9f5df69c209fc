"""Retrieval used well: the baselines e2p must beat at an equal number of environment calls per target.

Each takes the k stored outputs nearest a target (never its own row: `nearest_prompt`) and returns one prompt per
target with the environment calls it spent:

    >>> candidates = retrieval_candidates(store, targets, target_ids, k=8)
    >>> forward_ranked(candidates, targets, forward_model)          # 1 call: the forward model picks, then answer it
    >>> best_answered(candidates, targets, reward, budget=8)        # 8 calls: answer the 8 nearest, keep the best
    >>> _, answered = answered_cosines(candidates, targets, reward, 16)  # 16 calls each, once, for a budget curve:
    >>> best_of_first(answered, 4)                                  # the best of the first 4 (4 calls)

`budget_curve` runs a search function at several budgets for the quality-vs-budget figure.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from e2p_lib.checks import check_positive_int
from e2p_lib.store.retrieval import retrieval_candidates  # noqa: F401 (part of the baselines' interface)


def forward_ranked(candidates: Sequence[Sequence[str]], targets: np.ndarray, forward_model) -> list[str]:
    """Per target, the candidate the forward model predicts lands nearest (no environment call)."""
    flat = [(i, p) for i, row in enumerate(candidates) for p in row]
    predicted = forward_model.predict_cosine([p for _, p in flat], targets[[i for i, _ in flat]])
    best: dict[int, tuple[float, str]] = {}
    for (i, prompt), score in zip(flat, predicted):
        if i not in best or score > best[i][0]:
            best[i] = (float(score), prompt)
    return [best[i][1] for i in range(len(candidates))]


def answered_cosines(
    candidates: Sequence[Sequence[str]], targets: np.ndarray, reward, budget: int
) -> tuple[list[list[str]], list[np.ndarray]]:
    """Answer each target's first `budget` distinct candidates, one call each: (those prompts, their real cosines),
    per target in retrieval's order. The best of the first b <= budget of them is retrieval's best of b answered
    (`best_of_first`), so a budget curve answers each candidate once."""
    check_positive_int(budget, "budget")
    asked = [list(dict.fromkeys(row))[:budget] for row in candidates]
    if empty := [i for i, row in enumerate(asked) if not row]:
        raise ValueError(f"Targets {empty[:5]} have no candidate prompts: retrieve some (k >= 1) for every target.")
    flat = [(i, p) for i, row in enumerate(asked) for p in row]
    rewards = np.asarray(reward([p for _, p in flat], targets[[i for i, _ in flat]]).rewards, dtype=float)
    starts = np.cumsum([0] + [len(row) for row in asked])
    return asked, [rewards[a:b] for a, b in zip(starts[:-1], starts[1:])]


def best_of_first(cosines: Sequence[np.ndarray], budget: int) -> tuple[np.ndarray, list[int]]:
    """From `answered_cosines`: each target's best real cosine among its first `budget` answers, and those calls."""
    check_positive_int(budget, "budget")
    return np.array([row[:budget].max() for row in cosines]), [len(row[:budget]) for row in cosines]


def best_answered(
    candidates: Sequence[Sequence[str]], targets: np.ndarray, reward, budget: int
) -> tuple[list[str], np.ndarray, list[int]]:
    """Answer each target's first `budget` candidates and keep the best: (prompts, real cosines, calls per target)."""
    asked, cosines = answered_cosines(candidates, targets, reward, budget)
    best, calls = best_of_first(cosines, budget)
    return [row[int(np.argmax(c))] for row, c in zip(asked, cosines)], best, calls


def budget_curve(
    methods: dict[str, Callable[[int], tuple[np.ndarray, Sequence[int]]]], budgets: Sequence[int]
) -> pd.DataFrame:
    """Run each method at each budget: `method(budget) -> (real cosines per target, calls per target)`, or with the
    prompts' copied shares as a third item.

    Returns one row per (method, budget): mean cosine, its 95% bootstrap interval, the largest and mean number of
    calls actually spent per target (never above the budget: checked here), and the mean copied share (NaN where a
    method gives none).
    """
    from e2p_lib.evaluate.metrics import mean_ci

    rows = []
    for name, run in methods.items():
        for budget in tqdm(budgets, desc=f"budget curve: {name}", unit="budget"):
            cosines, calls, *shares = run(int(budget))
            if max(calls) > budget:
                raise RuntimeError(f"{name} spent {max(calls)} environment calls at budget {budget}.")
            low, high = mean_ci(np.asarray(cosines))
            rows.append(
                {
                    "method": name,
                    "budget": int(budget),
                    "mean_cosine": float(np.mean(cosines)),
                    "ci95_low": low,
                    "ci95_high": high,
                    "max_calls": int(max(calls)),
                    "mean_calls": float(np.mean(calls)),
                    "copied_share": float(np.mean(shares[0])) if shares else float("nan"),
                }
            )
    return pd.DataFrame(rows)
