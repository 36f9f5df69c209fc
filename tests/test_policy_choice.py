"""04's record of which policy writes the best prompts, how readers take it (`e2p_lib.inversion.api`), and the
validation rows it is chosen on."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest

from e2p_lib.data import add_split
from e2p_lib.inversion.api import CHOICE_FILE, chosen_policy_run, save_policy_choice
from e2p_lib.pipeline import held_out, split_parts


def saved_runs(models, *runs):
    for run in runs:
        (models / run / "policy").mkdir(parents=True)
        (models / run / "policy" / "policy_config.json").write_text("{}")


def test_the_best_validation_score_is_chosen_and_read_back(tmp_path):
    saved_runs(tmp_path, "policy-sft", "policy-rl", "policy-ei")
    assert chosen_policy_run(tmp_path) is None  # 04 has not run: readers fall back to their own order
    best = save_policy_choice(tmp_path, {"policy-sft": 0.41, "policy-rl": 0.52, "policy-ei": 0.63}, targets=8)
    assert best == "policy-ei" and chosen_policy_run(tmp_path) == "policy-ei"
    record = json.loads((tmp_path / CHOICE_FILE).read_text())
    assert record["validation_cosine"]["policy-rl"] == 0.52 and record["validation_targets"] == 8
    assert save_policy_choice(tmp_path, {"policy-sft": 0.7, "policy-ei": 0.6}, targets=8) == "policy-sft"
    assert chosen_policy_run(tmp_path) == "policy-sft"  # a rerun of 04 replaces the record


@pytest.mark.parametrize(
    "scores, message",
    [({}, "at least one"), ({"policy-sft": float("nan")}, "finite"), ({"policy-rl": 0.5}, "train 'policy-rl'")],
)
def test_bad_scores_are_refused_and_nothing_is_written(tmp_path, scores, message):
    saved_runs(tmp_path, "policy-sft")
    with pytest.raises(ValueError, match=message):
        save_policy_choice(tmp_path, scores, targets=8)
    assert not (tmp_path / CHOICE_FILE).exists()


@pytest.mark.parametrize("text", ["{not json", '{"chosen": "policy-x", "validation_cosine": {"policy-sft": 0.4}}'])
def test_an_unreadable_record_is_ignored_with_a_warning(tmp_path, caplog, text):
    saved_runs(tmp_path, "policy-sft")
    (tmp_path / CHOICE_FILE).write_text(text)
    with caplog.at_level(logging.WARNING, logger="e2p_lib.inversion.api"):
        assert chosen_policy_run(tmp_path) is None
    assert "rerun notebooks/04_rl.ipynb" in caplog.text


def test_a_chosen_policy_that_is_gone_is_not_returned(tmp_path, caplog):
    saved_runs(tmp_path, "policy-sft", "policy-ei")
    save_policy_choice(tmp_path, {"policy-sft": 0.4, "policy-ei": 0.6}, targets=8)
    (tmp_path / "policy-ei" / "policy" / "policy_config.json").unlink()
    with caplog.at_level(logging.WARNING, logger="e2p_lib.inversion.api"):
        assert chosen_policy_run(tmp_path) is None
    assert "policy-ei" in caplog.text


def test_the_choice_targets_are_val_rows_that_picked_no_checkpoint():
    """04 picks PPO's step on the first `validation_targets` val rows and the policy on the next `choice_targets`."""
    frame = add_split(pd.DataFrame({"id": [f"alpaca-{i}" for i in range(400)]}))
    val = np.flatnonzero(frame["split"].to_numpy() == "val")
    steps, choice = split_parts(frame, "val", 3, 5)
    assert steps.tolist() == val[:3].tolist() and choice.tolist() == val[3:8].tolist()
    assert not set(steps) & set(choice)
    with pytest.raises(ValueError, match=f"'val' split has {len(val)} rows, but parts of \\[3, {len(val)}\\]"):
        split_parts(frame, "val", 3, len(val))
    with pytest.raises(ValueError, match="at least 1 row"):
        split_parts(frame, "val", 3, 0)


def test_held_out_targets_come_with_the_rows_each_must_never_be_shown():
    """The experiments' validation targets: a slice of the split, its vectors, and per row its own id and the ids of
    rows with the same output (Alpaca repeats outputs)."""
    ids = [f"alpaca-{i}" for i in range(400)]
    frame = add_split(pd.DataFrame({"id": ids, "output": [f"out {i % 390}" for i in range(400)]}))
    vectors = np.arange(400, dtype=float)[:, None]
    val = np.flatnonzero(frame["split"].to_numpy() == "val")
    rows, targets, excluded = held_out(frame, vectors, "val", 2, 5)
    assert rows.tolist() == val[2:7].tolist() and targets[:, 0].tolist() == val[2:7].tolist()
    for row, ex in zip(rows, excluded):
        same = [ids[j] for j in range(400) if j % 390 == row % 390]
        assert sorted(ex) == sorted(same)  # its own id, and the other row with its output where there is one
