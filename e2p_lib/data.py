"""The Alpaca data layer: load Stanford Alpaca as a clean, stably-identified frame, and split it deterministically.

    >>> df = load_alpaca()                    # the 52,002 rows of the official file, cleaned
    >>> df.columns.tolist()
    ['id', 'prompt', 'output', 'tokens', 'type']
    >>> df.attrs["load_report"]               # what was dropped, and why
    {'source': '.../alpaca_data.json', 'rows_read': 52002, 'malformed': 0, 'empty_output': ..., ...}
    >>> df = add_split(df)                    # + 'split' column: 90% train, 5% val, 5% test in expectation
    >>> quick = load_alpaca(limit=500)        # the first 500 kept rows, for smoke runs

Columns
    id      "alpaca-{i}", i = the row's position in the source file (0-based; for .jsonl, blank lines do not count).
            Ids are stable across loads, formats and subsets, so embeddings, caches and splits keyed on them can be
            joined back. Dropped rows leave gaps: ids are unique but not contiguous.
    prompt  the instruction, plus a blank line ("\\n\\n") and the input when the input is non-empty after strip.
    output  the reference answer (the text whose embedding e2p targets).
    tokens  cl100k_base token count of `output` (`e2p_lib.tokens.count_tokens`, what OpenAI's embedder bills).
    type    "alpaca" (the dataset a row came from, so frames from several datasets can be concatenated).
Instruction, input and output are stripped of surrounding white space.

Where the data comes from (first match wins)
    1. `source`, the argument: a path to a .json (a list of objects, the official format), .jsonl (one object a
       line), .csv or .parquet file (columns instruction, input, output), or an http(s) URL (downloaded once into
       `config.data_dir()/downloads/`).
    2. The environment variable `E2P_ALPACA_PATH` (a path, same formats).
    3. `config.data_dir()/alpaca_data.json` (where a previous download went).
    4. A download of the official 52,002-row file (`OFFICIAL_ALPACA.url`) into `config.data_dir()`, unless
       `download=False`. Offline with nothing local, `AlpacaUnavailableError` says where to put the file.

Downloads are atomic (temporary file, checked, then `os.replace`d), so an interrupted download leaves nothing behind.
No published sha256 of the official file could be found, so its check is the row count (52,002); the sha256 seen on
first download is written beside the file as `<file>.sha256` (sha256sum format), and any local file with such a
sidecar is verified against it on every load: a file truncated or edited later is refused, not silently used.

Row policy (never crashes half-way on a bad row; every drop is counted)
    malformed        not an object; `instruction` or `output` missing or not a string; `input` present but neither
                     a string nor null (a missing or null input means ""); or a blank instruction (there is no
                     prompt). In .jsonl, a line that is not valid JSON (bad UTF-8 bytes, or nested deeper than
                     the parser's recursion limit, included). In .csv a missing field reads as "".
    empty_output     output empty after strip.
    duplicate_output the same (stripped) output as an earlier kept row: the first occurrence is kept. Two
                     prompts with one answer would give the embedding-to-prompt inversion two right answers.
    cut_by_limit     rows past `limit` (the first `limit` kept rows are returned, so `load_alpaca(limit=n)` equals
                     `load_alpaca().head(n)`).
rows_read = malformed + empty_output + duplicate_output + cut_by_limit + rows_kept. The counts go to
`df.attrs["load_report"]` (a plain dict, so the frame still saves to parquet) and one INFO log line. A file that
is not Alpaca-shaped at all, or a .json that does not parse, raises ValueError (see `load_alpaca`); a download is
held to the same checks before it is kept.

Splits
    `split_of(ids)` maps each id to "train" / "val" / "test" by a blake2b hash of the id string, so a row's split
    is the same in every run, process and Python version and does not depend on which other rows are loaded (unlike
    a shuffled index, or Python's salted `hash()`). `add_split(df)` adds it as a `split` column.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from e2p_lib import config
from e2p_lib.atomic import write_atomically
from e2p_lib.checks import check_int
from e2p_lib.config import ALPACA_PATH_ENV
from e2p_lib.tokens import count_tokens

logger = logging.getLogger(__name__)

SUPPORTED_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet")
COLUMNS = ("id", "prompt", "output", "tokens", "type")
ROW_TYPE = "alpaca"
DOWNLOAD_TIMEOUT_SECONDS = 60.0  # per connect/read, not for the whole file (22 MB)
DOWNLOAD_CHUNK_BYTES = 1 << 16


@dataclass(frozen=True)
class RemoteFile:
    """A file e2p can download: where from, where to (in `config.data_dir()`), and how to check it."""

    url: str
    filename: str
    rows: int | None = None  # expected row count, checked before the file is kept; None = unknown
    sha256: str | None = None  # expected digest; None = unknown: the first download's digest is recorded instead


# The official release. Its sha256 is not published anywhere we could find, hence rows + a recorded sidecar.
OFFICIAL_ALPACA = RemoteFile(
    url="https://raw.githubusercontent.com/tatsu-lab/stanford_alpaca/main/alpaca_data.json",
    filename="alpaca_data.json",
    rows=52_002,
)


class AlpacaUnavailableError(RuntimeError):
    """No local Alpaca file and no way to download one (offline, or `download=False`)."""


@dataclass(frozen=True)
class LoadReport:
    """What `load_alpaca` read and what it dropped, by reason (see the row policy in the module docstring)."""

    source: str
    rows_read: int
    malformed: int
    empty_output: int
    duplicate_output: int
    cut_by_limit: int
    rows_kept: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- where the data comes from ---------------------------------------------------------------------------------


def _is_url(source: str) -> bool:
    return urlparse(source).scheme in ("http", "https")


def _check_suffix(path: Path) -> None:
    if path.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise ValueError(
            f"Cannot read {str(path)!r}: unsupported extension {path.suffix!r}. "
            f"Supported: {', '.join(SUPPORTED_SUFFIXES)} (convert the file, or rename it if the extension is wrong)."
        )


def _existing_file(path: Path, named_by: str) -> Path:
    """`path` checked for a supported extension and existence; the error names who pointed at it."""
    path = path.expanduser().absolute()  # the load report then says exactly which file was read
    _check_suffix(path)
    if not path.is_file():
        raise FileNotFoundError(f"Alpaca file not found: {str(path)!r} (given by {named_by}).")
    return path


def resolve_alpaca_source(source: str | os.PathLike | None = None, *, download: bool = True) -> Path:
    """The local file `load_alpaca` would read, downloading it first when needed (resolution order: module docs)."""
    if source is not None:
        source_text = os.fspath(source)
        if _is_url(source_text):
            return _fetch_url(source_text, download=download)
        return _existing_file(Path(source_text), "the `source` argument")
    env_path = os.environ.get(ALPACA_PATH_ENV)
    if env_path:
        return _existing_file(Path(env_path), f"${ALPACA_PATH_ENV}")
    return _fetch(OFFICIAL_ALPACA, config.data_dir(), download=download)


def _fetch_url(url: str, *, download: bool) -> Path:
    """A URL given by the caller: the official one goes to its usual place, others to data_dir()/downloads/."""
    if url == OFFICIAL_ALPACA.url:
        return _fetch(OFFICIAL_ALPACA, config.data_dir(), download=download)
    name = Path(urlparse(url).path).name
    _check_suffix(Path(name))
    # Two URLs may end in the same file name; a short digest of the URL keeps their caches apart.
    url_digest = hashlib.blake2b(url.encode("utf-8"), digest_size=6).hexdigest()
    remote = RemoteFile(url=url, filename=f"{url_digest}-{name}")
    return _fetch(remote, config.data_dir() / "downloads", download=download)


def _fetch(remote: RemoteFile, folder: Path, *, download: bool) -> Path:
    """The cached copy of `remote` in `folder`, downloaded first if it is not there yet."""
    path = folder / remote.filename
    if path.is_file():
        return path
    if not download:
        raise AlpacaUnavailableError(_unavailable_message(remote, path, "download=False"))
    try:
        download_file(remote, path)
    except (OSError, _http_errors()) as err:
        raise AlpacaUnavailableError(
            _unavailable_message(remote, path, f"the download failed: {type(err).__name__}: {err}")
        ) from err
    return path


def _unavailable_message(remote: RemoteFile, path: Path, reason: str) -> str:
    return (
        f"Alpaca data is not available: there is no local copy at {str(path)!r} and {reason}. Either download "
        f"{remote.url} yourself and set {ALPACA_PATH_ENV}=/path/to/alpaca_data.json (or put the file at "
        f"{str(path)!r}), or run where that URL is reachable. "
        f"Supported formats: {', '.join(SUPPORTED_SUFFIXES)}."
    )


def _http_errors() -> type[Exception]:
    import httpx

    return httpx.HTTPError


# --- download and checksums -------------------------------------------------------------------------------------


def sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sidecar_path(path: Path) -> Path:
    """Where the recorded sha256 of `path` lives: `<file>.sha256`, in `sha256sum -c` format."""
    return path.with_name(path.name + ".sha256")


def verify_sidecar(path: Path) -> None:
    """Raise if `path` has a `.sha256` sidecar and no longer matches it (truncated, edited, half-copied)."""
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        return
    recorded = sidecar.read_text(encoding="utf-8").split()[0].lower()
    actual = sha256_of_file(path)
    if actual != recorded:
        raise ValueError(
            f"{str(path)!r} does not match its recorded sha256 ({recorded} in {str(sidecar)!r}; the file is now "
            f"{actual}). It was changed or damaged after download: delete both files to download it again, or "
            f"delete the sidecar if you changed the file on purpose."
        )


def download_file(remote: RemoteFile, path: Path) -> None:
    """Stream `remote.url` to `path` atomically, check size/rows/sha256, then record the sha256 in a sidecar.

    httpx (already an e2p dependency) does the HTTP; the temp-file + os.replace dance is joblib's
    `concurrency_safe_write`, so two processes downloading at once each leave a whole file, never a torn one.
    """
    import httpx
    from tqdm.auto import tqdm

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    tmp_path = Path(tmp_name)
    try:
        # 1. stream to the temp file, hashing as we go
        digest = hashlib.sha256()
        received_bytes = 0
        transport = httpx.HTTPTransport(retries=2)  # retries connection failures only, not HTTP errors
        with (
            os.fdopen(fd, "wb") as f,
            httpx.Client(transport=transport, timeout=DOWNLOAD_TIMEOUT_SECONDS, follow_redirects=True) as client,
            client.stream("GET", remote.url) as response,
        ):
            response.raise_for_status()
            total_bytes = int(response.headers.get("content-length", 0)) or None
            with tqdm(total=total_bytes, unit="B", unit_scale=True, desc=f"Downloading {remote.filename}") as bar:
                for chunk in response.iter_bytes(DOWNLOAD_CHUNK_BYTES):
                    f.write(chunk)
                    digest.update(chunk)
                    received_bytes += len(chunk)
                    bar.update(len(chunk))
            f.flush()
            os.fsync(f.fileno())
        # 2. check it before it replaces anything
        if total_bytes is not None and received_bytes != total_bytes:
            raise OSError(f"connection closed after {received_bytes} of {total_bytes} bytes from {remote.url}")
        observed_sha256 = digest.hexdigest()
        if remote.sha256 is not None and observed_sha256 != remote.sha256.lower():
            raise ValueError(
                f"Download of {remote.url} has sha256 {observed_sha256}, expected {remote.sha256}: the file "
                "changed upstream or was corrupted in transit. Nothing was saved; retry, or set "
                f"{ALPACA_PATH_ENV} to a copy you trust."
            )
        try:  # a server may answer 200 with an HTML page or an error object: never keep what does not parse
            records = _read_records(tmp_path, suffix=Path(remote.filename).suffix.lower())
            _check_alpaca_shaped(records, tmp_path)
        except ValueError as err:
            raise ValueError(
                f"Download of {remote.url} is not an Alpaca file: {err} Nothing was saved; the next load asks the "
                f"server again (or set {ALPACA_PATH_ENV} to a copy you trust)."
            ) from err
        if remote.rows is not None:
            rows = len(records)
            if rows != remote.rows:
                raise ValueError(
                    f"Download of {remote.url} has {rows} rows, expected {remote.rows}: the file changed upstream "
                    f"or is incomplete. Nothing was saved; set {ALPACA_PATH_ENV} to a copy you trust."
                )
        # 3. publish: data first, then its sidecar (a crash in between leaves a usable, unchecked file)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    write_atomically(sidecar_path(path), f"{observed_sha256}  {path.name}\n".encode())
    logger.info("Downloaded %s -> %s (%d bytes, sha256 %s)", remote.url, path, received_bytes, observed_sha256)


# --- readers: file -> list of raw records (dicts, or anything else for a malformed JSON row) ----------------------

_MALFORMED_LINE = object()  # a .jsonl line that is not valid JSON: counted as malformed, never parsed further


def _read_records(path: Path, suffix: str | None = None) -> list[Any]:
    suffix = suffix or path.suffix.lower()
    if suffix == ".json":
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(
                f"{str(path)!r} is not valid UTF-8: byte offset {err.start} ({raw[err.start : err.start + 1]!r}) "
                f"cannot be decoded ({err.reason}). Re-export the file as UTF-8, or fix that byte."
            ) from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{str(path)!r} is not valid JSON ({err}). Alpaca .json files hold one list of objects; "
                "for one object per line, use the .jsonl extension."
            ) from err
        except RecursionError:
            raise ValueError(
                f"{str(path)!r} is nested too deeply to parse (deeper than Python's recursion limit); Alpaca rows "
                "are flat objects, so this is not an Alpaca file."
            ) from None
        if not isinstance(data, list):
            keys = f" with keys {sorted(data)[:10]}" if isinstance(data, dict) else ""
            raise ValueError(
                f"{str(path)!r} holds a JSON {type(data).__name__}{keys}, not a list of objects with fields "
                "instruction / input / output (the Alpaca format)."
            )
        return data
    if suffix == ".jsonl":
        records: list[Any] = []
        with open(path, "rb") as f:  # bytes, so one line of bad UTF-8 is one malformed row, not a failed load
            for line in f:
                if not line.strip():
                    continue  # blank lines (e.g. a trailing newline) are not rows and take no id
                try:
                    records.append(json.loads(line.decode("utf-8")))
                except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
                    records.append(_MALFORMED_LINE)
        return records
    if suffix in (".csv", ".parquet"):
        if suffix == ".csv":
            # Every field as text; "" stays "" and the literal text "NA"/"null" stays text (pandas would make NaN).
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        else:
            frame = pd.read_parquet(path)
        missing = [c for c in ("instruction", "output") if c not in frame.columns]
        if missing:
            raise ValueError(
                f"{str(path)!r} has no {' / '.join(missing)} column (columns: {list(frame.columns)[:10]}). "
                "Alpaca tables need columns instruction and output, and optionally input."
            )
        return frame.to_dict("records")
    _check_suffix(path)  # raises for anything else
    raise AssertionError("unreachable")  # pragma: no cover


# --- row cleaning ----------------------------------------------------------------------------------------------


def _is_null(value: Any) -> bool:
    """JSON null, or the NaN / pd.NA that pandas uses for a missing cell."""
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _parse_row(record: Any) -> tuple[str, str] | None:
    """(prompt, output) of a well-formed record, both stripped; None when it is malformed."""
    if not isinstance(record, dict):
        return None
    instruction, output = record.get("instruction"), record.get("output")
    input_text = record.get("input")
    if not isinstance(instruction, str) or not isinstance(output, str):
        return None
    if _is_null(input_text):
        input_text = ""
    if not isinstance(input_text, str):
        return None
    instruction, input_text = instruction.strip(), input_text.strip()
    if not instruction:
        return None
    prompt = f"{instruction}\n\n{input_text}" if input_text else instruction
    return prompt, output.strip()


def _check_alpaca_shaped(records: Sequence[Any], path: Path) -> None:
    if not records:
        raise ValueError(f"{str(path)!r} holds no rows; point the loader at a non-empty Alpaca file.")
    if not any(isinstance(r, dict) and "instruction" in r and "output" in r for r in records):
        first = records[0]
        shown = f"keys {sorted(first)[:10]}" if isinstance(first, dict) else f"a {type(first).__name__}"
        raise ValueError(
            f"{str(path)!r} is not Alpaca-shaped: none of its {len(records)} rows has both `instruction` and "
            f"`output` (the first row is {shown}). Expected objects with fields instruction / input / output."
        )


def clean_records(records: Sequence[Any], source: str, limit: int | None = None) -> tuple[pd.DataFrame, LoadReport]:
    """Apply the row policy to raw records (position i -> id "alpaca-i"); the frame lacks only `tokens`."""
    ids, prompts, outputs = [], [], []
    malformed = empty_output = duplicate_output = 0
    seen_outputs: set[str] = set()
    for position, record in enumerate(records):
        parsed = _parse_row(record)
        if parsed is None:
            malformed += 1
            continue
        prompt, output = parsed
        if not output:
            empty_output += 1
            continue
        if output in seen_outputs:
            duplicate_output += 1
            continue
        seen_outputs.add(output)
        ids.append(f"alpaca-{position}")
        prompts.append(prompt)
        outputs.append(output)
    kept = len(ids) if limit is None else min(limit, len(ids))
    report = LoadReport(
        source=source,
        rows_read=len(records),
        malformed=malformed,
        empty_output=empty_output,
        duplicate_output=duplicate_output,
        cut_by_limit=len(ids) - kept,
        rows_kept=kept,
    )
    frame = pd.DataFrame({"id": ids[:kept], "prompt": prompts[:kept], "output": outputs[:kept]})
    return frame, report


# --- the public loader -----------------------------------------------------------------------------------------


def _check_limit(limit: int | None) -> None:
    if limit is not None:
        check_int(limit, "limit", minimum=0, hint=" or None (all rows)")


def load_alpaca(
    source: str | os.PathLike | None = None, *, download: bool = True, limit: int | None = None
) -> pd.DataFrame:
    """Alpaca as a frame with columns id / prompt / output / tokens / type, cleaned by the row policy.

    Args:
        source: a .json / .jsonl / .csv / .parquet path or an http(s) URL; None = $E2P_ALPACA_PATH, then
            data_dir()/alpaca_data.json, then the official download.
        download: if False, never touch the network (raise AlpacaUnavailableError instead of downloading).
        limit: keep only the first `limit` rows that survive cleaning (None = all); tokens are counted only for
            those, so `limit=200` is a fast smoke run.

    Raises:
        FileNotFoundError: `source` or $E2P_ALPACA_PATH names a file that does not exist.
        ValueError: unsupported extension, a file that is not Alpaca-shaped, a bad `limit`, or a checksum mismatch.
        AlpacaUnavailableError: nothing local and the download is off or failed.
    """
    _check_limit(limit)
    path = resolve_alpaca_source(source, download=download)
    verify_sidecar(path)
    records = _read_records(path)
    _check_alpaca_shaped(records, path)
    frame, report = clean_records(records, source=str(path), limit=limit)
    frame["tokens"] = np.asarray(count_tokens(frame["output"].tolist()), dtype=np.int64)
    frame["type"] = ROW_TYPE
    frame = frame[list(COLUMNS)]
    # A plain dict, not the dataclass: pandas json-dumps attrs into parquet metadata on `to_parquet`.
    frame.attrs["load_report"] = report.as_dict()
    logger.info(
        "Loaded Alpaca from %s: %d rows read, %d kept (dropped: %d malformed, %d empty output, %d duplicate "
        "output; %d past limit)",
        path,
        report.rows_read,
        report.rows_kept,
        report.malformed,
        report.empty_output,
        report.duplicate_output,
        report.cut_by_limit,
    )
    return frame


# --- deterministic splits --------------------------------------------------------------------------------------

SPLITS = ("train", "val", "test")


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number in [0, 1), got {value!r}.")
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value!r}.")
    if val_fraction + test_fraction >= 1:
        raise ValueError(
            f"val_fraction ({val_fraction}) + test_fraction ({test_fraction}) = {val_fraction + test_fraction} "
            "must be < 1, or nothing is left to train on. Lower one of them."
        )


def _unit_interval(row_id: str, salt: str) -> float:
    """A uniform number in [0, 1) from the id alone (8 bytes of blake2b; same on every machine and process)."""
    digest = hashlib.blake2b(f"{salt}{row_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def split_of(
    ids: Iterable[str], val_fraction: float = 0.05, test_fraction: float = 0.05, *, salt: str = ""
) -> np.ndarray:
    """ "train" / "val" / "test" for each id, decided by the id's hash alone (object array, input order).

    A row lands in test when its hash is below `test_fraction`, in val when below `test_fraction + val_fraction`,
    else in train, so the fractions hold in expectation and growing `val_fraction` only moves rows train -> val.
    `salt` gives an independent assignment (e.g. for cross-validation); "" is e2p's canonical split.
    """
    _check_fractions(val_fraction, test_fraction)
    if isinstance(ids, str):
        raise TypeError("split_of() takes a sequence of ids, not one string: wrap it as [id].")
    ids = list(ids)
    bad = [i for i, row_id in enumerate(ids) if not isinstance(row_id, str)]
    if bad:
        shown = ", ".join(f"{i}: {ids[i]!r}" for i in bad[:5])
        raise TypeError(f"{len(bad)} id(s) are not strings ({shown}); pass the frame's `id` column.")
    points = np.fromiter((_unit_interval(row_id, salt) for row_id in ids), dtype=np.float64, count=len(ids))
    splits = np.full(len(ids), "train", dtype=object)
    splits[points < test_fraction + val_fraction] = "val"
    splits[points < test_fraction] = "test"
    return splits


def add_split(
    frame: pd.DataFrame, val_fraction: float = 0.05, test_fraction: float = 0.05, *, salt: str = ""
) -> pd.DataFrame:
    """A copy of `frame` with a `split` column from `split_of(frame["id"], ...)`."""
    if "id" not in frame.columns:
        raise ValueError(f"add_split needs an `id` column (columns: {list(frame.columns)}); use load_alpaca().")
    result = frame.copy()
    result["split"] = split_of(frame["id"].tolist(), val_fraction, test_fraction, salt=salt)
    return result
