"""Topic prompts on validation targets, each answered once: each wording alone and as a second call after the index's
top prompt, then the grounded calls' schedule of topic prompts, call by call, as the best answer so far.

    E2P_DATA_DIR=<data folder> python experiments/topic_prompts.py --targets 120

Needs a data folder where 01-03 ran (the answer index, the store, the clean line). Validation rows after the first 40
(04 chooses PPO's step and the policy on those). A prompt above the clean line is not sent (it costs no call).
Prints means, copied shares and paired differences [95% bootstrap interval] to the index's top prompt and the
original prompt.
"""

from __future__ import annotations

import argparse

import numpy as np

from e2p_lib.data import add_split
from e2p_lib.embed import embedder_from_name
from e2p_lib.embed.cache import load_embedded_dataset
from e2p_lib.evaluate.metrics import paired_difference
from e2p_lib.evaluate.quality import References, words
from e2p_lib.inversion import SearchConfig
from e2p_lib.inversion.api import load_inverter
from e2p_lib.inversion.topics import TOPIC_ORDER, TOPIC_TEMPLATES, choose_topics, joined
from e2p_lib.pipeline import held_out
from e2p_lib.store.retrieval import nearest_rows
from e2p_lib.train.rewards import AnswerCosineReward


def report(name: str, values: np.ndarray, baselines: dict[str, np.ndarray]) -> None:
    print(f"{name:40s} {values.mean():.3f}")
    for baseline, other in baselines.items():
        mean, low, high = paired_difference(values, other)
        print(f"  - {baseline}: {mean:+.3f} [{low:+.3f}, {high:+.3f}]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", default=None, help="a saved policy folder (only its reading settings are used)")
    parser.add_argument("--targets", type=int, default=120)
    parser.add_argument("--skip", type=int, default=40, help="validation rows to skip (04's choice rows)")
    args = parser.parse_args()
    dataset = load_embedded_dataset(model="local/all-MiniLM-L6-v2", dimensions=384)
    frame = add_split(dataset.frame)
    rows, targets, excluded = held_out(frame, dataset.vectors, "val", args.skip, args.targets)
    inverter = load_inverter(args.policy, embedder=embedder_from_name(dataset.model, dataset.dimensions))
    reward = AnswerCosineReward(inverter.environment, inverter.embedder, max_new_tokens=SearchConfig().answer_tokens)
    known = inverter.index.hypotheses(targets, k=3, exclude_ids=excluded)
    near = nearest_rows(inverter.retrieval, targets, SearchConfig().neighbours, excluded)
    references = [References({n.id: n.output for n in row}) for row in near]
    topics = choose_topics(targets, [[n.output for n in row] for row in near], inverter.embed)
    line = inverter.max_copied_share
    top = np.array([row[0].cosine for row in known])
    original = reward(frame["prompt"].to_numpy()[rows].tolist(), targets).rewards
    baselines = {"answer index, top 1": top, "original prompt": original}
    print(f"clean line {line}; targets with topics {np.mean([bool(t) for t in topics]):.2f}")

    def answered(rank: int, wording: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Each target's topic prompt of that rank and wording, answered where it is clean (else -1: not sent)."""
        prompts = [
            TOPIC_TEMPLATES[wording].format(prompt=row[rank].prompt, topics=joined(found))
            if found and len(row) > rank
            else ""
            for row, found in zip(known, topics)
        ]
        shares = np.array([r.copied_share(p) for r, p in zip(references, prompts)])
        sent = np.array([bool(p) for p in prompts]) & (shares <= line + 1e-9)
        cosines = reward([p if s else "x" for p, s in zip(prompts, sent)], targets).rewards
        return np.where(sent, cosines, -1.0), shares, prompts

    for wording in range(len(TOPIC_TEMPLATES)):
        cosines, shares, prompts = answered(0, wording)
        alone = np.where(cosines > -1, cosines, top)  # where it was not sent, the top prompt stands
        print(
            f"wording {wording}: {TOPIC_TEMPLATES[wording]!r}; copied share {shares.mean():.3f}, words "
            f"{np.mean([len(words(p)) for p in prompts]):.1f}, sent {np.mean(cosines > -1):.2f}; e.g. {prompts[0]!r}"
        )
        report("  alone (the top prompt where not sent)", alone, baselines)
        report("  better of it and the top prompt", np.maximum(cosines, top), baselines)
    best = top.copy()
    for call, (rank, wording) in enumerate(TOPIC_ORDER, start=2):
        best = np.maximum(best, answered(rank, wording)[0])
        report(f"schedule, {call} calls", best, baselines)


if __name__ == "__main__":
    main()
