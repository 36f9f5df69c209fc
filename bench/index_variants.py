"""Candidate families around the answer index's best prompt, one call each: can a cheap variant of the indexed
prompt (its instruction with a composed input, the composed text as ideas, a length/detail modifier) land nearer
than the prompt itself, and can a free rule tell, at one call, when to send the grounded variant instead?

    E2P_DATA_DIR=data .venv/bin/python bench/index_variants.py --targets 120 --split val

Needs 01 and 02 (the embedded dataset, the store, the answer index); no policy. Prints, on the first N targets of the
split, each family's mean answer cosine alone and as the better of it and the index's top 1 (two calls), paired
against the index's top 1 and the original prompt; then the one-call rule "send the grounded prompt when the composed
text's own cosine is more than `margin` above the top 1's known answer cosine" at each of `--margins`.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from demo_targets import index_pieces  # bench/ is on sys.path when a script of it runs
from paired import paired_table

from e2p_lib.echo import echo_prompts, echo_texts
from e2p_lib.ground import grounded_prompts
from e2p_lib.train.rewards import NO_ANSWER

TOP, ORIGINAL, GROUNDED = "index top 1", "original prompt", "top1 + 'Use these ideas: text'"


def instruction(prompt: str) -> str:
    return prompt.split("\n\n", 1)[0]


def grounded(rank: int, hypotheses, texts, template: int = 0) -> list[str]:
    """The indexed prompt of this rank grounded in each target's composed text with `GROUND_TEMPLATES[template]`
    (the prompt itself without a text)."""
    prompts = [row[rank].prompt for row in hypotheses]
    return [
        g[template] if g else p for g, p in zip(grounded_prompts([[q] for q in prompts], texts, template + 1), prompts)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=int, default=60, help="the first N targets of the split")
    parser.add_argument("--split", default="test", choices=("test", "val"))
    parser.add_argument("--margins", default="-0.1,-0.05,0,0.05,0.1,0.2,inf", help="of the one-call grounding rule")
    args = parser.parse_args()
    started = time.perf_counter()
    p = index_pieces(args.targets, args.split)
    targets, exclude, hyp, top = p.chosen.vectors, p.chosen.exclude, p.hypotheses, p.top
    cos = {ORIGINAL: p.reward(p.chosen.prompts, targets).rewards, TOP: top}
    texts = echo_texts(p.store, targets, p.embedder, k=8, exclude_ids=exclude)
    text_cosines = np.array([t.cosine for t in texts])
    cos["composed text (no answer)"] = text_cosines
    cos["echo template 1"] = p.reward([r[0] if r else NO_ANSWER for r in echo_prompts(texts, 1)], targets).rewards
    families = {
        "transplant top1 (instr + composed input)": [
            f"{instruction(h[0].prompt)}\n\n{t.text}" for h, t in zip(hyp, texts)
        ],
        "transplant top2": [f"{instruction(h[1].prompt)}\n\n{t.text}" for h, t in zip(hyp, texts)],
        "top1 + 'Answer in one or two sentences.'": [f"{h[0].prompt}\nAnswer in one or two sentences." for h in hyp],
        "top1 + 'Be concise.'": [f"{h[0].prompt}\nBe concise." for h in hyp],
        "top1 + 'Explain in detail.'": [f"{h[0].prompt}\nExplain in detail." for h in hyp],
        GROUNDED: grounded(0, hyp, texts),
        "top2 + 'Use these ideas: text'": grounded(1, hyp, texts),
        "top1 + 'Write about: text'": grounded(0, hyp, texts, template=1),
        "top1 + 'Include these points: text'": grounded(0, hyp, texts, template=2),
    }
    for name, prompts in families.items():
        got = p.reward(prompts, targets).rewards
        cos[name], cos[f"max(top1, {name})"] = got, np.maximum(top, got)
    for name in [n for n in families if n != GROUNDED and "text" in n]:  # a third call beside the grounded second
        cos[f"max(top1, grounded, {name})"] = np.maximum(cos[f"max(top1, {GROUNDED})"], cos[name])
    write, include = "top1 + 'Write about: text'", "top1 + 'Include these points: text'"
    cos["max(top1, grounded, write about, include these points) (4 calls)"] = np.maximum.reduce(
        [cos[f"max(top1, {GROUNDED})"], cos[write], cos[include]]
    )
    for margin in (float(m) for m in args.margins.split(",")):
        switch = np.nan_to_num(text_cosines, nan=-np.inf) - margin > top
        cos[f"1 call: grounded when text - top1 > {margin:g} ({switch.mean():.0%} switched)"] = np.where(
            switch, cos[GROUNDED], top
        )
    versus = {n: [TOP, ORIGINAL] for n in cos if n not in (TOP, ORIGINAL)}
    print(f"{len(targets)} {args.split} targets, {time.perf_counter() - started:.0f} s")
    print(paired_table(cos, versus, {}).to_string(index=False))


if __name__ == "__main__":
    main()
