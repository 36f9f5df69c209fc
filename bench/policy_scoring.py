"""RL's scoring and update passes (`PromptPolicy.token_logprobs`) with each target's context read once for its
samples (`contexts=...`, `PPOConfig.share_contexts`), against once per sample (before).

One RL step of 04 samples 4 prompts for each of 4 targets; scoring reads all 16 without gradients (the reference's
log-probabilities), and each update reads a shuffled minibatch of 8 with gradients. Each target reads two Alpaca
prompts and one output (contexts of about 170 tokens), far longer than the prompts (about 20 tokens).

    python bench/policy_scoring.py --repeats 2 --policy data/models/policy-ei/policy

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
    add_arguments(parser, 4, "targets per RL step (04's targets_per_step)")
    parser.add_argument("--samples", type=int, default=4, help="prompts per target (04's samples_per_target)")
    parser.add_argument("--minibatch", type=int, default=8, help="prompts per update (PPOConfig.batch_size)")
    args = parser.parse_args()
    policy, reading, targets = policy_inputs(args, trainable=True)
    k = args.samples
    ids = policy.generate_ids(targets, temperature=0.7, num_return_sequences=k, seed=0, hypotheses=reading)
    mask = policy.completion_mask(ids)
    minibatch = np.random.default_rng(1).permutation(len(ids))[: args.minibatch]

    def read(samples: np.ndarray, shared: bool, grad: bool):
        groups = samples // k
        if shared:
            distinct, contexts = np.unique(groups, return_inverse=True)
            options = dict(hypotheses=[reading[g] for g in distinct], contexts=contexts)
            vectors = targets[distinct]
        else:
            options, vectors = dict(hypotheses=[reading[g] for g in groups]), targets[groups]
        with torch.set_grad_enabled(grad):
            logprobs = policy.token_logprobs(vectors, ids[samples], mask[samples], **options)
            if grad:
                policy.zero_grad()
                (logprobs * mask[samples]).sum().backward()
        return logprobs.detach() * mask[samples]

    passes = {
        f"scoring: {len(ids)} prompts, no gradients": (np.arange(len(ids)), False),
        f"update: a minibatch of {len(minibatch)}, forward and backward": (minibatch, True),
    }
    print(f"{args.targets} targets x {k} prompts, {args.repeats} runs per path\n")
    print("| pass | once per sample (s, before) | once per target (s, now) | x faster | largest log-prob gap |")
    print("|---|--:|--:|--:|--:|")
    policy.eval()  # no dropout, so both paths compute the same numbers
    for name, (samples, grad) in passes.items():
        seconds = {False: [], True: []}
        values = {}
        for _ in range(args.repeats):
            for shared in (False, True):
                start = time.perf_counter()
                values[shared] = read(samples, shared, grad)
                seconds[shared].append(time.perf_counter() - start)
        before, now = np.mean(seconds[False]), np.mean(seconds[True])
        gap = float((values[True] - values[False]).abs().max())
        print(f"| {name} | {before:.2f} | {now:.2f} | {before / now:.2f} | {gap:.1e} |")


if __name__ == "__main__":
    main()
