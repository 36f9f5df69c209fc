"""The nearest-prompt baseline, on a tiny local store whose neighbours are known by construction.

Records come in pairs of near-duplicate vectors, so each record's nearest *other* record is its partner: the
baseline must return the partner's prompt, never the record's own. (Exclusion on the Pinecone backend is covered by
the contract tests in test_vectorstore.py; the baseline only uses the shared verbs.)
"""

from __future__ import annotations

import numpy as np
import pytest

from e2p_lib.store import LocalVectorStore
from e2p_lib.store.retrieval import COLUMNS, nearest_prompt

DIMENSIONS = 16  # tiny: enough for 10 well-separated pairs
N_PAIRS = 10


def partner(i: int) -> int:
    return i + 1 if i % 2 == 0 else i - 1


@pytest.fixture
def paired(tmp_path):
    """A store of 10 pairs: row 2j+1 is row 2j plus a little noise; prompts say which row they belong to."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((N_PAIRS, DIMENSIONS))
    vectors = np.repeat(centres, 2, axis=0) + 0.01 * rng.standard_normal((2 * N_PAIRS, DIMENSIONS))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    ids = [f"alpaca-{i}" for i in range(2 * N_PAIRS)]
    metadata = [
        {"id": ids[i], "prompt": f"prompt of row {i}", "output": f"output {i}", "tokens": 3, "type": "alpaca"}
        for i in range(2 * N_PAIRS)
    ]
    store = LocalVectorStore("pairs", DIMENSIONS, root=tmp_path)
    store.upsert(ids, vectors, metadata)
    return store, ids, vectors


def test_nearest_prompt_is_the_nearest_other_rows_prompt(paired):
    store, ids, vectors = paired
    baseline = nearest_prompt(store, vectors, ids)
    assert list(baseline.columns) == COLUMNS and len(baseline) == len(ids)
    assert baseline.target.tolist() == list(range(len(ids))) and baseline.target_id.tolist() == ids
    assert baseline.prompt.tolist() == [f"prompt of row {partner(i)}" for i in range(len(ids))]
    assert (baseline["rank"] == 1).all() and (baseline.score > 0.99).all() and (baseline.score < 1.0).all()


def test_k_neighbours_come_ranked_best_first(paired):
    store, ids, vectors = paired
    baseline = nearest_prompt(store, vectors, ids, k=3, batch_size=7)  # batches that split pairs
    assert len(baseline) == 3 * len(ids)
    for target, rows in baseline.groupby("target"):
        assert rows["rank"].tolist() == [1, 2, 3]
        assert rows["id"].iloc[0] == ids[partner(target)] and ids[target] not in rows["id"].tolist()
        assert rows["score"].is_monotonic_decreasing
        expected = sorted((float(vectors[target] @ v) for j, v in enumerate(vectors) if j != target), reverse=True)
        np.testing.assert_allclose(rows["score"], expected[:3], atol=1e-5)


def test_targets_outside_the_store_may_match_any_row(paired):
    store, ids, vectors = paired
    outside = vectors[4] + 0.001 * np.ones(DIMENSIONS, np.float32)  # not stored: nothing to exclude
    baseline = nearest_prompt(store, outside)
    assert baseline.id.tolist() == [ids[4]] and baseline.target_id.isna().all()


def test_bad_inputs_raise_clear_errors(paired, tmp_path):
    store, ids, vectors = paired
    with pytest.raises(ValueError, match="3 target_ids for 20 target vectors"):
        nearest_prompt(store, vectors, ids[:3])
    with pytest.raises(ValueError, match="k=0 must be a positive integer"):
        nearest_prompt(store, vectors, ids, k=0)
    with pytest.raises(ValueError, match="dimension 5"):
        nearest_prompt(store, np.ones((2, 5), np.float32))
    with pytest.raises(ValueError, match="holds no records in namespace 'empty'"):
        nearest_prompt(store, vectors, ids, namespace="empty")
    bare = LocalVectorStore("no-metadata", DIMENSIONS, root=tmp_path)
    bare.upsert(ids, vectors)
    with pytest.raises(ValueError, match="has no 'prompt' in its metadata"):
        nearest_prompt(bare, vectors, ids)
