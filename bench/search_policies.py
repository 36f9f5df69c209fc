"""Which trained policy e2p's search should read: the same search (05's `e2p, 1 call` and `e2p, <=8 calls`) run with
each saved policy (03's SFT, 04's PPO and expert iteration), paired on the same test targets.

    E2P_DATA_DIR=data .venv/bin/python bench/search_policies.py --targets 120

Needs what 02-04 left in the data folder (the store, the answer index of the default environment, the policies, a
forward model). The search's settings are 05's (6 rewrites per round at temperature 0.8, half the exploring calls to
retrieved prompts). Prints each row's mean answer cosine with its bootstrap interval, the calls spent, and paired
differences to one policy's search (`--versus`, SFT by default) and to the original prompt. Answers are cached, so
the baselines and a policy already searched cost little on a rerun; the policies' sampling is what takes the time.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from demo_targets import demo_targets
from paired import paired_table

from e2p_lib import config
from e2p_lib.evaluate.baselines import best_answered, retrieval_candidates
from e2p_lib.invert import load_inverter
from e2p_lib.lm import make_lm
from e2p_lib.train.rewards import AnswerCosineReward
from e2p_lib.train.sft import POLICY_FOLDER

POLICIES = {"SFT": "policy-sft", "PPO": "policy-rl", "expert iteration": "policy-ei"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=int, default=120, help="test targets (the first N of the test split)")
    parser.add_argument("--budgets", default="1,8", help="comma-separated search budgets")
    parser.add_argument("--policies", default="SFT,expert iteration", help=f"comma-separated, of {list(POLICIES)}")
    parser.add_argument(
        "--policy",
        action="append",
        default=[],
        metavar="NAME=FOLDER",
        help="another saved run to search with (a folder holding policy/, e.g. bench/sft_steps.py's --out); repeatable",
    )
    parser.add_argument("--versus", default="SFT", help="the policy each other policy's search is paired with")
    args = parser.parse_args()
    folders = {name: config.models_dir() / POLICIES[name] for name in args.policies.split(",") if name}
    for entry in args.policy:
        name, _, folder = entry.partition("=")
        if not folder:
            parser.error(f"--policy {entry!r}: write NAME=FOLDER")
        folders[name] = Path(folder)
    budgets = [int(b) for b in args.budgets.split(",")]

    lm = make_lm("local")
    test = demo_targets(args.targets)
    targets, test_ids, exclude = test.vectors, test.ids, test.exclude
    started = time.perf_counter()
    inverters = {name: load_inverter(folder / POLICY_FOLDER, environment=lm) for name, folder in folders.items()}
    reward = AnswerCosineReward(lm, next(iter(inverters.values())).embedder, max_new_tokens=64)
    cosines = {"original prompt": reward(test.prompts, targets).rewards}
    calls = {"original prompt": 1.0}
    candidates = retrieval_candidates(next(iter(inverters.values())).retrieval, targets, test_ids, k=8)
    cosines["retrieval, best of 8 answered"] = best_answered(candidates, targets, reward, 8)[1]
    calls["retrieval, best of 8 answered"] = 8.0
    versus = {}
    for budget in budgets:
        for name, inverter in inverters.items():
            began = time.perf_counter()
            results = inverter.invert(targets, budget=budget, exclude_ids=exclude, retrieved_share=0.5, samples=6)
            row = f"e2p, <={budget} calls, {name} policy"
            versus[row] = [f"e2p, <={budget} calls, {args.versus} policy", "original prompt"]
            cosines[row] = np.array([r.achieved_cosine for r in results])
            calls[row] = float(np.mean([r.environment_calls for r in results]))
            print(f"{row}: {cosines[row].mean():.3f} in {time.perf_counter() - began:.0f} s", flush=True)
    table = paired_table(cosines, versus, {name: {"calls/target": c} for name, c in calls.items()})
    print(f"{len(targets)} test targets, {time.perf_counter() - started:.0f} s")
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
