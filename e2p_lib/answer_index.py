"""The answer index: the environment's own answers to stored prompts, embedded and searchable by target.

The reward is the cosine between a target and the embedding of the *environment's* answer; a stored Alpaca output is
only a stand-in for that answer. Answering every indexed prompt once (a one-time cost of one environment call per
prompt, cached and resumable) makes retrieval exact: the prompts whose real answers land nearest a target, with their
real cosines. These are e2p's first hypotheses: the policy reads and edits them, and the budgeted search starts there.

    >>> index = build_answer_index(store, lm, embedder, ids, prompts)      # answers and embeds each prompt once
    >>> index.hypotheses(targets, k=4, exclude_ids=leave_out(ids, outputs))  # [[Hypothesis(prompt, cosine)], ...]

The index lives in the vector store under a namespace of its own per (environment, answer settings, embedder), so
answers of two environments never mix. A target never retrieves its own row or a row with the same output when
`exclude_ids` says so (`leave_out` builds those lists): that would be a lookup of the answer, not a hypothesis.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from e2p_lib.checks import check_positive_int
from e2p_lib.embed.base import Embedder, l2_normalise
from e2p_lib.inversion.config import ANSWER_TOKENS
from e2p_lib.models.policy import Hypothesis
from e2p_lib.store.base import VectorStore, check_ids, check_query_vectors
from e2p_lib.train.rewards import embed_answers


def answer_namespace(lm: Any, embedder: Embedder, max_new_tokens: int) -> str:
    """The store namespace of one index: a hash of what changes its answers and their vectors."""
    key = json.dumps(
        {
            "lm": lm.name,
            "settings": lm.settings(),
            "max_new_tokens": max_new_tokens,
            "embedder": embedder.name,
            "dimensions": int(embedder.dimensions),
        },
        sort_keys=True,
        default=str,
    )
    return "answers-" + hashlib.sha256(key.encode()).hexdigest()[:16]


def leave_out(ids: Sequence[str], outputs: Sequence[str]) -> list[list[str]]:
    """For each row, the ids it must not retrieve: its own and those of every row with the same output text."""
    ids = check_ids(ids, "ids")
    if len(ids) != len(outputs):
        raise ValueError(f"Got {len(ids)} ids for {len(outputs)} outputs; give one output per id.")
    by_output: dict[str, list[str]] = defaultdict(list)
    for row_id, output in zip(ids, outputs):
        by_output[str(output).strip()].append(row_id)
    return [by_output[str(output).strip()] for output in outputs]


class AnswerIndex:
    """Known prompts with the embedding of the environment's answer to each, in one namespace of a vector store."""

    def __init__(self, store: VectorStore, namespace: str):
        self.store, self.namespace = store, namespace

    def __len__(self) -> int:
        return self.store.count(namespace=self.namespace)

    def __repr__(self) -> str:
        return f"AnswerIndex({self.store!r}, namespace={self.namespace!r}, prompts={len(self)})"

    def answer_vectors(self, ids: Sequence[str]) -> tuple[list[str], np.ndarray]:
        """(the given ids that are indexed, in order; their (m, d) answer embeddings): what the forward model can
        learn from, the environment's real answers instead of the dataset's outputs."""
        found = self.store.fetch(list(ids), namespace=self.namespace)
        present = [i for i in ids if i in found]
        vectors = np.stack([found[i].vector for i in present]) if present else np.zeros((0, self.store.dimensions))
        return present, vectors.astype(np.float32)

    def hypotheses(
        self,
        targets: Any,
        k: int,
        exclude_ids: Sequence[Sequence[str] | str | None] | None = None,
        batch_size: int = 1024,
    ) -> list[list[Hypothesis]]:
        """The `k` indexed prompts whose answers land nearest each target, best first, with their real cosines.

        Raises:
            ValueError: the index is empty (build it first), or bad targets, k or exclusions.
        """
        targets = check_query_vectors(targets, self.store.dimensions)
        check_positive_int(k, "k")
        if len(self) == 0:
            raise ValueError(
                f"The answer index {self.namespace!r} in {self.store!r} is empty: build it with "
                "build_answer_index (02_pinecone does) before asking for hypotheses."
            )
        found: list[list[Hypothesis]] = []
        for start in range(0, len(targets), batch_size):
            excluded = None if exclude_ids is None else list(exclude_ids[start : start + batch_size])
            matches = self.store.query(
                targets[start : start + batch_size], top_k=k, exclude_ids=excluded, namespace=self.namespace
            )
            found += [[Hypothesis(m.metadata["prompt"], float(m.score), m.id) for m in row] for row in matches]
        return found

    def known(self, rows: Sequence[Sequence[tuple[str, str]]], targets: Any) -> list[list[Hypothesis]]:
        """Per target, those of its (id, prompt) pairs that the index holds, with the real cosine of their answer to
        the target: prompts found another way (e.g. by output retrieval) whose answers need no environment call."""
        targets = l2_normalise(check_query_vectors(targets, self.store.dimensions))
        if len(rows) != len(targets):
            raise ValueError(f"Got {len(rows)} rows of (id, prompt) for {len(targets)} targets: give one per target.")
        present, vectors = self.answer_vectors(list(dict.fromkeys(i for row in rows for i, _ in row)))
        answers = dict(zip(present, l2_normalise(vectors)))
        return [
            [Hypothesis(prompt, float(answers[i] @ target), i) for i, prompt in row if i in answers]
            for row, target in zip(rows, targets)
        ]


