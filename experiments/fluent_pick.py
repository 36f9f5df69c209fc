"""The search's final pick by cosine and fluency, on validation targets: the most fluent (lowest perplexity under the
base LM) of the clean prompts whose answer lands within a margin of the best, for several margins.

    E2P_DATA_DIR=<data folder> python experiments/fluent_pick.py --policy <folder>/policy --targets 60 \\
        --margins 0,0.005,0.01,0.02,0.03

Needs a data folder where 01-03 ran and a saved policy. Validation rows after the first 40 (04's choice rows). Runs
the default search with and without the policy once, then picks offline from each target's answered candidates: a
prompt answered in the search, or a known one (the index's) while the search has a call left for its answer. Prints
per margin: mean cosine, median perplexity and its ratio to the original prompts', words, the share of targets whose
pick changed, and the paired difference [95% bootstrap interval] to margin 0. `--save <prefix>` keeps each margin's
picks (cosines and perplexities) to pair runs of two library versions.
"""

from __future__ import annotations

import argparse
import math
from collections import Counter
from dataclasses import replace

import numpy as np

from e2p_lib.data import add_split
from e2p_lib.embed import embedder_from_name
from e2p_lib.embed.cache import load_embedded_dataset
from e2p_lib.evaluate.metrics import paired_difference, perplexity
from e2p_lib.evaluate.quality import words
from e2p_lib.inversion import SearchConfig
from e2p_lib.inversion.api import load_inverter
from e2p_lib.lm.smollm import load_smollm2
from e2p_lib.pipeline import held_out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", required=True, help="a saved policy folder")
    parser.add_argument("--targets", type=int, default=60)
    parser.add_argument("--skip", type=int, default=40, help="validation rows to skip (04's choice rows)")
    parser.add_argument("--margins", default="0,0.005,0.01,0.02,0.03")
    parser.add_argument(
        "--searches", default="with,without", help="the searches to run: with and/or without the policy"
    )
    parser.add_argument("--line", type=float, default=1.5, help="the fluency line, times the originals' median")
    parser.add_argument(
        "--save", help="a path prefix: each search's picks' cosines and perplexities per margin, to pair runs"
    )
    args = parser.parse_args()
    dataset = load_embedded_dataset(model="local/all-MiniLM-L6-v2", dimensions=384)
    frame = add_split(dataset.frame)
    rows, targets, excluded = held_out(frame, dataset.vectors, "val", args.skip, args.targets)
    inverter = load_inverter(args.policy, embedder=embedder_from_name(dataset.model, dataset.dimensions))
    base_lm, base_tokenizer = load_smollm2(device="cpu")
    original = perplexity(frame["prompt"].to_numpy()[rows].tolist(), base_lm, base_tokenizer, show_progress=False)
    reference = float(np.nanmedian(original))
    print(f"original prompts: median perplexity {reference:.1f}")
    for name, config in (
        ("with the policy", SearchConfig()),
        ("without the policy", replace(SearchConfig(), use_policy=False, neighbours=64)),
    ):
        if name.split()[0] not in args.searches.split(","):
            continue
        results = inverter.search(targets, config, exclude_ids=excluded)
        line = inverter.max_copied_share + 1e-9
        pools = []
        for r in results:
            known = [c for c in r.candidates if not math.isnan(c.achieved_cosine) and c.copied_share <= line]
            free = r.environment_calls < config.budget  # a call left to answer a known prompt at the end
            pools.append([c for c in known if c.answer is not None or free or c.prompt == r.prompt])
        prompts = sorted({c.prompt for pool in pools for c in pool})
        fluency = dict(zip(prompts, perplexity(prompts, base_lm, base_tokenizer, show_progress=False)))
        first = None
        for margin in map(float, args.margins.split(",")):
            picks = []
            for pool in pools:
                top = max(c.achieved_cosine for c in pool)
                window = [c for c in pool if c.achieved_cosine >= top - margin - 1e-12]
                picks.append(min(window, key=lambda c: (fluency[c.prompt], -c.achieved_cosine)))
            cosines = np.array([c.achieved_cosine for c in picks])
            ppl = np.array([fluency[c.prompt] for c in picks])
            changed = np.mean([c.prompt != r.prompt for c, r in zip(picks, results)])
            text = (
                f"{name:18s} margin {margin:.3f}: cosine {cosines.mean():.3f}  median perplexity {np.median(ppl):.1f}"
                f" ({np.median(ppl) / reference:.2f}x)  words {np.mean([len(words(c.prompt)) for c in picks]):.1f}"
                f"  changed {changed:.2f}"
            )
            if first is not None:
                mean, low, high = paired_difference(cosines, first)
                text += f"  vs margin 0 {mean:+.3f} [{low:+.3f}, {high:+.3f}]"
            print(text, flush=True)
            if args.save:
                np.save(f"{args.save}-{name.replace(' ', '-')}-{margin}.npy", np.stack([cosines, ppl]))
            first = cosines if first is None else first
        line_ppl = args.line * reference
        above = [(r, pool) for r, pool in zip(results, pools) if fluency[r.prompt] > line_ppl]
        fluent = [[c.achieved_cosine for c in pool if fluency[c.prompt] <= line_ppl] for _, pool in above]
        gaps = [r.achieved_cosine - max(under, default=math.nan) for (r, _), under in zip(above, fluent)]
        sources = Counter(next(c.source for c in pool if c.prompt == r.prompt) for r, pool in above)
        print(
            f"{name:18s} returned above {args.line}x: {len(above)} of {len(results)} ({dict(sources)}); the best "
            f"candidate under the line lies {np.nanmedian(gaps):.3f} below (median; quartiles "
            f"{np.nanpercentile(gaps, 25):.3f}, {np.nanpercentile(gaps, 75):.3f}; none under: "
            f"{int(np.isnan(gaps).sum())})",
            flush=True,
        )


if __name__ == "__main__":
    main()
