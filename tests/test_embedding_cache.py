"""The embedding cache: nothing embedded twice, no mixing of vector spaces, crash-safe and resumable."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from e2p_lib.embed import DEFAULT_LOCAL_MODEL
from e2p_lib.embed.cache import (
    EmbeddingCache,
    embed_dataset,
    embed_texts,
    embedding_cache_path,
    load_embedded_dataset,
    text_key,
)

REPO = Path(__file__).resolve().parent.parent


class CountingEmbedder:
    """A deterministic test double: each text maps to a fixed random unit vector, and every call is recorded.

    Cache logic is about which texts get embedded when, so a model is not needed to test it; the real model is
    exercised in test_local_embedder.py and in the crash test below.
    """

    def __init__(self, name="test/counting", dimensions=8, fail_on_call=None):
        self.name, self.dimensions = name, dimensions
        self.calls: list[list[str]] = []
        self.fail_on_call = fail_on_call

    def vector(self, text: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
        v = np.random.default_rng(seed).standard_normal(self.dimensions).astype(np.float32)
        return v / np.linalg.norm(v)

    def embed(self, texts):
        self.calls.append(list(texts))
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            raise ConnectionError(f"simulated outage on call {len(self.calls)}")
        return np.stack([self.vector(t) for t in texts])


def frame(outputs: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [f"alpaca-{i}" for i in range(len(outputs))],
            "prompt": [f"Prompt {i}" for i in range(len(outputs))],
            "output": outputs,
            "tokens": [len(o.split()) for o in outputs],
            "type": "alpaca",
        }
    )


def test_vectors_follow_row_order_and_rerun_embeds_nothing(tmp_path):
    df = frame([f"answer number {i}" for i in range(10)])
    emb = CountingEmbedder()
    ds = embed_dataset(df, emb, tmp_path, chunk_rows=4, show_progress=False)
    assert [len(c) for c in emb.calls] == [4, 4, 2]
    np.testing.assert_array_equal(ds.vectors, np.stack([emb.vector(t) for t in df["output"]]))
    assert ds.ids == df["id"].tolist() and ds.stats["embedded_now"] == 10

    again = embed_dataset(df, emb, tmp_path, show_progress=False)
    assert len(emb.calls) == 3, "a rerun must not call the embedder"
    assert again.stats == {**again.stats, "embedded_now": 0, "cached": 10}
    np.testing.assert_array_equal(again.vectors, ds.vectors)


def test_duplicate_outputs_are_embedded_once_and_new_rows_only_are_added(tmp_path):
    emb = CountingEmbedder()
    embed_dataset(frame(["same", "same", "other"]), emb, tmp_path, show_progress=False)
    assert sorted(emb.calls[0]) == ["other", "same"]
    ds = embed_dataset(frame(["same", "other", "new one"]), emb, tmp_path, show_progress=False)
    assert emb.calls[1] == ["new one"]
    assert len(ds) == 3


def test_embed_texts_shares_the_cache_and_leaves_dataset_records_alone(tmp_path):
    emb = CountingEmbedder()
    ds = embed_dataset(frame(["an answer", "another"]), emb, tmp_path, show_progress=False)
    vectors = embed_texts(["a prompt", "an answer", "a prompt"], emb, tmp_path, show_progress=False)
    assert emb.calls[1] == ["a prompt"], "cached texts are not embedded again, repeats only once"
    np.testing.assert_array_equal(vectors, np.stack([emb.vector(t) for t in ["a prompt", "an answer", "a prompt"]]))
    assert load_embedded_dataset(ds.path).ids == ds.ids


def test_embed_texts_without_the_cache_reads_and_writes_no_file(tmp_path):
    emb = CountingEmbedder()
    vectors = embed_texts(["a prompt", "a prompt"], emb, tmp_path, use_cache=False, show_progress=False)
    np.testing.assert_array_equal(vectors, np.stack([emb.vector("a prompt")] * 2))
    assert emb.calls == [["a prompt", "a prompt"]] and list(tmp_path.iterdir()) == []
    assert embed_texts([], emb, tmp_path, use_cache=False).shape == (0, emb.dimensions)


def test_another_model_or_dimension_is_never_mixed_in(tmp_path):
    emb = CountingEmbedder(dimensions=8)
    ds = embed_dataset(frame(["a", "b"]), emb, tmp_path, show_progress=False)
    with pytest.raises(ValueError, match="holds vectors of 'test/counting' at 8 dimensions"):
        EmbeddingCache(ds.path, "test/counting", 16)
    with pytest.raises(ValueError, match="not 'test/other'"):
        EmbeddingCache(ds.path, "test/other", 8)
    # Through the normal entry point, another dimension simply lives in another file.
    other = embed_dataset(frame(["a", "b"]), CountingEmbedder(dimensions=16), tmp_path, show_progress=False)
    assert other.path != ds.path and other.vectors.shape == (2, 16)


def test_a_failure_half_way_keeps_finished_batches(tmp_path):
    df = frame([f"text {i}" for i in range(9)])
    with pytest.raises(ConnectionError):
        embed_dataset(df, CountingEmbedder(fail_on_call=3), tmp_path, chunk_rows=3, show_progress=False)
    retry = CountingEmbedder()
    ds = embed_dataset(df, retry, tmp_path, chunk_rows=3, show_progress=False)
    assert retry.calls == [["text 6", "text 7", "text 8"]], "only the failed chunk is embedded again"
    np.testing.assert_array_equal(ds.vectors, np.stack([retry.vector(t) for t in df["output"]]))


def test_bad_input_is_refused_with_a_clear_error(tmp_path):
    emb = CountingEmbedder()
    with pytest.raises(ValueError, match="not non-empty strings"):
        embed_dataset(frame(["fine", "  "]), emb, tmp_path, show_progress=False)
    with pytest.raises(ValueError, match="missing \\['tokens'\\]"):
        embed_dataset(frame(["x"]).drop(columns="tokens"), emb, tmp_path, show_progress=False)
    dup = pd.concat([frame(["x"]), frame(["y"])])
    with pytest.raises(ValueError, match="'alpaca-0' appears more than once"):
        embed_dataset(dup, emb, tmp_path, show_progress=False)
    assert emb.calls == []
    with pytest.raises(FileNotFoundError, match="Run notebooks/01_embed.ipynb"):
        load_embedded_dataset(model="nothing/here", dimensions=3, cache_dir=tmp_path)


def test_load_returns_what_was_embedded(tmp_path):
    df = frame(["one", "two", "three"])
    ds = embed_dataset(df, CountingEmbedder(), tmp_path, show_progress=False)
    loaded = load_embedded_dataset(model="test/counting", dimensions=8, cache_dir=tmp_path)
    pd.testing.assert_frame_equal(loaded.frame, ds.frame)
    np.testing.assert_array_equal(loaded.vectors, ds.vectors)
    assert loaded.created_at == ds.created_at and loaded.path == embedding_cache_path("test/counting", 8, tmp_path)


def _write_overlapping(path: str, start: int) -> None:
    emb = CountingEmbedder()
    with EmbeddingCache(path, emb.name, emb.dimensions) as cache:
        for i in range(start, start + 200, 10):
            texts = [f"t{j}" for j in range(i, i + 10)]
            cache.put([text_key(t) for t in texts], emb.embed(texts))


def test_concurrent_writers_lose_nothing(tmp_path):
    path = str(tmp_path / "shared.sqlite")
    EmbeddingCache(path, "test/counting", 8).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_write_overlapping, args=(path, start)) for start in (0, 100, 150)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    emb = CountingEmbedder()
    with EmbeddingCache(path, emb.name, emb.dimensions) as cache:
        assert len(cache) == 350
        texts = [f"t{j}" for j in range(350)]
        np.testing.assert_array_equal(cache.get([text_key(t) for t in texts]), np.stack([emb.vector(t) for t in texts]))


CRASH_SCRIPT = textwrap.dedent("""
    import sys
    from e2p_lib.data import load_alpaca
    from e2p_lib.embed import LocalEmbedder
    from e2p_lib.embed.cache import embed_dataset

    class Announcing(LocalEmbedder):
        # Tells the parent each time a chunk has been computed, so it can kill us mid-run.
        def iter_embed(self, texts, chunk_rows=32):
            for item in super().iter_embed(texts, chunk_rows=chunk_rows):
                print("chunk", flush=True)
                yield item

    df = load_alpaca(sys.argv[1], limit=int(sys.argv[3]))
    embed_dataset(df, Announcing(show_progress=False), sys.argv[2], show_progress=False)
    print("done", flush=True)
