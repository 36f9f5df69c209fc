"""Supervised fine-tuning of the prompt policy: learn to write Alpaca's prompt given its output embedding.

Stage 1 of e2p. Each training row is (output embedding, original prompt); the loss is the cross-entropy of the
prompt's tokens given the soft tokens the embedding becomes (`PromptPolicy.supervised_loss`). The loop, checkpoints,
resume and validation schedule come from `e2p_lib.train.loop`, shared with the forward model.

    >>> config = PolicyTrainingConfig(output_dir="data/models/policy-sft")       # CPU default: LoRA, 1 epoch
    >>> policy, history = train_policy(train_vectors, train_prompts, val_vectors, val_prompts, config)
    >>> policy.generate(test_vectors[:4])                                         # greedy prompts
    >>> PromptPolicy.load("data/models/policy-sft/policy")                        # in 04_rl / 05_eval

Checkpoints hold only the weights that train (the mapping network, plus LoRA adapters or the whole LM) with the
optimiser state; the frozen base is rebuilt from the SmolLM2 package. The finished policy is saved with
`PromptPolicy.save` into `<output_dir>/policy/`, the folder later stages load.

Under `accelerate launch` each process trains on its share of every global batch (weighted by its prompt tokens,
since the loss is a mean over tokens) and the gradients are averaged, so N processes reach the weights one reaches
with the same `batch_size`; the main process alone validates and writes.

Larger configurations (documented, not the default):
- GPU, all 52,002 rows: `PolicyTrainingConfig(batch_size=64, num_epochs=3, learning_rate=2e-4, device="cuda")`
  with `PolicyConfig(finetune="full", prefix_tokens=16)`; about 2,400 steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from e2p_lib.config import POLICY_FOLDER
from e2p_lib.models.policy import Hypotheses, PolicyConfig, PromptPolicy
from e2p_lib.train.loop import (
    LossHistory,
    TrainingConfig,
    TrainState,
    batch_indices,
    check_resumable,
    data_fingerprint,
    global_mean,
    load_checkpoint,
    local_rows,
    prepare_for_processes,
    restore_training_state,
    run_training_loop,
    save_checkpoint,
    seed_everything,
)


@dataclass
class PolicyTrainingConfig(TrainingConfig):
    """How the policy trains. Inherits every field of `TrainingConfig`; the defaults here fit 2 CPU cores.

    Parameters that control the optimisation (in addition to TrainingConfig's):
        learning_rate (`float`, defaults to `2e-4`): for the LM's trainable weights (LoRA adapters or all).
        mapper_learning_rate (`float`, defaults to `1e-3`): for the mapping network, which starts from scratch
            and needs a larger step than the pretrained LM.
        batch_size (`int`, defaults to `16`), num_epochs (`int`, defaults to `1`): one pass over the training
            rows is len(rows) / batch_size steps.

    Parameters that control validation:
        val_rows (`int`, defaults to `64`): validation rows scored at each validation (teacher-forced loss).
    """

    learning_rate: float = 2e-4
    mapper_learning_rate: float = 1e-3
    batch_size: int = 16
    num_epochs: int = 1
    warmup_fraction: float = 0.05
    eval_every_steps: int = 50
    save_every_steps: int = 50
    val_rows: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.mapper_learning_rate > 0:
            raise ValueError(f"mapper_learning_rate must be > 0, got {self.mapper_learning_rate}.")
        if int(self.val_rows) < 1:
            raise ValueError(f"val_rows must be at least 1, got {self.val_rows}.")


class TrainableWeights:
    """The part of a policy a checkpoint holds: the weights that train (the frozen base comes from SmolLM2)."""

    def __init__(self, policy: PromptPolicy):
        self.params = {n: p for n, p in policy.named_parameters() if p.requires_grad}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().cpu().clone() for n, p in self.params.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if set(state) != set(self.params):
            raise ValueError(
                "The checkpoint's trainable weights do not match this policy's "
                f"({len(state)} vs {len(self.params)} tensors): was it trained with another PolicyConfig?"
            )
        with torch.no_grad():
            for name, value in state.items():
                self.params[name].copy_(value)


def policy_optimizer(policy: PromptPolicy, config: TrainingConfig, total_steps: int):
    """AdamW with two parameter groups (the mapping network starts from scratch and takes `mapper_learning_rate`;
    the LM's trainable weights take `learning_rate`), its schedule, and the list of trainable parameters."""
    from transformers import get_scheduler

    mapper = list(policy.mapper.parameters())
    lm = [p for p in policy.lm.parameters() if p.requires_grad]
    groups = [{"params": mapper, "lr": config.mapper_learning_rate}] + (
        [{"params": lm, "lr": config.learning_rate}] if lm else []
    )
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    scheduler = get_scheduler(config.lr_scheduler, optimizer, int(config.warmup_fraction * total_steps), total_steps)
    return optimizer, scheduler, mapper + lm


def _check_rows(vectors: np.ndarray, prompts: Sequence[str], dims: int, what: str) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[1] != dims or len(vectors) != len(prompts):
        raise ValueError(
            f"{what}: need ({len(prompts)}, {dims}) vectors for {len(prompts)} prompts; got "
            f"{vectors.shape}. Embed the outputs with the embedder of dimension {dims}."
        )
    if not len(prompts):
        raise ValueError(f"{what}: no rows.")
    return vectors


def shown_hypotheses(hypotheses: Hypotheses, rows: np.ndarray, most: int, seed: int, step: int) -> Hypotheses:
    """The hypotheses a training batch sees: all `most` known prompts for half the rows, a random 0..most-1 for the
    others, so the policy also learns to write with fewer (the first search round, a sparse index); stored answers
    (`kind="answer"`) always. Seeded by step."""
    if hypotheses is None:
        return None
    rng = np.random.default_rng([seed, step, 1])
    counts = np.where(rng.random(len(rows)) < 0.5, most, rng.integers(0, max(most, 1), len(rows)))
    return [
        [h for h in hypotheses[r] if h.kind == "prompt"][:c] + [h for h in hypotheses[r] if h.kind == "answer"]
        for r, c in zip(rows, counts)
    ]


@torch.no_grad()
def policy_loss(
    policy: PromptPolicy,
    vectors: np.ndarray,
    prompts: Sequence[str],
    hypotheses: Hypotheses = None,
    batch_size: int = 16,
) -> float:
    """Teacher-forced cross-entropy per prompt token of `prompts` given their targets (and hypotheses), in eval mode.

    With a policy trained on hypotheses, pass each row's list cut to k to compare k = 0, 1, ... on one model.
    """
    policy.eval()
    total, tokens = 0.0, 0
    for start in range(0, len(prompts), batch_size):
        rows = np.arange(start, min(start + batch_size, len(prompts)))
        batch = [prompts[i] for i in rows]
        _, mask = policy.tokenize_prompts(batch)
        shown = None if hypotheses is None else [hypotheses[i] for i in rows]
        total += float(policy.supervised_loss(vectors[rows], batch, shown)) * int(mask.sum())
        tokens += int(mask.sum())
    return total / tokens


def _check_hypotheses(hypotheses: Hypotheses, n: int, what: str) -> Hypotheses:
    if hypotheses is not None and len(hypotheses) != n:
        raise ValueError(
            f"{what}: got hypotheses for {len(hypotheses)} rows but {n} prompts; give one list "
            "(possibly empty) per row, e.g. from AnswerIndex.hypotheses."
        )
    return hypotheses


def train_policy(
    train_vectors: np.ndarray,
    train_prompts: Sequence[str],
    val_vectors: np.ndarray,
    val_prompts: Sequence[str],
    config: PolicyTrainingConfig | None = None,
    policy_config: PolicyConfig | None = None,
    policy: PromptPolicy | None = None,
    *,
    train_hypotheses: Hypotheses = None,
    val_hypotheses: Hypotheses = None,
) -> tuple[PromptPolicy, LossHistory]:
    """Train (or resume training) the policy; return it with its loss history. See the module docstring.

    `policy`: an already built policy to train (e.g. a tiny one in tests); None builds one on SmolLM2 from
    `policy_config` (default: LoRA, conditioned on vectors of the training rows' dimension).
    `train_hypotheses` / `val_hypotheses`: one list of `Hypothesis` per row (`AnswerIndex.hypotheses`, never
    holding the row itself) for a policy with `hypotheses > 0`; validation shows each row all of its own.
    """
    config = config or PolicyTrainingConfig()
    if policy is not None:
        policy_config = policy.config
    policy_config = policy_config or PolicyConfig(embedding_dim=int(np.shape(train_vectors)[1]))
    train_prompts, val_prompts = list(train_prompts), list(val_prompts)
    train_vectors = _check_rows(train_vectors, train_prompts, policy_config.embedding_dim, "training rows")
    val_vectors = _check_rows(val_vectors, val_prompts, policy_config.embedding_dim, "validation rows")
    train_hypotheses = _check_hypotheses(train_hypotheses, len(train_prompts), "training rows")
    val_hypotheses = _check_hypotheses(val_hypotheses, len(val_prompts), "validation rows")
    most = policy_config.hypotheses
    seed_everything(config.seed)

    # 1. a checkpoint in output_dir is checked before any model loads: a mismatch fails fast
    # the hypotheses shown are part of the data: a resume with other hypotheses is another run
    keyed = (
        train_prompts
        if train_hypotheses is None or not (most or policy_config.answers)
        else [
            f"{p}\x00{[(h.prompt, round(h.cosine, 4)) for h in [h for h in hs if h.kind == 'prompt'][:most]]}"
            + "".join(f"\x00{h.prompt}" for h in [h for h in hs if h.kind == "answer"][: policy_config.answers])
            for p, hs in zip(train_prompts, train_hypotheses)
        ]
    )
    fingerprint = data_fingerprint(keyed, train_vectors)
    checkpoint = load_checkpoint(config.output_dir) if config.output_dir else None
    if checkpoint is not None:
        check_resumable(checkpoint, config, fingerprint)
        if checkpoint["extra"].get("policy_config") != asdict(policy_config):
            raise ValueError(
                f"The checkpoint in {config.output_dir} was trained with another PolicyConfig "
                f"({checkpoint['extra'].get('policy_config')}); start in another output_dir."
            )

    # 2. the model and its optimiser: two parameter groups (the mapper starts from scratch)
    policy = policy or PromptPolicy.from_pretrained_base(policy_config, device=config.device)
    policy.train()
    total_steps = config.total_steps(len(train_prompts))
    optimizer, scheduler, trainable = policy_optimizer(policy, config, total_steps)
    weights = TrainableWeights(policy)
    state = TrainState()
    if checkpoint is not None:  # resume: same weights, optimiser, schedule, RNG and history
        state = restore_training_state(checkpoint, model=weights, optimizer=optimizer, scheduler=scheduler)

    val_take = np.arange(min(config.val_rows, len(val_prompts)))

    # several processes (`accelerate launch`): each trains on its share of every global batch, gradients averaged
    accelerator, wrapped = prepare_for_processes(policy, method="supervised_loss")

    # 3. one optimiser step on the batch that this step number always gets (so a resume sees the same data)
    def train_step(step: int) -> dict[str, float]:
        rows = batch_indices(len(train_prompts), config.batch_size, config.seed, step)
        shown = shown_hypotheses(train_hypotheses, rows, most, config.seed, step)  # drawn for the global batch
        # the loss is a mean over prompt tokens, so each process's share is weighted by its tokens
        _, token_mask = policy.tokenize_prompts([train_prompts[i] for i in rows])
        mine, weight = local_rows(np.arange(len(rows)), accelerator, sizes=token_mask.sum(1).tolist())
        loss = weight * wrapped(
            train_vectors[rows[mine]],
            [train_prompts[i] for i in rows[mine]],
            hypotheses=None if shown is None else [shown[j] for j in mine],
        )
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        if config.max_grad_norm is not None:
            accelerator.clip_grad_norm_(trainable, config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        return {"loss": global_mean(accelerator, loss)}

    def evaluate() -> dict[str, float]:
        hypotheses = None if val_hypotheses is None else [val_hypotheses[i] for i in val_take]
        loss = policy_loss(
            policy, val_vectors[val_take], [val_prompts[i] for i in val_take], hypotheses, batch_size=config.batch_size
        )
        policy.train()
        return {"loss": loss}

    def save(current: TrainState) -> None:
        save_checkpoint(
            config.output_dir,
            config=config,
            state=current,
            model=weights,
            optimizer=optimizer,
            scheduler=scheduler,
            extra={"data_fingerprint": fingerprint, "policy_config": asdict(policy_config)},
        )

    # 4. the loop: progress bar, validation, checkpoints; one process validates and writes, the others only train
    main = accelerator.is_main_process
    state = run_training_loop(
        train_step,
        total_steps=total_steps,
        state=state,
        config=config,
        evaluate=evaluate if main else None,
        save=save if config.output_dir and main else None,
        desc="policy SFT",
    )
    policy.eval()
    if config.output_dir and main:
        policy.save(Path(config.output_dir) / POLICY_FOLDER, extra={"training": config.to_dict(), "step": state.step})
    accelerator.wait_for_everyone()  # every process returns once the policy folder is written
    return policy, state.history
