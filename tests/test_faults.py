"""What a user sees when a data file cannot be used, and input that must not be silently dropped (issue 41).

Each test reproduces one fault as a user meets it (a misspelled notebook parameter, garbage over a SQLite
cache, a damaged vector in the embedding cache); the answer is a refusal that names the file or value and what to
do, and nothing written before is lost.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from fakes import HashEmbedder

from e2p_lib.embed.cache import EmbeddingCache, embed_texts, embedding_cache_path, text_key
from e2p_lib.errors import DataFileError
from e2p_lib.lm.cache import AnswerCache
from e2p_lib.run_notebooks import run_notebooks

DIMENSIONS = 16  # the plumbing does not need MiniLM's 384


# --- 3. a misspelled notebook parameter --------------------------------------------------------------------------


def test_a_notebook_parameter_no_selected_notebook_declares_is_refused_naming_the_nearest(tmp_path):
    """`-p limt=50` used to run 01_embed with its default limit; now nothing runs (the kernel check comes after,
    so a missing kernel cannot be what stops it)."""
    with pytest.raises(ValueError, match=r"'limt' \(did you mean 'limit'\?\)"):
        run_notebooks("smoke", ["01_embed"], {"limt": 50}, tmp_path, kernel_name="no-such-kernel")
    with pytest.raises(ValueError, match=r"'steps'.*--only"):  # 04_rl's parameter, but 04_rl is not selected
        run_notebooks("smoke", ["01_embed"], {"limit": 50, "steps": 3}, tmp_path, kernel_name="no-such-kernel")
    assert not list(tmp_path.iterdir())  # nothing executed
    with pytest.raises(RuntimeError, match="No Jupyter kernel named 'no-such-kernel'"):  # a declared key passes
        run_notebooks("smoke", ["01_embed"], {"limit": 50}, tmp_path, kernel_name="no-such-kernel")


# --- 4. a SQLite cache that is not SQLite ------------------------------------------------------------------------


def _embedding_cache(path: Path):
    return EmbeddingCache(path, "test/hash", DIMENSIONS)


@pytest.mark.parametrize(
    "open_cache, fix",
    [(_embedding_cache, "rerun notebooks/01_embed.ipynb"), (AnswerCache, "generated again")],
    ids=["embeddings", "answers"],
)
def test_garbage_over_a_sqlite_cache_names_the_file_and_the_fix(tmp_path, open_cache, fix):
    path = tmp_path / "cache.sqlite"
    open_cache(path).close()
    path.write_bytes(b"this is not a database, it is garbage " * 200)
    with pytest.raises(DataFileError) as error:
        open_cache(path)
    assert error.value.path == path and str(path) in str(error.value)
    assert "not an e2p cache" in str(error.value) and fix in str(error.value) and "Delete it" in str(error.value)


# --- 5. a damaged vector in the embedding cache --------------------------------------------------------------------


@pytest.mark.parametrize(
    "damage, words",
    [
        (lambda v: np.where(np.arange(len(v)) == 3, np.nan, v), "NaN"),
        (lambda v: v * 2, "norm 2"),
        (lambda v: v[:-1], "60 bytes, not 64"),
    ],
    ids=["nan", "not-unit", "truncated"],
)
def test_a_damaged_cached_vector_is_logged_and_embedded_again_never_returned(tmp_path, caplog, damage, words):
    texts = ["first answer", "second answer", "third answer"]
    embedder = HashEmbedder(DIMENSIONS)
    first = embed_texts(texts, embedder, tmp_path, show_progress=False)
    path = embedding_cache_path(embedder.name, DIMENSIONS, tmp_path)
    with sqlite3.connect(path) as db:
        damaged = damage(first[1]).astype(np.float32).tobytes()
        db.execute("UPDATE vectors SET vector = ? WHERE key = ?", (damaged, text_key(texts[1])))

    with caplog.at_level(logging.WARNING, logger="e2p_lib.embed.cache"):
        again = embed_texts(texts, embedder, tmp_path, show_progress=False)
    np.testing.assert_array_equal(again, first)  # the damaged row was recomputed, not returned
    assert embedder.texts == 4  # three, then the damaged one again
    assert str(path) in caplog.text and text_key(texts[1])[:12] in caplog.text and words in caplog.text
    embed_texts(texts, embedder, tmp_path, show_progress=False)
    assert embedder.texts == 4  # and stored: the repaired row is read from now on