""")


@pytest.mark.slow
def test_sigkill_mid_run_resumes_without_lost_or_duplicated_rows(tmp_path, alpaca_path):
    rows = "256"
    script = tmp_path / "embed_and_die.py"
    script.write_text(CRASH_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}
    killed_dir, clean_dir = tmp_path / "killed", tmp_path / "clean"

    child = subprocess.Popen(
        [sys.executable, str(script), str(alpaca_path), str(killed_dir), rows],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    chunks_seen = 0
    for line in child.stdout:  # kill it once three chunks are out: it is then busy with the fourth
        chunks_seen += line.strip() == "chunk"
        if chunks_seen == 3:
            child.send_signal(signal.SIGKILL)
            break
    child.wait(60)
    assert child.returncode == -signal.SIGKILL, "the run finished before it could be killed"

    name, dims = "local/" + DEFAULT_LOCAL_MODEL, 384
    with EmbeddingCache(embedding_cache_path(name, dims, killed_dir), name, dims) as cache:
        survived = len(cache)
    # The third "chunk" line is printed just before that chunk is saved, so at least two chunks are committed.
    assert 2 * 32 <= survived < int(rows), "committed chunks survive the kill; the rest is missing"

    resumed = subprocess.run(
        [sys.executable, str(script), str(alpaca_path), str(killed_dir), rows],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    clean = subprocess.run(
        [sys.executable, str(script), str(alpaca_path), str(clean_dir), rows],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert resumed.returncode == 0 and clean.returncode == 0, resumed.stderr[-2000:] + clean.stderr[-2000:]
    total_chunks = clean.stdout.count("chunk")
    assert resumed.stdout.count("chunk") < total_chunks, "the resumed run re-embedded what was already cached"

    a = load_embedded_dataset(model=name, dimensions=dims, cache_dir=killed_dir)
    b = load_embedded_dataset(model=name, dimensions=dims, cache_dir=clean_dir)
    pd.testing.assert_frame_equal(a.frame, b.frame)
    # Chunks are batched differently after a resume, so padding can move the last float bits; nothing more.
    np.testing.assert_allclose(a.vectors, b.vectors, atol=1e-5)
    with EmbeddingCache(a.path, name, dims) as cache:
        assert len(cache) == a.frame["output"].nunique(), "no lost or duplicated vectors"
