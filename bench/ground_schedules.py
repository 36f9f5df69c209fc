"""Grounded prompts beyond three: which further grounded calls are worth an environment call, with no policy at all?

    E2P_DATA_DIR=data .venv/bin/python bench/ground_schedules.py --targets 120 --split val

Needs 01 and 02 (the embedded dataset, the store, the answer index); no policy. Every candidate is answered once per
target; a schedule of B calls is the best real cosine among the index's top 1 (known, free) and its first B - 1
candidates (the final answer is a cache hit). Candidates: the index's prompt of rank r grounded with wording w in the
text composed from the k stored outputs nearest the target (`g(r, w, k)`), and two second-round texts built from the
first grounded answer: `fb`, composed from the outputs nearest the feedback vector `2 target - answer` (what the
answer missed, the vector rule of `invert.feedback_target`), and `ans`, the best answer so far as the ideas.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from demo_targets import index_pieces  # bench/ is on sys.path when a script of it runs
from index_variants import grounded
from paired import paired_table

from e2p_lib.echo import EchoText, echo_texts
from e2p_lib.embed.base import l2_normalise

TOP = "index top 1"
NOW = "now: top1 + g(0, w0-2, 8) (4 calls)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=int, default=120, help="the first N targets of the split")
    parser.add_argument("--split", default="val", choices=("test", "val"))
    args = parser.parse_args()
    started = time.perf_counter()
    p = index_pieces(args.targets, args.split)
    targets, exclude, hyp, top = p.chosen.vectors, p.chosen.exclude, p.hypotheses, p.top
    texts = {k: echo_texts(p.store, targets, p.embedder, k=k, exclude_ids=exclude) for k in (4, 8, 16)}
    for k, t in texts.items():
        print(f"composed text k={k}: own cosine {np.nanmean([e.cosine for e in t]):.3f}", flush=True)
    got: dict[str, np.ndarray] = {}
    answers: dict[str, list[str]] = {}
    for name, prompts in {
        "g(0,0,8)": grounded(0, hyp, texts[8], 0),
        "g(0,1,8)": grounded(0, hyp, texts[8], 1),
        "g(0,2,8)": grounded(0, hyp, texts[8], 2),
        "g(1,0,8)": grounded(1, hyp, texts[8], 0),
        "g(1,1,8)": grounded(1, hyp, texts[8], 1),
        "g(2,0,8)": grounded(2, hyp, texts[8], 0),
        "g(0,0,4)": grounded(0, hyp, texts[4], 0),
        "g(0,0,16)": grounded(0, hyp, texts[16], 0),
        "g(0,1,16)": grounded(0, hyp, texts[16], 1),
    }.items():
        result = p.reward(prompts, targets)
        got[name], answers[name] = result.rewards, result.answers
        print(f"{name}: {got[name].mean():.3f}", flush=True)
    # second round from the best of the first three grounded answers
    first = np.stack([got["g(0,0,8)"], got["g(0,1,8)"], got["g(0,2,8)"]])
    pick = first.argmax(axis=0)
    best_answer = [answers[f"g(0,{w},8)"][i] for i, w in enumerate(pick)]
    achieved = l2_normalise(p.embedder.embed(best_answer))
    feedback = l2_normalise(2 * targets - achieved)
    fb = echo_texts(p.store, feedback, p.embedder, k=8, exclude_ids=exclude)
    print(f"feedback text: own cosine to the target {np.mean([e.cosine for e in fb]):.3f} (to the feedback vector)")
    for name, prompts in {
        "fb(0,0)": grounded(0, hyp, fb),
        "ans(0,0)": grounded(0, hyp, [EchoText(a, 0.0) for a in best_answer]),
    }.items():
        got[name] = p.reward(prompts, targets).rewards
        print(f"{name}: {got[name].mean():.3f}", flush=True)

    def best(*names: str) -> np.ndarray:
        return np.maximum.reduce([top, *(got[n] for n in names)])

    now = ("g(0,0,8)", "g(0,1,8)", "g(0,2,8)")
    cos = {"original prompt": p.reward(p.chosen.prompts, targets).rewards, TOP: top, NOW: best(*now)}
    schedules = {
        "+ g(1,0,8)": ("g(1,0,8)",),
        "+ g(0,0,16)": ("g(0,0,16)",),
        "+ g(0,0,4)": ("g(0,0,4)",),
        "+ fb(0,0)": ("fb(0,0)",),
        "+ ans(0,0)": ("ans(0,0)",),
        "+ g(1,0,8), g(0,0,16)": ("g(1,0,8)", "g(0,0,16)"),
        "+ g(1,0,8), fb(0,0)": ("g(1,0,8)", "fb(0,0)"),
        "+ g(0,0,16), fb(0,0)": ("g(0,0,16)", "fb(0,0)"),
        "+ g(1,0,8), g(0,0,16), fb(0,0) (7 calls)": ("g(1,0,8)", "g(0,0,16)", "fb(0,0)"),
        "+ g(1,0,8), g(1,1,8), g(0,0,16), g(0,1,16) (8 calls)": ("g(1,0,8)", "g(1,1,8)", "g(0,0,16)", "g(0,1,16)"),
        "+ g(1,0,8), g(0,0,16), fb(0,0), ans(0,0) (8 calls)": ("g(1,0,8)", "g(0,0,16)", "fb(0,0)", "ans(0,0)"),
        "+ g(1,0,8), g(2,0,8), g(0,0,16), g(0,0,4) (8 calls)": ("g(1,0,8)", "g(2,0,8)", "g(0,0,16)", "g(0,0,4)"),
    }
    for name, extra in schedules.items():
        cos[f"now {name}"] = best(*now, *extra)
    cos.update({f"alone {n}": v for n, v in got.items()})
    versus = {n: [NOW, "original prompt"] for n in cos if n.startswith("now +")}
    versus.update({n: [TOP] for n in cos if n.startswith("alone")})
    versus[NOW] = [TOP, "original prompt"]
    print(f"{len(targets)} {args.split} targets, {time.perf_counter() - started:.0f} s")
    print(paired_table(cos, versus, {}).to_string(index=False))


if __name__ == "__main__":
    main()
