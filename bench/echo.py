"""Echo prompts (`e2p_lib.echo`): does asking the environment to repeat a text composed near the target beat the
instructions e2p finds, alone at one call and as a pool of the <=8-call search?

    E2P_DATA_DIR=data .venv/bin/python bench/echo.py --targets 60 --echo 0,1,2,3

Needs what 02 and 03 left in the data folder (the store with the outputs, the answer index, a policy and a forward
model); uses the policy e2p uses (`default_policy_dir`). Prints, on the first N test targets: the original prompt,
the answer index's top 1 (e2p's one call), retrieval's best of 8 (and of each budget) answered, each echo template
answered alone (one call), the one-call search with echo (`search(budget=1, echo=1)`: the first template instead of
the index's top 1 when the composed text's own cosine is more than `echo_margin` above the index's known one; the
margin is chosen on validation targets, then applied to the test targets), and 05's search at each budget of
`--budgets` (default 8) with each number of echo calls; with paired differences. `--own` measures the same on the
target texts that are not Alpaca outputs (`e2p_lib.evaluate.own_targets`), where there is no original prompt: the
searches are compared with retrieval's best of 8 answered instead. A budget curve with and without echo:

    E2P_DATA_DIR=data .venv/bin/python bench/echo.py --targets 24 --echo 0,3 --budgets 1,2,4,8,16

    E2P_DATA_DIR=data .venv/bin/python bench/echo.py --own --targets 60 --echo 0,3
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from demo_targets import demo_targets, own_target_vectors  # bench/ is on sys.path when a script of it runs
from paired import paired_table

from e2p_lib.echo import ECHO_TEMPLATES, echo_prompts, echo_texts
from e2p_lib.evaluate.baselines import answered_cosines, best_of_first, retrieval_candidates
from e2p_lib.invert import default_policy_dir, load_inverter
from e2p_lib.lm import make_lm
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
    parser.add_argument("--own", action="store_true", help="the first N own target texts instead of Alpaca's")
    parser.add_argument("--val-targets", type=int, default=120, help="validation targets that choose the margin")
    parser.add_argument("--echo", default="0,1,2,3", help="comma-separated echo calls for the <=8-call search")
    parser.add_argument("--budgets", default="8", help="comma-separated budgets of the search (a budget curve)")
    args = parser.parse_args()
    echoes = [int(e) for e in args.echo.split(",")]
    budgets = [int(b) for b in args.budgets.split(",")]
    started = time.perf_counter()
    lm = make_lm("local")
    val = demo_targets(args.val_targets, "val")
    inverter = load_inverter(environment=lm)

    val_top, val_echo, val_text, _ = one_call_rule(inverter, val.vectors, val.exclude)
    by_margin = {m: np.where(val_text - m > val_top, val_echo, val_top).mean() for m in MARGINS}
    margin = max(by_margin, key=by_margin.get)
    print(
        f"validation ({len(val.ids)} targets): index top 1 {val_top.mean():.3f}, echo {val_echo.mean():.3f}; rule by "
        + ", ".join(f"{m:g}: {v:.3f}" for m, v in by_margin.items())
        + f"; chosen margin {margin:g}",
        flush=True,
    )

    if args.own:  # users' own texts: no stored row to leave out, no original prompt
        targets, test_ids, exclude = own_target_vectors(args.targets, inverter.embedder), None, None
        cosines, calls, reference = {}, {}, "retrieval, best of 8 answered"
    else:
        test = demo_targets(args.targets)
        targets, test_ids, exclude = test.vectors, test.ids, test.exclude
        cosines = {"original prompt": inverter.reward(test.prompts, targets).rewards}
        calls, reference = {"original prompt": 1.0}, "original prompt"
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
    widest = max(8, *budgets)
    candidates = retrieval_candidates(inverter.retrieval, targets, test_ids, k=widest)
    _, answered = answered_cosines(candidates, targets, inverter.reward, widest)  # each B: the first B of these
    for budget in sorted({8, *budgets} - {1}):
        row = f"retrieval, best of {budget} answered"
        cosines[row], calls[row] = best_of_first(answered, budget)[0], float(budget)
    for budget in budgets:
        for echo in echoes:
            began = time.perf_counter()
            if budget == 1 and echo:  # at one call only the first echo prompt can act: the one-call rule's search
                results = one
            else:
                results = inverter.invert(
                    targets, budget=budget, exclude_ids=exclude, retrieved_share=0.5, samples=6, echo=echo,
                    echo_margin=margin,
                )  # fmt: skip
            row = f"e2p, <={budget} calls, echo {echo}"
            cosines[row] = np.array([r.achieved_cosine for r in results])
            calls[row] = float(np.mean([r.environment_calls for r in results]))
            won = np.mean([next(c for c in r.candidates if c.prompt == r.prompt).source == "echo" for r in results])
            took = time.perf_counter() - began
            print(f"{row}: {cosines[row].mean():.3f} ({won:.0%} echo) in {took:.0f} s", flush=True)
    versus = {name: [reference] for name in cosines if name != reference}
    for budget in budgets:  # each search against the same budget with the first echo count (0: without echo)
        for echo in echoes[1:]:
            versus[f"e2p, <={budget} calls, echo {echo}"] = [f"e2p, <={budget} calls, echo {echoes[0]}", reference]
    for name in cosines:  # echo alone and the one-call rule vs the index's pick; "<=1 calls" keeps its own baseline
        if name.endswith(", 1 call") or name.startswith("e2p, 1 call"):
            versus[name] = ["answer index, top 1 (e2p, 1 call)", reference]
    table = paired_table(cosines, versus, {name: {"calls/target": c} for name, c in calls.items()})
    kind = "own target texts" if args.own else "test targets"
    print(f"{len(targets)} {kind}, policy {default_policy_dir()}, {time.perf_counter() - started:.0f} s")
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
