"""Trains the forward MLP on fixed tiny data and saves its weights and train losses: run alone, or by
tests/test_accelerate.py as two CPU processes (`torchrun --standalone --nproc_per_node 2`), which compares them."""

from __future__ import annotations

import hashlib
import sys

import numpy as np
import torch

from e2p_lib.models.forward import forward_model_config, train_forward_model

DIMS = 8
ROWS = 21  # batches of 8: the last of each epoch has 5 rows, shared 3/2 by two processes (uneven on purpose)


class HashEmbedder:
    """A deterministic stand-in embedder: a unit vector seeded by each text's sha256 (no model to load)."""

    name, dimensions = "test/hash", DIMS

    def embed(self, texts):
        vectors = np.stack(
            [
                np.random.default_rng(
                    int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little")
                ).standard_normal(DIMS)
                for t in texts
            ]
        ).astype(np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def train() -> tuple[dict[str, torch.Tensor], list[float]]:
    """The trained head's weights and the logged train losses (the same on every process)."""
    embedder = HashEmbedder()
    prompts = [f"prompt number {i}" for i in range(ROWS)]
    targets = embedder.embed([f"answer number {i}" for i in range(ROWS)])
    # dropout 0: each process would draw its own masks for its rows, so weights would differ by design
    config = forward_model_config(
        "mlp",
        hidden_sizes=(16,),
        dropout=0.0,
        batch_size=8,
        num_epochs=3,
        learning_rate=1e-2,
        show_progress=False,
        device="cpu",
    )
    model, history = train_forward_model(prompts, targets, None, None, config, embedder)
    losses = history[(history["split"] == "train") & (history["metric"] == "loss")]["value"].tolist()
    return {k: v.detach().cpu() for k, v in model.net.state_dict().items()}, losses


if __name__ == "__main__":
    from accelerate import PartialState

    weights, losses = train()
    state = PartialState()
    if state.is_main_process:
        torch.save({"weights": weights, "losses": losses, "processes": state.num_processes}, sys.argv[1])
