"""What each candidate pool adds to e2p's search at 8 environment calls per target, paired on the same test targets.

    E2P_DATA_DIR=data .venv/bin/python bench/search_pools.py --targets 24 --compute-type int8

Needs what 02 and 03 left in the data folder (the store with the outputs and the answer index of this environment,
the SFT policy, a forward model). `--compute-type` must be the one the answer index was built with (its namespace
depends on it). Rows: retrieval alone (the 8 nearest outputs' prompts answered, the best kept), the search on the
answer index and the policy's rewrites (`retrieved_share=0`), and the search on both pools (05_eval's `e2p, <=8
calls`, `retrieved_share=0.5`). Prints mean answer cosines with bootstrap intervals and paired differences.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from paired import paired_table

from e2p_lib import config
from e2p_lib.answer_index import leave_out
from e2p_lib.data import add_split
from e2p_lib.embed import embedder_from_name
from e2p_lib.embed.cache import load_embedded_dataset
from e2p_lib.evaluate.baselines import best_answered, retrieval_candidates
from e2p_lib.invert import Inverter
from e2p_lib.lm import make_lm
from e2p_lib.models.policy import PromptPolicy
from e2p_lib.pipeline import load_forward_model, open_answer_index, split_rows
from e2p_lib.store import make_vector_store
from e2p_lib.train.rewards import AnswerCosineReward
from e2p_lib.train.sft import POLICY_FOLDER


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=int, default=24, help="test targets (the first N of the test split)")
    parser.add_argument("--budget", type=int, default=8)
    parser.add_argument("--compute-type", default="float32", help="the environment's, as the index was built")
    parser.add_argument("--samples", type=int, default=6, help="policy rewrites per target and round (05: 6)")
    args = parser.parse_args()

    lm = make_lm("local", compute_type=args.compute_type)
    store = make_vector_store("local", name="alpaca")
    dataset = load_embedded_dataset(model="local/all-MiniLM-L6-v2", dimensions=384)
    frame = add_split(dataset.frame)
    test = split_rows(frame, "test", args.targets)
    targets, test_ids = dataset.vectors[test], frame["id"].to_numpy()[test].tolist()
    exclusions = leave_out(frame["id"].tolist(), frame["output"].tolist())
    embedder = embedder_from_name(dataset.model, dataset.dimensions)
    index = open_answer_index(store, lm, embedder, 64)
    policy = PromptPolicy.load(config.models_dir() / "policy-sft" / POLICY_FOLDER)
    inverter = Inverter(
        policy,
        embedder,
        load_forward_model(config.models_dir(), embedder),
        lm,
        index=index,
        retrieval=store,
        answer_max_new_tokens=64,
    )
    reward = AnswerCosineReward(lm, embedder, max_new_tokens=64)
    started = time.perf_counter()
    candidates = retrieval_candidates(store, targets, test_ids, k=args.budget)
    cosines = {"retrieval, best of 8 answered": best_answered(candidates, targets, reward, args.budget)[1]}
    calls = {"retrieval, best of 8 answered": float(args.budget)}
    for name, share in (("e2p, index and rewrites only", 0.0), ("e2p, both pools (05's e2p, <=8 calls)", 0.5)):
        results = inverter.invert(
            targets,
            budget=args.budget,
            exclude_ids=[exclusions[r] for r in test],
            retrieved_share=share,
            samples=args.samples,
            temperature=0.8,
        )
        cosines[name] = np.array([r.achieved_cosine for r in results])
        calls[name] = float(np.mean([r.environment_calls for r in results]))
    versus = {name: ["retrieval, best of 8 answered"] for name in cosines}
    table = paired_table(cosines, versus, {name: {"calls/target": c} for name, c in calls.items()})
    print(f"{len(test)} test targets, answer index {len(index)} prompts, {time.perf_counter() - started:.0f} s")
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
