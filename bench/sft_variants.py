"""Which supervised data makes the better prompt policy? 03's SFT run against a variant of it, written to another folder
(the run in the data folder is left as it is), both policies' greedy rewrites answered on the same test targets, paired.

    E2P_DATA_DIR=data .venv/bin/python bench/sft_variants.py --steps 280 --out /tmp/policy-sft-280
    E2P_DATA_DIR=data .venv/bin/python bench/sft_variants.py --rows improving --out /tmp/policy-sft-improving

`--rows all` (default) continues the run from its checkpoint to `--steps` steps: the demo's SFT takes 80 steps of 16
rows, about a quarter of one pass over the 4,490 training rows, and raising `max_steps` on resume continues the same
run (its linear schedule stretched to the new end). `--rows improving` trains afresh with the run's own settings
(`--steps`: the run's own when not given) on the rows whose own prompt the environment answers nearer their output
than the best hypothesis shown (`pipeline.improves_on_hypotheses`, free: the answer index holds those answers).
Needs what 02 and 03 left in the data folder. Prints the share of rows kept, the validation cross-entropy and, per
policy, the rewrite's mean answer cosine at one call with its interval, and the paired difference.
"""

from __future__ import annotations

import argparse
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from paired import paired_table

from e2p_lib import config
from e2p_lib.data import add_split
from e2p_lib.embed import embedder_from_name
from e2p_lib.embed.cache import load_embedded_dataset
from e2p_lib.lm import make_lm
from e2p_lib.models.policy import PromptPolicy
from e2p_lib.pipeline import improves_on_hypotheses, open_answer_index, row_hypotheses, split_rows
from e2p_lib.store import make_vector_store
from e2p_lib.train.loop import load_checkpoint
from e2p_lib.train.rewards import AnswerCosineReward
from e2p_lib.train.sft import POLICY_FOLDER, PolicyTrainingConfig, policy_loss, train_policy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="policy-sft", help="the SFT run in the data folder's models/ to compare with")
    parser.add_argument("--rows", default="all", choices=("all", "improving"), help="the variant's training rows")
    parser.add_argument("--steps", type=int, default=None, help="the variant's optimiser steps (default: the run's)")
    parser.add_argument("--out", required=True, type=Path, help="the variant's folder (resumes if present)")
    parser.add_argument("--targets", type=int, default=120, help="test targets (the first N of the test split)")
    args = parser.parse_args()
    source = config.models_dir() / args.run
    checkpoint = load_checkpoint(source)
    saved, source_step = checkpoint["config"], int(checkpoint["step"])
    if args.rows == "all" and not args.out.exists():
        args.out.mkdir(parents=True)
        for name in ("checkpoint.pt", "config.json"):  # continued from the run's end; its policy/ is written last
            shutil.copy2(source / name, args.out / name)
    started = time.perf_counter()

    lm = make_lm("local")
    dataset = load_embedded_dataset(model="local/all-MiniLM-L6-v2", dimensions=384)
    frame = add_split(dataset.frame)
    train, val, test = (split_rows(frame, name) for name in ("train", "val", "test"))
    test = test[: args.targets]
    prompts = frame["prompt"].to_numpy()
    embedder = embedder_from_name(dataset.model, dataset.dimensions)
    store = make_vector_store("local", name="alpaca", dimensions=dataset.dimensions)
    index = open_answer_index(store, lm, embedder, 64)
    before = PromptPolicy.load(source / POLICY_FOLDER)
    k = before.config.hypotheses
    train_hypotheses = row_hypotheses(index, frame, train, dataset.vectors, k=k)
    val_hypotheses = row_hypotheses(index, frame, val, dataset.vectors, k=k)
    if args.rows == "improving":
        keep = improves_on_hypotheses(index, frame, train, dataset.vectors, train_hypotheses)
        print(f"rows whose own prompt improves on their hypotheses: {keep.sum()} of {len(keep)}", flush=True)
        train, train_hypotheses = train[keep], [h for h, kept in zip(train_hypotheses, keep) if kept]
    # the run's own settings; the end and the folder may differ (both may change on resume)
    fields = {f: saved[f] for f in asdict(PolicyTrainingConfig()) if f in saved}
    training = PolicyTrainingConfig(
        **{**fields, "max_steps": args.steps or saved["max_steps"], "output_dir": str(args.out)}
    )
    after, _ = train_policy(
        dataset.vectors[train],
        prompts[train].tolist(),
        dataset.vectors[val],
        prompts[val].tolist(),
        training,
        before.config,
        train_hypotheses=train_hypotheses,
        val_hypotheses=val_hypotheses,
    )
    trained = time.perf_counter() - started
    print(f"trained to step {training.max_steps} in {trained:.0f} s", flush=True)

    hypotheses = row_hypotheses(index, frame, test, dataset.vectors, k=k)
    val_rows = np.arange(min(64, len(val)))
    reward = AnswerCosineReward(lm, embedder, max_new_tokens=64)
    cosines, losses = {}, {}
    for name, model in (
        (f"{args.run} (step {source_step})", before),
        (f"{args.rows} rows (step {training.max_steps})", after),
    ):
        model.eval()
        losses[name] = policy_loss(
            model,
            dataset.vectors[val][val_rows],
            prompts[val][val_rows].tolist(),
            [val_hypotheses[i] for i in val_rows],
        )
        rewrites = model.generate(dataset.vectors[test], hypotheses=hypotheses)
        cosines[name] = reward(rewrites, dataset.vectors[test]).rewards
    cosines["original prompt"] = reward(prompts[test].tolist(), dataset.vectors[test]).rewards
    first, second = list(cosines)[:2]
    table = paired_table(cosines, {second: [first]}, {name: {"val CE": loss} for name, loss in losses.items()})
    print(f"{len(test)} test targets, one call each; {time.perf_counter() - started:.0f} s in all")
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
