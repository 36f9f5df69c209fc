"""The README's results section, written from a run's reports so that it cannot drift from the run it names.

`e2p results` (or `update_readme()`) reads what `make run` leaves in `reports/`: `run.json` (per notebook: commit,
date, profile, minutes; `e2p_lib.run_notebooks`), 05's `05_eval_results.json`, `05_comparisons.json`,
`05_own_targets_results.json` and `05_examples.json`, and replaces the text between each pair of the README's
markers with its section (`SECTIONS`: the results tables, example prompts, minutes per notebook):

    <!-- results:start -->  ...generated...  <!-- results:end -->

Nothing else in the README changes; a README without the results markers, or reports without 05's files, is refused
with the fix named.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

START, END = "<!-- results:start -->", "<!-- results:end -->"  # the results section's markers
# 05's rows of the clean table, in order (≤B: whatever budget the run's SearchConfig had), and the comparisons shown
CLEAN_ROWS = (
    "original prompt",
    "answer index, top 1",
    "e2p, 1 call",
    r"e2p, ≤\d+ calls",
    r"e2p, ≤\d+ calls, without the policy",
)
PASTING_PREFIX = "pasting track"
KEY_COMPARISONS = (
    ("e2p, 1 call", "answer index, top 1"),
    (r"e2p, ≤\d+ calls", "original prompt"),
    (r"e2p, ≤\d+ calls", r"e2p, ≤\d+ calls, without the policy"),
    ("e2p, 1 call", "SFT, 1 call"),  # the kept Stage 2 policy against Stage 1's
)
REPORT_FILES = ("05_eval_results.json", "05_comparisons.json", "05_own_targets_results.json")  # the results section


def _read(folder: Path, name: str):
    path = folder / name
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: run the notebooks into {folder} first (`make run`, or `e2p run --only 05_eval` after "
            "01-04), then `e2p results`."
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise ValueError(f"{path} is not the JSON a run writes ({error}): rerun the notebook that writes it.") from None


def _matching(pattern: str, names) -> str | None:
    return next((name for name in names if re.fullmatch(pattern, name)), None)


def _mean_ci(row: dict) -> str:
    return f"{row['mean_cosine']:.3f} [{row['ci95_low']:.3f}, {row['ci95_high']:.3f}]"


def _diff(row: dict) -> str:
    if row.get("baseline") is None or row.get("diff_vs_baseline") is None:
        return ""
    return f"{row['diff_vs_baseline']:+.3f} [{row['diff_low']:+.3f}, {row['diff_high']:+.3f}] vs {row['baseline']}"


def _commit(entry: dict) -> str:
    """A notebook's commit in run.json, with "+" when it ran with uncommitted changes."""
    return f"{entry.get('commit')}{'+' if entry.get('uncommitted_changes') else ''}"


def _verdict(row: dict) -> str:
    """What a paired interval says: the first method above or below the baseline, or no difference shown."""
    if row["low"] > 0:
        return "above"
    return "below" if row["high"] < 0 else "not shown apart"


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


def _run(folder: Path) -> dict:
    run = _read(folder, "run.json")
    if not isinstance(run, dict) or not isinstance(run.get("notebooks"), dict):
        raise ValueError(f"{folder / 'run.json'} lists no notebooks: run them into {folder} with `make run`.")
    return run["notebooks"]


