"""Which three topic calls, on validation targets: the best answer of the index's top prompt and three topic prompts,
for schedules that vary the wording, the phrases, the known prompt each call extends, put the phrases alone
("Describe a, b, c and d.", docs/experiments.md#phrase-prompts) or in place of the known prompt's input.

    E2P_DATA_DIR=<data folder> python experiments/topic_schedule.py --targets 120

Needs a data folder where 01-03 ran (the answer index, the store, the clean line). Validation rows after the first 40
(04 chooses PPO's step and the policy on those). Phrases: `choose_topics`' 12 nearest the target, in sets of 4 (A the
nearest, then B, C). Each prompt of the pool is answered once; a prompt above the clean line is not sent. Prints per
schedule the mean best cosine after its calls and the paired difference [95% bootstrap interval] to the first, also
on the targets whose original prompt carries an input and on the rest.
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

# pool entries: (rank of the known prompt, phrase set, template: a wording of TOPIC_TEMPLATES or one standing alone)
POOL = {
    "r0 A w0": (0, "A", TOPIC_TEMPLATES[0]),
    "r0 A w1": (0, "A", TOPIC_TEMPLATES[1]),
    "r0 A w2": (0, "A", TOPIC_TEMPLATES[2]),
    "r0 B w0": (0, "B", TOPIC_TEMPLATES[0]),
    "r0 C w0": (0, "C", TOPIC_TEMPLATES[0]),
    "r1 A w0": (1, "A", TOPIC_TEMPLATES[0]),
    "r0 AB w0": (0, "AB", TOPIC_TEMPLATES[0]),
    "explain A1": (0, "A1", "Explain {topics}."),
    "write about A2": (0, "A2", "Write about {topics}."),
    "describe A": (0, "A", "Describe {topics}."),
    # the phrases in place of the known prompt's input (sent only where it has one)
    "r0 A input": (0, "A", "{instruction}\n\n{topics}"),
}
SCHEDULES = {
    "three wordings of A (the default)": ["r0 A w0", "r0 A w1", "r0 A w2"],
    "sets A, B, C": ["r0 A w0", "r0 B w0", "r0 C w0"],
    "A, B, A on the second prompt": ["r0 A w0", "r0 B w0", "r1 A w0"],
    "A, A on the second prompt, A's second wording": ["r0 A w0", "r1 A w0", "r0 A w1"],
    "two wordings of A, explain A1": ["r0 A w0", "r0 A w1", "explain A1"],
    "two wordings of A, write about A2": ["r0 A w0", "r0 A w1", "write about A2"],
    "two wordings of A, describe A": ["r0 A w0", "r0 A w1", "describe A"],
    "one wording of A, explain A1, write about A2": ["r0 A w0", "explain A1", "write about A2"],
    "wordings 0 and 2 of A, describe A": ["r0 A w0", "r0 A w2", "describe A"],
    "one wording of A, describe A, write about A2": ["r0 A w0", "describe A", "write about A2"],
    "one wording of A, describe A, explain A1": ["r0 A w0", "describe A", "explain A1"],
    "two wordings of A, A as the input": ["r0 A w0", "r0 A w1", "r0 A input"],
}


INPUT = "\n\n"  # between an Alpaca prompt's instruction and its input


def _instruction(prompt: str) -> str:
    """The prompt without its input."""
    return prompt.split(INPUT)[0]


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
    known = inverter.index.hypotheses(targets, k=2, exclude_ids=excluded)
    near = nearest_rows(inverter.retrieval, targets, SearchConfig().neighbours, excluded)
    references = [References({n.id: n.output for n in row}) for row in near]
    found = choose_topics(targets, [[n.output for n in row] for row in near], inverter.embed, 3 * TOPIC_PHRASES)
    sets = [{"A": f[:4], "B": f[4:8], "C": f[8:12], "AB": f[:8], "A1": f[:1], "A2": f[:2]} for f in found]
    top = np.array([row[0].cosine for row in known])
    answers = {}
    for name, (rank, part, template) in POOL.items():
        prompts = [
            template.format(prompt=row[rank].prompt, topics=joined(s[part]), instruction=_instruction(row[rank].prompt))
            if len(row) > rank and s[part] and ("{instruction}" not in template or INPUT in row[rank].prompt)
            else ""
            for row, s in zip(known, sets)
        ]
        # measured as the prompt it extends is (without its own row's output); one standing alone against every output
        extends = "{prompt}" in template or "{instruction}" in template
        own = [row[rank].id if len(row) > rank and extends else None for row in known]
        shares = np.array([r.copied_share(p, own_row=o) for r, p, o in zip(references, prompts, own)])
        sent = np.array([bool(p) for p in prompts]) & (shares <= inverter.max_copied_share + 1e-9)
        cosines = reward([p if s else "x" for p, s in zip(prompts, sent)], targets).rewards
        answers[name] = np.where(sent, cosines, -1.0)
        alone = np.where(sent, cosines, top)
        mean, low, high = paired_difference(alone, top)
        print(
            f"{name:14s} alone {alone.mean():.3f}  vs the top prompt {mean:+.3f} [{low:+.3f}, {high:+.3f}]  sent "
            f"{sent.mean():.2f}",
            flush=True,
        )
    print(f"answer index, top 1: {top.mean():.3f}")
    # the halves: targets whose original prompt carries an input, and the rest
    with_input = np.array([INPUT in p for p in frame["prompt"].to_numpy()[rows]])
    first = None
    for schedule, names in SCHEDULES.items():
        best = np.max([top, *(answers[n] for n in names)], axis=0)
        line = f"{schedule:48s} {best.mean():.3f}"
        if first is not None:
            mean, low, high = paired_difference(best, first)
            line += f"  vs the first {mean:+.3f} [{low:+.3f}, {high:+.3f}]"
            for half, mask in (("input", with_input), ("no input", ~with_input)):
                mean, low, high = paired_difference(best[mask], first[mask])
                line += f"  {half} ({mask.sum()}) {mean:+.3f} [{low:+.3f}, {high:+.3f}]"
        print(line)
        first = best if first is None else first
    # adaptive: A; then A and B together where A beat the top prompt, else B; then C
    second = np.where(answers["r0 A w0"] > top, answers["r0 AB w0"], answers["r0 B w0"])
    best = np.max([top, answers["r0 A w0"], second, answers["r0 C w0"]], axis=0)
    mean, low, high = paired_difference(best, first)
    print(f"{'A; AB where A won, else B; C':48s} {best.mean():.3f}  vs the first {mean:+.3f} [{low:+.3f}, {high:+.3f}]")


if __name__ == "__main__":
    main()
