"""e2p's line of 05's quality-vs-budget curve alone, with the grounding the search now uses by default.

    E2P_DATA_DIR=data .venv/bin/python bench/budget_curve.py --targets 30

05 draws the curve on its first `budget_targets` (30) test targets for e2p and for retrieval alone. Retrieval's line
does not depend on the search, so after a change to the search this redraws e2p's line only, with 05's search
settings (`--ground`: grounded calls, 05's default `DEFAULT_GROUND_CALLS`), without rerunning the rest of 05. Needs
what 02 and 03 left in the data folder. Prints mean answer cosine, interval and calls spent at each budget.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from demo_targets import demo_targets  # bench/ is on sys.path when a script of it runs

from e2p_lib.evaluate.baselines import budget_curve
from e2p_lib.ground import DEFAULT_GROUND_CALLS
from e2p_lib.invert import load_inverter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=int, default=30, help="the first N test targets (05: budget_targets)")
    parser.add_argument("--budgets", default="1,2,4,8,16")
    parser.add_argument("--ground", type=int, default=DEFAULT_GROUND_CALLS)
    args = parser.parse_args()
    started = time.perf_counter()
    inverter = load_inverter()
    test = demo_targets(args.targets)

    def e2p(budget: int):
        results = inverter.invert(
            test.vectors,
            budget=budget,
            exclude_ids=test.exclude,
            retrieved_share=0.5,
            samples=6,
            temperature=0.8,
            ground=args.ground,
        )
        return np.array([r.achieved_cosine for r in results]), [r.environment_calls for r in results]

    curve = budget_curve({f"e2p, ground={args.ground}": e2p}, [int(b) for b in args.budgets.split(",")])
    print(f"{len(test.ids)} test targets, {time.perf_counter() - started:.0f} s")
    print(curve.round(3).to_string(index=False))


if __name__ == "__main__":
    main()
