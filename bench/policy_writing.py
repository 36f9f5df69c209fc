"""The search's writing (`Inverter.propose`: a greedy prompt and `samples - 1` sampled ones per target) by
transformers' `generate`, as `PromptPolicy.generate_ids` called it before, against `generate_ids` now.

- before: two `generate` calls, greedy then sampled, each reading the targets' contexts (the sampled one once per
  target, its cache repeated); every row is computed until the longest prompt of its batch ends.
- now: one call (`greedy_first=True`): each context read once for the greedy row and the samples, and a row leaves
  the batch when it writes `<|im_end|>`.

The policy is SmolLM2-135M with an untrained mapper unless `--policy` loads a trained one (whose prompts end sooner,
as the search's do); each target reads two Alpaca prompts and one output, as the search's policy does.

    python bench/policy_writing.py --targets 10 --samples 6 --repeats 2 --policy data/models/policy-ei/policy

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
    add_arguments(parser, 10, "targets per batch (Inverter's chunk: 64 // samples)")
    parser.add_argument("--samples", type=int, default=6, help="prompts per target, greedy included (the search's 6)")
    parser.add_argument("--tokens", type=int, default=48, help="the longest prompt (SearchConfig.max_prompt_tokens)")
    args = parser.parse_args()
    policy, reading, targets = policy_inputs(args)
    k, steps = args.samples, min(args.tokens, policy.config.max_prompt_tokens)
    common = dict(eos_token_id=policy.end_id, pad_token_id=policy.tokenizer.pad_token_id, top_k=None)

    def before():
        context, mask = policy.context_embeddings(targets, reading)
        greedy = policy.lm.generate(
            inputs_embeds=context, attention_mask=mask, max_new_tokens=steps, do_sample=False, **common
        )
        cache = policy.context_cache(context, mask, k - 1)
        sampled = policy.lm.generate(
            inputs_embeds=context.repeat_interleave(k - 1, dim=0),
            attention_mask=mask.repeat_interleave(k - 1, dim=0),
            cache=cache,
            max_new_tokens=steps,
            do_sample=True,
            temperature=0.8,
            **common,
        )
        return policy.decode(greedy), policy.decode(sampled)

    def now():
        ids = policy.generate_ids(
            targets,
            temperature=0.8,
            num_return_sequences=k,
            greedy_first=True,
            max_new_tokens=steps,
            hypotheses=reading,
        )
        written = policy.decode(ids)
        return written[::k], [p for i, p in enumerate(written) if i % k]

    paths = {"transformers' generate, greedy then sampled (before)": before, "generate_ids, one pass (now)": now}
    seconds: dict[str, list[float]] = {name: [] for name in paths}
    written = {}
    with torch.no_grad(), policy.merged_lora():
        for repeat in range(args.repeats):
            for name, run in paths.items():
                torch.manual_seed(repeat)
                start = time.perf_counter()
                written[name] = run()
                seconds[name].append(time.perf_counter() - start)
    reference = np.mean(seconds[next(iter(paths))])
    print(f"{args.targets} targets x {k} prompts (1 greedy), up to {steps} tokens, {args.repeats} runs\n")
    print("| path | seconds per batch | x faster | mean words of the sampled prompts |\n|---|--:|--:|--:|")
    for name, values in seconds.items():
        words = np.mean([len(p.split()) for p in written[name][1]])
        print(f"| {name} | {np.mean(values):.1f} | {reference / np.mean(values):.2f} | {words:.1f} |")
    greedy = [w[0] for w in written.values()]
    print(f"\nthe same greedy prompts: {sum(a == b for a, b in zip(*greedy))} of {args.targets}")


if __name__ == "__main__":
    main()
