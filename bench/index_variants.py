"""Candidate families around the answer index's best prompt, one call each: can a cheap variant of the indexed
prompt (its instruction with a composed input, or a length/detail modifier) land nearer than the prompt itself?

    E2P_DATA_DIR=data .venv/bin/python bench/index_variants.py 60

Needs 01 and 02 (the embedded dataset, the store, the answer index); no policy. Prints, on the first N test targets,
each family's mean answer cosine alone and as the better of it and the index's top 1 (two calls), paired against the
index's top 1 and the original prompt, split by whether the original prompt carries an input.
"""

import sys
import time

import numpy as np
from paired import paired_table  # bench/ is on sys.path when a script of it runs

from e2p_lib.answer_index import DEFAULT_ANSWER_TOKENS, leave_out
from e2p_lib.data import add_split
from e2p_lib.echo import echo_prompts, echo_texts
from e2p_lib.embed import make_embedder
from e2p_lib.embed.cache import load_embedded_dataset
from e2p_lib.lm import make_lm
from e2p_lib.pipeline import open_answer_index, split_rows
from e2p_lib.store import make_vector_store
from e2p_lib.train.rewards import NO_ANSWER, AnswerCosineReward

N = int(sys.argv[1]) if len(sys.argv) > 1 else 60
started = time.perf_counter()
lm = make_lm("local")
embedder = make_embedder("local")
dataset = load_embedded_dataset(model="local/all-MiniLM-L6-v2", dimensions=384)
frame = add_split(dataset.frame)
exclusions = leave_out(frame["id"].tolist(), frame["output"].tolist())
store = make_vector_store("local", "alpaca")
index = open_answer_index(store, lm, embedder, DEFAULT_ANSWER_TOKENS)
reward = AnswerCosineReward(lm, embedder, max_new_tokens=DEFAULT_ANSWER_TOKENS)
test = split_rows(frame, "test", N)
targets = dataset.vectors[test]
exclude = [exclusions[r] for r in test]
prompts = frame["prompt"].to_numpy()[test].tolist()
has_input = np.array(["\n\n" in p for p in prompts])
hyp = index.hypotheses(targets, k=3, exclude_ids=exclude)
top = np.array([row[0].cosine for row in hyp])
cos = {"original prompt": reward(prompts, targets).rewards, "index top 1": top}
texts = echo_texts(store, targets, embedder, k=8, exclude_ids=exclude)
cos["composed text (no answer)"] = np.array([t.cosine for t in texts])
cos["echo template 1"] = reward([r[0] if r else NO_ANSWER for r in echo_prompts(texts, 1)], targets).rewards


def instruction(p):
    return p.split("\n\n", 1)[0]


families = {
    "transplant top1 (instr + composed input)": [f"{instruction(h[0].prompt)}\n\n{t.text}" for h, t in zip(hyp, texts)],
    "transplant top2": [f"{instruction(h[1].prompt)}\n\n{t.text}" for h, t in zip(hyp, texts)],
    "top1 + 'Answer in one or two sentences.'": [f"{h[0].prompt}\nAnswer in one or two sentences." for h in hyp],
    "top1 + 'Be concise.'": [f"{h[0].prompt}\nBe concise." for h in hyp],
    "top1 + 'Explain in detail.'": [f"{h[0].prompt}\nExplain in detail." for h in hyp],
    "top1 + 'Use these ideas: text'": [f"{h[0].prompt}\nUse these ideas: {t.text}" for h, t in zip(hyp, texts)],
}
for name, ps in families.items():
    got = reward(ps, targets).rewards
    cos[name], cos[f"max(top1, {name})"] = got, np.maximum(top, got)
    print(
        f"{name}: {got.mean():.3f}, max with top1 {cos[f'max(top1, {name})'].mean():.3f}, wins {np.mean(got > top):.0%}"
    )
gap = cos["original prompt"] - top
print(
    f"has input: {has_input.mean():.0%}; original - top1 with input {gap[has_input].mean():.3f},",
    f"without {gap[~has_input].mean():.3f}",
)
for name in list(cos):
    if name.startswith("transplant"):
        print(
            f"{name} with-input {cos[name][has_input].mean():.3f} vs top1 {top[has_input].mean():.3f}; "
            f"no-input {cos[name][~has_input].mean():.3f} vs {top[~has_input].mean():.3f}"
        )
versus = {n: ["index top 1", "original prompt"] for n in cos if n not in ("index top 1", "original prompt")}
print(paired_table(cos, versus, {}).to_string(index=False))
print(f"{time.perf_counter() - started:.0f} s")
for i in range(6):
    print("----", i, "| orig:", prompts[i][:100].replace("\n", " / "), f"{cos['original prompt'][i]:.2f}")
    print("  top1:", hyp[i][0].prompt[:100].replace("\n", " / "), f"{top[i]:.2f}")
    print("  text:", texts[i].text[:150], f"{texts[i].cosine:.2f}")
    print("  transplant:", f"{cos['transplant top1 (instr + composed input)'][i]:.2f}")
