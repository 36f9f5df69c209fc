"""Integrity under faults (issue 13): damaged store files, bad downloads, bad bytes and a missing policy.

Each test reproduces one fault found by probing e2p as a user would: the store must refuse to open (naming the file
and how to recover) rather than lose or silently skip data, a bad download must never be kept, one bad line must
not lose a whole load, and `load_inverter` must fail on a missing policy before it builds anything heavy.
The kill-anywhere suite (SIGKILL during every write path) is tests/test_kill_anywhere.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import orjson
import pytest
from test_data import GOOD_ROWS, http_files, isolated  # noqa: F401 - fixtures reused from the data tests

from e2p_lib.data import load_alpaca, sidecar_path
from e2p_lib.store import LocalVectorStore
from e2p_lib.store.local import StoreCorruptedError

DIMENSIONS = 16


def filled_store(root: Path, rows: int = 300, batch_size: int = 100) -> tuple[LocalVectorStore, np.ndarray]:
    """A store of `rows` records in segments of `batch_size` (so several segment files exist)."""
    vectors = np.random.default_rng(0).standard_normal((rows, DIMENSIONS)).astype(np.float32)
    store = LocalVectorStore("x", DIMENSIONS, root=root, batch_size=batch_size)
    store.upsert([f"id-{i}" for i in range(rows)], vectors, [{"n": i} for i in range(rows)])
    return store, vectors


def namespace_folder(root: Path) -> Path:
    return root / "x" / "ns-"


# --- 1. a lost manifest never empties a store -------------------------------------------------------------------


def test_segments_without_a_manifest_refuse_to_open_and_are_never_overwritten(tmp_path):
    filled_store(tmp_path)
    folder = namespace_folder(tmp_path)
    (folder / "manifest.json").unlink()
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.name[0].isdigit()}

    store = LocalVectorStore("x", root=tmp_path)
    for verb in (store.count, lambda: store.upsert(["new"], np.ones((1, DIMENSIONS)))):
        with pytest.raises(StoreCorruptedError) as error:
            verb()
        assert str(folder) in str(error.value) and "rebuild_manifest" in str(error.value)
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.name[0].isdigit()} == before  # nothing touched


def test_rebuild_manifest_recovers_every_record_from_the_segments(tmp_path):
    _, vectors = filled_store(tmp_path)
    store = LocalVectorStore("x", root=tmp_path)
    store.delete(["id-5", "id-6"])
    (namespace_folder(tmp_path) / "manifest.json").unlink()

    assert LocalVectorStore("x", root=tmp_path).rebuild_manifest() == 298
    reopened = LocalVectorStore("x", root=tmp_path)
    assert reopened.count() == 298 and not reopened.fetch(["id-5", "id-6"])
    assert np.array_equal(reopened.fetch(["id-299"])["id-299"].vector, vectors[299])
    with pytest.raises(ValueError, match="has a manifest"):
        reopened.rebuild_manifest()


def test_a_crash_before_the_first_commit_still_opens_empty(tmp_path):
    """Orphan segment files next to the (empty) first manifest are a crash's leftovers: swept, not an error."""
    store = LocalVectorStore("x", DIMENSIONS, root=tmp_path)
    store.upsert(["a"], np.ones((1, DIMENSIONS)))
    folder = namespace_folder(tmp_path)
    (folder / "manifest.json").write_bytes(orjson.dumps({"next_segment": 1, "segments": []}))
    assert LocalVectorStore("x", root=tmp_path).count() == 0


# --- 2. corruption is detected on open and names the file --------------------------------------------------------


def _truncate_segment(folder: Path) -> str:
    path = folder / "000002.npy"
    path.write_bytes(path.read_bytes()[:-40])
    return "000002.npy"


def _nan_in_segment(folder: Path) -> str:
    """A NaN where a vector was, with the manifest's checksum updated: as if a buggy writer had stored it."""
    path = folder / "000002.npy"
    array = np.load(path)
    array[3, 0] = np.nan
    np.save(path, array)
    manifest = orjson.loads((folder / "manifest.json").read_bytes())
    for segment in manifest["segments"]:
        segment.pop("sha256", None)  # a store written before checksums: the finiteness check must still catch it
    (folder / "manifest.json").write_bytes(orjson.dumps(manifest))
    return "000002.npy"


def _flip_a_byte(folder: Path) -> str:
    path = folder / "000003.npy"
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0x01  # a vector still finite, silently different
    path.write_bytes(bytes(raw))
    return "000003.npy"


def _short_metadata(folder: Path) -> str:
    path = folder / "000001.json"
    payload = orjson.loads(path.read_bytes())
    payload["metadata"] = payload["metadata"][:-1]
    path.write_bytes(orjson.dumps(payload))
    manifest = orjson.loads((folder / "manifest.json").read_bytes())
    for segment in manifest["segments"]:
        segment.pop("sha256", None)
    (folder / "manifest.json").write_bytes(orjson.dumps(manifest))
    return "000001.json"


def _write(name: str, content: bytes):
    def damage(folder: Path) -> str:
        (folder / name).write_bytes(content)
        return name

    return damage


def _remove(name: str):
    def damage(folder: Path) -> str:
        (folder / name).unlink()
        return name

    return damage