def build_answer_index(
    store: VectorStore,
    lm: Any,
    embedder: Embedder,
    ids: Sequence[str],
    prompts: Sequence[str],
    *,
    max_new_tokens: int = ANSWER_TOKENS,
    chunk_size: int = 256,
    embedding_cache_dir=None,
) -> AnswerIndex:
    """Answer each prompt with `lm` (greedy), embed the answers, and upsert them as an `AnswerIndex`.

    Resumable: ids already in the index are skipped, and the LM's answer cache and the embedding cache keep what a
    killed run finished. Cost: one environment call per prompt not yet indexed (a progress bar counts them).

    Raises:
        ValueError: ids and prompts differ in length, or the store's dimension is not the embedder's.
    """
    ids = check_ids(ids, "ids")
    prompts = list(prompts)
    if len(ids) != len(prompts):
        raise ValueError(f"Got {len(ids)} ids for {len(prompts)} prompts; give one prompt per id.")
    if int(store.dimensions) != int(embedder.dimensions):
        raise ValueError(
            f"The store holds {store.dimensions}-d vectors but {embedder.name} gives "
            f"{embedder.dimensions}-d: open the store with dimensions={embedder.dimensions}."
        )
    check_positive_int(chunk_size, "chunk_size")
    index = AnswerIndex(store, answer_namespace(lm, embedder, max_new_tokens))
    chunks = range(0, len(ids), chunk_size)
    with tqdm(total=len(ids), desc="answer index", unit="prompt") as bar:
        for start in chunks:
            chunk = list(range(start, min(start + chunk_size, len(ids))))
            present = store.fetch([ids[i] for i in chunk], namespace=index.namespace)
            todo = [i for i in chunk if ids[i] not in present]
            if todo:
                answers = lm.generate([prompts[i] for i in todo], max_new_tokens=max_new_tokens)
                vectors = embed_answers(answers, embedder, cache_dir=embedding_cache_dir, show_progress=False)
                store.upsert(
                    [ids[i] for i in todo],
                    vectors,
                    [{"prompt": prompts[i], "answer": a} for i, a in zip(todo, answers)],
                    namespace=index.namespace,
                )
            bar.update(len(chunk))
    return index


def hypothesis_cosines(hypotheses: Sequence[Sequence[Hypothesis]]) -> np.ndarray:
    """(n, k) real cosines of each target's hypotheses (NaN where a target has fewer than k)."""
    width = max((len(row) for row in hypotheses), default=0)
    out = np.full((len(hypotheses), width), np.nan)
    for i, row in enumerate(hypotheses):
        out[i, : len(row)] = [h.cosine for h in row]
    return out
