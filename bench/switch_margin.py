"""At one call, should e2p trust the forward model over the answer index? The one-call search answers the index's
best prompt (its real cosine known) unless a rewrite or a retrieved prompt is predicted `switch_margin` higher; at the
old default 0.05 the demo run's `e2p, 1 call` (0.562) sat below the index's top 1 (0.569). This runs the one-call
search once and replays its final choice at several margins from what the search knew before its call (the
candidates do not depend on the margin), answering each margin's picks. Its result made "never switch" the default.

    E2P_DATA_DIR=data .venv/bin/python bench/switch_margin.py --targets 120

Uses the policy 04 chose (what 05 and `e2p invert` use), 05's search settings, and what 02-04 left in the data
folder. Prints per margin: mean answer cosine with its interval, the share of targets switched away from the index,
and the paired difference to the default margin and to never switching.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import replace

import numpy as np
from demo_targets import demo_targets  # bench/ is on sys.path when a script of it runs
from paired import paired_table

from e2p_lib.invert import default_policy_dir, load_inverter
from e2p_lib.lm import make_lm

DEFAULT_MARGIN = 0.05  # Inverter.search's switch_margin before this benchmark (now: never switch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=int, default=120, help="test targets (the first N of the test split)")
    parser.add_argument("--margins", default="0,0.025,0.05,0.1,0.2", help="comma-separated switch margins")
    args = parser.parse_args()
    margins = [float(m) for m in args.margins.split(",")]
    started = time.perf_counter()
    lm = make_lm("local")
    test = demo_targets(args.targets)
    targets = test.vectors
    inverter = load_inverter(environment=lm)
    # a finite margin, so the policy writes the rewrites the replay chooses among (never switching writes none)
    results = inverter.invert(
        targets,
        budget=1,
        exclude_ids=test.exclude,
        retrieved_share=0.5,
        samples=6,
        switch_margin=DEFAULT_MARGIN,
    )
    # what the search knew before its one call: the answer it paid for is forgotten, or a replay would see it
    known = [
        [c if c.source == "index" else replace(c, achieved_cosine=math.nan, answer=None) for c in r.candidates]
        for r in results
    ]
    cosines, columns = {}, {}
    for margin in [*margins, np.inf]:
        # Inverter._final is the search's own last step; replayed here so each margin sees the same candidates
        picks = [inverter._final(row, 1, margin, t) for row, t in zip(known, targets)]
        name = "never switch" if margin == np.inf else f"margin {margin:g}"
        cosines[name] = inverter.reward([p.prompt for p in picks], targets).rewards
        columns[name] = {"switched": float(np.mean([p.source != "index" for p in picks]))}
    default = f"margin {DEFAULT_MARGIN:g}"
    versus = {name: [default, "never switch"] for name in cosines}
    seconds = time.perf_counter() - started
    print(f"{len(targets)} test targets, one call each, policy {default_policy_dir()}; {seconds:.0f} s")
    print(paired_table(cosines, versus, columns).to_string(index=False))


if __name__ == "__main__":
    main()
