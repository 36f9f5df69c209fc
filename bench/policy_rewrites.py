"""Saved policies' own rewrites, one call each, paired on the same test targets: 05's `<policy> rewrite` rows for
any policy folder, e.g. two PPO runs, or (in a data folder from before PPO kept its best validated step) the last
step's `policy-rl/policy` against `policy-rl/policy-best`.

    E2P_DATA_DIR=data .venv/bin/python bench/policy_rewrites.py --targets 120 \\
        --policy SFT=policy-sft/policy --policy PPO=policy-rl/policy

Needs 02's store and answer index and the policy folders (relative to the models folder, or absolute). Each policy
writes its greedy prompt for each target from the index's best prompts as hypotheses (as many as it reads, never an
excluded row), as in 05; the environment answers it once (cached answers are reused). Prints each policy's mean
answer cosine with its bootstrap interval and its paired difference to the first policy named.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from demo_targets import index_pieces  # bench/ is on sys.path when a script of it runs
from paired import paired_table

from e2p_lib import config
from e2p_lib.models.policy import PromptPolicy
from e2p_lib.train.rewards import NO_ANSWER


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=int, default=120, help="the first N targets of the split")
    parser.add_argument("--split", default="test", choices=("test", "val"))
    parser.add_argument(
        "--policy", action="append", default=[], metavar="NAME=FOLDER", help="repeatable; first: baseline"
    )
    args = parser.parse_args()
    entries = [entry.partition("=") for entry in args.policy]
    names = [name for name, _, _ in entries]
    if len(entries) < 2 or any(not name or not folder for name, _, folder in entries) or len(set(names)) < len(names):
        parser.error("name two or more policies as --policy NAME=FOLDER, each name once (the first is the baseline)")
    started = time.perf_counter()
    folders = {
        name: Path(folder) if Path(folder).is_absolute() else config.models_dir() / folder
        for name, _, folder in entries
    }
    policies = {name: PromptPolicy.load(folder) for name, folder in folders.items()}
    p = index_pieces(args.targets, args.split, k=max(policy.config.hypotheses for policy in policies.values()) or 1)
    cosines = {}
    for name, policy in policies.items():
        prompts = policy.generate(p.chosen.vectors, hypotheses=p.hypotheses)
        sent = [q if q.strip() else NO_ANSWER for q in prompts]  # as 05 scores an empty prompt
        cosines[name] = p.reward(sent, p.chosen.vectors).rewards
        print(f"{name}: {cosines[name].mean():.3f} ({len(set(prompts))} distinct prompts)", flush=True)
    baseline = next(iter(policies))
    print(paired_table(cosines, {name: [baseline] for name in policies}).to_string(index=False))
    print(f"{len(p.chosen.vectors)} {args.split} targets, {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
