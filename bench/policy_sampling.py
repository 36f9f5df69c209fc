"""The policy's sampled prompts: each target's context read once and its key/value cache repeated, against the
context repeated once per sample (what `PromptPolicy.generate_ids` did before).

The search's rewrites, 04's rollouts and expert iteration sample several prompts per target from one long context
(the soft tokens, two known prompts and a stored answer: about 150 tokens). The policy here is SmolLM2-135M with an
untrained mapper (`--policy` loads a trained one): the prompts it writes differ, the context lengths and the number
of steps do not. Both paths draw from one seed; the script checks that they write the same prompts.

    python bench/policy_sampling.py --targets 12 --samples 5 --repeats 2

Timings move with other processes on the same cores; compare the ratios within one run.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from policy_inputs import add_arguments, policy_inputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser, 12, "targets per batch (05's chunk: 64 // (samples - 1))")
    parser.add_argument("--samples", type=int, default=5, help="sampled prompts per target (the search's 6 - greedy)")
    args = parser.parse_args()
    policy, reading, targets = policy_inputs(args)
    k = args.samples

    def once_per_target():
        return policy.generate_ids(targets, temperature=0.8, num_return_sequences=k, seed=0, hypotheses=reading)

    def once_per_sample():
        repeated = [row for row in reading for _ in range(k)]
        return policy.generate_ids(np.repeat(targets, k, axis=0), temperature=0.8, seed=0, hypotheses=repeated)

    paths = {"context repeated per sample (before)": once_per_sample, "context read once per target": once_per_target}
    seconds: dict[str, list[float]] = {name: [] for name in paths}
    written = {}
    with torch.no_grad(), policy.merged_lora():
        for _ in range(args.repeats):
            for name, run in paths.items():
                start = time.perf_counter()
                written[name] = policy.decode(run())
                seconds[name].append(time.perf_counter() - start)
    before = np.mean(seconds["context repeated per sample (before)"])
    context = policy.context_embeddings(targets, reading)[1].sum(1).float().mean()
    print(f"{args.targets} targets x {k} samples, contexts of {context:.0f} tokens on average, {args.repeats} runs\n")
    print("| path | seconds per batch | x faster |\n|---|--:|--:|")
    for name, values in seconds.items():
        print(f"| {name} | {np.mean(values):.1f} | {before / np.mean(values):.2f} |")
    same = sum(a == b for a, b in zip(*written.values()))
    print(f"\nthe same prompts: {same} of {len(next(iter(written.values())))}")


if __name__ == "__main__":
    main()
