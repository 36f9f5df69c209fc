"""The clean search's variants on validation targets, paired with the answer index's top prompt and the original.

Needs a data folder where 01-03 ran (the answer index, the store, the clean line, a forward model) and a saved
policy. Targets are validation rows after the first 40 (04 chooses PPO's step and the policy on those 40).

    E2P_DATA_DIR=<data folder> python experiments/clean_search.py --policy <folder>/policy --targets 60 \\
        --variants one-call,search,search-4-48,without-policy,without-policy-64,pasting

Prints, per variant: mean answer cosine, mean copied share, the prompts' median perplexity under the base LM (and the
original prompts'), mean environment calls and seconds, then each variant's paired difference [95% bootstrap interval]
to the index's top prompt, to the original prompt and to the first variant. `--save` keeps each variant's cosines
(.npy) and prompts (.json).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from e2p_lib.data import add_split
from e2p_lib.embed import embedder_from_name
from e2p_lib.embed.cache import load_embedded_dataset
from e2p_lib.evaluate.metrics import paired_difference
from e2p_lib.inversion import SearchConfig
from e2p_lib.inversion.api import load_inverter
from e2p_lib.inversion.topics import TOPIC_TEMPLATES
from e2p_lib.pipeline import held_out
from e2p_lib.train.rewards import AnswerCosineReward

# the words a topic template adds after the prompt ("Mention", "Topics:", "Focus on")
TOPIC_WORDS = tuple(t.replace("{prompt}", "").split("{topics}")[0] for t in TOPIC_TEMPLATES)
VARIANTS = {
    "one-call": dict(budget=1),
    "search": {},
    "search-unspent": dict(spend_all=False),
    "search-10": dict(samples=10),
    "search-hot": dict(temperature=1.2),
    "search-3-rounds": dict(rounds=3),
    "search-4-48": dict(samples=4, max_prompt_tokens=48),
    "search-48": dict(max_prompt_tokens=48),
    "one-call-48": dict(budget=1, max_prompt_tokens=48),
    "without-policy": dict(use_policy=False),
    "without-policy-64": dict(use_policy=False, neighbours=64),
    "pasting": dict(clean=False, ground=7, use_policy=False),
    "search-topics-0": dict(topics=0),
    "search-topics-3": dict(topics=3),
    "search-topics-5": dict(topics=5),
    "search-topics-7": dict(topics=7),
    "without-policy-64-topics-0": dict(use_policy=False, neighbours=64, topics=0),
    "without-policy-64-topics-3": dict(use_policy=False, neighbours=64, topics=3),
    "without-policy-64-topics-7": dict(use_policy=False, neighbours=64, topics=7),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", required=True, help="a saved policy folder")
    parser.add_argument("--targets", type=int, default=60)
    parser.add_argument("--skip", type=int, default=40, help="validation rows to skip (04's choice rows)")
    parser.add_argument("--variants", default="one-call,search,without-policy")
    parser.add_argument("--save", help="a path prefix: each variant's cosines to <prefix>-<variant>.npy, to pair runs")
    args = parser.parse_args()
    dataset = load_embedded_dataset(model="local/all-MiniLM-L6-v2", dimensions=384)
    frame = add_split(dataset.frame)
    rows, targets, excluded = held_out(frame, dataset.vectors, "val", args.skip, args.targets)
    inverter = load_inverter(args.policy, embedder=embedder_from_name(dataset.model, dataset.dimensions))
    index, lm, embedder = inverter.index, inverter.environment, inverter.embedder
    reward = AnswerCosineReward(lm, embedder, max_new_tokens=SearchConfig().answer_tokens)
    scores = {
        "answer index, top 1": np.array(
            [row[0].cosine for row in index.hypotheses(targets, k=1, exclude_ids=excluded)]
        ),
        "original prompt": reward(frame["prompt"].to_numpy()[rows].tolist(), targets).rewards,
    }
    original = np.median(inverter.fluency(frame["prompt"].to_numpy()[rows].tolist()))
    print(f"original prompts' median perplexity {original:.1f}")
    for name in args.variants.split(","):
        started = time.perf_counter()
        results = inverter.search(targets, replace(SearchConfig(), **VARIANTS[name]), exclude_ids=excluded)
        scores[name] = np.array([r.achieved_cosine for r in results])
        fluency = np.median(inverter.fluency([r.prompt for r in results]))
        print(
            f"{name:20s} cosine {scores[name].mean():.3f}  copied share "
            f"{np.mean([r.copied_share for r in results]):.3f}  perplexity {fluency:.1f} "
            f"({fluency / original:.2f}x)  calls "
            f"{np.mean([r.environment_calls for r in results]):.2f}  topic-worded "
            f"{np.mean([any(w in r.prompt for w in TOPIC_WORDS) for r in results]):.2f}  "
            f"{time.perf_counter() - started:.0f} s",
            flush=True,
        )
        if args.save:
            np.save(f"{args.save}-{name}.npy", scores[name])
            Path(f"{args.save}-{name}.json").write_text(json.dumps([r.prompt for r in results], indent=1))
    first = args.variants.split(",")[0]  # the variants after it are paired with it too
    for name, values in scores.items():
        also = [first] if name in VARIANTS and name != first else []
        for baseline in ("answer index, top 1", "original prompt", *also):
            if name != baseline:
                mean, low, high = paired_difference(values, scores[baseline])
                print(f"  {name} - {baseline}: {mean:+.3f} [{low:+.3f}, {high:+.3f}]")


if __name__ == "__main__":
    main()
