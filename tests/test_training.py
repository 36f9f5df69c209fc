"""Shared training utilities: config checks, devices, seeds, batch order, RNG and checkpoints, the loop.

Models here are a bare `nn.Linear` (the utilities don't care what they train); the forward-model tests cover a
real trainer end to end.
"""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest
import torch

from e2p_lib.devices import resolve_device, torch_threads
from e2p_lib.train.loop import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    LossHistory,
    TrainingConfig,
    TrainState,
    batch_indices,
    capture_rng_state,
    check_resumable,
    data_fingerprint,
    is_due,
    load_checkpoint,
    restore_rng_state,
    run_training_loop,
    save_checkpoint,
    seed_everything,
)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("learning_rate", 0.0, "learning_rate must be a finite number > 0"),
        ("learning_rate", float("nan"), "learning_rate must be a finite number > 0, got nan"),
        ("batch_size", 0, "batch_size=0 must be a positive integer"),
        ("batch_size", 8.0, "batch_size=8.0 must be a positive integer"),
        ("num_epochs", True, "num_epochs=True must be a positive integer"),
        ("max_steps", 0, "max_steps=0 must be a positive integer"),
        ("lr_scheduler", "cosine_with_restarts", "lr_scheduler='cosine_with_restarts' is not supported"),
        ("warmup_fraction", 1.0, "warmup_fraction=1.0 must be < 1"),
        ("max_grad_norm", -1.0, "max_grad_norm must be a finite number > 0"),
        ("seed", -1, "seed=-1 must be an integer >= 0"),
        ("device", "gpu", "device='gpu' is not a device name; use 'auto', 'cpu', 'cuda'"),
        ("eval_every_steps", -5, "eval_every_steps=-5 must be an integer >= 0"),
    ],
)
def test_bad_config_values_are_refused_with_the_value_and_the_rule(field, value, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TrainingConfig(**{field: value})


def test_config_round_trips_through_a_dict_and_refuses_unknown_keys(tmp_path):
    config = TrainingConfig(learning_rate=3e-4, max_steps=7, output_dir=str(tmp_path), device="cpu")
    assert TrainingConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match=r"Unknown TrainingConfig key\(s\) \['lerning_rate'\]"):
        TrainingConfig.from_dict({**config.to_dict(), "lerning_rate": 1.0})


def test_total_steps_counts_epochs_of_partial_batches_unless_max_steps_is_set():
    assert TrainingConfig(batch_size=10, num_epochs=3).total_steps(25) == 9  # 3 batches per epoch (10, 10, 5)
    assert TrainingConfig(batch_size=10, num_epochs=3, max_steps=4).total_steps(25) == 4
    with pytest.raises(ValueError, match="no training rows"):
        TrainingConfig().total_steps(0)


def test_device_resolution():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    with pytest.raises(ValueError, match="device='cuda:99' but this machine has"):
        resolve_device("cuda:99")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device='cuda' but this machine has 0 CUDA GPU"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="device='tpu' is not a device name"):
        resolve_device("tpu")


def test_torch_threads_sets_the_count_inside_the_block_and_puts_it_back_even_on_error():
    before = torch.get_num_threads()
    inside = 2 if before == 1 else 1
    with torch_threads(inside):
        assert torch.get_num_threads() == inside
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError, match="boom"), torch_threads():
        torch.set_num_threads(inside)  # what CTranslate2's Generator load does to OpenMP's count, in passing
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before


def test_seed_everything_makes_python_numpy_and_torch_repeat():
    def draws():
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    seed_everything(123)
    first = draws()
    seed_everything(123)
    assert draws() == first
    seed_everything(124)
    assert draws() != first


def test_batch_indices_cover_each_epoch_once_and_depend_only_on_their_arguments():
    rows, batch = 23, 5  # 5 batches per epoch, the last one of 3 rows
    epoch0 = [batch_indices(rows, batch, seed=7, step=s) for s in range(5)]
    assert [len(b) for b in epoch0] == [5, 5, 5, 5, 3]
    assert sorted(np.concatenate(epoch0).tolist()) == list(range(rows))
    epoch1 = np.concatenate([batch_indices(rows, batch, seed=7, step=s) for s in range(5, 10)])
    assert sorted(epoch1.tolist()) == list(range(rows))
    assert not np.array_equal(np.concatenate(epoch0), epoch1)  # a fresh order each epoch
    np.testing.assert_array_equal(batch_indices(rows, batch, seed=7, step=3), epoch0[3])  # no hidden state
    assert not np.array_equal(batch_indices(rows, batch, seed=8, step=0), epoch0[0])
    with pytest.raises(ValueError, match="step >= 0"):
        batch_indices(rows, batch, seed=7, step=-1)


def test_restoring_the_rng_state_repeats_every_generator():
    seed_everything(5)
    state = capture_rng_state()
    first = (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist())
    restore_rng_state(state)
    assert (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist()) == first


