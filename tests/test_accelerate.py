"""Multi-process training is real: two CPU processes (gloo, started by torchrun as `accelerate launch` would on
GPUs) reach the same weights as one process on the same global batches, so gradients are synchronised (and shared
fairly when a batch splits unevenly). PPO's processes roll out different targets, so there the test is that they
end with identical weights and log the global mean of every process's rewards."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.accelerate_worker import train, train_sft

WORKER = Path(__file__).with_name("accelerate_worker.py")


def launch(job: str, out: Path, processes: int = 2) -> list[dict]:
    """Run `accelerate_worker.py job` as `processes` CPU processes; what each process saved, by rank."""
    # ACCELERATE_USE_CPU is what `accelerate launch --cpu` sets: processes on CPU talk over gloo
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1", "PYTHONPATH": str(WORKER.parent.parent)}
    # --standalone picks a free port, so tests running side by side never meet on one
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    result = subprocess.run(
        [*command, str(WORKER), job, str(out)], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    saved = [torch.load(out / f"rank{rank}.pt", weights_only=True) for rank in range(processes)]
    assert all(s["processes"] == processes for s in saved)
    return saved


def assert_same_weights(actual: dict, expected: dict, rtol: float, atol: float) -> None:
    assert actual.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(actual[name], value, rtol=rtol, atol=atol, msg=name)


def largest_change(initial: dict, trained: dict, prefix: str = "") -> float:
    return max((trained[k] - v).abs().max().item() for k, v in initial.items() if k.startswith(prefix))


@pytest.mark.slow  # two fresh Python processes import torch and transformers (~30 s on 2 busy cores)
def test_two_processes_train_the_forward_model_to_the_same_weights_as_one(tmp_path):
    two = launch("forward", tmp_path)[0]
    weights, losses = train()
    assert losses == pytest.approx(two["losses"], rel=1e-5)  # the logged loss is the whole batch's, not a share's
    assert losses[-1] < losses[0]
    assert_same_weights(two["weights"], weights, rtol=1e-5, atol=1e-6)
    # the zero-initialised last layer moved, so the comparison is of trained weights, not of the initial ones
    assert max(v.abs().max().item() for k, v in weights.items() if k.startswith("head.out")) > 1e-3


@pytest.mark.slow  # two processes import torch, transformers and peft and load SmolLM2's tokenizer
def test_two_processes_train_the_policy_by_sft_to_the_same_weights_as_one(tmp_path):
    """LoRA + mapper, uneven shares and prompts of different lengths (a per-token mean), hypotheses drawn per
    row, and the two-process run stopped and resumed from its checkpoint halfway."""
    ranks = launch("sft", tmp_path)
    assert (tmp_path / "sft" / "policy" / "policy_config.json").is_file()  # the main process wrote the folder
    initial, weights, losses = train_sft()
    for two in ranks:
        assert losses == pytest.approx(two["losses"], rel=1e-4)
        # Adam divides by the root of tiny second moments, so float noise in near-zero gradients shows at ~1e-5;
        # unsynchronised processes would differ by about the change itself (~1e-2)
        assert_same_weights(two["weights"], weights, rtol=1e-4, atol=1e-4)
    assert losses[-1] < losses[0]
    assert largest_change(initial, weights, "mapper.") > 1e-3
    assert largest_change(initial, weights, "lm.") > 1e-3  # the LoRA adapters trained too


@pytest.mark.slow  # two processes import torch, transformers and peft and load SmolLM2's tokenizer
def test_two_ppo_processes_share_gradients_and_log_global_rewards(tmp_path):
    first, second = launch("ppo", tmp_path)
    # each process rolled out its own targets, yet the weights are the same: gradients were averaged
    assert_same_weights(second["weights"], first["weights"], rtol=0, atol=0)
    assert largest_change(first["initial"], first["weights"]) > 1e-4
    # both log the mean over both processes' rewards, not their own
    assert first["metrics"] == second["metrics"]
    logged = {
        name: [v for m, v in zip(first["metrics"]["metric"], first["metrics"]["value"]) if m == name]
        for name in ("reward", "reward_std")
    }
    assert len(logged["reward"]) == len(first["rewards"]) == 2
    for step, (mine, theirs) in enumerate(zip(first["rewards"], second["rewards"])):
        both = torch.cat([mine, theirs])
        assert logged["reward"][step] == pytest.approx(float(both.mean()), rel=1e-5)
        assert logged["reward_std"][step] == pytest.approx(float(both.std()), rel=1e-5)
    assert not np.allclose([float(r.mean()) for r in first["rewards"]], [float(r.mean()) for r in second["rewards"]])
