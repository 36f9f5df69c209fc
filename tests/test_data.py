"""Tests for e2p_lib.data: formats, the row policy, source resolution, downloads (from a loopback HTTP server) and
deterministic splits. Tiny files are written to tmp_path; the real 5,000-row subset is read from ../shared."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from e2p_lib import data
from e2p_lib.config import PROJECT_ROOT
from e2p_lib.data import (
    AlpacaUnavailableError,
    RemoteFile,
    add_split,
    load_alpaca,
    sidecar_path,
    split_of,
)
from e2p_lib.tokens import count_tokens

GOOD_ROWS = [
    {"instruction": "Name three primary colours.", "input": "", "output": "Red, yellow and blue."},
    {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"},
    {"instruction": "  Summarise the text.  ", "input": "  Cats sleep a lot.\nThey purr.  ", "output": " Cats nap. "},
    {"instruction": "Say NA.", "input": "NA", "output": "null"},  # literal "NA"/"null" text must survive csv
]


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """An empty data dir, no E2P_ALPACA_PATH, and no proxy (so loopback requests stay on loopback)."""
    data_dir = tmp_path / "data_dir"
    monkeypatch.setenv("E2P_DATA_DIR", str(data_dir))
    monkeypatch.delenv(data.ALPACA_PATH_ENV, raising=False)
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    return data_dir


def write_rows(rows: list, path: Path) -> Path:
    """Write `rows` in the format named by the extension (the tabular ones need dict rows)."""
    if path.suffix == ".json":
        path.write_text(json.dumps(rows), encoding="utf-8")
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif path.suffix == ".csv":
        pd.DataFrame(rows).to_csv(path, index=False)
    elif path.suffix == ".parquet":
        pd.DataFrame(rows).to_parquet(path, index=False)
    else:
        raise ValueError(path.suffix)
    return path


# --- formats ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".csv", ".parquet"])
def test_each_format_builds_the_documented_columns(tmp_path, suffix):
    df = load_alpaca(write_rows(GOOD_ROWS, tmp_path / f"rows{suffix}"), download=False)

    assert df.columns.tolist() == ["id", "prompt", "output", "tokens", "type"]
    assert df["id"].tolist() == ["alpaca-0", "alpaca-1", "alpaca-2", "alpaca-3"]
    assert df["prompt"].tolist() == [
        "Name three primary colours.",
        "Translate to French.\n\nGood morning",
        "Summarise the text.\n\nCats sleep a lot.\nThey purr.",
        "Say NA.\n\nNA",
    ]
    assert df["output"].tolist() == ["Red, yellow and blue.", "Bonjour", "Cats nap.", "null"]
    assert df["tokens"].tolist() == count_tokens(df["output"].tolist())
    assert (df["tokens"] > 0).all()
    assert set(df["type"]) == {"alpaca"}


def test_the_same_rows_give_identical_frames_in_every_format(tmp_path):
    frames = {
        suffix: load_alpaca(write_rows(GOOD_ROWS, tmp_path / f"rows{suffix}"), download=False)
        for suffix in (".json", ".jsonl", ".csv", ".parquet")
    }
    reference = frames.pop(".json")
    for suffix, frame in frames.items():
        pd.testing.assert_frame_equal(frame, reference, obj=f"frame from {suffix}")
        counts = {k: v for k, v in frame.attrs["load_report"].items() if k != "source"}
        assert counts == {k: v for k, v in reference.attrs["load_report"].items() if k != "source"}


def test_input_may_be_missing_or_null(tmp_path):
    rows = [{"instruction": "A?", "output": "a"}, {"instruction": "B?", "input": None, "output": "b"}]
    for suffix in (".json", ".parquet"):
        df = load_alpaca(write_rows(rows, tmp_path / f"rows{suffix}"), download=False)
        assert df["prompt"].tolist() == ["A?", "B?"], suffix
        assert df.attrs["load_report"]["malformed"] == 0


def test_frame_with_its_report_saves_to_parquet(tmp_path):
    df = load_alpaca(write_rows(GOOD_ROWS, tmp_path / "rows.json"), download=False)
    df.to_parquet(tmp_path / "out.parquet")
    assert pd.read_parquet(tmp_path / "out.parquet")["id"].tolist() == df["id"].tolist()


# --- the row policy --------------------------------------------------------------------------------------------


def test_bad_rows_are_counted_dropped_and_leave_id_gaps(tmp_path, caplog):
    rows = [
        {"instruction": "Keep me.", "input": "", "output": "First answer."},  # 0 kept
        {"input": "", "output": "No instruction."},  # 1 malformed: missing instruction
        {"instruction": "No output."},  # 2 malformed: missing output
        {"instruction": 7, "input": "", "output": "Number instruction."},  # 3 malformed: non-string
        {"instruction": "List output.", "input": "", "output": ["a"]},  # 4 malformed: non-string
        {"instruction": "Dict input.", "input": {"x": 1}, "output": "Odd input."},  # 5 malformed: bad input
        {"instruction": "   ", "input": "", "output": "Blank instruction."},  # 6 malformed: blank instruction
        "just a string",  # 7 malformed: not an object
        {"instruction": "Empty.", "input": "", "output": ""},  # 8 empty output
        {"instruction": "Spaces.", "input": "", "output": " \n\t "},  # 9 empty output
        {"instruction": "Again?", "input": "", "output": "First answer."},  # 10 duplicate of 0
        {"instruction": "Again, padded?", "input": "", "output": "  First answer.\n"},  # 11 duplicate after strip
        {"instruction": "Keep me too.", "input": "ctx", "output": "Second answer."},  # 12 kept
    ]
    with caplog.at_level(logging.INFO, logger="e2p_lib.data"):
        df = load_alpaca(write_rows(rows, tmp_path / "bad.json"), download=False)

    assert df["id"].tolist() == ["alpaca-0", "alpaca-12"]
    assert df["prompt"].tolist() == ["Keep me.", "Keep me too.\n\nctx"]
    report = df.attrs["load_report"]
    assert report == {
        "source": str(tmp_path / "bad.json"),
        "rows_read": 13,
        "malformed": 7,
        "empty_output": 2,
        "duplicate_output": 2,
        "cut_by_limit": 0,
        "rows_kept": 2,
    }
    load_lines = [r for r in caplog.records if r.levelno == logging.INFO and "rows read" in r.getMessage()]
    assert len(load_lines) == 1 and "7 malformed" in load_lines[0].getMessage()


def test_jsonl_bad_lines_are_malformed_rows_and_blank_lines_take_no_id(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(
        '{"instruction": "One.", "input": "", "output": "1"}\n'
        "\n"
        '{"instruction": "Broken", "output": \n'
        "[1, 2]\n"
        '{"instruction": "Four.", "input": "", "output": "4"}\n\n',
        encoding="utf-8",
    )
    df = load_alpaca(path, download=False)
    assert df["id"].tolist() == ["alpaca-0", "alpaca-3"]
    assert df.attrs["load_report"]["rows_read"] == 4
    assert df.attrs["load_report"]["malformed"] == 2


def test_csv_and_parquet_missing_cells(tmp_path):
    csv_path = tmp_path / "rows.csv"
    # Row 2 is short: a missing output field in csv reads as "" (empty output), not as a crash.
    csv_path.write_text('instruction,input,output\nA?,,a\nB?,x\n"C\nmultiline?","",c\n', encoding="utf-8")
    df = load_alpaca(csv_path, download=False)
    assert df["id"].tolist() == ["alpaca-0", "alpaca-2"]
    assert df["prompt"].tolist() == ["A?", "C\nmultiline?"]
    assert df.attrs["load_report"]["empty_output"] == 1

    parquet_path = tmp_path / "rows.parquet"
    pd.DataFrame({"instruction": ["A?", None, "C?"], "input": ["", "", None], "output": ["a", "b", None]}).to_parquet(
        parquet_path
    )
    df = load_alpaca(parquet_path, download=False)
    assert df["id"].tolist() == ["alpaca-0"]
    assert df.attrs["load_report"]["malformed"] == 2


def test_limit_takes_the_first_rows_after_cleaning(tmp_path):
    rows = (
        GOOD_ROWS
        + [{"instruction": "Dup.", "input": "", "output": "Bonjour"}]
        + [{"instruction": f"Q{i}?", "input": "", "output": f"A{i}"} for i in range(5)]
    )
    path = write_rows(rows, tmp_path / "rows.json")
    full = load_alpaca(path, download=False)
    limited = load_alpaca(path, download=False, limit=6)

    pd.testing.assert_frame_equal(limited, full.head(6))
    report = limited.attrs["load_report"]
    assert report["rows_kept"] == 6 and report["cut_by_limit"] == len(full) - 6
    assert report["rows_read"] == sum(
        report[k] for k in ("malformed", "empty_output", "duplicate_output", "cut_by_limit", "rows_kept")
    )
    assert len(load_alpaca(path, download=False, limit=0)) == 0
    for bad_limit in (-1, 2.5, True):
        with pytest.raises(ValueError, match="limit"):
            load_alpaca(path, download=False, limit=bad_limit)


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"instruction": "A", "output": "B"}', "not a list of objects"),
        ('{"data": [1, 2]}', r"keys \['data'\]"),
        ('[{"question": "A", "answer": "B"}]', "not Alpaca-shaped"),
        ("[1, 2, 3]", "not Alpaca-shaped"),
        ("[]", "no rows"),
        ("[{]", "not valid JSON"),
    ],
)
def test_non_alpaca_json_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "other.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        load_alpaca(path, download=False)


def test_table_without_alpaca_columns_is_a_clear_error(tmp_path):
    path = tmp_path / "other.csv"
    pd.DataFrame({"question": ["A"], "answer": ["B"]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"no instruction / output column.*question"):
        load_alpaca(path, download=False)


def test_missing_path_and_unknown_extension(tmp_path):
    missing = tmp_path / "nowhere.json"
    with pytest.raises(FileNotFoundError, match="nowhere.json"):
        load_alpaca(missing, download=False)
    odd = tmp_path / "rows.txt"
    odd.write_text("x", encoding="utf-8")
    with pytest.raises(ValueError, match=r"'\.txt'.*\.json, \.jsonl, \.csv, \.parquet"):
        load_alpaca(odd, download=False)


# --- where the data comes from ---------------------------------------------------------------------------------


def test_resolution_order_argument_then_env_then_data_dir(tmp_path, isolated, monkeypatch):
    def one_row_file(path: Path, output: str) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_rows([{"instruction": "Which?", "input": "", "output": output}], path)

    default_file = one_row_file(isolated / "alpaca_data.json", "from data_dir")
    env_file = one_row_file(tmp_path / "env.jsonl", "from env")
    arg_file = one_row_file(tmp_path / "arg.csv", "from argument")

    assert load_alpaca(download=False)["output"].tolist() == ["from data_dir"]
    monkeypatch.setenv(data.ALPACA_PATH_ENV, str(env_file))
    assert load_alpaca(download=False)["output"].tolist() == ["from env"]
    assert load_alpaca(arg_file, download=False)["output"].tolist() == ["from argument"]
    assert load_alpaca(download=False).attrs["load_report"]["source"] == str(env_file)
    assert default_file.exists()

    monkeypatch.setenv(data.ALPACA_PATH_ENV, str(tmp_path / "typo.json"))
    with pytest.raises(FileNotFoundError, match=r"typo\.json.*E2P_ALPACA_PATH"):
        load_alpaca(download=False)


def test_nothing_local_and_download_off_names_the_env_var_and_url(isolated):
    with pytest.raises(AlpacaUnavailableError) as excinfo:
        load_alpaca(download=False)
    message = str(excinfo.value)
    assert "E2P_ALPACA_PATH" in message and data.OFFICIAL_ALPACA.url in message
    assert not isolated.exists() or not any(isolated.iterdir())


def closed_loopback_port() -> int:
    """A loopback port with nothing listening (bound by us, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_offline_download_fails_with_a_clear_error_and_leaves_nothing(isolated, monkeypatch):
    url = f"http://127.0.0.1:{closed_loopback_port()}/alpaca_data.json"
    monkeypatch.setattr(data, "OFFICIAL_ALPACA", RemoteFile(url=url, filename="alpaca_data.json", rows=4))
    with pytest.raises(AlpacaUnavailableError) as excinfo:
        load_alpaca()
    message = str(excinfo.value)
    assert "E2P_ALPACA_PATH" in message and url in message and "download failed" in message
    assert list(isolated.iterdir()) == []  # no partial or temp file


# --- downloads from a loopback HTTP server ---------------------------------------------------------------------


class StaticFiles:
    """A real HTTP server on 127.0.0.1 serving in-memory files; counts GETs so tests can see cache hits."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.truncate_paths: set[str] = set()  # paths served with a Content-Length longer than the body
        self.gets: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                server.gets.append(self.path)
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                length = len(body) * 2 if self.path in server.truncate_paths else len(body)
                self.send_header("Content-Length", str(length))
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True

            def log_message(self, *args):  # keep test output quiet
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"


@pytest.fixture
def http_files():
    files = StaticFiles()
    files.thread.start()
    yield files
    files.httpd.shutdown()
    files.httpd.server_close()
    files.thread.join()


def serve_official(http_files, monkeypatch, rows: int, sha256: str | None = None) -> tuple[str, bytes]:
    body = json.dumps(GOOD_ROWS).encode("utf-8")
    http_files.files["/alpaca_data.json"] = body
    url = http_files.url("/alpaca_data.json")
    monkeypatch.setattr(data, "OFFICIAL_ALPACA", RemoteFile(url, "alpaca_data.json", rows=rows, sha256=sha256))
    return url, body


def test_download_checks_rows_records_sha256_and_is_reused(isolated, http_files, monkeypatch):
    _, body = serve_official(http_files, monkeypatch, rows=len(GOOD_ROWS))

    df = load_alpaca()
    target = isolated / "alpaca_data.json"
    assert target.read_bytes() == body
    assert sidecar_path(target).read_text() == f"{hashlib.sha256(body).hexdigest()}  alpaca_data.json\n"
    assert len(df) == len(GOOD_ROWS) and df.attrs["load_report"]["source"] == str(target)
    assert sorted(p.name for p in isolated.iterdir()) == ["alpaca_data.json", "alpaca_data.json.sha256"]

    pd.testing.assert_frame_equal(load_alpaca(), df)
    assert http_files.gets == ["/alpaca_data.json"]  # the second load read the cached file

    # A cached file that no longer matches its recorded sha256 is refused, not silently used.
    target.write_bytes(body.replace(b"Bonjour", b"Bonsoir"))
    with pytest.raises(ValueError, match="recorded sha256"):
        load_alpaca()


def test_download_with_a_known_sha256(isolated, http_files, monkeypatch):
    body = json.dumps(GOOD_ROWS).encode("utf-8")
    serve_official(http_files, monkeypatch, rows=len(GOOD_ROWS), sha256=hashlib.sha256(body).hexdigest())
    assert len(load_alpaca()) == len(GOOD_ROWS)


@pytest.mark.parametrize(
    "rows, sha256, message",
    [(len(GOOD_ROWS) + 1, None, "has 4 rows, expected 5"), (len(GOOD_ROWS), "0" * 64, "expected 0000")],
)
def test_download_that_fails_its_check_saves_nothing(isolated, http_files, monkeypatch, rows, sha256, message):
    serve_official(http_files, monkeypatch, rows=rows, sha256=sha256)
    with pytest.raises(ValueError, match=message):
        load_alpaca()
    assert list(isolated.iterdir()) == []


def test_truncated_or_missing_download_saves_nothing(isolated, http_files, monkeypatch):
    serve_official(http_files, monkeypatch, rows=len(GOOD_ROWS))
    http_files.truncate_paths.add("/alpaca_data.json")
    with pytest.raises(AlpacaUnavailableError, match="download failed"):
        load_alpaca()
    assert list(isolated.iterdir()) == []

    with pytest.raises(AlpacaUnavailableError, match="404"):
        load_alpaca(http_files.url("/missing.json"))


def test_url_source_is_cached_under_downloads(isolated, http_files):
    http_files.files["/mirror/rows.jsonl"] = "".join(json.dumps(r) + "\n" for r in GOOD_ROWS).encode("utf-8")
    url = http_files.url("/mirror/rows.jsonl")

    df = load_alpaca(url)
    cached = Path(df.attrs["load_report"]["source"])
    assert cached.parent == isolated / "downloads" and cached.name.endswith("-rows.jsonl")
    assert sidecar_path(cached).is_file()
    assert len(load_alpaca(url, download=False)) == len(GOOD_ROWS)
    assert http_files.gets == ["/mirror/rows.jsonl"]


# --- splits ----------------------------------------------------------------------------------------------------


def test_split_depends_only_on_the_id():
    ids = [f"alpaca-{i}" for i in range(2_000)]
    full = dict(zip(ids, split_of(ids)))

    subset = ids[1_500:] + ids[:100:7]
    assert [full[i] for i in subset] == split_of(subset).tolist()
    reversed_ids = ids[::-1]
    assert [full[i] for i in reversed_ids] == split_of(reversed_ids).tolist()
    assert set(full.values()) == {"train", "val", "test"}
    assert split_of([]).tolist() == []


def test_split_is_the_same_in_another_process():
    ids = [f"alpaca-{i}" for i in range(300)]
    script = "import json, sys; from e2p_lib.data import split_of; ids = json.load(sys.stdin); "
    script += "print(json.dumps(split_of(ids).tolist()))"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # a different str hash() salt than this process
    result = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(ids),
        capture_output=True,
        text=True,
        env=env,
        cwd=PROJECT_ROOT,
        check=True,
        timeout=120,
    )
    assert json.loads(result.stdout) == split_of(ids).tolist()


def test_growing_val_fraction_only_moves_train_rows_to_val():
    ids = [f"alpaca-{i}" for i in range(3_000)]
    small, large = split_of(ids, 0.05, 0.05), split_of(ids, 0.2, 0.05)
    assert np.array_equal(small == "test", large == "test")
    assert np.all(large[small == "val"] == "val")
    assert (large == "val").sum() > (small == "val").sum()
    assert not np.array_equal(split_of(ids, salt="fold-1"), small)


@pytest.mark.parametrize(
    "val_fraction, test_fraction, message",
    [
        (-0.1, 0.05, r"val_fraction must be >= 0, got -0\.1"),
        (0.5, 0.5, r"\(0\.5\) \+ test_fraction \(0\.5\)"),
        (0.05, float("nan"), "test_fraction must be a finite number"),
        (0.05, "0.1", "test_fraction"),
    ],
)
def test_bad_fractions_are_refused(val_fraction, test_fraction, message):
    with pytest.raises(ValueError, match=message):
        split_of(["alpaca-0"], val_fraction, test_fraction)


def test_bad_ids_are_refused():
    with pytest.raises(TypeError, match="not one string"):
        split_of("alpaca-0")
    with pytest.raises(TypeError, match="1: 7"):
        split_of(["alpaca-0", 7])
    with pytest.raises(ValueError, match="`id` column"):
        add_split(pd.DataFrame({"x": [1]}))


# --- real rows: the 5,000-row subset, or the project's own fixture in a fresh clone (conftest.alpaca_path) -------


@pytest.fixture(scope="module")
def real_subset(alpaca_path) -> pd.DataFrame:
    return load_alpaca(alpaca_path, download=False)


def test_real_subset_loads_with_sensible_counts(real_subset, alpaca_path):
    report = real_subset.attrs["load_report"]
    raw = json.loads(alpaca_path.read_text(encoding="utf-8"))
    # Independent reference counts, computed with plain Python from the raw rows.
    stripped = [r["output"].strip() for r in raw]
    expected_empty = sum(1 for o in stripped if not o)
    nonempty = [o for o in stripped if o]
    expected_duplicates = len(nonempty) - len(set(nonempty))

    assert report["rows_read"] == len(raw)
    assert report["malformed"] == 0
    assert report["empty_output"] == expected_empty
    assert report["duplicate_output"] == expected_duplicates
    assert 0 < expected_empty + expected_duplicates < 100  # Alpaca is mostly clean
    assert report["rows_kept"] == len(real_subset) == len(raw) - expected_empty - expected_duplicates
    assert real_subset["id"].is_unique
    assert real_subset["id"].str.fullmatch(r"alpaca-\d+").all()
    positions = real_subset["id"].str.removeprefix("alpaca-").astype(int)
    assert positions.is_monotonic_increasing and positions.max() < len(raw)
    # Spot-check the mapping back to the raw rows, inputs included.
    for row in real_subset.sample(50, random_state=0).itertuples():
        source = raw[int(row.id.removeprefix("alpaca-"))]
        expected_prompt = source["instruction"].strip()
        if source["input"].strip():
            expected_prompt += "\n\n" + source["input"].strip()
        assert row.prompt == expected_prompt and row.output == source["output"].strip()
    assert (real_subset["tokens"] > 0).all() and real_subset["tokens"].median() > 10


def test_real_subset_split_fractions(real_subset):
    split = add_split(real_subset)["split"].value_counts(normalize=True)

    # Hashing splits like a coin: allow 3 binomial standard deviations (on a small fixture) or the old fixed bound.
    def tolerance(p, fixed):
        return max(fixed, 3 * (p * (1 - p) / len(real_subset)) ** 0.5)

    assert abs(split["val"] - 0.05) < tolerance(0.05, 0.015) and abs(split["test"] - 0.05) < tolerance(0.05, 0.015)
    assert abs(split["train"] - 0.90) < tolerance(0.90, 0.02)
