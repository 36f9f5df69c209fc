"""04's expert iteration started from any saved SFT run, with any `ExpertIterationConfig.keep`, written to another
folder, so a variant of Stage 2 can be compared (bench/search_policies.py) without touching the data folder.

    E2P_DATA_DIR=data .venv/bin/python bench/expert_from.py --start data/models/policy-sft --out /tmp/policy-ei-rw \
        --keep rewrites --targets 64

The settings are 04's defaults (32 training targets searched with 8 calls each, 16 SFT steps on the best prompts
found). Needs the answer index and the forward model that 02 and 03 left in the data folder. Prints the round's log
(calls, mean best cosine found, the share of targets where a rewrite was best); compare the saved policy's search
with bench/search_policies.py --policy NAME=OUT.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from e2p_lib import config
from e2p_lib.answer_index import leave_out
from e2p_lib.data import add_split
from e2p_lib.embed import embedder_from_name
from e2p_lib.embed.cache import load_embedded_dataset
from e2p_lib.invert import Inverter
from e2p_lib.lm import make_lm
from e2p_lib.models.policy import PromptPolicy
from e2p_lib.pipeline import load_forward_model, open_answer_index, split_rows
from e2p_lib.store import make_vector_store
from e2p_lib.train.expert import ExpertIterationConfig, expert_iteration
from e2p_lib.train.sft import POLICY_FOLDER


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--start", required=True, type=Path, help="the SFT run folder (holding policy/) to start from")
    parser.add_argument("--out", required=True, type=Path, help="where the improved policy is saved")
    parser.add_argument("--targets", type=int, default=32, help="training targets searched (04's ei_targets)")
    parser.add_argument("--budget", type=int, default=8, help="environment calls per target (04's ei_budget)")
    parser.add_argument("--steps", type=int, default=16, help="SFT steps on the best prompts (04's ei_steps)")
    parser.add_argument("--keep", default="all", choices=("all", "rewrites"), help="ExpertIterationConfig.keep")
    args = parser.parse_args()
    started = time.perf_counter()
    lm = make_lm("local")
    dataset = load_embedded_dataset(model="local/all-MiniLM-L6-v2", dimensions=384)
    frame = add_split(dataset.frame)
    train = split_rows(frame, "train")
    embedder = embedder_from_name(dataset.model, dataset.dimensions)
    store = make_vector_store("local", name="alpaca", dimensions=dataset.dimensions)
    index = open_answer_index(store, lm, embedder, 64)
    policy = PromptPolicy.load(args.start / POLICY_FOLDER, trainable=True)
    inverter = Inverter(
        policy, embedder, load_forward_model(config.models_dir(), embedder), lm, index=index, answer_max_new_tokens=64
    )
    exclusions = leave_out(frame["id"].tolist(), frame["output"].tolist())
    settings = ExpertIterationConfig(
        targets_per_round=args.targets,
        budget=args.budget,
        steps_per_round=args.steps,
        keep=args.keep,
        output_dir=str(args.out),
    )
    log = expert_iteration(inverter, dataset.vectors[train], [exclusions[r] for r in train], settings)
    print(f"{time.perf_counter() - started:.0f} s; saved {args.out / POLICY_FOLDER}")
    print(log.round(3).to_string(index=False))


if __name__ == "__main__":
    main()