def _trained_linear(steps: int = 2):
    """A Linear layer and AdamW after `steps` updates, so the optimiser has state worth saving."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    for _ in range(steps):
        optimizer.zero_grad()
        model(torch.randn(8, 4)).pow(2).mean().backward()
        optimizer.step()
    return model, optimizer


def test_checkpoint_round_trip_restores_weights_optimizer_config_history_and_rng(tmp_path):
    config = TrainingConfig(output_dir=str(tmp_path), max_steps=10)
    model, optimizer = _trained_linear()
    history = LossHistory()
    history.log(1, "train", {"loss": 0.5})
    history.log(2, "val", {"loss": 0.4, "cosine": 0.9})
    state = TrainState(step=2, history=history, train_seconds=1.5)
    save_checkpoint(
        tmp_path, config=config, state=state, model=model, optimizer=optimizer, extra={"data_fingerprint": "abc"}
    )
    after_save = torch.rand(2)  # what the RNG draws next, from the saved state

    checkpoint = load_checkpoint(tmp_path)
    assert TrainingConfig.from_dict(checkpoint["config"]) == config
    restored = TrainState.from_checkpoint(checkpoint)
    assert (restored.step, restored.train_seconds, restored.history.records) == (2, 1.5, history.records)
    fresh, fresh_optimizer = _trained_linear(steps=0)
    fresh.load_state_dict(checkpoint["model"])
    fresh_optimizer.load_state_dict(checkpoint["optimizer"])
    for a, b in zip(model.parameters(), fresh.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(
        fresh_optimizer.state_dict()["state"][0]["exp_avg"],
        optimizer.state_dict()["state"][0]["exp_avg"],
        rtol=0,
        atol=0,
    )
    restore_rng_state(checkpoint["rng"])
    torch.testing.assert_close(torch.rand(2), after_save, rtol=0, atol=0)
    readable = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert readable["step"] == 2 and readable["config"]["max_steps"] == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_FILE, CONFIG_FILE]  # no temp files left
    assert load_checkpoint(tmp_path / "elsewhere") is None


def test_a_save_that_dies_before_publishing_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    config = TrainingConfig(output_dir=str(tmp_path))
    model, optimizer = _trained_linear()
    save_checkpoint(tmp_path, config=config, state=TrainState(step=3), model=model, optimizer=optimizer)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, config=config, state=TrainState(step=4), model=model, optimizer=optimizer)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path)["step"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_FILE, CONFIG_FILE]


def test_check_resumable_allows_a_longer_run_and_refuses_another_config_or_data(tmp_path):
    config = TrainingConfig(output_dir=str(tmp_path), max_steps=10)
    model, optimizer = _trained_linear()
    save_checkpoint(
        tmp_path,
        config=config,
        state=TrainState(step=10),
        model=model,
        optimizer=optimizer,
        extra={"data_fingerprint": "f" * 64},
    )
    checkpoint = load_checkpoint(tmp_path)
    check_resumable(
        checkpoint,
        TrainingConfig(output_dir=str(tmp_path), max_steps=20, show_progress=False),
        data_fingerprint="f" * 64,
    )
    with pytest.raises(
        ValueError,
        match=r"config changed \(learning_rate: checkpoint 0.001, now 0.01\).*"
        r"another output_dir",
    ):
        check_resumable(checkpoint, TrainingConfig(output_dir=str(tmp_path), learning_rate=0.01))
    with pytest.raises(ValueError, match="trained on other data"):
        check_resumable(checkpoint, config, data_fingerprint="0" * 64)
    save_checkpoint(tmp_path, config=config, state=TrainState(step=10), model=model)  # a model, no optimiser
    with pytest.raises(ValueError, match="without optimiser state; it cannot resume"):
        check_resumable(load_checkpoint(tmp_path), config)


def test_is_due():
    assert [s for s in range(1, 10) if is_due(s, 3)] == [3, 6, 9]
    assert not any(is_due(s, 0) for s in range(1, 10))


class _Recorder:
    """Records which steps the loop trained, validated and saved."""

    def __init__(self):
        self.trained, self.validated, self.saved = [], [], []
        self.state = None

    def train_step(self, step):
        self.trained.append(step)
        return {"loss": 1.0 / (step + 1)}

    def evaluate(self):
        self.validated.append(self.state.step)
        return {"loss": 0.5, "cosine": 0.8}

    def save(self, state):
        self.saved.append(state.step)


def test_loop_validates_and_saves_on_schedule_and_after_the_last_step():
    config = TrainingConfig(eval_every_steps=3, save_every_steps=4, show_progress=False)
    recorder = _Recorder()
    recorder.state = TrainState()
    state = run_training_loop(
        recorder.train_step,
        total_steps=7,
        state=recorder.state,
        config=config,
        evaluate=recorder.evaluate,
        save=recorder.save,
    )
    assert recorder.trained == list(range(7)) and state.step == 7
    assert recorder.validated == [3, 6, 7]
    assert recorder.saved == [4, 7]
    frame = state.history.to_frame()
    assert frame.columns.tolist() == ["step", "split", "metric", "value"]
    assert frame.query("split == 'train'")["value"].tolist() == [1.0 / (s + 1) for s in range(7)]
    assert state.history.last("val", "cosine") == 0.8 and state.history.last("val", "nope") is None


def test_loop_continues_from_the_state_step_and_does_nothing_when_done():
    config = TrainingConfig(eval_every_steps=0, save_every_steps=0, show_progress=False)
    recorder = _Recorder()
    recorder.state = TrainState(step=5)
    run_training_loop(
        recorder.train_step,
        total_steps=7,
        state=recorder.state,
        config=config,
        evaluate=recorder.evaluate,
        save=recorder.save,
    )
    assert recorder.trained == [5, 6] and recorder.validated == [7] and recorder.saved == [7]
    run_training_loop(
        recorder.train_step,
        total_steps=7,
        state=recorder.state,
        config=config,
        evaluate=recorder.evaluate,
        save=recorder.save,
    )
    assert recorder.trained == [5, 6]  # nothing left to do


def test_data_fingerprint_changes_with_any_text_vector_or_boundary():
    vectors = np.eye(2, dtype=np.float32)
    base = data_fingerprint(["ab", "c"], vectors)
    assert data_fingerprint(["ab", "c"], vectors.copy()) == base
    assert data_fingerprint(["a", "bc"], vectors) != base  # same characters, other rows
    assert data_fingerprint(["ab", "c"], vectors[::-1]) != base
