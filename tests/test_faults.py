"""What a user sees when a data file cannot be used, and input that must not be silently dropped (issue 41).

Each test reproduces one fault as a user meets it: a misspelled notebook parameter, garbage over a SQLite cache, a
damaged vector in the embedding cache, a read-only copy of a finished data folder, a full disk, a broken
`store.json`, a namespace too long for the file system. The answer is a refusal (or a repair) that names the file
or value and what to do, and nothing written before is lost. A store's embedder check is in test_vectorstore.py.

Root ignores file modes, so a read-only folder is a read-only bind mount and a full disk a small tmpfs, each set up
in a private mount namespace (`unshare`) around a child process; where that cannot be set up, the test fails.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest
from fakes import EchoLM, HashEmbedder

from e2p_lib.embed.cache import EmbeddingCache, embed_dataset, embed_texts, embedding_cache_path, text_key
from e2p_lib.errors import DataFileError
from e2p_lib.lm.cache import AnswerCache, CachedLM
from e2p_lib.run_notebooks import run_notebooks
from e2p_lib.store import LocalVectorStore

REPO = Path(__file__).resolve().parent.parent
DIMENSIONS = 16  # the plumbing does not need MiniLM's 384


def in_mount_namespace(setup: str, script: str, *args: str) -> dict:
    """Run the Python `script` in a child process inside a private mount namespace, after the shell commands
    `setup` (the mounts); returns the JSON object the script prints last. Fails with the child's stderr."""
    unshare = ["unshare", "--mount"] if os.geteuid() == 0 else ["unshare", "--user", "--map-root-user", "--mount"]
    command = [*unshare, "sh", "-ec", f'{setup}\nexec "$@"', "sh", sys.executable, "-c", script, *args]
    path = os.pathsep.join([str(REPO), str(REPO / "tests")])
    child = subprocess.run(command, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": path})
    assert child.returncode == 0, f"the child failed (exit {child.returncode}):\n{child.stderr[-4000:]}"
    return json.loads(child.stdout.strip().splitlines()[-1])


def read_only_mount(folder: Path) -> str:
    """Shell commands that bind-mount `folder` read-only over itself, and check that it cannot be written."""
    quoted = shlex.quote(str(folder))
    return (
        f"mount --bind -o ro {quoted} {quoted}\n"
        f"if touch {quoted}/.write-probe 2>/dev/null; then echo 'the read-only mount can be written' >&2; exit 97; fi"
    )


def tmpfs_mount(folder: Path, size: str) -> str:
    """Shell commands that mount a tmpfs of `size` (e.g. "1m") at `folder`: a small disk that fills up."""
    return f"mount -t tmpfs -o size={size} e2p-test-disk {shlex.quote(str(folder))}"


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


# --- 6. a read-only copy of a finished data folder ---------------------------------------------------------------

READ_ONLY_SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import numpy as np
    from fakes import EchoLM, HashEmbedder
    from e2p_lib.embed.cache import embed_texts, load_embedded_dataset
    from e2p_lib.errors import DataFileError
    from e2p_lib.lm.cache import CachedLM
    from e2p_lib.store import make_vector_store

    data = Path(sys.argv[1])
    seen = {}

    def refusal(write):
        try:
            write()
        except DataFileError as error:
            return str(error)
        return None

    store = make_vector_store("local", name="alpaca", root=data / "vectorstores", embedder="test/hash")
    queries = np.eye(16, dtype=np.float32)[:2]
    seen["count"] = store.count()
    seen["query"] = [[m.id for m in row] for row in store.query(queries, top_k=3)]
    seen["fetch"] = store.fetch(["row-7"])["row-7"].vector.tolist()
    seen["store_write"] = refusal(lambda: store.upsert(["new"], queries[:1]))

    embedder = HashEmbedder()
    seen["cached_vectors"] = embed_texts(["alpha", "beta"], embedder, data / "embeddings").tolist()
    dataset = load_embedded_dataset(model="test/hash", dimensions=16, cache_dir=data / "embeddings")
    seen["dataset"] = [dataset.ids, dataset.vectors.tolist()]
    seen["embedding_write"] = refusal(lambda: embed_texts(["never seen"], embedder, data / "embeddings"))
    seen["texts_embedded"] = embedder.texts

    environment = EchoLM()
    lm = CachedLM(environment, data / "answers")
    seen["cached_answers"] = lm.generate(["Name a colour."])
    seen["answer_write"] = refusal(lambda: lm.generate(["A prompt never asked."]))
    seen["prompts_generated"] = environment.prompts
    print(json.dumps(seen))
""")


def test_a_read_only_data_folder_answers_from_its_stores_and_caches_and_refuses_writes(tmp_path):
    data = tmp_path / "data"
    vectors = np.random.default_rng(0).standard_normal((20, DIMENSIONS)).astype(np.float32)
    store = LocalVectorStore("alpaca", DIMENSIONS, root=data / "vectorstores", embedder="test/hash")
    store.upsert([f"row-{i}" for i in range(20)], vectors)
    queries = np.eye(DIMENSIONS, dtype=np.float32)[:2]
    expected_query = [[m.id for m in row] for row in store.query(queries, top_k=3)]
    rows = pd.DataFrame({"id": ["a-0", "a-1"], "prompt": ["p0", "p1"], "output": ["alpha", "beta"], "tokens": 1})
    dataset = embed_dataset(
        rows.assign(type="alpaca"), HashEmbedder(DIMENSIONS), data / "embeddings", show_progress=False
    )
    cached = dataset.vectors
    lm = CachedLM(EchoLM(), data / "answers")
    lm.generate(["Name a colour."])
    lm.cache.close()
    before = {p: p.read_bytes() for p in data.rglob("*") if p.is_file()}

    seen = in_mount_namespace(read_only_mount(data), READ_ONLY_SCRIPT, str(data))

    assert seen["count"] == 20 and seen["query"] == expected_query
    assert seen["fetch"] == vectors[7].tolist()
    assert seen["cached_vectors"] == cached.tolist() and seen["dataset"] == [["a-0", "a-1"], cached.tolist()]
    assert seen["cached_answers"] == ["Answer to: Name a colour."]
    for write, place in (
        ("store_write", "vectorstores/alpaca/ns-"),
        ("embedding_write", "embeddings/test_hash-16d.sqlite"),
        ("answer_write", "answers/test_echo.sqlite"),
    ):
        assert seen[write] is not None and str(data / place) in seen[write], (write, seen[write])
        assert "read-only" in seen[write] and "E2P_DATA_DIR" in seen[write], seen[write]
    assert seen["texts_embedded"] == 0 and seen["prompts_generated"] == 0  # refused before any work
    assert {p: p.read_bytes() for p in data.rglob("*") if p.is_file()} == before  # nothing written, nothing lost


INVERT_SCRIPT = textwrap.dedent("""
    import contextlib, io, json, sys
    from pathlib import Path
    from fakes import EchoLM
    import e2p_lib.lm
    from e2p_lib.lm import smollm
    converted, policy, text = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    smollm.default_cache_dir = lambda: converted  # SmolLM2's converted weights, outside the read-only folder
    e2p_lib.lm.make_lm = lambda name, **options: EchoLM()
    from e2p_lib.cli import main
    seen = {}
    for name, target in (("cached", text), ("new", "A text this data folder has never seen.")):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(["invert", target, "--policy", policy, "--no-forward-model", "--budget", "2",
                             "--device", "cpu"])
            except SystemExit as stop:
                code = stop.code
        seen[name] = {"code": code, "out": out.getvalue(), "err": err.getvalue()}
    print(json.dumps(seen))
""")


@pytest.mark.slow  # MiniLM embeds the text; the tiny policy writes
def test_e2p_invert_answers_from_a_read_only_data_folder_s_caches(tmp_path, monkeypatch, smollm2_tokenizer):
    """A text inverted once is inverted again, identically, from a read-only copy of the data folder; a new text
    needs a write there, and is refused naming the folder and the fix."""
    import torch
    from tiny import tiny_policy

    import e2p_lib.lm
    from e2p_lib.cli import main
    from e2p_lib.evaluate.quality import clean_line, save_clean_line
    from e2p_lib.lm import smollm

    converted = smollm.default_cache_dir()
    data = tmp_path / "data"
    monkeypatch.setenv("E2P_DATA_DIR", str(data))
    monkeypatch.setattr(smollm, "default_cache_dir", lambda: converted)
    monkeypatch.setattr(e2p_lib.lm, "make_lm", lambda name, **options: EchoLM())
    torch.manual_seed(0)
    tiny_policy(smollm2_tokenizer, embedding_dim=384).save(tmp_path / "policy")
    save_clean_line(clean_line([0.0, 0.2], neighbours=8, store="alpaca"), data)
    text = "Paris is the capital of France."
    argv = ["invert", text, "--policy", str(tmp_path / "policy"), "--no-forward-model", "--budget", "2"]
    from contextlib import redirect_stdout
    from io import StringIO

    first = StringIO()
    with redirect_stdout(first):
        assert main([*argv, "--device", "cpu"]) == 0
    before = {p: p.read_bytes() for p in data.rglob("*") if p.is_file()}

    seen = in_mount_namespace(read_only_mount(data), INVERT_SCRIPT, str(converted), str(tmp_path / "policy"), text)

    assert seen["cached"]["code"] == 0 and seen["cached"]["out"] == first.getvalue(), seen["cached"]
    assert seen["new"]["code"] == 2 and "Traceback" not in seen["new"]["err"], seen["new"]
    assert (
        str(data) in seen["new"]["err"] and "read-only" in seen["new"]["err"] and "E2P_DATA_DIR" in seen["new"]["err"]
    )
    assert {p: p.read_bytes() for p in data.rglob("*") if p.is_file()} == before


# --- 8. a full disk ----------------------------------------------------------------------------------------------

FULL_DISK_SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import numpy as np
    from fakes import HashEmbedder
    from e2p_lib.embed.cache import embed_texts
    from e2p_lib.errors import DataFileError
    from e2p_lib.store import LocalVectorStore

    disk = Path(sys.argv[1])
    seen = {}
    rng = np.random.default_rng(0)
    store = LocalVectorStore("alpaca", 256, root=disk / "vectorstores")
    first = rng.standard_normal((50, 256)).astype(np.float32)
    store.upsert([f"row-{i}" for i in range(50)], first)
    try:
        store.upsert([f"big-{i}" for i in range(3000)], rng.standard_normal((3000, 256)).astype(np.float32))
    except DataFileError as error:
        seen["store_error"] = str(error)
    reopened = LocalVectorStore("alpaca", root=disk / "vectorstores")
    seen["store_count"] = reopened.count()
    records = reopened.fetch([f"row-{i}" for i in range(50)])
    seen["store_kept"] = bool(all((records[f"row-{i}"].vector == first[i]).all() for i in range(50)))

    embedder = HashEmbedder(256)
    kept = embed_texts([f"text {i}" for i in range(50)], embedder, disk / "embeddings", show_progress=False)
    try:
        embed_texts([f"more text {i}" for i in range(3000)], embedder, disk / "embeddings", show_progress=False)
    except DataFileError as error:
        seen["cache_error"] = str(error)
    texts = [f"text {i}" for i in range(50)]
    seen["cache_kept"] = bool((embed_texts(texts, HashEmbedder(256), disk / "embeddings") == kept).all())
    print(json.dumps(seen))
""")


