"""Echo prompts (`e2p_lib.echo`): does asking the environment to repeat a text composed near the target beat the
instructions e2p finds, alone at one call and as a pool of the <=8-call search?

    E2P_DATA_DIR=data .venv/bin/python bench/echo.py --targets 60 --echo 0,1,2,3

Needs what 02 and 03 left in the data folder (the store with the outputs, the answer index, a policy and a forward
model); uses the policy e2p uses (`default_policy_dir`). Prints, on the first N test targets: the original prompt,
the answer index's top 1 (e2p's one call), retrieval's best of 8 answered, each echo template answered alone (one
call), the one-call search with echo (`search(budget=1, echo=1)`: the first template instead of the index's top 1
when the composed text's own cosine is more than `echo_margin` above the index's known one; the margin is chosen on
validation targets, then applied to the test targets), and 05's <=8-call search with each number of echo calls;
with paired differences.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from paired import paired_table

from e2p_lib.answer_index import leave_out
from e2p_lib.data import add_split
from e2p_lib.echo import ECHO_TEMPLATES, echo_prompts, echo_texts
from e2p_lib.embed.cache import load_embedded_dataset
from e2p_lib.evaluate.baselines import best_answered, retrieval_candidates
from e2p_lib.invert import default_policy_dir, load_inverter
from e2p_lib.lm import make_lm
from e2p_lib.pipeline import split_rows
from e2p_lib.train.rewards import NO_ANSWER

MARGINS = np.round(np.arange(0.0, 0.31, 0.025), 3)


def one_call_rule(inverter, targets, exclude, margin=None):
    """Per target: the index's top-1 cosine (known), the first echo template's answered cosine, the composed text's
    own cosine; and, with `margin`, the rule's cosines (echo where text cosine - margin > index cosine)."""
    top = [row[0].cosine for row in inverter.index.hypotheses(targets, k=1, exclude_ids=exclude)]
    texts = echo_texts(inverter.retrieval, targets, inverter.embedder, k=inverter.retrieval_k, exclude_ids=exclude)
    echoed = inverter.reward([row[0] if row else NO_ANSWER for row in echo_prompts(texts, 1)], targets).rewards
    return np.array(top), echoed, np.array([t.cosine for t in texts]), texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=int, default=60, help="test targets (the first N of the test split)")
    parser.add_argument("--val-targets", type=int, default=120, help="validation targets that choose the margin")
    parser.add_argument("--echo", default="0,1,2,3", help="comma-separated echo calls for the <=8-call search")
    parser.add_argument("--budget", type=int, default=8, help="the search's budget")
    args = parser.parse_args()
    echoes = [int(e) for e in args.echo.split(",")]
    started = time.perf_counter()
    lm = make_lm("local")
    dataset = load_embedded_dataset(model="local/all-MiniLM-L6-v2", dimensions=384)
    frame = add_split(dataset.frame)
    exclusions = leave_out(frame["id"].tolist(), frame["output"].tolist())
    inverter = load_inverter(environment=lm)

    val = split_rows(frame, "val", args.val_targets)
    val_top, val_echo, val_text, _ = one_call_rule(inverter, dataset.vectors[val], [exclusions[r] for r in val])
    by_margin = {m: np.where(val_text - m > val_top, val_echo, val_top).mean() for m in MARGINS}
    margin = max(by_margin, key=by_margin.get)
    print(
        f"validation ({len(val)} targets): index top 1 {val_top.mean():.3f}, echo {val_echo.mean():.3f}; rule by "
        + ", ".join(f"{m:g}: {v:.3f}" for m, v in by_margin.items())
        + f"; chosen margin {margin:g}",
        flush=True,
    )

    test = split_rows(frame, "test", args.targets)
    targets, test_ids = dataset.vectors[test], frame["id"].to_numpy()[test].tolist()
    exclude = [exclusions[r] for r in test]
    cosines = {"original prompt": inverter.reward(frame["prompt"].to_numpy()[test].tolist(), targets).rewards}
    calls = {"original prompt": 1.0}
    top, echoed, text_cosines, texts = one_call_rule(inverter, targets, exclude)
    cosines["answer index, top 1 (e2p, 1 call)"], calls["answer index, top 1 (e2p, 1 call)"] = top, 1.0
    cosines["composed text itself (no answer)"] = text_cosines
    every = echo_prompts(texts, len(ECHO_TEMPLATES))
    for k in range(len(ECHO_TEMPLATES)):
        prompts = [row[k] if row else NO_ANSWER for row in every]  # no text to repeat: a prompt that says nothing
        cosines[f"echo, template {k + 1}, 1 call"] = inverter.reward(prompts, targets).rewards
        calls[f"echo, template {k + 1}, 1 call"] = 1.0
    one = inverter.invert(targets, budget=1, exclude_ids=exclude, echo=1, echo_margin=margin)
    row = f"e2p, 1 call, echo (margin {margin:g})"
    cosines[row] = np.array([r.achieved_cosine for r in one])
    calls[row] = float(np.mean([r.environment_calls for r in one]))
    replay = np.where(text_cosines - margin > top, echoed, top)  # the rule from the cosines above: the same
    print(f"{row}: {cosines[row].mean():.3f} (replayed {replay.mean():.3f})", flush=True)
    candidates = retrieval_candidates(inverter.retrieval, targets, test_ids, k=8)
    cosines["retrieval, best of 8 answered"] = best_answered(candidates, targets, inverter.reward, 8)[1]
    calls["retrieval, best of 8 answered"] = 8.0
    for echo in echoes:
        began = time.perf_counter()
        results = inverter.invert(
            targets, budget=args.budget, exclude_ids=exclude, retrieved_share=0.5, samples=6, echo=echo
        )
        row = f"e2p, <={args.budget} calls, echo {echo}"
        cosines[row] = np.array([r.achieved_cosine for r in results])
        calls[row] = float(np.mean([r.environment_calls for r in results]))
        won = np.mean([next(c for c in r.candidates if c.prompt == r.prompt).source == "echo" for r in results])
        print(f"{row}: {cosines[row].mean():.3f} ({won:.0%} echo) in {time.perf_counter() - began:.0f} s", flush=True)
    first = f"e2p, <={args.budget} calls, echo {echoes[0]}"
    versus = {name: ["original prompt"] for name in cosines}
    versus.update({name: [first, "original prompt"] for name in cosines if name.startswith("e2p")})
    for name in cosines:
        if "1 call" in name and "index" not in name:
            versus[name] = ["answer index, top 1 (e2p, 1 call)", "original prompt"]
    table = paired_table(cosines, versus, {name: {"calls/target": c} for name, c in calls.items()})
    print(f"{len(test)} test targets, policy {default_policy_dir()}, {time.perf_counter() - started:.0f} s")
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
