"""Trains e2p's models on fixed tiny data and saves what tests/test_accelerate.py compares: run alone, or as two CPU
processes (`torchrun --standalone --nproc_per_node 2 accelerate_worker.py JOB OUT_DIR`), each process writing
`OUT_DIR/rank<N>.pt`.

Jobs: "forward" (the forward MLP), "sft" (the prompt policy's SFT, resumed once from its checkpoint) and "ppo"
(two PPO steps of the policy). Dropout is off everywhere: each process would draw its own masks for its rows.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import torch
from tiny import tiny_policy, unit_vectors

from e2p_lib.models.forward import forward_model_config, train_forward_model
from e2p_lib.models.policy import Hypothesis

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


def train_losses(history) -> list[float]:
    frame = history if hasattr(history, "query") else history.to_frame()
    return frame.query("split == 'train' and metric == 'loss'")["value"].tolist()


def train() -> tuple[dict[str, torch.Tensor], list[float]]:
    """The forward MLP's trained weights and the logged train losses (the same on every process)."""
    embedder = HashEmbedder()
    prompts = [f"prompt number {i}" for i in range(ROWS)]
    targets = embedder.embed([f"answer number {i}" for i in range(ROWS)])
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
    return {k: v.detach().cpu() for k, v in model.net.state_dict().items()}, train_losses(history)


# --- the prompt policy ----------------------------------------------------------------------------------------

SFT_PROMPTS = [  # lengths differ, so a share's weight in the per-token mean is not its share of the rows
    "Name a fruit.",
    "List three primary colours and one secondary colour.",
    "Write a haiku.",
    "Define gravity in one sentence.",
    "Translate 'cat' into French.",
    "What is 2 + 2?",
    "Summarise Hamlet.",
    "Give a synonym for happy.",
    "Explain photosynthesis to a child.",
    "Sort 3, 1, 2.",
    "Hello.",
]  # 11 rows in batches of 4: the last of each epoch has 3, shared 2/1 by two processes


def small_policy(hypotheses: int = 0):
    """The tiny LoRA policy (tests/tiny.py), dropout off: the same on every process."""
    from trl.trainer.utils import disable_dropout_in_model

    from e2p_lib.lm.smollm import load_smollm2

    policy = tiny_policy(load_smollm2(device="cpu")[1], finetune="lora")
    policy.config.hypotheses = hypotheses
    disable_dropout_in_model(policy)
    return policy


def trainable_weights(policy) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in policy.named_parameters() if p.requires_grad}


def train_sft(output_dir: str | None = None, stop_at: int | None = None):
    """(initial, trained) trainable weights (LoRA + mapper) and the train losses of 6 SFT steps; with `stop_at`,
    the run stops there and resumes from its checkpoint in `output_dir` to finish."""
    from e2p_lib.train.sft import PolicyTrainingConfig, train_policy

    policy = small_policy(hypotheses=2)
    initial = trainable_weights(policy)
    vectors = unit_vectors(len(SFT_PROMPTS), seed=5)
    hypotheses = [[Hypothesis(p, 0.6), Hypothesis("Say hello.", 0.2)] for p in reversed(SFT_PROMPTS)]
    base = dict(
        batch_size=4,
        learning_rate=1e-2,
        mapper_learning_rate=1e-2,
        lr_scheduler="constant",
        eval_every_steps=0,
        save_every_steps=0,
        show_progress=False,
        val_rows=4,
        device="cpu",
        output_dir=output_dir,
    )
    for steps in ([stop_at] if stop_at else []) + [6]:
        _, history = train_policy(
            vectors,
            SFT_PROMPTS,
            vectors[:4],
            SFT_PROMPTS[:4],
            PolicyTrainingConfig(max_steps=steps, **base),
            policy=policy,
            train_hypotheses=hypotheses,
            val_hypotheses=hypotheses[:4],
        )
    return initial, trainable_weights(policy), train_losses(history)


def word_reward(prompts, targets, produced: list[np.ndarray] | None = None) -> np.ndarray:
    """A reward with spread between samples of one target: the share of characters that are letters."""
    rewards = np.array([sum(c.isalpha() for c in p) / max(len(p), 1) for p in prompts], dtype=np.float32)
    if produced is not None:
        produced.append(rewards)
    return rewards


def train_ppo_steps():
    """(initial, trained) trainable weights, the logged train metrics and the rewards this process produced, of
    two PPO steps on 4 targets per step (each process rolls out its share)."""
    from e2p_lib.train.rl import PPOConfig, train_ppo

    policy = small_policy()
    initial = trainable_weights(policy)
    produced: list[np.ndarray] = []
    config = PPOConfig(
        max_steps=2,
        targets_per_step=4,
        samples_per_target=2,
        batch_size=4,
        ppo_epochs=1,
        learning_rate=1e-2,
        mapper_learning_rate=1e-2,
        max_prompt_tokens=5,
        eval_every_steps=0,
        save_every_steps=0,
        show_progress=False,
        device="cpu",
    )
    _, history = train_ppo(
        policy, lambda p, t: word_reward(p, t, produced), unit_vectors(8, seed=2), config, val_vectors=None
    )
    metrics = history.to_frame().query("split == 'train' and not metric.str.startswith('seconds_')")
    return initial, trainable_weights(policy), metrics, produced


JOBS = {
    "forward": lambda out: dict(zip(("weights", "losses"), train())),
    "sft": lambda out: dict(zip(("initial", "weights", "losses"), train_sft(str(out / "sft"), stop_at=3))),
    "ppo": lambda out: dict(zip(("initial", "weights", "metrics", "rewards"), train_ppo_steps())),
}


if __name__ == "__main__":
    from accelerate import PartialState

    job, out = sys.argv[1], Path(sys.argv[2])
    result = JOBS[job](out)
    state = PartialState()
    if "metrics" in result:
        result["metrics"] = result["metrics"].to_dict("list")
        result["rewards"] = [torch.as_tensor(r) for r in result["rewards"]]
    torch.save({**result, "processes": state.num_processes}, out / f"rank{state.process_index}.pt")