@pytest.mark.parametrize(
    "damage, words",
    [
        (_truncate_segment, "checksum"),
        (_flip_a_byte, "checksum"),
        (_nan_in_segment, "NaN"),
        (_short_metadata, "metadata"),
        (_write("manifest.json", b"{}"), "manifest"),
        (_write("manifest.json", b"\x00garbage{"), "not valid JSON"),
        (_write("manifest.json", b'{"next_segment": 2, "segments": [{"name": "000001"}]}'), "manifest"),
        (_write("000001.json", b"[1, 2"), "checksum"),
        (_remove("000002.npy"), "missing"),
    ],
    ids=[
        "truncated",
        "flipped-byte",
        "nan",
        "short-metadata",
        "empty-manifest",
        "garbage-manifest",
        "manifest-entry",
        "garbage-segment-json",
        "missing-segment",
    ],
)
def test_every_corruption_is_an_error_naming_the_file(tmp_path, damage, words):
    filled_store(tmp_path)
    name = damage(namespace_folder(tmp_path))
    with pytest.raises(StoreCorruptedError, match=words) as error:
        LocalVectorStore("x", root=tmp_path).count()
    assert str(namespace_folder(tmp_path) / name) in str(error.value)


def test_a_damaged_store_json_is_named(tmp_path):
    filled_store(tmp_path)
    (tmp_path / "x" / "store.json").write_bytes(b"not json")
    with pytest.raises(StoreCorruptedError, match="store.json"):
        LocalVectorStore("x", root=tmp_path)


def test_checksums_are_verified_once_on_open_not_per_query(tmp_path, monkeypatch):
    from e2p_lib.store import local

    store, vectors = filled_store(tmp_path)
    reopened = LocalVectorStore("x", root=tmp_path)
    hashed = []
    real = local._sha256
    monkeypatch.setattr(local, "_sha256", lambda raw: hashed.append(len(raw)) or real(raw))
    reopened.count()
    assert len(hashed) == 6  # 3 segments x (.npy, .json)
    for _ in range(3):
        reopened.query(vectors[:2], top_k=3)
    assert len(hashed) == 6


# --- 3. a bad download is never kept ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, words",
    [
        (b"<!doctype html><html><body>Rate limited</body></html>", "not valid JSON"),
        (json.dumps({"error": "gone"}).encode(), "not a list"),
        (json.dumps([{"text": "no alpaca fields"}]).encode(), "not Alpaca-shaped"),
    ],
)
def test_a_download_that_is_not_alpaca_is_not_kept_and_is_retried(isolated, http_files, body, words):  # noqa: F811
    http_files.files["/mirror/rows.json"] = body
    url = http_files.url("/mirror/rows.json")
    with pytest.raises(ValueError, match=words) as error:
        load_alpaca(url)
    assert url in str(error.value) and "Nothing was saved" in str(error.value)
    downloads = isolated / "downloads"
    assert not downloads.exists() or list(downloads.iterdir()) == []

    http_files.files["/mirror/rows.json"] = json.dumps(GOOD_ROWS).encode()  # the server is fixed: ask it again
    frame = load_alpaca(url)
    assert len(frame) == len(GOOD_ROWS) and sidecar_path(Path(frame.attrs["load_report"]["source"])).is_file()
    assert http_files.gets == ["/mirror/rows.json", "/mirror/rows.json"]


# --- 4. bad bytes and deep nesting --------------------------------------------------------------------------------


def test_a_jsonl_line_of_invalid_utf8_is_counted_and_skipped(tmp_path):
    lines = [json.dumps(r).encode() for r in GOOD_ROWS]
    lines.insert(1, b'{"instruction": "caf\xe9", "input": "", "output": "bad bytes"}')
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    frame = load_alpaca(path, download=False)
    report = frame.attrs["load_report"]
    assert report["rows_read"] == len(GOOD_ROWS) + 1 and report["malformed"] == 1
    assert len(frame) == len(GOOD_ROWS) and "alpaca-1" not in set(frame["id"])


def test_a_json_file_with_bad_bytes_names_the_file_and_offset(tmp_path):
    body = json.dumps(GOOD_ROWS).encode()
    offset = body.index(b"Bonjour")
    path = tmp_path / "rows.json"
    path.write_bytes(body[:offset] + b"\xff" + body[offset + 1 :])
    with pytest.raises(ValueError, match=f"byte offset {offset}") as error:
        load_alpaca(path, download=False)
    assert str(path) in str(error.value) and "UTF-8" in str(error.value)


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_deeply_nested_json_is_a_clear_error_not_a_recursion_error(tmp_path, suffix):
    deep = "[" * 200_000 + "]" * 200_000
    path = tmp_path / f"deep{suffix}"
    if suffix == ".json":
        path.write_text(deep)
        with pytest.raises(ValueError, match="nested too deeply") as error:
            load_alpaca(path, download=False)
        assert str(path) in str(error.value)
    else:  # one bad line among good ones: counted as malformed, the rest kept
        path.write_text("\n".join([json.dumps(GOOD_ROWS[0]), deep, json.dumps(GOOD_ROWS[1])]) + "\n")
        report = load_alpaca(path, download=False).attrs["load_report"]
        assert report["malformed"] == 1 and report["rows_kept"] == 2


# --- 5. a missing policy fails before anything heavy is built -----------------------------------------------------


def test_load_inverter_with_a_missing_policy_builds_nothing_first(tmp_path, monkeypatch):
    import e2p_lib.embed
    import e2p_lib.lm
    from e2p_lib.inversion.api import load_inverter

    def built(*args, **kwargs):
        raise AssertionError("built a model before checking the policy folder")

    monkeypatch.setattr(e2p_lib.embed, "make_embedder", built)
    monkeypatch.setattr(e2p_lib.lm, "make_lm", built)
    with pytest.raises(FileNotFoundError, match="No saved policy") as error:
        load_inverter(policy_dir=tmp_path / "missing", forward_model_dir=False)
    assert str(tmp_path / "missing") in str(error.value)
