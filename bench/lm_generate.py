"""The local environment's engines side by side: transformers float32 vs CTranslate2 float32 vs CTranslate2 int8.

The environment's answers are the RL loop's and the evaluation's bottleneck, so this measures what each engine
costs and whether its answers are as good. The same Alpaca prompts (chat template and system prompt of
`e2p_lib.lm`) are answered greedily, no answer cache, at each batch size, engine after engine in one process:

- answer tokens per second (stop tokens included, padding not) and wall seconds;
- CPU seconds of this process (all threads) per 1,000 answer tokens: what an engine takes from other jobs;
- answers identical to transformers float32 (a count out of the prompts);
- mean MiniLM cosine between each answer and Alpaca's own output (the quality an environment must keep), and the
  mean cosine to transformers' answer. On 32 prompts this is a glance; issue 14's quality criterion (05_eval's
  original prompt row on 120 test targets, with bootstrap intervals) is docs/experiments.md#environment-engine.

    .venv/bin/python bench/lm_generate.py                                  # 32 prompts, 64 tokens, batch 16 and 32
    .venv/bin/python bench/lm_generate.py --batch-sizes 8 32 --rounds 2    # best of 2 rounds per cell

Both engines use the cores this process may run on (`default_threads()`). Timings include tokenization and
decoding, not model loading; a first, untimed call warms each engine up. Other processes on the same cores distort
absolute numbers, so compare the ratios within one run; the load average is printed before and after. CPU seconds
per token move least with the load, except where the cores are heavily oversubscribed: there transformers' CPU
seconds per token grew several-fold (113 per 1k tokens at load 10 on 2 cores, docs/experiments.md#environment-engine;
18-24 at load 5), most likely torch's threads waiting on each other busily.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch

from e2p_lib.data import load_alpaca
from e2p_lib.embed import LocalEmbedder
from e2p_lib.lm import LocalChatLM
from e2p_lib.lm.ctranslate2 import CTranslate2ChatLM, default_threads


def load_line() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min) on {os.cpu_count()} cores"


def timed(lm, prompts: list[str], max_new_tokens: int) -> tuple[list[str], float, float, int]:
    """(answers, wall s, CPU s of this process, answer tokens) of one greedy call."""
    tokens_before = lm.tokens_generated
    wall, cpu = time.perf_counter(), time.process_time()
    answers = lm.generate(prompts, max_new_tokens=max_new_tokens)
    return answers, time.perf_counter() - wall, time.process_time() - cpu, lm.tokens_generated - tokens_before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="Alpaca file (default: $E2P_ALPACA_PATH, then load_alpaca's)")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=1, help="rounds per cell; the fastest is reported")
    args = parser.parse_args()

    frame = load_alpaca(args.data, limit=args.prompts)
    prompts = frame["prompt"].tolist()
    threads = default_threads()
    torch.set_num_threads(threads)
    engines = {
        "transformers float32": LocalChatLM(device="cpu", dtype="float32", show_progress=False),
        "CTranslate2 float32": CTranslate2ChatLM("float32", num_threads=threads, show_progress=False),
        "CTranslate2 int8": CTranslate2ChatLM("int8", num_threads=threads, show_progress=False),
    }
    for lm in engines.values():
        lm.generate(prompts[:2], max_new_tokens=8)  # warm-up: first-call allocations and lazy initialisation
    print(
        f"SmolLM2-135M-Instruct on {platform.processor() or platform.machine()}, {threads} threads, "
        f"{len(prompts)} Alpaca prompts, greedy, max_new_tokens={args.max_new_tokens}; CTranslate2 int8 runs as "
        f"{engines['CTranslate2 int8'].compute_type}\nbefore: {load_line()}\n"
    )

    rows, answers_of = [], {}
    for batch_size in args.batch_sizes:
        for name, lm in engines.items():
            lm.batch_size = batch_size
            best = None
            for _ in range(args.rounds):
                run = timed(lm, prompts, args.max_new_tokens)
                best = run if best is None or run[1] < best[1] else best
            answers, wall, cpu, tokens = best
            answers_of[name] = answers
            rows.append(
                {
                    "engine": name,
                    "batch": batch_size,
                    "tokens": tokens,
                    "wall s": wall,
                    "tok/s": tokens / wall,
                    "CPU s": cpu,
                    "CPU s / 1k tokens": 1000 * cpu / tokens,
                    "answers": answers,
                }
            )

    # quality: MiniLM cosine to Alpaca's outputs, and agreement with transformers float32
    embedder = LocalEmbedder(show_progress=False)
    outputs = embedder.embed(frame["output"].tolist())
    reference = {
        b: next(r["answers"] for r in rows if r["batch"] == b and r["engine"] == "transformers float32")
        for b in args.batch_sizes
    }
    reference_vectors = {b: embedder.embed([a or "(empty)" for a in answers]) for b, answers in reference.items()}
    base = {r["batch"]: r for r in rows if r["engine"] == "transformers float32"}
    print(
        "| engine | batch | answer tokens | wall s | tok/s | x tok/s | CPU s | CPU s / 1k tokens | x CPU per token "
        "| identical to transformers | cosine to Alpaca output | cosine to transformers' answer |"
    )
    print("|:--|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for r in rows:
        vectors = embedder.embed([a or "(empty)" for a in r["answers"]])
        to_output = float(np.mean(np.sum(vectors * outputs, axis=1)))
        to_reference = float(np.mean(np.sum(vectors * reference_vectors[r["batch"]], axis=1)))
        same = sum(a == b for a, b in zip(r["answers"], reference[r["batch"]]))
        b = base[r["batch"]]
        print(
            f"| {r['engine']} | {r['batch']} | {r['tokens']} | {r['wall s']:.1f} | {r['tok/s']:.1f} | "
            f"{r['tok/s'] / b['tok/s']:.2f} | {r['CPU s']:.1f} | {r['CPU s / 1k tokens']:.1f} | "
            f"{r['CPU s / 1k tokens'] / b['CPU s / 1k tokens']:.2f} | {same}/{len(prompts)} | {to_output:.3f} | "
            f"{to_reference:.3f} |"
        )
    print(f"\nafter: {load_line()}")


if __name__ == "__main__":
    main()
