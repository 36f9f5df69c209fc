"""Can the environment LM itself write the instruction for a text near the target (instruction backtranslation)?

For each validation target, SmolLM2 is asked to write the instruction that a text answers: the nearest stored output,
or a text composed from the nearest outputs' sentences (`inversion.pasting.composed_texts`); its instruction is then
answered and scored, with its copied share, beside the answer index's top prompt and the original prompt.

    E2P_DATA_DIR=<data folder> python experiments/backtranslation.py --targets 60
"""

from __future__ import annotations

import argparse

import numpy as np

from e2p_lib.data import add_split
from e2p_lib.embed import embedder_from_name
from e2p_lib.embed.cache import load_embedded_dataset
from e2p_lib.evaluate.quality import References
from e2p_lib.inversion.api import open_answer_index
from e2p_lib.inversion.pasting import composed_texts
from e2p_lib.lm import make_lm
from e2p_lib.pipeline import held_out
from e2p_lib.store import make_vector_store
from e2p_lib.store.retrieval import nearest_rows
from e2p_lib.train.rewards import AnswerCosineReward

TEMPLATES = {
    "nearest output": "Here is a response:\n\n{text}\n\nWrite the instruction that this response answers. Reply with "
    "the instruction only.",
    "composed text": "Here is a response:\n\n{text}\n\nWrite the instruction that this response answers. Reply with "
    "the instruction only.",
    "composed text, question": "{text}\n\nWhat question or request is this text the answer to? Write only that "
    "request.",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=int, default=60)
    parser.add_argument("--skip", type=int, default=40)
    args = parser.parse_args()
    dataset = load_embedded_dataset(model="local/all-MiniLM-L6-v2", dimensions=384)
    frame = add_split(dataset.frame)
    rows, targets, excluded = held_out(frame, dataset.vectors, "val", args.skip, args.targets)
    embedder = embedder_from_name(dataset.model, dataset.dimensions)
    lm = make_lm("local")
    store = make_vector_store("local", name="alpaca", dimensions=dataset.dimensions)
    index = open_answer_index(store, lm, embedder)
    reward = AnswerCosineReward(lm, embedder)
    neighbours = nearest_rows(store, targets, 8, excluded)
    references = [References({n.id: n.output for n in row}) for row in neighbours]
    composed = composed_texts([[n.output for n in row] for row in neighbours], targets, embedder)
    top = index.hypotheses(targets, k=1, exclude_ids=excluded)
    prompts = {
        "original prompt": frame["prompt"].to_numpy()[rows].tolist(),
        "answer index, top 1": [r[0].prompt for r in top],
    }
    for name, template in TEMPLATES.items():
        texts = [c.text for c in composed] if name.startswith("composed") else [row[0].output for row in neighbours]
        written = lm.generate([template.format(text=t[:600]) for t in texts], max_new_tokens=48)
        prompts[name] = [w.strip().split("\n")[0] or "Write something." for w in written]
    for name, written in prompts.items():
        cosines = reward(written, targets).rewards
        shares = [r.copied_share(p) for r, p in zip(references, written)]
        print(
            f"{name:26s} cosine {np.mean(cosines):.3f}  copied share {np.mean(shares):.3f}  words "
            f"{np.mean([len(p.split()) for p in written]):.1f}"
        )


if __name__ == "__main__":
    main()
