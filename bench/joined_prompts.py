"""Two indexed prompts joined into one: does an answer covering two known answers land nearer the target?

Echo's composed text lands near a target because it mixes the sentences of several nearby outputs. The instruction
analogue costs no call to choose: the answer index knows each train prompt's real answer vector, so among a target's
8 nearest indexed prompts the pair whose two answer vectors average nearest the target is picked, and the two
prompts are joined into one request. Measured here on the first N test targets, paired, against the index's top 1
(e2p's one call) and the original prompt:

    E2P_DATA_DIR=data .venv/bin/python bench/joined_prompts.py --targets 60

Needs what 02 left in the data folder (the store and the answer index of the default environment). Prints the pair's
predicted cosine (the normalised mean of its two answer vectors), each joining template answered, the one-call rule
"join when the prediction beats the top 1's known cosine by a margin", and the best of the top 1 and the join (2 calls).
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
from demo_targets import DIMENSIONS, MODEL, demo_targets  # bench/ is on sys.path when a script of it runs
from paired import paired_table

from e2p_lib.embed import embedder_from_name
from e2p_lib.embed.base import l2_normalise
from e2p_lib.lm import make_lm
from e2p_lib.pipeline import open_answer_index
from e2p_lib.store import make_vector_store
from e2p_lib.train.rewards import AnswerCosineReward

JOINS = {
    "blank line": "{a}\n\n{b}",
    "numbered": "1. {a}\n2. {b}",
}
MARGINS = (0.0, 0.02, 0.05)


def best_pair(index, hypotheses, target: np.ndarray) -> tuple[float, tuple[str, str]]:
    """The two hypotheses whose answer vectors' normalised sum lands nearest `target`: (that cosine, their prompts)."""
    ids, vectors = index.answer_vectors([h.id for h in hypotheses])
    vectors, prompts = l2_normalise(vectors), {h.id: h.prompt for h in hypotheses}
    scored = [
        (float(l2_normalise(vectors[[i, j]].sum(0, keepdims=True))[0] @ target), (prompts[ids[i]], prompts[ids[j]]))
        for i, j in itertools.combinations(range(len(ids)), 2)
    ]
    return max(scored, key=lambda pair: pair[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=int, default=60, help="test targets (the first N of the test split)")
    parser.add_argument("--pool", type=int, default=8, help="indexed prompts nearest each target to pair")
    args = parser.parse_args()
    started = time.perf_counter()
    lm = make_lm("local")
    embedder = embedder_from_name(MODEL, DIMENSIONS)
    store = make_vector_store("local", name="alpaca", dimensions=DIMENSIONS)
    index = open_answer_index(store, lm, embedder, 64)
    reward = AnswerCosineReward(lm, embedder, max_new_tokens=64)
    chosen = demo_targets(args.targets)
    targets = l2_normalise(chosen.vectors)  # as before demo_targets: the stored vectors normalised once more
    found = index.hypotheses(targets, k=args.pool, exclude_ids=chosen.exclude)
    top = np.array([row[0].cosine for row in found])
    predicted, pairs = zip(*(best_pair(index, row, t) for row, t in zip(found, targets)))
    predicted = np.array(predicted)
    cosines = {"original prompt": reward(chosen.prompts, targets).rewards}
    cosines["answer index, top 1 (e2p, 1 call)"] = top
    for name, template in JOINS.items():
        joined = reward([template.format(a=a, b=b) for a, b in pairs], targets).rewards
        cosines[f"joined, {name}"] = joined
        for margin in MARGINS:
            cosines[f"joined, {name}, rule at margin {margin:g}"] = np.where(predicted - margin > top, joined, top)
        cosines[f"best of top 1 and joined, {name} (2 calls)"] = np.maximum(top, joined)
    print(
        f"{len(targets)} test targets, {time.perf_counter() - started:.0f} s; the pair's predicted cosine "
        f"{predicted.mean():.3f} (above the top 1's known {top.mean():.3f} for {np.mean(predicted > top):.0%})"
    )
    versus = {name: ["answer index, top 1 (e2p, 1 call)", "original prompt"] for name in cosines}
    print(paired_table(cosines, versus).to_string(index=False))


if __name__ == "__main__":
    main()
