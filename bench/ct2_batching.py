"""CTranslate2's greedy answers by batch size, anchor row, workers and weights: time, and whether answers change.

The environment's default (`CTranslate2ChatLM`) decides three things this measures: how many prompts go into one
`generate_batch` call, whether each batch carries the anchor row (the chat template's fixed prefix, which makes
every prompt take the same path whatever its batch mates, at the price of feeding each prompt token after that prefix
as a decoding step), and how many workers answer batches at once (the threads split between them); and whether int8
weights would pay (they change answers).
Prompts: a random sample of Alpaca prompts (instruction and input) and, like 05's grounded
calls, long ones (an instruction, then "Use these ideas:" and another row's output). For each setting, in one
process: wall and CPU seconds, and how many answers equal the reference (anchored batches of 32, the old default,
whose answers equal those generated one by one, on one worker) and a one-by-one run without the anchor on a subset.
A setting is SIZE[:anchor][:wN][:int8]: batch size, the anchor row, N workers (default 1, all threads in one worker),
int8 weights (default float32). Where answers differ, the MiniLM cosine of each answer to the reference's says how far.

    E2P_DATA_DIR=data .venv/bin/python bench/ct2_batching.py --prompts 512 --long 128
    E2P_DATA_DIR=data .venv/bin/python bench/ct2_batching.py --settings 64 64:w2 128:w2 16:w2 --small 16
    E2P_DATA_DIR=data .venv/bin/python bench/ct2_batching.py --prompts 256 --long 0 --settings 64 64:int8:anchor 64:int8

Timings move with other processes on the same cores; compare the ratios within one run.
"""

from __future__ import annotations

import argparse
import os
import random
import time

import numpy as np

from e2p_lib.data import load_alpaca
from e2p_lib.embed.local import LocalEmbedder
from e2p_lib.evaluate.metrics import answer_cosines
from e2p_lib.lm.ctranslate2 import CTranslate2ChatLM
from e2p_lib.train.rewards import embed_answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="Alpaca file (default: $E2P_ALPACA_PATH, then data/)")
    parser.add_argument("--prompts", type=int, default=512, help="Alpaca prompts")
    parser.add_argument("--long", type=int, default=128, help="long, grounded-style prompts")
    parser.add_argument("--one-by-one", type=int, default=48, help="prompts also answered alone, without the anchor")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--settings", nargs="+", default=["32:anchor", "32", "64", "64:anchor", "128", "64:w2"])
    parser.add_argument("--small", type=int, default=0, help="also time calls of this many prompts (PPO's size)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    frame = load_alpaca(args.data, download=False)
    texts, outputs = frame["prompt"].tolist(), frame["output"].tolist()
    picked = random.Random(args.seed).sample(range(len(frame)), args.prompts + 2 * args.long)
    prompts = [texts[i] for i in picked[: args.prompts]]
    tail = picked[args.prompts :]
    prompts += [f"{texts[i]}\nUse these ideas: {outputs[j]}" for i, j in zip(tail[: args.long], tail[args.long :])]
    print(f"{args.prompts} Alpaca prompts + {args.long} long ones; {args.max_new_tokens} new tokens; {os.getloadavg()}")

    lms: dict[tuple[int, str], CTranslate2ChatLM] = {}

    def engine(workers: int, compute_type: str = "float32") -> CTranslate2ChatLM:
        if (workers, compute_type) not in lms:
            lm = CTranslate2ChatLM(workers=workers, compute_type=compute_type, show_progress=False)
            lm.generate(prompts[:4], args.max_new_tokens)  # warm-up, untimed
            lms[workers, compute_type] = lm
        return lms[workers, compute_type]

    lm = engine(1)
    lengths = [len(t) for t in lm.tokenizer(prompts)["input_ids"]]
    print(f"prompt tokens (without the chat template): mean {sum(lengths) / len(lengths):.0f}, max {max(lengths)}")

    def answer(
        batch_size: int, anchor: bool, subset: list[str], workers: int = 1, compute_type: str = "float32"
    ) -> tuple[list[str], float, float]:
        lm = engine(workers, compute_type)
        lm.batch_size, lm.anchor_row = batch_size, anchor
        wall, cpu = time.perf_counter(), time.process_time()
        answers = []
        for start in range(0, len(subset), args.small or len(subset)):  # --small: calls of that many prompts
            answers += lm.generate(subset[start : start + (args.small or len(subset))], args.max_new_tokens)
        return answers, time.perf_counter() - wall, time.process_time() - cpu

    reference, reference_wall, reference_cpu = answer(32, True, prompts)
    alone_idx = list(range(0, len(prompts), max(1, len(prompts) // args.one_by_one)))[: args.one_by_one]
    alone = [answer(1, False, [prompts[i]])[0][0] for i in alone_idx]
    same_alone = sum(alone[k] == reference[i] for k, i in enumerate(alone_idx))
    print(f"one by one without the anchor: {same_alone}/{len(alone_idx)} answers equal the anchored batches of 32")
    calls = f"calls of {args.small} prompts" if args.small else "one call"
    embedder = LocalEmbedder(show_progress=False)
    reference_vectors = embed_answers(reference, embedder, show_progress=False)

    def cosines(answers: list[str]) -> str:
        """Mean and 10th percentile of each answer's MiniLM cosine to the reference's answer."""
        similarity = answer_cosines(embed_answers(answers, embedder, show_progress=False), reference_vectors)
        return f"{similarity.mean():.3f} / {np.percentile(similarity, 10):.3f}"

    print(
        f"| batch | anchor row | workers | weights | wall s ({calls}) | x wall | CPU s | answers equal to anchored 32 "
        "| cosine to the reference's (mean / 10th pct) |"
    )
    print("|--:|:--|--:|:--|--:|--:|--:|--:|--:|")
    n = len(prompts)
    print(f"| 32 | yes (reference) | 1 | float32 | {reference_wall:.1f} | 1.00 | {reference_cpu:.1f} | {n}/{n} | 1 |")
    for setting in args.settings:
        size, *flags = setting.split(":")
        workers = next((int(f[1:]) for f in flags if f.startswith("w")), 1)
        compute_type = "int8" if "int8" in flags else "float32"
        answers, wall, cpu = answer(int(size), "anchor" in flags, prompts, workers, compute_type)
        same = sum(a == b for a, b in zip(answers, reference))
        print(
            f"| {size} | {'yes' if 'anchor' in flags else 'no'} | {workers} | {compute_type} | {wall:.1f} "
            f"| {wall / reference_wall:.2f} | {cpu:.1f} | {same}/{n} | {cosines(answers) if same < n else 1} |"
        )
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
