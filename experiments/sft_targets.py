"""Train the policy as 03 does, on other supervision or context, into a folder of its own.

    E2P_DATA_DIR=<data folder> python experiments/sft_targets.py --out <folder> --targets best-known --answers 1

`--targets original` supervises every row on its own prompt (03 before); `best-known` on its own prompt unless the
environment answers the best hypothesis it is shown nearer (`pipeline.best_known_prompts`), then on that hypothesis.
`--answers k` shows the k nearest stored outputs too (`PolicyConfig.answers`). Then score the policy with
`experiments/clean_search.py --policy <folder>/policy`.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from e2p_lib.data import add_split
from e2p_lib.embed import embedder_from_name
from e2p_lib.embed.cache import load_embedded_dataset
from e2p_lib.inversion.api import open_answer_index
from e2p_lib.lm import make_lm
from e2p_lib.models.policy import PolicyConfig
from e2p_lib.pipeline import best_known_prompts, row_answers, row_hypotheses, split_rows
from e2p_lib.store import make_vector_store
from e2p_lib.train.sft import PolicyTrainingConfig, train_policy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--targets", choices=("original", "best-known"), default="best-known")
    parser.add_argument("--answers", type=int, default=1)
    args = parser.parse_args()
    dataset = load_embedded_dataset(model="local/all-MiniLM-L6-v2", dimensions=384)
    frame = add_split(dataset.frame)
    train, val = split_rows(frame, "train"), split_rows(frame, "val")
    store = make_vector_store("local", name="alpaca", dimensions=dataset.dimensions)
    index = open_answer_index(store, make_lm("local"), embedder_from_name(dataset.model, dataset.dimensions))

    def reading(rows):
        known = row_hypotheses(index, frame, rows, dataset.vectors, k=2)
        if not args.answers:
            return known
        return [k + a for k, a in zip(known, row_answers(store, frame, rows, dataset.vectors, args.answers))]

    shown_train, shown_val = reading(train), reading(val)
    prompts = frame["prompt"].to_numpy()
    targets = prompts[train].tolist()
    if args.targets == "best-known":
        targets = best_known_prompts(index, frame, train, dataset.vectors, shown_train)
    print(f"{np.mean(np.array(targets) != prompts[train]):.0%} of rows write their best hypothesis back")
    started = time.perf_counter()
    train_policy(
        dataset.vectors[train],
        targets,
        dataset.vectors[val],
        prompts[val].tolist(),
        PolicyTrainingConfig(batch_size=16, max_steps=args.steps, learning_rate=2e-4, output_dir=args.out),
        PolicyConfig(embedding_dim=dataset.dimensions, hypotheses=2, answers=args.answers),
        train_hypotheses=shown_train,
        val_hypotheses=shown_val,
    )
    print(f"trained in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
