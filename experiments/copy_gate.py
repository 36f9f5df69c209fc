"""Does the policy's own belief tell a winning one-call edit from a losing one?

    E2P_DATA_DIR=<data folder> python experiments/copy_gate.py --policy <folder>/policy --choose 60 --check 120

At one call the policy writes a prompt; where it writes the best known prompt back, that prompt is sent, else its
edit. For each edit, the gap between the log-probability the policy gives its edit and the one it gives the copy
(summed over tokens, with what it read) is a free signal: a gate sends the copy where the gap is small. The gap's
threshold is chosen on the first `--choose` validation targets after 04's 40 and checked on the next `--check`.
Prints the one-call cosine with and without the gate and the paired difference to the index's top prompt.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from e2p_lib.data import add_split
from e2p_lib.embed import embedder_from_name
from e2p_lib.embed.cache import load_embedded_dataset
from e2p_lib.evaluate.metrics import paired_difference
from e2p_lib.inversion import SearchConfig
from e2p_lib.inversion.api import load_inverter
from e2p_lib.pipeline import held_out


def sequence_logprob(policy, targets, prompts, readings) -> np.ndarray:
    """Each prompt's summed token log-probability under the policy, given its target and what it read."""
    out = []
    with torch.no_grad():
        for start in range(0, len(prompts), 16):
            stop = start + 16
            ids, mask = policy.tokenize_prompts(prompts[start:stop])
            chosen = policy.token_logprobs(targets[start:stop], ids, mask, hypotheses=readings[start:stop])
            out += (chosen * mask).sum(dim=1).tolist()
    return np.array(out)


def report(name: str, values: np.ndarray, top: np.ndarray) -> None:
    mean, low, high = paired_difference(values, top)
    print(f"  {name:34s} {values.mean():.3f}  vs top 1 {mean:+.3f} [{low:+.3f}, {high:+.3f}]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", required=True, help="a saved policy folder")
    parser.add_argument("--choose", type=int, default=60)
    parser.add_argument("--check", type=int, default=120)
    parser.add_argument("--skip", type=int, default=40, help="validation rows to skip (04's choice rows)")
    args = parser.parse_args()
    dataset = load_embedded_dataset(model="local/all-MiniLM-L6-v2", dimensions=384)
    frame = add_split(dataset.frame)
    rows, targets, excluded = held_out(frame, dataset.vectors, "val", args.skip, args.choose + args.check)
    inverter = load_inverter(args.policy, embedder=embedder_from_name(dataset.model, dataset.dimensions))
    results = inverter.search(targets, SearchConfig(budget=1), exclude_ids=excluded)
    known = inverter.index.hypotheses(targets, k=1, exclude_ids=excluded)
    top = np.array([row[0].cosine for row in known])
    copies = [row[0].prompt for row in known]
    sent = np.array([r.achieved_cosine for r in results])
    edited = np.array([r.prompt != c for r, c in zip(results, copies)])
    readings = [r.reading or [] for r in results]
    gap = sequence_logprob(inverter.policy, targets, [r.prompt for r in results], readings) - sequence_logprob(
        inverter.policy, targets, copies, readings
    )
    gain = sent - top
    print(f"edited {edited.mean():.2f} of {len(rows)} targets; an edit's mean gain {gain[edited].mean():+.3f}")
    print(f"correlation of the gap with the gain, over the edits: {np.corrcoef(gap[edited], gain[edited])[0, 1]:+.3f}")
    choose, check = np.arange(args.choose), np.arange(args.choose, len(rows))
    # -inf: every edit sent (the policy's one call); +inf: none (the index's top prompt)
    thresholds = [-np.inf, *np.quantile(gap[choose][edited[choose]], np.linspace(0, 1, 11)), np.inf]
    gated = {t: np.where(edited & (gap > t), sent, top) for t in thresholds}
    best = max(thresholds, key=lambda t: gated[t][choose].mean())
    for name, part in (("choose", choose), ("check", check)):
        print(f"{name} ({len(part)} targets):")
        report("the policy's one call", sent[part], top[part])
        report(f"gated: an edit only where gap > {best:.2f}", gated[best][part], top[part])


if __name__ == "__main__":
    main()
