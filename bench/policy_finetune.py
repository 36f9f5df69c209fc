"""LoRA, full fine-tuning and the mapping network alone, side by side: what one SFT step of the prompt policy costs
and how far the same number of steps gets each on the real data.

    .venv/bin/python bench/policy_finetune.py                 # 40 steps of 16 rows per mode, on the MiniLM cache
    .venv/bin/python bench/policy_finetune.py --steps 20 --modes lora full full:2e-4   # mode[:learning rate]

Each mode trains in its own process (so peak memory is its own) from the same seed, on the same batches of the
train split of the embedding cache that `01_embed` wrote (`E2P_DATA_DIR` moves it), and is scored by teacher-forced
cross-entropy on the same 64 validation rows. Full fine-tuning runs at a conventional 3e-5 and at LoRA's 2e-4 (on
the demo data the larger rate learned faster over 20 steps). Run it on a quiet machine: other processes on the same
2 cores distort CPU timings badly.
"""

from __future__ import annotations

import argparse
import multiprocessing
import platform
import resource
import time

import numpy as np
import pandas as pd
import torch

STEP_SECONDS = "seconds per step (with load and validation)"
LEARNING_RATES = {"lora": 2e-4, "full": 3e-5, "prefix": 2e-4}  # prefix: no LM weights train; the mapper uses 1e-3


def train_one(spec: str, steps: int, batch_size: int, embedding_model: str, dimensions: int) -> dict:
    from e2p_lib.data import add_split
    from e2p_lib.embed.cache import load_embedded_dataset
    from e2p_lib.models.policy import PolicyConfig
    from e2p_lib.train.sft import PolicyTrainingConfig, train_policy

    mode, _, rate = spec.partition(":")
    learning_rate = float(rate) if rate else LEARNING_RATES[mode]
    dataset = load_embedded_dataset(model=embedding_model, dimensions=dimensions)
    split = add_split(dataset.frame)["split"].to_numpy()
    train, val = np.flatnonzero(split == "train"), np.flatnonzero(split == "val")
    prompts = dataset.frame["prompt"].to_numpy()
    config = PolicyTrainingConfig(
        batch_size=batch_size, max_steps=steps, learning_rate=learning_rate, eval_every_steps=0, show_progress=False
    )
    started = time.perf_counter()
    policy, history = train_policy(
        dataset.vectors[train],
        prompts[train].tolist(),
        dataset.vectors[val],
        prompts[val].tolist(),
        config,
        PolicyConfig(embedding_dim=dataset.dimensions, finetune=mode),
    )
    seconds = time.perf_counter() - started
    trainable = sum(p.numel() for p in policy.parameters() if p.requires_grad)
    return {
        "mode": mode,
        "learning rate": learning_rate,
        "trainable params (M)": trainable / 1e6,
        STEP_SECONDS: seconds / steps,
        "train loss (last)": history.last("train", "loss"),
        f"val CE after {steps} steps": history.last("val", "loss"),
        "peak memory (GB)": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
        "example": policy.generate(dataset.vectors[val[:1]])[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--modes",
        nargs="+",
        default=[*LEARNING_RATES, "full:2e-4"],
        help="lora, full or prefix, each optionally with :learning_rate",
    )
    parser.add_argument("--embedding-model", default="local/all-MiniLM-L6-v2")
    parser.add_argument("--dimensions", type=int, default=384)
    args = parser.parse_args()

    print(f"{platform.machine()}, {torch.get_num_threads()} torch threads, {args.steps} steps x {args.batch_size} rows")
    rows = []
    context = multiprocessing.get_context("spawn")
    for spec in args.modes:
        if spec.partition(":")[0] not in LEARNING_RATES:
            parser.error(f"unknown mode {spec!r}: use lora, full or prefix, optionally with :learning_rate")
        with context.Pool(1) as pool:  # a fresh process per mode: its own peak memory, no warm caches shared
            rows.append(
                pool.apply(train_one, (spec, args.steps, args.batch_size, args.embedding_model, args.dimensions))
            )
        print(f"  {spec}: {rows[-1][STEP_SECONDS]:.2f} s/step", flush=True)
    table = pd.DataFrame(rows).set_index(["mode", "learning rate"])
    print(table.drop(columns="example").to_markdown(floatfmt=".3g"))
    print()
    print(table[["example"]].to_markdown())


if __name__ == "__main__":
    main()
