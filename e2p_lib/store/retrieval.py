"""The retrieval baseline: answer a target embedding with the prompt of the nearest stored output.

Every learned method must beat this in evaluation. For each target vector it finds the stored output whose embedding
is closest (cosine) and returns that record's prompt, never the target's own row: a target that is in the store would
otherwise retrieve its own prompt, which is not a baseline but a lookup.

    >>> store = make_vector_store("local", name="alpaca-minilm", dimensions=384, embedder=train.model)
    >>> store.upsert(train.ids, train.vectors, train.frame.to_dict("records"))
    >>> baseline = nearest_prompt(store, test.vectors, test.ids)          # k=1: one row per target
    >>> baseline.prompt.tolist()[:2]
    ['Give three tips for staying healthy.', ...]
    >>> nearest_prompt(store, test.vectors, test.ids, k=5)               # the 5 nearest, rank 1..5 per target

Inputs: any `VectorStore` whose records carry the seed metadata (a "prompt" key); `target_vectors` (n, d) or (d,);
`target_ids` (one per target, or None when the targets are not in the store). Queries go out in batches of
`batch_size` targets with a progress bar.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from e2p_lib.checks import check_positive_int
from e2p_lib.store.base import DEFAULT_NAMESPACE, VectorStore, check_ids, check_query_vectors

COLUMNS = ["target", "target_id", "rank", "id", "score", "prompt"]


def nearest_prompt(
    store: VectorStore,
    target_vectors: Any,
    target_ids: Sequence[str] | None = None,
    *,
    k: int = 1,
    exclude_ids: Sequence[Sequence[str] | str | None] | None = None,
    namespace: str = DEFAULT_NAMESPACE,
    prompt_key: str = "prompt",
    batch_size: int = 1024,
    show_progress: bool | None = None,
) -> pd.DataFrame:
    """The prompts of the `k` stored outputs nearest to each target, other than the target's own row.

    Returns a DataFrame with one row per (target, neighbour), ordered by target then rank: `target` (position in
    `target_vectors`), `target_id`, `rank` (1 = nearest), `id`, `score` (cosine similarity) and `prompt`. A target
    gets fewer than `k` rows only when the store holds fewer than `k` other records. `exclude_ids` (one entry per
    target: an id, a list of ids, or None) leaves out more than the target's own row, e.g. every row with the same
    output (`e2p_lib.answer_index.leave_out`); without it, each target's own id is left out.

    Raises:
        ValueError: `target_ids` does not have one id per target, `k` is not a positive integer, the namespace is
            empty, or a neighbour's metadata has no `prompt_key` (store the seed's metadata with the vectors).
    """
    targets = check_query_vectors(target_vectors, store.dimensions)
    if target_ids is not None:
        target_ids = check_ids(target_ids, "target_ids")
        if len(target_ids) != len(targets):
            raise ValueError(
                f"Got {len(target_ids)} target_ids for {len(targets)} target vectors; give one per target "
                "(or None when the targets are not in the store)."
            )
    if exclude_ids is not None and len(exclude_ids) != len(targets):
        raise ValueError(f"Got {len(exclude_ids)} exclude_ids entries for {len(targets)} targets: give one per target.")
    excluding = exclude_ids if exclude_ids is not None else target_ids
    check_positive_int(k, "k")
    check_positive_int(batch_size, "batch_size")
    if store.count(namespace=namespace) == 0:
        raise ValueError(f"{store!r} holds no records in namespace {namespace!r}: upsert the stored outputs first.")

    rows = []
    show = len(targets) > batch_size if show_progress is None else show_progress
    for start in tqdm(range(0, len(targets), batch_size), desc="nearest prompt", unit="batch", disable=not show):
        stop = start + batch_size
        excluded = list(excluding[start:stop]) if excluding is not None else None
        results = store.query(targets[start:stop], top_k=k, exclude_ids=excluded, namespace=namespace)
        for offset, matches in enumerate(results):
            position = start + offset
            for rank, match in enumerate(matches, start=1):
                if prompt_key not in match.metadata:
                    raise ValueError(
                        f"Stored record {match.id!r} has no {prompt_key!r} in its metadata (keys: "
                        f"{sorted(match.metadata)}). Upsert the seed metadata (id, prompt, output, tokens, type)."
                    )
                rows.append(
                    (
                        position,
                        target_ids[position] if target_ids is not None else None,
                        rank,
                        match.id,
                        match.score,
                        match.metadata[prompt_key],
                    )
                )
    return pd.DataFrame(rows, columns=COLUMNS)


def retrieved_rows(
    store: VectorStore,
    targets: Any,
    target_ids: Sequence[str] | None,
    k: int,
    exclude_ids: Sequence[Sequence[str] | str | None] | None = None,
) -> list[list[tuple[str, str]]]:
    """(id, prompt) of the `k` stored outputs nearest each target (other than its own row), nearest first."""
    targets = check_query_vectors(targets, store.dimensions)
    frame = nearest_prompt(store, targets, target_ids, k=k, exclude_ids=exclude_ids)
    rows: list[list[tuple[str, str]]] = [[] for _ in range(len(targets))]
    for position, row_id, prompt in zip(frame["target"], frame["id"], frame["prompt"]):
        rows[position].append((row_id, prompt))
    return rows


def retrieval_candidates(
    store: VectorStore,
    targets: Any,
    target_ids: Sequence[str] | None,
    k: int,
    exclude_ids: Sequence[Sequence[str] | str | None] | None = None,
) -> list[list[str]]:
    """The prompts of the `k` stored outputs nearest each target (other than its own row), nearest first."""
    return [[prompt for _, prompt in row] for row in retrieved_rows(store, targets, target_ids, k, exclude_ids)]


@dataclass
class Neighbour:
    """A stored output near a target, with its row's id and prompt: what a search can read about it."""

    id: str
    prompt: str
    output: str
    score: float = float("nan")  # cosine of the stored output to the target


def _texts(metadata) -> tuple[str, str]:
    return str(metadata.get("prompt", "")), str(metadata.get("output", ""))


def nearest_rows(
    store: VectorStore, targets: Any, k: int, exclude_ids: Sequence | None = None, batch_size: int = 1024
) -> list[list[Neighbour]]:
    """The `k` stored rows whose outputs lie nearest each target, nearest first, never an id in `exclude_ids[i]`
    (one entry per target, or None)."""
    targets = check_query_vectors(targets, store.dimensions)
    check_positive_int(k, "k")
    if exclude_ids is not None and len(exclude_ids) != len(targets):
        raise ValueError(f"Got {len(exclude_ids)} exclude_ids entries for {len(targets)} targets: give one per target.")
    rows: list[list[Neighbour]] = []
    for start in range(0, len(targets), batch_size):
        excluded = None if exclude_ids is None else list(exclude_ids[start : start + batch_size])
        for matches in store.query(targets[start : start + batch_size], top_k=k, exclude_ids=excluded):
            rows.append([Neighbour(m.id, *_texts(m.metadata), float(m.score)) for m in matches])
    return rows
