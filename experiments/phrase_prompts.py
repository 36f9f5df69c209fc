"""Stand-alone phrase prompts, on validation targets: does an instruction built from the target's nearest topic
phrases alone ("Explain a.") find what the topic prompts (the best known prompt plus "Mention a, b, c and d.") miss?

    E2P_DATA_DIR=<data folder> python experiments/phrase_prompts.py --targets 120

Needs a data folder where 01-03 ran (the answer index, the store, the clean line). Validation rows after the first 40
(04 chooses PPO's step and the policy on those). Phrases: `choose_topics`' 4 nearest the target. Each prompt of the
pool is answered once; a prompt above the clean line is not sent. Prints each prompt's mean cosine alone (the top
prompt where not sent), then per schedule of three calls the mean best cosine of the top prompt and its calls, and
the paired difference [95% bootstrap interval] to the first (the library's three topic wordings).
"""

from __future__ import annotations

import argparse

import numpy as np

from e2p_lib.data import add_split
from e2p_lib.embed import embedder_from_name
from e2p_lib.embed.cache import load_embedded_dataset
from e2p_lib.evaluate.metrics import paired_difference
from e2p_lib.evaluate.quality import References
from e2p_lib.inversion import SearchConfig
from e2p_lib.inversion.api import load_inverter
from e2p_lib.inversion.topics import TOPIC_PHRASES, TOPIC_TEMPLATES, choose_topics, joined
from e2p_lib.pipeline import held_out
from e2p_lib.store.retrieval import nearest_rows
from e2p_lib.train.rewards import AnswerCosineReward

# pool entries: (template, phrases used); "{prompt}" is the index's top prompt
POOL = {
    "topic w0": (TOPIC_TEMPLATES[0], 4),
    "topic w1": (TOPIC_TEMPLATES[1], 4),
    "topic w2": (TOPIC_TEMPLATES[2], 4),
    "explain 1": ("Explain {topics}.", 1),
    "write about 2": ("Write about {topics}.", 2),
    "describe 4": ("Describe {topics}.", 4),
}
SCHEDULES = {
    "three topic wordings (the library's)": ["topic w0", "topic w1", "topic w2"],
    "two topic wordings, explain 1": ["topic w0", "topic w1", "explain 1"],
    "two topic wordings, write about 2": ["topic w0", "topic w1", "write about 2"],
    "two topic wordings, describe 4": ["topic w0", "topic w1", "describe 4"],
    "one topic wording, explain 1, write about 2": ["topic w0", "explain 1", "write about 2"],
    "topic wordings 0 and 2, describe 4": ["topic w0", "topic w2", "describe 4"],
    "one topic wording, describe 4, write about 2": ["topic w0", "describe 4", "write about 2"],
    "one topic wording, describe 4, explain 1": ["topic w0", "describe 4", "explain 1"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=int, default=120)
    parser.add_argument("--skip", type=int, default=40, help="validation rows to skip (04's choice rows)")
    args = parser.parse_args()
    dataset = load_embedded_dataset(model="local/all-MiniLM-L6-v2", dimensions=384)
    frame = add_split(dataset.frame)
    rows, targets, excluded = held_out(frame, dataset.vectors, "val", args.skip, args.targets)
    inverter = load_inverter(None, embedder=embedder_from_name(dataset.model, dataset.dimensions))
    reward = AnswerCosineReward(inverter.environment, inverter.embedder, max_new_tokens=SearchConfig().answer_tokens)
    known = inverter.index.hypotheses(targets, k=1, exclude_ids=excluded)
    near = nearest_rows(inverter.retrieval, targets, SearchConfig().neighbours, excluded)
    references = [References({n.id: n.output for n in row}) for row in near]
    found = choose_topics(targets, [[n.output for n in row] for row in near], inverter.embed, TOPIC_PHRASES)
    top = np.array([row[0].cosine for row in known])
    answers = {}
    for name, (template, count) in POOL.items():
        prompts = [
            template.format(prompt=row[0].prompt, topics=joined(f[:count])) if f else "" for row, f in zip(known, found)
        ]
        own = [row[0].id if "{prompt}" in template else None for row in known]
        shares = np.array([r.copied_share(p, own_row=o) for r, p, o in zip(references, prompts, own)])
        sent = np.array([bool(p) for p in prompts]) & (shares <= inverter.max_copied_share + 1e-9)
        cosines = reward([p if s else "x" for p, s in zip(prompts, sent)], targets).rewards
        answers[name] = np.where(sent, cosines, -1.0)
        mean, low, high = paired_difference(np.where(sent, cosines, top), top)
        print(
            f"{name:14s} alone {np.where(sent, cosines, top).mean():.3f}  vs top 1 {mean:+.3f} [{low:+.3f}, "
            f"{high:+.3f}]  sent {sent.mean():.2f}  e.g. {prompts[0]!r}",
            flush=True,
        )
    print(f"answer index, top 1: {top.mean():.3f}")
    first = None
    for schedule, names in SCHEDULES.items():
        best = np.max([top, *(answers[n] for n in names)], axis=0)
        line = f"{schedule:48s} {best.mean():.3f}"
        if first is not None:
            mean, low, high = paired_difference(best, first)
            line += f"  vs the first {mean:+.3f} [{low:+.3f}, {high:+.3f}]"
        print(line)
        first = best if first is None else first


if __name__ == "__main__":
    main()
