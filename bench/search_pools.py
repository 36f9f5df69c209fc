"""What each candidate pool adds to e2p's search at 8 environment calls per target, paired on the same test targets.

    E2P_DATA_DIR=data .venv/bin/python bench/search_pools.py --targets 120

Needs what 02 and 03 left in the data folder (the store with the outputs and the answer index of the default
environment, the policy `load_inverter` picks as 05's e2p does: SFT on the demo folder of 2026-12-03, where 04 had
not run; a forward model). Rows: the original prompt and retrieval alone (the 8 nearest outputs'
prompts answered, the best kept) as baselines; the search on the answer index and the policy's rewrites
(`retrieved_share=0`); the search on both pools (05_eval's `e2p, <=8 calls`, `retrieved_share=0.5`); and that search
with 1, 3, 5 or 7 grounded calls (`ground=`: the best known prompts with a composed text appended as ideas, in
`e2p_lib.ground.GROUND_ORDER`; README, "Grounded prompts"; at 7 of 8 no call is left for anything else). Prints
mean answer cosines with bootstrap intervals and paired differences to retrieval, to the search on both pools, to
it with 3 grounded calls, to the answer index's top 1 (one call: its known prompt answered) and to the original
prompt; `--budget 1 --rows "e2p, 7 grounded calls (no call left to retrieval or rewrites)"` measures 05's `e2p, 1 call`
against that top 1. `--own` measures the same on the target texts that are not Alpaca
outputs (`e2p_lib.evaluate.own_targets`): no original prompt, no stored row to leave out.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from demo_targets import demo_targets, own_target_vectors  # bench/ is on sys.path when a script of it runs
from paired import paired_table

from e2p_lib.answer_index import DEFAULT_ANSWER_TOKENS
from e2p_lib.evaluate.baselines import best_answered, retrieval_candidates
from e2p_lib.invert import load_inverter
from e2p_lib.train.rewards import AnswerCosineReward

TOP1 = "answer index, top 1"
BOTH = "e2p, both pools (05's e2p, <=8 calls)"
THREE = "e2p, both pools + 3 grounded calls"
SEARCHES = {  # row: search options
    "e2p, index and rewrites only": {"retrieved_share": 0.0},
    BOTH: {"retrieved_share": 0.5},
    "e2p, both pools + 1 grounded call": {"retrieved_share": 0.5, "ground": 1},
    THREE: {"retrieved_share": 0.5, "ground": 3},
    "e2p, both pools + 5 grounded calls": {"retrieved_share": 0.5, "ground": 5},
    "e2p, 7 grounded calls (no call left to retrieval or rewrites)": {"retrieved_share": 0.5, "ground": 7},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=int, default=120, help="test targets (the first N of the test split)")
    parser.add_argument("--budget", type=int, default=8)
    parser.add_argument("--samples", type=int, default=6, help="policy rewrites per target and round (05: 6)")
    parser.add_argument("--rows", default="|".join(SEARCHES), help=f"search rows joined by '|', of {list(SEARCHES)}")
    parser.add_argument("--own", action="store_true", help="the first N own target texts instead of Alpaca's")
    parser.add_argument("--save", help="also write each row's per-target cosines to this .npz, to pair with later runs")
    args = parser.parse_args()

    inverter = load_inverter()
    reward = AnswerCosineReward(inverter.environment, inverter.embedder, max_new_tokens=DEFAULT_ANSWER_TOKENS)
    started = time.perf_counter()
    if args.own:  # users' own texts: no stored row to leave out, no original prompt
        targets = own_target_vectors(args.targets, inverter.embedder)
        test_ids, exclude, cosines, calls = None, None, {}, {}
    else:
        test = demo_targets(args.targets)
        targets, test_ids, exclude = test.vectors, test.ids, test.exclude
        cosines, calls = {"original prompt": reward(test.prompts, targets).rewards}, {"original prompt": 1.0}
    retrieval = f"retrieval, best of {args.budget} answered"
    candidates = retrieval_candidates(inverter.retrieval, targets, test_ids, k=args.budget)
    cosines[retrieval] = best_answered(candidates, targets, reward, args.budget)[1]
    calls[retrieval] = float(args.budget)
    top1 = [row[0].prompt for row in inverter.index.hypotheses(targets, k=1, exclude_ids=exclude)]
    cosines[TOP1], calls[TOP1] = reward(top1, targets).rewards, 1.0
    for name in args.rows.split("|"):
        began = time.perf_counter()
        results = inverter.invert(
            targets,
            budget=args.budget,
            exclude_ids=exclude,
            samples=args.samples,
            temperature=0.8,
            **SEARCHES[name],
        )
        cosines[name] = np.array([r.achieved_cosine for r in results])
        calls[name] = float(np.mean([r.environment_calls for r in results]))
        print(f"{name}: {cosines[name].mean():.3f} in {time.perf_counter() - began:.0f} s", flush=True)
    versus = {name: [retrieval, BOTH, THREE, TOP1, "original prompt"] for name in cosines if name in SEARCHES}
    table = paired_table(cosines, versus, {name: {"calls/target": c} for name, c in calls.items()})
    print(f"{len(targets)} {'own target texts' if args.own else 'test targets'}, {time.perf_counter() - started:.0f} s")
    print(table.to_string(index=False))
    if args.save:
        np.savez(args.save, **cosines)


if __name__ == "__main__":
    main()
