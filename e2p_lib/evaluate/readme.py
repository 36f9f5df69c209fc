"""The README's results section, written from a run's reports so that it cannot drift from the run it names.

`e2p results` (or `update_readme()`) reads what `make run` leaves in `reports/`: `run.json` (per notebook: commit,
date, profile, minutes; `e2p_lib.run_notebooks`), 05's `05_eval_results.json`, `05_comparisons.json` and
`05_own_targets_results.json`, and replaces the text between the README's two markers with tables:

    <!-- results:start -->  ...generated...  <!-- results:end -->

Nothing else in the README changes; a README without the markers, or reports without 05's files, is refused with
the fix named.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

START, END = "<!-- results:start -->", "<!-- results:end -->"
CLEAN_ROWS = (
    "original prompt",
    "answer index, top 1",
    "e2p, 1 call",
    "e2p, ≤8 calls",
    "e2p, ≤8 calls, without the policy",
)
PASTING_PREFIX = "pasting track"
KEY_COMPARISONS = (
    ("e2p, 1 call", "answer index, top 1"),
    ("e2p, ≤8 calls", "original prompt"),
    ("e2p, ≤8 calls", "e2p, ≤8 calls, without the policy"),
)
REPORT_FILES = ("05_eval_results.json", "05_comparisons.json", "05_own_targets_results.json")


def _read(folder: Path, name: str):
    path = folder / name
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: run the notebooks into {folder} first (`make run`, or `e2p run --only 05_eval` after "
            "01-04), then `e2p results`."
        )
    return json.loads(path.read_text(encoding="utf-8"))


def _mean_ci(row: dict) -> str:
    return f"{row['mean_cosine']:.3f} [{row['ci95_low']:.3f}, {row['ci95_high']:.3f}]"


def _diff(row: dict) -> str:
    if row.get("baseline") is None or row.get("diff_vs_baseline") is None:
        return ""
    return f"{row['diff_vs_baseline']:+.3f} [{row['diff_low']:+.3f}, {row['diff_high']:+.3f}] vs {row['baseline']}"


def _number(value, spec: str) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def _method_table(rows: list[dict]) -> list[str]:
    lines = [
        "| method | calls per target | answer cosine [95% CI] | paired difference [95% CI] | copied share | words "
        "| median perplexity |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['method']} | {_number(row.get('eval_env_calls_per_target'), '.2f')} | {_mean_ci(row)} "
            f"| {_diff(row)} | {_number(row.get('copied_share'), '.3f')} | {_number(row.get('words'), '.1f')} "
            f"| {_number(row.get('median_perplexity'), '.1f')} |"
        )
    return lines


def results_markdown(reports: str | Path) -> str:
    """The README's results section from the reports folder of one run (see the module docstring).

    Raises:
        FileNotFoundError: a report is missing (the message says which notebook writes it).
    """
    folder = Path(reports)
    results, comparisons, own = (_read(folder, name) for name in REPORT_FILES)
    run = _read(folder, "run.json")["notebooks"]
    by_method = {row["method"]: row for row in results}
    evaluation = run.get("05_eval", {})
    commits = sorted(
        {str(entry.get("commit")) + ("+" if entry.get("uncommitted_changes") else "") for entry in run.values()}
    )
    targets = results[0]["n_targets"] if results else 0
    lines = [
        f"Measured by `make run` (profile `{evaluation.get('profile', '?')}`) at commit {', '.join(commits)}, "
        f"finished {evaluation.get('finished', '?')[:10]} on {evaluation.get('cores', '?')} cores: {targets} held-out "
        "Alpaca targets, greedy answers of 64 tokens, MiniLM space. Answer cosine: mean and 95% bootstrap interval; "
        "paired difference per target to the named baseline. Copied share: the share of the prompt's words in a "
        "5-word run of a stored output it could read. Written by `e2p results` from `reports/`.",
        "",
        *_method_table([by_method[m] for m in CLEAN_ROWS if m in by_method]),
    ]
    pasting = [row for m, row in by_method.items() if m.startswith(PASTING_PREFIX)]
    if pasting:
        lines += ["", "The pasting track (stored outputs' text in the prompt; not clean):", "", *_method_table(pasting)]
    paired = {(row["method"], row["baseline"]): row for row in comparisons}
    found = [paired[key] for key in KEY_COMPARISONS if key in paired]
    if found:
        lines += ["", "| comparison | paired difference [95% CI] |", "|---|--:|"]
        lines += [
            f"| {row['method']} − {row['baseline']} | {row['mean difference']:+.3f} [{row['low']:+.3f}, "
            f"{row['high']:+.3f}] |"
            for row in found
        ]
    own_rows = [row for row in own if row["method"].startswith(("e2p", "answer index", PASTING_PREFIX, "retrieval"))]
    if own_rows:
        lines += [
            "",
            f"On {own_rows[0]['n_targets']} own texts that are not Alpaca outputs:",
            "",
            *_method_table(own_rows),
        ]
    lines += [
        "",
        "| notebook | minutes | CPU minutes |",
        "|---|--:|--:|",
        *(
            f"| {stem} | {entry['minutes']:.1f} | {_number(entry.get('cpu_minutes'), '.1f')} |"
            for stem, entry in sorted(run.items())
        ),
        f"| all | {sum(entry['minutes'] for entry in run.values()):.1f} | |",
    ]
    return "\n".join(lines)


def update_readme(readme: str | Path | None = None, reports: str | Path | None = None) -> Path:
    """Replace the README's text between `START` and `END` with `results_markdown(reports)`; return the README.

    Raises:
        ValueError: the README lacks the two markers, in order. FileNotFoundError: as `results_markdown`.
    """
    from e2p_lib import config
    from e2p_lib.atomic import write_atomically

    path = Path(readme) if readme is not None else config.PROJECT_ROOT / "README.md"
    text = path.read_text(encoding="utf-8")
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"{path} has no '{START}' ... '{END}' markers, in that order: add them where the table goes.")
    table = results_markdown(reports if reports is not None else config.reports_dir())
    write_atomically(path, (text[: start + len(START)] + "\n" + table + "\n" + text[end:]).encode("utf-8"))
    return path
