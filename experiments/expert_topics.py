"""Expert iteration as 04 runs it, with topic calls in its searches, into a folder of its own.

    E2P_DATA_DIR=<data folder> python experiments/expert_topics.py --out <folder> --topics 3

From 03's SFT policy, 04's demo sizes (16 training targets x 8 calls, 8 steps), seed 0; `--topics 0` is 04's expert
iteration. Prints the round's log. Then score the policy with `experiments/clean_search.py --policy <folder>/policy`
(it prints the share of the returned prompts worded as topic prompts).
"""

from __future__ import annotations

import argparse
import time

from e2p_lib import config
from e2p_lib.answer_index import leave_out
from e2p_lib.config import POLICY_FOLDER
from e2p_lib.data import add_split
from e2p_lib.embed import embedder_from_name
from e2p_lib.embed.cache import load_embedded_dataset
from e2p_lib.inversion.api import load_inverter
from e2p_lib.models.policy import PromptPolicy
from e2p_lib.pipeline import split_rows
from e2p_lib.train.expert import ExpertIterationConfig, expert_iteration


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--topics", type=int, default=3)
    parser.add_argument("--targets", type=int, default=16)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    dataset = load_embedded_dataset(model="local/all-MiniLM-L6-v2", dimensions=384)
    frame = add_split(dataset.frame)
    train = split_rows(frame, "train")
    exclusions = leave_out(frame["id"].tolist(), frame["output"].tolist())
    sft = config.models_dir() / "policy-sft" / POLICY_FOLDER
    inverter = load_inverter(sft, embedder=embedder_from_name(dataset.model, dataset.dimensions))
    inverter.policy = PromptPolicy.load(sft, trainable=True)
    started = time.perf_counter()
    log = expert_iteration(
        inverter,
        dataset.vectors[train],
        [exclusions[r] for r in train],
        ExpertIterationConfig(
            targets_per_round=args.targets,
            budget=8,
            steps_per_round=args.steps,
            topics=args.topics,
            output_dir=args.out,
        ),
    )
    print(log.to_string(), f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
