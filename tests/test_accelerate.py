"""Multi-process training is real: two CPU processes (gloo, started by torchrun as `accelerate launch` would on
GPUs) reach the same weights as one process on the same global batches, so gradients are synchronised (and shared
fairly when a batch splits unevenly)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.accelerate_worker import train

WORKER = Path(__file__).with_name("accelerate_worker.py")


@pytest.mark.slow  # two fresh Python processes import torch and transformers (~30 s on 2 busy cores)
def test_two_processes_train_the_forward_model_to_the_same_weights_as_one(tmp_path):
    out = tmp_path / "two.pt"
    # ACCELERATE_USE_CPU is what `accelerate launch --cpu` sets: processes on CPU talk over gloo
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1", "PYTHONPATH": str(WORKER.parent.parent)}
    # --standalone picks a free port, so tests running side by side never meet on one
    launch = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(WORKER),
        str(out),
    ]
    result = subprocess.run(launch, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    two = torch.load(out, weights_only=True)
    assert two["processes"] == 2

    weights, losses = train()
    assert losses == pytest.approx(two["losses"], rel=1e-5)  # the logged loss is the whole batch's, not a share's
    assert losses[-1] < losses[0]
    for name, value in weights.items():
        torch.testing.assert_close(two["weights"][name], value, rtol=1e-5, atol=1e-6, msg=name)
    # the zero-initialised last layer moved, so the comparison is of trained weights, not of the initial ones
    assert max(v.abs().max().item() for k, v in weights.items() if k.startswith("head.out")) > 1e-3
