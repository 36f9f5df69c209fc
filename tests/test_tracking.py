"""Experiment tracking: with `track=True` the shared training loop writes its scalars to TensorBoard."""

from __future__ import annotations

import pytest

from e2p_lib.train.loop import TENSORBOARD_FOLDER, TrainingConfig, TrainState, run_training_loop


def read_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    """Every scalar TensorBoard would plot from the event files in `folder`, by tag."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tracked_run_logs_train_and_validation_scalars(tmp_path):
    config = TrainingConfig(
        output_dir=str(tmp_path / "run"), max_steps=4, eval_every_steps=2, track=True, show_progress=False
    )
    run_training_loop(
        lambda step: {"loss": 1.0 / (step + 1)},
        total_steps=4,
        state=TrainState(),
        config=config,
        evaluate=lambda: {"loss": 0.5},
    )
    scalars = read_scalars(tmp_path / "run" / TENSORBOARD_FOLDER)
    assert scalars["train/loss"] == [(1, 1.0), (2, 0.5), (3, pytest.approx(1 / 3)), (4, 0.25)]
    assert scalars["val/loss"] == [(2, 0.5), (4, 0.5)]


def test_untracked_run_writes_no_logs_and_tracking_needs_a_folder(tmp_path):
    config = TrainingConfig(output_dir=str(tmp_path / "run"), max_steps=1, show_progress=False)
    run_training_loop(lambda step: {"loss": 1.0}, total_steps=1, state=TrainState(), config=config)
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="set output_dir or track=False"):
        TrainingConfig(track=True)
