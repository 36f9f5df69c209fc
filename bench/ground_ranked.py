"""Can the forward model choose which grounded prompts get the calls, instead of the fixed `GROUND_ORDER`?

    E2P_DATA_DIR=data .venv/bin/python bench/ground_ranked.py --targets 120 --split val

Needs 01-03 (the embedded dataset, the store, the answer index, 03's forward model); no policy. Per target the pool
is the index's `--ranks` best prompts, each grounded with each wording of `GROUND_TEMPLATES` in the text composed
from the 8 stored outputs nearest the target; every one is answered once (the answer cache keeps them), so each
schedule below is replayed from the same answers. A schedule of B calls is the best real cosine among the index's
top 1 (known, free) and the B - 1 grounded prompts it picks:

- `fixed`: `GROUND_ORDER`'s first B - 1 (the search today);
- `forward`: the B - 1 with the highest forward-model cosine;
- `shift`: ranked by the base prompt's known answer cosine plus the forward model's predicted change from the base
  prompt to its grounded version (what the forward model is best placed to say: how the ideas move the answer);
- `3 + shift`: the three wordings on the top prompt, then `shift`'s order;
- `breadth`: the first wording on each of the B - 1 best prompts;
- `oracle`: the best of the whole pool (not a schedule; the ceiling of any choice from it).

At one call, `shift > m` sends the grounded prompt `shift` ranks first instead of the top 1 when its score is more
than m above the top 1's known cosine. Also printed: per target, the Spearman correlation of each score with the real
cosines over the pool (averaged over targets).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from demo_targets import index_pieces  # bench/ is on sys.path when a script of it runs
from index_variants import grounded
from paired import paired_table

from e2p_lib.config import models_dir
from e2p_lib.echo import echo_texts
from e2p_lib.ground import GROUND_ORDER, GROUND_TEMPLATES
from e2p_lib.pipeline import load_forward_model

TOP, FIXED = "index top 1", "fixed"


def spearman(scores: np.ndarray, real: np.ndarray) -> float:
    """Mean over targets (rows) of the rank correlation between a score and the real cosines."""
    rows = [pd.Series(s).corr(pd.Series(r), method="spearman") for s, r in zip(scores, real)]
    return float(np.nanmean(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=int, default=120, help="the first N targets of the split")
    parser.add_argument("--split", default="val", choices=("test", "val"))
    parser.add_argument("--ranks", type=int, default=6, help="the index's best prompts grounded")
    parser.add_argument("--budgets", default="2,4,8")
    parser.add_argument("--margins", default="0,0.02,0.05,0.1")
    args = parser.parse_args()
    started = time.perf_counter()
    p = index_pieces(args.targets, args.split, k=args.ranks)
    forward = load_forward_model(models_dir(), p.embedder)
    if forward is None:
        raise SystemExit(f"No forward model under {models_dir()}: run notebooks/03_sft.ipynb first.")
    targets, hyp = p.chosen.vectors, p.hypotheses
    texts = echo_texts(p.store, targets, p.embedder, k=8, exclude_ids=p.chosen.exclude)
    pool = [(r, w) for r in range(args.ranks) for w in range(len(GROUND_TEMPLATES))]
    n, m = len(targets), len(pool)
    real, predicted = np.zeros((n, m)), np.zeros((n, m))
    base_real = np.array([[row[r].cosine for r in range(args.ranks)] for row in hyp])
    base_predicted = np.stack(
        [forward.predict_cosine([row[r].prompt for row in hyp], targets) for r in range(args.ranks)], axis=1
    )
    for j, (r, w) in enumerate(pool):
        prompts = grounded(r, hyp, texts, w)
        real[:, j] = p.reward(prompts, targets).rewards
        predicted[:, j] = forward.predict_cosine(prompts, targets)
        print(f"g({r},{w}): real {real[:, j].mean():.3f}, predicted {predicted[:, j].mean():.3f}", flush=True)
    shift = base_real[:, [r for r, _ in pool]] + predicted - base_predicted[:, [r for r, _ in pool]]
    print(
        f"Spearman over the pool of {m}: forward {spearman(predicted, real):.3f}, shift {spearman(shift, real):.3f}, "
        f"base's known cosine {spearman(base_real[:, [r for r, _ in pool]], real):.3f}"
    )
    top = p.top
    rows = np.arange(n)[:, None]

    def picked(order: np.ndarray, calls: int) -> np.ndarray:
        """Best of the top 1 and the first `calls` pool entries of each target's `order` (n, m) of pool indices."""
        return np.maximum(top, real[rows, order[:, :calls]].max(axis=1)) if calls else top

    fixed_order = np.tile([pool.index(e) for e in GROUND_ORDER], (n, 1))
    rank_zero = [pool.index((0, w)) for w in range(len(GROUND_TEMPLATES))]
    by_shift = np.argsort(-shift, axis=1)
    after_three = np.array([rank_zero + [j for j in row if j not in rank_zero] for row in by_shift])
    orders = {
        FIXED: fixed_order,
        "forward": np.argsort(-predicted, axis=1),
        "shift": by_shift,
        "3 + shift": after_three,
        "breadth": np.tile([pool.index((r, 0)) for r in range(args.ranks)], (n, 1)),
    }
    cos = {"original prompt": p.reward(p.chosen.prompts, targets).rewards, TOP: top}
    versus: dict[str, list[str]] = {}
    for budget in (int(b) for b in args.budgets.split(",")):
        for name, order in orders.items():
            if budget - 1 <= order.shape[1]:
                cos[f"{budget} calls, {name}"] = picked(order, budget - 1)
                versus[f"{budget} calls, {name}"] = [f"{budget} calls, {FIXED}", "original prompt"]
    cos[f"oracle of top 1 + {m}"] = np.maximum(top, real.max(axis=1))
    first = real[np.arange(n), by_shift[:, 0]]
    for margin in (float(x) for x in args.margins.split(",")):
        switch = shift[np.arange(n), by_shift[:, 0]] > top + margin
        cos[f"1 call, shift > {margin:g} ({switch.mean():.0%} switched)"] = np.where(switch, first, top)
        versus[next(reversed(cos))] = [TOP]
    print(f"{n} {args.split} targets, pool of {m} grounded prompts, {time.perf_counter() - started:.0f} s")
    print(paired_table(cos, versus, {}).to_string(index=False))


if __name__ == "__main__":
    main()
