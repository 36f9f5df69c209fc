"""Generation throughput of the local environment LM (SmolLM2-135M-Instruct) by batch size.

The environment's answers are the RL loop's bottleneck, so this measures what a batch size buys: the same Alpaca
prompts are answered greedily (no answer cache) at each batch size, and the table gives answer tokens per second
(stop tokens included, padding not), prompts per second and wall seconds. Greedy answers do not depend on the batch
size, so every row should report the same token count; a different count flags a batch-dependent answer.

    .venv/bin/python bench/lm_generate.py                                  # 32 prompts, batch sizes 1 8 16 32
    .venv/bin/python bench/lm_generate.py --threads 1 2 --batch-sizes 8 32 --device cuda

Timings include tokenization, padding and decoding (all of `generate`), not model loading; the first, untimed call
warms the model up. Run on a quiet machine: other processes on the same cores distort CPU numbers badly.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from e2p_lib.data import load_alpaca
from e2p_lib.lm import DEFAULT_MAX_NEW_TOKENS, LocalChatLM


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="/work/shared/data/alpaca_5000.json")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 16, 32])
    parser.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()],
                        help="torch CPU thread counts to compare (default: torch's own setting)")
    parser.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()

    prompts = load_alpaca(args.data, limit=args.prompts)["prompt"].tolist()
    lm = LocalChatLM(device=args.device, dtype=args.dtype, show_progress=False)
    lm.generate(prompts[:2], max_new_tokens=8)  # warm-up: first-call allocations and lazy initialisation
    print(f"{lm.name} on {lm.device} ({lm.settings()['dtype']}), {platform.processor() or platform.machine()}, "
          f"{len(prompts)} Alpaca prompts, greedy, max_new_tokens={args.max_new_tokens}")
    print(f"{'threads':>7} {'batch':>5} {'tokens':>7} {'seconds':>8} {'tokens/s':>9} {'prompts/s':>9}")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for batch_size in args.batch_sizes:
            lm.batch_size = batch_size
            tokens_before = lm.tokens_generated
            started = time.perf_counter()
            lm.generate(prompts, max_new_tokens=args.max_new_tokens)
            seconds = time.perf_counter() - started
            tokens = lm.tokens_generated - tokens_before
            print(f"{threads:>7} {batch_size:>5} {tokens:>7} {seconds:>8.1f} {tokens / seconds:>9.1f} "
                  f"{len(prompts) / seconds:>9.2f}", flush=True)


if __name__ == "__main__":
    main()
