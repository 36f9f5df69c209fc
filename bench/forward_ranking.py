"""Benchmark: does a ranking term make the forward model a better ranker of one target's candidates?

Reproduces notebook 03's forward-model set-up (forward_targets="answers": the environment's answers to the indexed
train prompts, the last 2 * hold of them held out for validation and test) and trains each forward-model kind once
per ranking weight (0 = 03's plain regression). Each model is scored as 03's "forward model as a ranker" cell
scores it: on validation targets `va[:64]`, their 8 nearest indexed prompts (`row_hypotheses`, never the row
itself or a same-output row) ordered by `predict_cosine`, via `ranking_quality` (Spearman, top-1 hit, the real
cosine of the pick and of the real best); also on all validation targets (less noisy), and the held-out cosine of
03's forward table.

Ranking groups: anchors are the fit rows' Alpaca output vectors (the kind of target the search gets), candidates
their k nearest fit prompts by real answer cosine (`index_ranking_groups`).

    E2P_DATA_DIR=data .venv/bin/python bench/forward_ranking.py --kinds transformer mlp --weights 0 0.0003 0.001 \\
        --models-dir /tmp/ranking-models --out /tmp/ranking.csv      # E2P_DATA_DIR: the data 02 and 03 wrote

Models are written under --models-dir (one folder per setting, so a rerun only evaluates); it must not be the
data's own models folder, whose forward models 03 trained. Prints one table row per (kind, setting).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from e2p_lib import config
from e2p_lib.answer_index import leave_out
from e2p_lib.data import add_split
from e2p_lib.embed import embedder_from_name
from e2p_lib.embed.base import l2_normalise
from e2p_lib.embed.cache import load_embedded_dataset
from e2p_lib.evaluate.metrics import ranking_quality
from e2p_lib.lm import make_lm
from e2p_lib.models.forward import evaluate_forward_model, forward_model_config, train_forward_model
from e2p_lib.models.forward_ranking import index_ranking_groups, ranking_groups
from e2p_lib.pipeline import open_answer_index, row_hypotheses, split_rows
from e2p_lib.store import make_vector_store


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kinds", nargs="+", default=["transformer", "mlp"])
    parser.add_argument("--weights", nargs="+", type=float, default=[0.0, 0.0003, 0.001, 0.003])
    parser.add_argument("--ranking-loss", default="listnet", help="listnet | pairwise")
    parser.add_argument("--temperature", type=float, default=0.2)
    parser.add_argument("--groups-per-step", type=int, default=4)
    parser.add_argument("--k", type=int, default=8, help="candidates per training group")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--epochs", type=int, default=None, help="override the preset's num_epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    parser.add_argument("--models-dir", type=Path, default=None, help="None: train without writing models")
    parser.add_argument("--out", type=Path, default=None, help="CSV of the table (rows are appended)")
    return parser.parse_args()


def setup():
    """03's data: frame with splits, the answer index, and the fit / val / test rows of the forward model."""
    dataset = load_embedded_dataset(model="local/all-MiniLM-L6-v2", dimensions=384)
    frame = add_split(dataset.frame)
    split = {name: split_rows(frame, name) for name in ("train", "val", "test")}
    ids = frame["id"].to_numpy()
    embedder = embedder_from_name(dataset.model, dataset.dimensions)
    store = make_vector_store("local", name="alpaca", dimensions=dataset.dimensions)
    index = open_answer_index(store, make_lm("local"), embedder, 64)
    present, answer_vectors = index.answer_vectors(ids[split["train"]].tolist())
    hold = max(len(present) // 20, 2)
    present_prompts = frame.set_index("id").loc[present, "prompt"].to_numpy()
    data = {
        "fit": (present[: -2 * hold], present_prompts[: -2 * hold].tolist(), answer_vectors[: -2 * hold]),
        "val": (
            present[-2 * hold : -hold],
            present_prompts[-2 * hold : -hold].tolist(),
            answer_vectors[-2 * hold : -hold],
        ),
        "test": (present[-hold:], present_prompts[-hold:].tolist(), answer_vectors[-hold:]),
    }
    return dataset, frame, split, embedder, index, data


def ranker_scores(model, candidates, targets, real) -> dict[str, float]:
    """`ranking_quality` of `model` ordering each target's candidate prompts: what 03's ranker cell computes with
    `predict_cosine` per target, here with each distinct prompt predicted once (the same numbers, faster)."""
    unique = list(dict.fromkeys(p for row in candidates for p in row))
    predicted = dict(zip(unique, model.predict(unique)))
    targets = l2_normalise(np.asarray(targets, dtype=np.float32))
    scores = [np.array([predicted[p] @ t for p in row]) for row, t in zip(candidates, targets)]
    return ranking_quality(scores, real)


def ranking_sets(dataset, frame, split, index, data) -> dict[str, tuple[list[list[str]], np.ndarray, list]]:
    """{name: (candidate prompts per target, targets, real cosines)}: "03" (va[:64], as notebook 03), "all_val"
    (every validation target, less noisy) and "unseen" (every validation target, its 8 nearest among the forward
    model's held-out prompts: candidates it never trained on, like the search's new rewrites)."""
    va = split["val"]
    sets = {}
    for name, rows in (("03", va[:64]), ("all_val", va)):
        candidates = row_hypotheses(index, frame, rows, dataset.vectors, k=8)
        sets[name] = (
            [[h.prompt for h in row] for row in candidates],
            dataset.vectors[rows],
            [[h.cosine for h in row] for row in candidates],
        )
    held_ids = [*data["val"][0], *data["test"][0]]
    held_prompts = [*data["val"][1], *data["test"][1]]
    exclusions = leave_out(frame["id"].tolist(), frame["output"].tolist())
    unseen = ranking_groups(
        dataset.vectors[va],
        [exclusions[r] for r in va],
        held_ids,
        held_ids,
        np.concatenate([data["val"][2], data["test"][2]]),
        k=8,
    )
    sets["unseen"] = (
        [[held_prompts[i] for i in row] for row in unseen.candidates],
        unseen.targets,
        unseen.cosines.tolist(),
    )
    return sets


def setting_name(kind: str, weight: float, args: argparse.Namespace) -> str:
    """The folder and row name of one trained model."""
    name = f"{kind}-w{weight:g}"
    if weight > 0:
        name += f"-{args.ranking_loss}-t{args.temperature:g}-g{args.groups_per_step}-k{args.k}"
    if args.epochs is not None:
        name += f"-e{args.epochs}"
    return name + ("" if args.seed == 0 else f"-s{args.seed}")


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    if args.models_dir is not None:
        protected = config.models_dir().resolve()
        if protected in [args.models_dir.resolve(), *args.models_dir.resolve().parents]:
            raise SystemExit(f"--models-dir {args.models_dir} is inside {protected}, whose models 03 trained.")
    dataset, frame, split, embedder, index, data = setup()
    fit_ids, fit_p, fit_y = data["fit"]
    _, val_p, val_y = data["val"]
    _, test_p, test_y = data["test"]
    fit_set = set(fit_ids)
    anchors = np.array([r for r in split["train"] if frame["id"].iloc[r] in fit_set])
    started = time.time()
    groups = index_ranking_groups(index, frame, anchors, dataset.vectors, fit_ids, k=args.k)
    sets = ranking_sets(dataset, frame, split, index, data)
    print(
        f"fit {len(fit_p)}, val {len(val_p)}, test {len(test_p)}; {len(groups)} ranking groups of {groups.k} "
        f"({time.time() - started:.1f} s), real cosine spread per group {np.ptp(groups.cosines, axis=1).mean():.3f}",
        flush=True,
    )
    rows = []
    for kind in args.kinds:
        for weight in args.weights:
            name = setting_name(kind, weight, args)
            overrides = dict(
                ranking_weight=weight,
                ranking_loss=args.ranking_loss,
                ranking_temperature=args.temperature,
                ranking_groups_per_step=args.groups_per_step,
                seed=args.seed,
                show_progress=False,
                save_every_steps=0,  # one checkpoint, at the end
                output_dir=None if args.models_dir is None else str(args.models_dir / name),
            )
            if args.epochs is not None:
                overrides["num_epochs"] = args.epochs
            model, _ = train_forward_model(
                fit_p,
                fit_y,
                val_p,
                val_y,
                forward_model_config(kind, args.preset, **overrides),
                embedder,
                cache_dir=config.embeddings_dir(),
                ranking_groups=groups if weight > 0 else None,
            )
            row = {"setting": name}
            for set_name, (candidates, targets, real) in sets.items():
                quality = ranker_scores(model, candidates, targets, real)
                suffix = "" if set_name == "03" else f"_{set_name}"
                for metric in ("spearman", "top1_hit", "picked_real", "best_real"):
                    row[metric + suffix] = quality[metric]
            row["held_out_cosine"] = evaluate_forward_model({kind: model}, test_p, test_y)["mean_cosine"].iloc[0]
            row["train_minutes"] = model.state.train_seconds / 60
            rows.append(row)
            print(pd.DataFrame([row]).round(4).to_string(index=False), flush=True)
            if args.out is not None:
                args.out.parent.mkdir(parents=True, exist_ok=True)
                pd.DataFrame([row]).to_csv(args.out, mode="a", header=not args.out.exists(), index=False)
    targets = {name: len(real) for name, (_, _, real) in sets.items()}
    print(f"\ntargets per ranking set: {targets} (8 candidates each; the columns without a suffix are 03's)")
    print(pd.DataFrame(rows).round(4).to_string(index=False))


if __name__ == "__main__":
    main()
