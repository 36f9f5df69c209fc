"""`e2p results`: the README's results section is written from a run's reports, between its markers only."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from tiny import unit_vectors

from e2p_lib.cli import main
from e2p_lib.evaluate.metrics import results_table, save_results
from e2p_lib.evaluate.readme import END, START, examples_markdown, minutes_markdown, results_markdown, update_readme

METHODS = [
    "original prompt",
    "answer index, top 1",
    "e2p, 1 call",
    "e2p, ≤8 calls",
    "pasting track: grounded, ≤8 calls",
]


def fixture_reports(folder):
    """A small run's reports: 05's tables over 6 targets, its comparisons and own texts, and run.json."""
    targets = unit_vectors(6, seed=1)
    vectors = {name: unit_vectors(6, seed=10 + i) for i, name in enumerate(METHODS)}
    prompts = {name: [f"Write item {i} of {name}." for i in range(6)] for name in METHODS}
    shares = {name: np.full(6, 0.5 if name.startswith("pasting") else 0.05) for name in METHODS}
    table = results_table(
        targets,
        vectors,
        prompts=prompts,
        copied_shares=shares,
        n_resamples=100,
        retrieval=None,
        baselines={"e2p, ≤8 calls": "original prompt"},
    )
    save_results(table, folder, name="05_eval_results")
    save_results(table.iloc[1:], folder, name="05_own_targets_results")
    comparison = pd.DataFrame(
        [
            {
                "method": "e2p, ≤8 calls",
                "baseline": "original prompt",
                "mean difference": 0.012,
                "low": -0.01,
                "high": 0.03,
            },
            {
                "method": "e2p, 1 call",
                "baseline": "answer index, top 1",
                "mean difference": -0.02,
                "low": -0.03,
                "high": -0.01,
            },
        ]
    ).set_index("method")
    save_results(comparison, folder, name="05_comparisons")
    run = {
        "notebooks": {
            stem: {
                "profile": "demo",
                "commit": "abc1234",
                "uncommitted_changes": False,
                "finished": "2026-12-06T12:00:00+00:00",
                "minutes": m,
                "cpu_minutes": 2 * m,
                "cores": 2,
            }
            for stem, m in (("01_embed", 1.5), ("05_eval", 20.25))
        }
    }
    (folder / "run.json").write_text(json.dumps(run))
    examples = pd.DataFrame(
        {
            "target": ["Rain | falls. " * 30],
            "e2p prompt": ["Write a haiku."],
            "copied share": [0.0],
            "answer cosine": [0.61],
            "its answer": ["Drops on the roof."],
        }
    )
    save_results(examples, folder, name="05_examples")
    return table


def test_the_results_section_is_generated_from_the_reports(tmp_path):
    table = fixture_reports(tmp_path)
    text = results_markdown(tmp_path)
    row = table.loc["e2p, ≤8 calls"]
    assert f"| e2p, ≤8 calls | 1.00 | {row['mean_cosine']:.3f} [{row['ci95_low']:.3f}, {row['ci95_high']:.3f}]" in text
    assert (
        "commit abc1234, finished 2026-12-06" in text
        and "| 05_eval | demo | abc1234 | 20.2 | 40.5 |" in minutes_markdown(tmp_path)
    )
    assert "| e2p, ≤8 calls − original prompt | +0.012 [-0.010, +0.030] | not shown apart |" in text
    assert "| e2p, 1 call − answer index, top 1 | -0.020 [-0.030, -0.010] | below |" in text
    own = text.split("own texts that are not Alpaca outputs")[1]
    assert "e2p, ≤8 calls" in own and " vs original prompt), copied" in own  # its paired difference on own texts
    clean, pasting = text.split("The pasting track")
    assert "pasting track: grounded" not in clean and "| 0.500 |" in pasting  # its copied share, below the clean table


def test_update_readme_rewrites_only_between_the_markers(tmp_path):
    fixture_reports(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text(
        f"# e2p\n\nintro\n\n{START}\nold table\n{END}\n\nthe rest\n\n"
        "<!-- minutes:start -->\nold\n<!-- minutes:end -->\n<!-- examples:start --><!-- examples:end -->\n"
    )
    assert main(["results", "--reports", str(tmp_path), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# e2p\n\nintro\n\n" + START) and text.endswith("<!-- examples:end -->\n")
    assert "old table" not in text and "| e2p, 1 call |" in text and "\nold\n" not in text
    assert "| 01_embed | demo | abc1234 | 1.5 | 3.0 |" in text and "| all | | | 21.8 | |" in text  # between markers
    assert "| Rain / falls." in text and "…" in text and "| Write a haiku. | 0.00 | 0.61 |" in text  # cut and escaped
    once = text
    update_readme(readme, tmp_path)
    assert readme.read_text() == once  # the same reports give the same README
    readme.write_text("# no markers\n")
    with pytest.raises(ValueError, match="markers"):
        update_readme(readme, tmp_path)
    (tmp_path / "05_comparisons.json").unlink()
    with pytest.raises(FileNotFoundError, match="05_comparisons.json is missing"):
        results_markdown(tmp_path)


def test_a_long_example_prompt_is_cut_and_keeps_its_copied_share_and_cosine(tmp_path):
    long_prompt = "Write a function that checks a palindrome " * 10
    examples = pd.DataFrame(
        {
            "target": ["abba"],
            "e2p prompt": [long_prompt],
            "copied share": [0.0],
            "answer cosine": [0.72],
            "its answer": ["def p(s): ..."],
        }
    )
    save_results(examples, tmp_path, name="05_examples")
    row = examples_markdown(tmp_path).splitlines()[-1]
    assert "… | 0.00 | 0.72 | def p(s): ... |" in row and len(row) < 250
