"""At one call, can a small learned rule tell when the grounded prompt will land nearer than the index's top 1?

    E2P_DATA_DIR=data .venv/bin/python bench/one_call_switch.py --targets 120

Needs 01 and 02 (the embedded dataset, the store, the answer index); no policy, no forward model. At one call the
search answered the index's top 1 (its answer known from the index); the grounded prompt ("Use these ideas: <text>")
ties it on average but beats it on about half the targets. What is known before the call, per target: the top 1's
answer cosine, the composed text's own cosine, the cosine between that answer and the text, the second indexed
prompt's cosine, and the text's lead over the top 1. A ridge regression of the grounded prompt's gain over the top 1
on them, fitted on the validation targets, sends the grounded prompt where the predicted gain exceeds a margin; the
margin is chosen by 5-fold cross-validation on the validation targets, then the rule fitted on all of them is
applied once to the test targets, paired against the top 1 and against the search's rule (`GROUND_MARGIN`: the
text's own cosine alone, its margin chosen on validation targets by bench/index_variants.py). Answers come from the
answer cache where earlier runs left them.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from demo_targets import index_pieces  # bench/ is on sys.path when a script of it runs
from index_variants import grounded
from paired import paired_table
from sklearn.linear_model import Ridge
from sklearn.model_selection import KFold

from e2p_lib.echo import echo_texts
from e2p_lib.embed.base import l2_normalise
from e2p_lib.ground import GROUND_MARGIN

MARGINS = (-0.02, 0.0, 0.01, 0.02, 0.03, 0.05, 0.08)


def split_data(limit: int, split: str) -> dict[str, np.ndarray]:
    """Per target of `split`: the features known before the call, and the two real cosines."""
    p = index_pieces(limit, split, k=2)
    targets = p.chosen.vectors
    texts = echo_texts(p.store, targets, p.embedder, k=8, exclude_ids=p.chosen.exclude)
    top = [row[0].prompt for row in p.hypotheses]
    top_answers = p.reward(top, targets).answers  # the index's answers again (greedy: the same), from the cache
    grounded_real = p.reward(grounded(0, p.hypotheses, texts, 0), targets).rewards
    answer_vectors = l2_normalise(p.embedder.embed(top_answers))
    text_vectors = l2_normalise(p.embedder.embed([e.text or "-" for e in texts]))
    text_cosine = np.nan_to_num(np.array([e.cosine for e in texts], dtype=float), nan=-1.0)
    features = np.column_stack(
        [
            p.top,
            text_cosine,
            np.sum(answer_vectors * text_vectors, axis=1),
            [row[1].cosine for row in p.hypotheses],
            text_cosine - p.top,
        ]
    )
    original = p.reward(p.chosen.prompts, targets).rewards
    return {"x": features, "top": p.top, "grounded": grounded_real, "original": original}


def switched(model: Ridge, data: dict[str, np.ndarray], margin: float) -> np.ndarray:
    choose = model.predict(data["x"]) > margin
    return np.where(choose, data["grounded"], data["top"]), choose


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=int, default=120, help="the first N targets of val (fit) and test (score)")
    parser.add_argument("--alpha", type=float, default=1.0, help="ridge penalty")
    args = parser.parse_args()
    started = time.perf_counter()
    val, test = split_data(args.targets, "val"), split_data(args.targets, "test")
    gain = val["grounded"] - val["top"]
    both = np.maximum(val["grounded"], val["top"]).mean()
    print(f"val: grounded beats the top 1 on {np.mean(gain > 0):.0%} of targets; best of both {both:.3f}")
    cv = {m: np.zeros_like(gain) for m in MARGINS}
    for fit, held in KFold(5, shuffle=True, random_state=0).split(val["x"]):
        model = Ridge(alpha=args.alpha).fit(val["x"][fit], gain[fit])
        part = {k: v[held] for k, v in val.items()}
        for m in MARGINS:
            cv[m][held] = switched(model, part, m)[0]
    for m in MARGINS:
        print(
            f"val, 5-fold: margin {m:+.2f}: {cv[m].mean():.3f} ({cv[m].mean() - val['top'].mean():+.3f} over the top 1)"
        )
    margin = max(MARGINS, key=lambda m: cv[m].mean())
    model = Ridge(alpha=args.alpha).fit(val["x"], gain)
    print("ridge coefficients (top, text, answer·text, second, text - top):", np.round(model.coef_, 3))
    chosen, choose = switched(model, test, margin)
    rule = np.where(test["x"][:, 1] - GROUND_MARGIN > test["top"], test["grounded"], test["top"])
    cos = {
        "original prompt": test["original"],
        "index top 1 (e2p, 1 call)": test["top"],
        "grounded prompt alone": test["grounded"],
        f"learned switch, margin {margin:+.2f} ({choose.mean():.0%} switched)": chosen,
        f"the search's rule: text cosine - top 1 > {GROUND_MARGIN}": rule,
        "best of both (2 calls; the ceiling of any switch)": np.maximum(test["grounded"], test["top"]),
    }
    versus = {n: ["index top 1 (e2p, 1 call)", "original prompt"] for n in cos if n != "index top 1 (e2p, 1 call)"}
    print(f"{len(test['top'])} test targets, {time.perf_counter() - started:.0f} s")
    print(paired_table(cos, versus, {}).to_string(index=False))


if __name__ == "__main__":
    main()
