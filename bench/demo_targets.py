"""The held-out targets the bench scripts score: the first N rows of a split of 01's embedded dataset, with what the
no-leak rule leaves out for each (its own row and any row with the same output) and Alpaca's own prompt for it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from e2p_lib.answer_index import DEFAULT_ANSWER_TOKENS, leave_out
from e2p_lib.data import add_split
from e2p_lib.embed import make_embedder
from e2p_lib.embed.cache import embed_texts, load_embedded_dataset
from e2p_lib.evaluate.own_targets import own_targets
from e2p_lib.lm import make_lm
from e2p_lib.pipeline import open_answer_index, split_rows
from e2p_lib.store import make_vector_store
from e2p_lib.train.rewards import AnswerCosineReward

MODEL, DIMENSIONS = "local/all-MiniLM-L6-v2", 384  # the demo profile's embedding space


@dataclass
class Targets:
    vectors: np.ndarray  # (n, d) embeddings of the rows' outputs
    ids: list[str]
    exclude: list[list[str]]  # per target, the ids retrieval must never return
    prompts: list[str]  # the original prompts (the oracle baseline)


def demo_targets(limit: int | None, split: str = "test") -> Targets:
    """The first `limit` rows of `split` of the MiniLM cache (the demo profile's space)."""
    dataset = load_embedded_dataset(model=MODEL, dimensions=DIMENSIONS)
    frame = add_split(dataset.frame)
    rows = split_rows(frame, split, limit)
    exclusions = leave_out(frame["id"].tolist(), frame["output"].tolist())
    return Targets(
        dataset.vectors[rows],
        frame["id"].to_numpy()[rows].tolist(),
        [exclusions[r] for r in rows],
        frame["prompt"].to_numpy()[rows].tolist(),
    )


def own_target_vectors(limit: int, embedder) -> np.ndarray:
    """The first `limit` own target texts (`e2p_lib.evaluate.own_targets`) embedded by `embedder`."""
    return embed_texts(own_targets().head(limit)["text"].tolist(), embedder)


@dataclass
class IndexPieces:
    embedder: object
    store: object  # 02's local store of the outputs
    reward: AnswerCosineReward  # real answer cosine with the local environment, greedy, the index's answer length
    chosen: Targets
    hypotheses: list  # per target, the answer index's `k` best prompts (Hypothesis: prompt, real cosine), best first
    top: np.ndarray  # per target, the real cosine of the index's best prompt


OWN_SPLITS = ("own-val", "own-test")  # index_pieces' names for the own target texts' two sets


def own_chosen(limit: int | None, split: str, embedder) -> Targets:
    """The first `limit` own target texts of `split` ("own-val" or "own-test") as targets: nothing stored to leave
    out, no original prompt."""
    own = own_targets(split.removeprefix("own-")).head(limit)
    return Targets(embed_texts(own["text"].tolist(), embedder), own["id"].tolist(), [[] for _ in range(len(own))], [])


def index_pieces(limit: int | None, split: str, k: int = 3) -> IndexPieces:
    """What the policy-free bench scripts score with: the chosen targets (a split of 01's dataset, or one of
    OWN_SPLITS) and 02's store and answer index of the local environment, with the index's `k` best prompts for each
    target (never an excluded row)."""
    lm, embedder = make_lm("local"), make_embedder("local")
    store = make_vector_store("local", "alpaca")
    index = open_answer_index(store, lm, embedder, DEFAULT_ANSWER_TOKENS)
    chosen = own_chosen(limit, split, embedder) if split in OWN_SPLITS else demo_targets(limit, split)
    hypotheses = index.hypotheses(chosen.vectors, k=k, exclude_ids=chosen.exclude)
    top = np.array([row[0].cosine for row in hypotheses])
    reward = AnswerCosineReward(lm, embedder, DEFAULT_ANSWER_TOKENS)
    return IndexPieces(embedder, store, reward, chosen, hypotheses, top)