def results_markdown(reports: str | Path) -> str:
    """The headline: the clean table, the pasting track below it, the comparisons that say what the policy adds,
    and the own texts (see the module docstring).

    Raises:
        FileNotFoundError: a report is missing (the message says how to make it).
    """
    folder = Path(reports)
    results, comparisons, own = (_read(folder, name) for name in REPORT_FILES)
    run = _run(folder)
    by_method = {row["method"]: row for row in results}
    clean = [_matching(pattern, by_method) for pattern in CLEAN_ROWS]
    evaluation = run.get("05_eval", {})
    space = evaluation.get("parameters", {}).get("embedding_model", "local/all-MiniLM-L6-v2")
    commits = sorted({_commit(entry) for entry in run.values()})
    at = f"commit{'s' * (len(commits) > 1)} {', '.join(commits)}"  # each notebook's: the minutes table
    targets = results[0]["n_targets"] if results else 0
    lines = [
        f"Measured by `make run` (profile `{evaluation.get('profile', '?')}`) at {at}, "
        f"finished {evaluation.get('finished', '?')[:10]} on {evaluation.get('cores', '?')} cores: {targets} held-out "
        f"Alpaca targets, greedy answers, `{space}` space; answer cosine with its 95% bootstrap interval, the paired "
        "difference per target to the named baseline, and the prompt's copied share (its words in a 5-word run of "
        "a stored output it could read). Written by `e2p results` from `reports/`.",
        "",
        *_method_table([by_method[m] for m in clean if m is not None]),
    ]
    pasting = [row for m, row in by_method.items() if m.startswith(PASTING_PREFIX)]
    if pasting:
        lines += ["", "The pasting track (stored outputs' text in the prompt; not clean):", "", *_method_table(pasting)]
    found = [
        row
        for method, baseline in KEY_COMPARISONS
        for row in comparisons
        if re.fullmatch(method, row["method"]) and re.fullmatch(baseline, row["baseline"])
    ]
    if found:
        lines += ["", "| comparison | paired difference [95% CI] | reads |", "|---|--:|---|"]
        lines += [
            f"| {row['method']} − {row['baseline']} | {row['mean difference']:+.3f} [{row['low']:+.3f}, "
            f"{row['high']:+.3f}] | {_verdict(row)} |"
            for row in found
        ]
    own_rows = [row for row in own if row["method"].startswith(("e2p", "answer index", PASTING_PREFIX))]
    if own_rows:
        lines += [
            "",
            f"On {own_rows[0]['n_targets']} own texts that are not Alpaca outputs: "
            + "; ".join(
                f"{row['method']} {_mean_ci(row)}{f' ({_diff(row)})' if _diff(row) else ''}, copied "
                f"{_number(row.get('copied_share'), '.2f')}"
                for row in own_rows
            )
            + ".",
        ]
    return "\n".join(lines)


def examples_markdown(reports: str | Path, count: int = 4) -> str:
    """A few targets with e2p's clean prompt, its copied share and answer cosine, and its answer (05's examples),
    texts cut to keep the table short."""
    rows = _read(Path(reports), "05_examples.json")[:count]

    def cut(text: str, most: int = 110) -> str:
        text = " ".join(str(text).split()).replace("|", "/")
        return text if len(text) <= most else text[: most - 1] + "…"

    lines = ["| target | e2p's prompt | copied share | answer cosine | its answer |", "|---|---|--:|--:|---|"]
    lines += [
        f"| {cut(r['target'])} | {cut(r['e2p prompt'], 160)} | {r['copied share']:.2f} | {r['answer cosine']:.2f} "
        f"| {cut(r['its answer'])} |"
        for r in rows
    ]
    return "\n".join(lines)


def minutes_markdown(reports: str | Path) -> str:
    """Minutes and CPU minutes per notebook of the run, and the total (only when every notebook ran on one profile:
    a total over a smoke 05 and demo 01-04 would describe no run)."""
    run = _run(Path(reports))
    lines = ["| notebook | profile | commit | minutes | CPU minutes |", "|---|---|---|--:|--:|"]
    for stem, entry in sorted(run.items()):
        cpu = _number(entry.get("cpu_minutes"), ".1f")
        lines.append(f"| {stem} | {entry.get('profile', '?')} | {_commit(entry)} | {entry['minutes']:.1f} | {cpu} |")
    if len({entry.get("profile") for entry in run.values()}) == 1:
        lines.append(f"| all | | | {sum(entry['minutes'] for entry in run.values()):.1f} | |")
    return "\n".join(lines)


SECTIONS = {"results": results_markdown, "examples": examples_markdown, "minutes": minutes_markdown}


def update_readme(readme: str | Path | None = None, reports: str | Path | None = None) -> Path:
    """Replace the text between each section's markers in the README (`<!-- name:start -->`, `<!-- name:end -->`,
    for the names in `SECTIONS`) with that section written from `reports`; return the README.

    Raises:
        ValueError: the README lacks the results markers, in order. FileNotFoundError: a report is missing.
    """
    from e2p_lib import config
    from e2p_lib.atomic import write_atomically

    path = Path(readme) if readme is not None else config.PROJECT_ROOT / "README.md"
    folder = Path(reports) if reports is not None else config.reports_dir()
    text = path.read_text(encoding="utf-8")
    if not 0 <= text.find(START) < text.find(END):
        raise ValueError(f"{path} has no '{START}' ... '{END}' markers, in that order: add them where the table goes.")
    for name, section in SECTIONS.items():
        start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
        if 0 <= text.find(start) < text.find(end):
            head, rest = text.split(start, 1)
            text = head + start + "\n" + section(folder) + "\n" + end + rest.split(end, 1)[1]
    write_atomically(path, text.encode("utf-8"))
    return path