def test_a_full_disk_names_the_file_being_written_and_keeps_what_was_committed(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    seen = in_mount_namespace(tmpfs_mount(disk, "1m"), FULL_DISK_SCRIPT, str(disk))
    assert str(disk / "vectorstores" / "alpaca" / "ns-") in seen.get("store_error", ""), seen
    assert str(disk / "embeddings" / "test_hash-256d.sqlite") in seen.get("cache_error", ""), seen
    for message in (seen["store_error"], seen["cache_error"]):
        assert "the disk is full" in message and "Free space" in message, message
    assert seen["store_count"] == 50 and seen["store_kept"] and seen["cache_kept"]


# --- 8. a broken store.json, a namespace too long for the file system ---------------------------------------------


@pytest.mark.parametrize(
    "dimensions", [None, "16", -16, 0, 16.0, True], ids=["missing", "string", "negative", "zero", "float", "bool"]
)
def test_a_store_json_without_a_positive_integer_dimension_is_named(tmp_path, dimensions):
    LocalVectorStore("x", DIMENSIONS, root=tmp_path)
    info_path = tmp_path / "x" / "store.json"
    info = orjson.loads(info_path.read_bytes())
    info.pop("dimensions") if dimensions is None else info.update(dimensions=dimensions)
    info_path.write_bytes(orjson.dumps(info))
    with pytest.raises(DataFileError, match="'dimensions' is .*not a positive integer") as error:
        LocalVectorStore("x", root=tmp_path)
    assert error.value.path == info_path and "delete" in error.value.fix


def test_a_namespace_too_long_for_the_file_system_is_refused_when_named(tmp_path):
    store = LocalVectorStore("x", DIMENSIONS, root=tmp_path)
    long_namespace = "answers-" + "é" * 100  # "%C3%A9" once quoted: a 611-byte name, over ext4's and tmpfs' 255
    verbs = (
        lambda: store.count(namespace=long_namespace),
        lambda: store.query(np.ones(DIMENSIONS), namespace=long_namespace),
        lambda: store.upsert(["a"], np.ones((1, DIMENSIONS)), namespace=long_namespace),
    )
    for verb in verbs:
        with pytest.raises(ValueError, match=r"Namespace 'answers-é.*over the 255-byte limit.*shorter namespace"):
            verb()
    store.upsert(["a"], np.ones((1, DIMENSIONS)), namespace="answers-" + "e" * 200)  # long, within the limit
    assert store.count(namespace="answers-" + "e" * 200) == 1
