"""Stage 2: PPO fine-tuning of the prompt policy against the real reward.

Why the loop lives here: TRL 1.16 has no PPOTrainer (removed in 1.13), and its GRPO/RLOO trainers take only text
prompts as the policy's input, while e2p's policy is conditioned on a vector. So this module owns a compact PPO loop
on torch; what libraries do provide is used: TRL's memory-light log-softmax and entropy (inside
`PromptPolicy.token_logprobs`), its `create_reference_model` and `disable_dropout_in_model`, transformers'
schedulers, peft's LoRA, and `e2p_lib.train.loop`'s loop, checkpoints and resume (shared with Stage 1).

One PPO step, for `targets_per_step` target embeddings:
  1. rollout: sample `samples_per_target` (K) prompts per target from the policy (temperature, top-p);
  2. score: log-probs of the sampled tokens under the policy (old: reused from the rollout's own logits) and the
     frozen SFT reference;
  3. reward: the real reward (`e2p_lib.train.rewards.AnswerCosineReward`: environment answer -> embedding -> cosine),
     plus optional shaping (forward-model cosine, degeneracy penalty), minus `kl_coef` x the sequence's KL to the
     reference (k1 estimator, summed over tokens, as in Ziegler et al. 2019 and TRL's RLOO);
  4. advantages: the reward minus a baseline, no value network (2 cores): `baseline="group"`, the mean of the same
     target's K samples (GRPO), whitened over the batch; `baseline="hypothesis"`, the larger of the best hypothesis's
     real cosine (known for free from the answer index) and the mean of the target's other samples (RLOO's
     leave-one-out), so writing the best hypothesis back earns nothing and an edit that loses to it is penalised (a
     plain group mean would cancel any per-target constant); the shaping terms (KL, penalties) count against the
     group's own mean; scaled by the batch's spread, not centred;
  5. update: `ppo_epochs` passes of the clipped surrogate objective over minibatches, gradient clipping;
  6. adapt `kl_coef` towards `kl_target` when `adaptive_kl` (Ziegler et al.'s proportional controller).

With validation targets, the policy kept is the validated step with the best greedy reward, not the last step.

Logged per step: real reward mean/std, shaped reward, KL, entropy, clip fraction, approximate policy KL, prompt
length, and the time split (policy generation, scoring, environment, embedding, update).

    >>> policy = PromptPolicy.load("data/models/policy-sft/policy", trainable=True)
    >>> reward = AnswerCosineReward(make_lm("local"), make_embedder("local"))
    >>> config = PPOConfig(output_dir="data/models/policy-rl", max_steps=30)
    >>> policy, history = train_ppo(policy, reward, train_vectors, config, val_vectors=val_vectors[:16])
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from e2p_lib.config import POLICY_FOLDER
from e2p_lib.models.policy import Hypotheses, PromptPolicy
from e2p_lib.train.loop import (
    LossHistory,
    TrainingConfig,
    TrainState,
    batch_indices,
    check_resumable,
    data_fingerprint,
    global_mean,
    global_means,
    load_checkpoint,
    local_rows,
    prepare_for_processes,
    restore_training_state,
    run_training_loop,
    save_checkpoint,
    seed_everything,
)
from e2p_lib.train.rewards import RewardResult, degeneracy
from e2p_lib.train.sft import TrainableWeights, policy_optimizer

logger = logging.getLogger(__name__)
BASELINES = ("group", "hypothesis")


@dataclass
class PPOConfig(TrainingConfig):
    """How PPO runs. Inherits `TrainingConfig`; `max_steps` counts PPO steps (rollout + update).

    Parameters that control rollouts:
        targets_per_step (`int`, defaults to `4`): target embeddings per PPO step.
        samples_per_target (`int`, defaults to `4`): K prompts sampled per target; the group baseline needs >= 2.
        temperature (`float`, defaults to `1.0`), top_p (`float`, defaults to `1.0`): sampling of prompts.
        max_prompt_tokens (`int` or `None`, defaults to `None`): prompt length cap (None: the policy's own).
        merge_lora_for_rollout (`bool`, defaults to `True`): sample through LoRA-merged weights (fewer matmuls;
            the same distribution up to float rounding). If `False`, through the adapters as in training.
        reuse_rollout_logprobs (`bool`, defaults to `True`): take the old log-probs from the logits the rollout
            computed, instead of a second forward pass over the rollout (the same values up to float rounding).

    Parameters that control the credit:
        baseline (`str`, defaults to `"group"`): what a sample's reward is measured against: "group" (the mean of
            its target's samples) or "hypothesis" (the best of: the best hypothesis's real cosine, and the mean of
            the target's other samples). "hypothesis" needs the rows' hypotheses.
        copy_penalty (`float`, defaults to `0.0`): weight of the sample's copied share (`e2p_lib.evaluate.quality`)
            against the rows' references, subtracted from the reward so that pasting stored text never pays. If
            `0.0`, no references are needed.

    Parameters that control the reward:
        surrogate_weight (`float`, defaults to `0.0`): weight of the forward model's predicted cosine. If `0.0`,
            the forward model is not called.
        degeneracy_weight (`float`, defaults to `0.1`): weight of the degenerate-prompt penalty. If `0.0`, off.
        kl_coef (`float`, defaults to `0.05`): weight of the KL to the SFT reference in the reward.
        adaptive_kl (`bool`, defaults to `False`): adapt `kl_coef` so the KL tracks `kl_target`.
        kl_target (`float`, defaults to `4.0`), kl_horizon (`int`, defaults to `1000`): the controller's target
            (nats per prompt) and horizon (samples).

    Parameters that control the update:
        ppo_epochs (`int`, defaults to `2`): passes over each rollout batch.
        batch_size (`int`, defaults to `8`): prompts per gradient step (minibatch).
        clip_range (`float`, defaults to `0.2`): PPO's epsilon.
        learning_rate (`float`, defaults to `5e-5`), mapper_learning_rate (`float`, defaults to `1e-4`).
        whiten_advantages (`bool`, defaults to `True`).
        trim_minibatches (`bool`, defaults to `True`): feed each minibatch only up to its longest prompt, not the
            rollout's (causal attention: the cut padding never influenced a kept position).
        share_contexts (`bool`, defaults to `True`): read each target's context once for all its samples in a
            scoring pass or minibatch (`PromptPolicy.token_logprobs(contexts=...)`; the same log-probabilities and
            gradients up to float rounding, LoRA dropout drawn once per context). If `False`, once per sample.
    """

    max_steps: int | None = 20
    learning_rate: float = 5e-5
    mapper_learning_rate: float = 1e-4
    lr_scheduler: str = "constant"
    batch_size: int = 8
    eval_every_steps: int = 5
    save_every_steps: int = 5
    targets_per_step: int = 4
    samples_per_target: int = 4
    temperature: float = 1.0
    top_p: float = 1.0
    max_prompt_tokens: int | None = None
    merge_lora_for_rollout: bool = True
    reuse_rollout_logprobs: bool = True
    surrogate_weight: float = 0.0
    degeneracy_weight: float = 0.1
    kl_coef: float = 0.05
    adaptive_kl: bool = False
    kl_target: float = 4.0
    kl_horizon: int = 1000
    baseline: str = "group"
    copy_penalty: float = 0.0
    ppo_epochs: int = 2
    clip_range: float = 0.2
    whiten_advantages: bool = True
    trim_minibatches: bool = True
    share_contexts: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_steps is None:
            raise ValueError("PPOConfig needs max_steps (the number of PPO steps); num_epochs does not apply.")
        if self.samples_per_target < 2:
            raise ValueError(
                f"samples_per_target={self.samples_per_target}: the group baseline needs at least 2 samples per target."
            )
        for name in ("targets_per_step", "ppo_epochs", "kl_horizon"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}.")
        if not self.temperature > 0:
            raise ValueError(f"temperature={self.temperature}: PPO samples prompts, so it must be > 0.")
        if not 0 < self.top_p <= 1 or not 0 < self.clip_range < 1:
            raise ValueError(f"top_p ({self.top_p}) must be in (0, 1] and clip_range ({self.clip_range}) in (0, 1).")
        if self.baseline not in BASELINES:
            raise ValueError(f"baseline={self.baseline!r}; choose one of {BASELINES}.")
        for name in (
            "surrogate_weight",
            "degeneracy_weight",
            "kl_coef",
            "mapper_learning_rate",
            "kl_target",
            "copy_penalty",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")

    @property
    def rollout_size(self) -> int:
        return self.targets_per_step * self.samples_per_target


# --- small pure helpers (testable without a model) ---------------------------------------------------------------


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    mask = mask.to(values.dtype)
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def group_advantages(rewards: torch.Tensor, samples_per_target: int, whiten: bool = True) -> torch.Tensor:
    """Each reward minus the mean of its target's group (rows of one target are adjacent), then whitened."""
    if rewards.numel() % samples_per_target:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {samples_per_target}.")
    grouped = rewards.view(-1, samples_per_target)
    advantages = (grouped - grouped.mean(dim=1, keepdim=True)).reshape(-1)
    if whiten and advantages.numel() > 1:
        advantages = advantages / (advantages.std() + 1e-8)
    return advantages


def best_hypothesis(hypotheses) -> float:
    """The real cosine of the best known prompt a row is shown (-1 when none): what writing it back scores."""
    return max((h.cosine for h in hypotheses if h.kind == "prompt"), default=-1.0)


def relative_advantages(
    rewards: torch.Tensor, floors: torch.Tensor, samples_per_target: int, scale: bool = True
) -> torch.Tensor:
    """Each reward minus the larger of its target's floor (the best hypothesis's real cosine) and the mean of the
    target's other samples (leave-one-out), then divided by the batch's spread (not centred: a sample that only
    matches the floor keeps advantage 0). `floors` has one value per target."""
    if rewards.numel() % samples_per_target or rewards.numel() // samples_per_target != floors.numel():
        raise ValueError(
            f"{rewards.numel()} rewards in groups of {samples_per_target} need {rewards.numel() // samples_per_target}"
            f" floors; got {floors.numel()}."
        )
    if samples_per_target < 2:
        raise ValueError(
            f"samples_per_target={samples_per_target}: the leave-one-out baseline needs at least 2 samples per target."
        )
    grouped = rewards.view(-1, samples_per_target)
    others = (grouped.sum(dim=1, keepdim=True) - grouped) / (samples_per_target - 1)
    advantages = (grouped - torch.maximum(others, floors.view(-1, 1).to(grouped.dtype))).reshape(-1)
    if scale and advantages.numel() > 1:
        advantages = advantages / (advantages.std() + 1e-8)
    return advantages


def clipped_surrogate_loss(
    new_logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO's clipped objective over tokens (B, T); `advantages` (B,) apply to every token of a prompt."""
    ratio = torch.exp(new_logprobs - old_logprobs)
    adv = advantages.unsqueeze(1)
    losses = torch.max(-adv * ratio, -adv * ratio.clamp(1 - clip_range, 1 + clip_range))
    loss = masked_mean(losses, mask)
    with torch.no_grad():
        stats = {
            "clip_fraction": float(masked_mean(((ratio - 1).abs() > clip_range).float(), mask)),
            "approx_kl": float(masked_mean(0.5 * (new_logprobs - old_logprobs) ** 2, mask)),
        }
    return loss, stats


def adapt_kl_coef(kl_coef: float, observed_kl: float, target: float, samples: int, horizon: int) -> float:
    """Ziegler et al. (2019), eq. 2: move the coefficient by the clipped proportional error of the KL."""
    error = float(np.clip(observed_kl / target - 1, -0.2, 0.2))
    return kl_coef * (1 + error * samples / horizon)


# --- the loop ----------------------------------------------------------------------------------------------------


RewardFn = Callable[[Sequence[str], np.ndarray], "RewardResult | np.ndarray"]


def train_ppo(
    policy: PromptPolicy,
    reward_fn: RewardFn,
    train_vectors: np.ndarray,
    config: PPOConfig | None = None,
    *,
    reference: PromptPolicy | None = None,
    val_vectors: np.ndarray | None = None,
    forward_model=None,
    train_hypotheses: Hypotheses = None,
    val_hypotheses: Hypotheses = None,
    train_references: Sequence | None = None,
) -> tuple[PromptPolicy, LossHistory]:
    """Fine-tune `policy` with PPO; return it with its history (see the module docstring).

    With `val_vectors`, the policy returned (and saved to `<output_dir>/policy`, which 05 and `load_inverter` read)
    holds the weights of the validation with the best reward, not the last step's: PPO's validation reward can fall
    again in later steps (docs/experiments.md#ppo-best-step). `checkpoint.pt` keeps the last step's weights to resume
    from and that choice (a second copy of the trainable weights: small for LoRA, the whole LM for
    `finetune="full"`), so a resumed or finished run keeps it too, as long as it validates on the same `val_vectors`.

    Args:
        policy: the SFT policy, loaded trainable (`PromptPolicy.load(folder, trainable=True)`).
        reward_fn: `(prompts, targets) -> RewardResult or array` of real rewards, e.g. `AnswerCosineReward`.
        train_vectors: (n, d) target embeddings to draw from.
        reference: the frozen KL anchor; None copies `policy` as it is now (the SFT weights).
        val_vectors: fixed targets scored with greedy prompts at each validation (None: no validation).
        forward_model: needed when `config.surrogate_weight > 0`.
        train_hypotheses / val_hypotheses: one list of `Hypothesis` per row of train_vectors / val_vectors, for a
            policy that reads them (`PolicyConfig.hypotheses`): every rollout, log-prob and validation prompt is
            conditioned on its row's list, as in SFT.
        train_references: one `e2p_lib.evaluate.quality.References` per row of train_vectors (the stored outputs
            it could copy from), needed when `config.copy_penalty > 0`.
    """
    config = config or PPOConfig()
    train_vectors = np.asarray(train_vectors, dtype=np.float32)
    if train_vectors.ndim != 2 or train_vectors.shape[1] != policy.config.embedding_dim:
        raise ValueError(f"train_vectors must be (n, {policy.config.embedding_dim}); got {train_vectors.shape}.")
    if config.surrogate_weight > 0 and forward_model is None:
        raise ValueError("surrogate_weight > 0 needs a forward_model (or set surrogate_weight=0).")
    if config.baseline == "hypothesis" and train_hypotheses is None:
        raise ValueError(
            'baseline="hypothesis" measures samples against each row\'s best hypothesis: pass train_hypotheses.'
        )
    if config.copy_penalty > 0 and (train_references is None or len(train_references) != len(train_vectors)):
        raise ValueError(
            f"copy_penalty={config.copy_penalty} needs train_references, one per row of train_vectors "
            f"({len(train_vectors)}); got {None if train_references is None else len(train_references)}."
        )
    for name, given, vectors in (
        ("train_hypotheses", train_hypotheses, train_vectors),
        ("val_hypotheses", val_hypotheses, val_vectors),
    ):
        if given is not None and (vectors is None or len(given) != len(vectors)):
            raise ValueError(
                f"{name} needs one list per target row; got {len(given)} for "
                f"{0 if vectors is None else len(vectors)} rows."
            )
    from trl.experimental.utils import create_reference_model
    from trl.trainer.utils import disable_dropout_in_model

    seed_everything(config.seed)
    fingerprint = data_fingerprint([], train_vectors)
    checkpoint = load_checkpoint(config.output_dir) if config.output_dir else None
    if checkpoint is not None:
        check_resumable(checkpoint, config, fingerprint)

    # 1. models: the reference is the policy as given (before any resumed weights), dropout off so ratios start at 1
    reference = reference if reference is not None else create_reference_model(policy)
    for model in (policy, reference):
        disable_dropout_in_model(model)
    reference.eval()
    optimizer, scheduler, trainable = policy_optimizer(policy, config, config.max_steps)
    weights = TrainableWeights(policy)
    state, kl_coef = TrainState(), config.kl_coef
    # the validated checkpoint to keep: its step, validation reward and trainable weights (saved in checkpoint.pt,
    # so a resumed or finished run keeps the same one), and which validation set measured it
    val_fingerprint = None if val_vectors is None else data_fingerprint([], val_vectors)
    best: dict = {"step": None, "val_reward": -np.inf, "weights": None, "val_fingerprint": val_fingerprint}
    if checkpoint is not None:
        state = restore_training_state(checkpoint, model=weights, optimizer=optimizer, scheduler=scheduler)
        kl_coef = float(checkpoint["extra"]["kl_coef"])
        kept_before = checkpoint["extra"].get("best")
        if kept_before is not None and kept_before["val_fingerprint"] == val_fingerprint:
            best.update(kept_before)
        elif any(record["split"] == "val" for record in checkpoint["history"]):
            logger.warning(
                "%s: its validations were %s; only this run's validations choose the policy kept (delete the "
                "folder to train and choose again from the start).",
                config.output_dir,
                "on other targets" if kept_before is not None else "saved before checkpoints kept the best one",
            )
    max_new_tokens = config.max_prompt_tokens or policy.config.max_prompt_tokens
    # several processes (`accelerate launch`): each rolls out an equal share of every step's targets (whole groups,
    # so the baseline stays local) and updates on its share of each minibatch; gradients are averaged
    accelerator, wrapped = prepare_for_processes(policy, method="token_logprobs")
    world = accelerator.num_processes
    if config.targets_per_step % world or config.batch_size % world:
        raise ValueError(
            f"targets_per_step ({config.targets_per_step}) and batch_size ({config.batch_size}) must be "
            f"divisible by the {world} processes: each rolls out and updates on an equal share."
        )

    def train_step(step: int) -> dict[str, float]:
        nonlocal kl_coef
        seconds = {}
        # 1. rollout: K sampled prompts per target, rows of one target adjacent
        started = time.perf_counter()
        rows, _ = local_rows(batch_indices(len(train_vectors), config.targets_per_step, config.seed, step), accelerator)
        targets = np.repeat(train_vectors[rows], config.samples_per_target, axis=0)
        shown = None if train_hypotheses is None else [train_hypotheses[r] for r in rows]
        per_sample = None if shown is None else [h for h in shown for _ in range(config.samples_per_target)]
        with policy.merged_lora() if config.merge_lora_for_rollout else contextlib.nullcontext():
            rollout = policy.generate_ids(
                train_vectors[rows],
                temperature=config.temperature,
                top_p=config.top_p,
                num_return_sequences=config.samples_per_target,
                max_new_tokens=max_new_tokens,
                seed=config.seed * 1_000_003 + step + 7_919 * accelerator.process_index,  # each its own draws
                hypotheses=shown,
                return_logprobs=config.reuse_rollout_logprobs,
            )
        ids, rollout_logprobs = rollout if config.reuse_rollout_logprobs else (rollout, None)

        def reading(samples: np.ndarray):
            """What `token_logprobs` reads for these samples: (vectors, hypotheses, contexts), each distinct target
            once with `share_contexts`, else one row per sample."""
            groups = samples // config.samples_per_target  # sample -> its target's place in `rows`
            if not config.share_contexts:
                return targets[samples], None if per_sample is None else [per_sample[j] for j in samples], None
            distinct, contexts = np.unique(groups, return_inverse=True)
            return train_vectors[rows[distinct]], None if shown is None else [shown[g] for g in distinct], contexts

        mask = policy.completion_mask(ids)
        prompts = policy.decode(ids)
        seconds["policy_generation"] = time.perf_counter() - started

        # 2. log-probs of what was sampled, under the policy (old) and the reference; zero after each prompt's end
        started = time.perf_counter()
        vectors, shown_rows, contexts = reading(np.arange(len(ids)))
        with torch.no_grad():
            old_logprobs = rollout_logprobs
            if old_logprobs is None:
                policy.eval()
                old_logprobs = policy.token_logprobs(vectors, ids, mask, hypotheses=shown_rows, contexts=contexts)
                policy.train()
            old_logprobs = old_logprobs.masked_fill(mask == 0, 0.0)
            ref_logprobs = reference.token_logprobs(vectors, ids, mask, hypotheses=shown_rows, contexts=contexts)
        seconds["scoring"] = time.perf_counter() - started
        kl_per_prompt = ((old_logprobs - ref_logprobs) * mask).sum(1)

        # 3. rewards: the real one, shaping, and the KL penalty
        result = reward_fn(prompts, targets)
        if not isinstance(result, RewardResult):
            result = RewardResult(np.asarray(result, dtype=np.float32), [], {})
        seconds.update(result.seconds)
        real = torch.as_tensor(result.rewards, dtype=torch.float32, device=policy.device)
        shaped = real.clone()
        metrics: dict[str, float] = {}
        if config.surrogate_weight > 0:
            surrogate = torch.as_tensor(
                forward_model.predict_cosine([p or "(empty)" for p in prompts], targets),
                dtype=torch.float32,
                device=policy.device,
            )
            shaped += config.surrogate_weight * surrogate
            metrics["surrogate_cosine"] = float(surrogate.mean())
        if config.degeneracy_weight > 0:
            ended = (ids == policy.end_id).any(dim=1).tolist()
            penalty = torch.as_tensor(degeneracy(prompts, mask.sum(1).tolist(), ended), device=policy.device)
            shaped -= config.degeneracy_weight * penalty
            metrics["degeneracy"] = float(penalty.mean())
        if config.copy_penalty > 0:
            shares = [
                train_references[r].copied_share(p) for r, p in zip(np.repeat(rows, config.samples_per_target), prompts)
            ]
            copied = torch.as_tensor(shares, dtype=torch.float32, device=policy.device)
            shaped -= config.copy_penalty * copied
            metrics["copied_share"] = float(copied.mean())
        total = shaped - kl_coef * kl_per_prompt

        # 4. advantages: against the target's group, or against what its best hypothesis already reaches
        if config.baseline == "hypothesis":
            # the real cosine against the floor (same units); the shaping (KL, penalties) against the group's own
            floors = torch.tensor([best_hypothesis(train_hypotheses[r]) for r in rows], device=policy.device)
            advantages = relative_advantages(real, floors, config.samples_per_target, scale=False)
            advantages = advantages + group_advantages(total - real, config.samples_per_target, whiten=False)
            if config.whiten_advantages and advantages.numel() > 1:
                advantages = advantages / (advantages.std() + 1e-8)
            metrics["beat_hypothesis"] = float(
                (real.view(-1, config.samples_per_target) > floors[:, None]).float().mean()
            )
        else:
            advantages = group_advantages(total, config.samples_per_target, config.whiten_advantages)

        # 5. PPO epochs over minibatches
        started = time.perf_counter()
        update_stats: list[dict[str, float]] = []
        entropies = []
        for epoch in range(config.ppo_epochs):
            order = torch.randperm(len(prompts), generator=torch.Generator().manual_seed(step * 97 + epoch))
            for start in range(0, len(prompts), config.batch_size // world):
                mb = order[start : start + config.batch_size // world].to(policy.device)
                picked = mb.cpu().numpy()
                width = int(mask[mb].sum(1).max()) if config.trim_minibatches else ids.shape[1]
                mb_mask = mask[mb, :width]
                vectors, shown_rows, contexts = reading(picked)
                new_logprobs, entropy = wrapped(
                    vectors, ids[mb, :width], mb_mask, with_entropy=True, hypotheses=shown_rows, contexts=contexts
                )
                loss, stats = clipped_surrogate_loss(
                    new_logprobs, old_logprobs[mb, :width], advantages[mb], mb_mask, config.clip_range
                )
                optimizer.zero_grad(set_to_none=True)
                accelerator.backward(loss)
                if config.max_grad_norm is not None:
                    accelerator.clip_grad_norm_(trainable, config.max_grad_norm)
                optimizer.step()
                update_stats.append({"policy_loss": float(loss.detach()), **stats})
                entropies.append(float(masked_mean(entropy, mb_mask)))
        scheduler.step()
        seconds["update"] = time.perf_counter() - started

        # 6. the KL controller
        everyone = accelerator.gather(real)  # every process's real rewards
        observed_kl = global_mean(accelerator, kl_per_prompt.mean())  # every process adapts kl_coef alike
        if config.adaptive_kl:
            kl_coef = adapt_kl_coef(kl_coef, observed_kl, config.kl_target, len(prompts), config.kl_horizon)
        metrics.update(
            {
                "reward": float(everyone.mean()),
                "reward_std": float(everyone.std()),
                "shaped_reward": float(shaped.mean()),
                "kl": observed_kl,
                "kl_coef": kl_coef,
                "entropy": float(np.mean(entropies)),
                "prompt_tokens": float(mask.sum(1).float().mean()),
                **{k: float(np.mean([s[k] for s in update_stats])) for k in update_stats[0]},
                **{f"seconds_{k}": v for k, v in seconds.items()},
            }
        )
        return global_means(accelerator, metrics)  # the whole rollout's, the same on every process

    def evaluate() -> dict[str, float]:
        prompts = policy.generate(
            val_vectors, temperature=0.0, max_new_tokens=max_new_tokens, hypotheses=val_hypotheses
        )
        result = reward_fn(prompts, np.asarray(val_vectors, dtype=np.float32))
        rewards = result.rewards if isinstance(result, RewardResult) else np.asarray(result)
        reward = float(np.mean(rewards))
        # strictly: of equal checkpoints the earliest; `state` is the one the loop advances, so its step is this one
        if reward > best["val_reward"]:
            best.update(step=state.step, val_reward=reward, weights=weights.state_dict())
        return {"reward": reward}

    def save(current: TrainState) -> None:
        save_checkpoint(
            config.output_dir,
            config=config,
            state=current,
            model=weights,
            optimizer=optimizer,
            scheduler=scheduler,
            extra={"data_fingerprint": fingerprint, "kl_coef": kl_coef, "best": best},
        )

    state = run_training_loop(
        train_step,
        total_steps=config.max_steps,
        state=state,
        config=config,
        evaluate=evaluate if val_vectors is not None and accelerator.is_main_process else None,
        save=save if config.output_dir and accelerator.is_main_process else None,
        desc="PPO",
    )
    policy.eval()
    if accelerator.num_processes > 1:  # only the main process validates: every process returns its choice
        from accelerate.utils import broadcast_object_list

        best = broadcast_object_list([best])[0]
    kept = {"step": state.step}
    if best["weights"] is not None:  # the validated checkpoint with the best reward, not the last step's weights
        weights.load_state_dict(best["weights"])
        kept = {"step": best["step"], "val_reward": best["val_reward"], "last_step": state.step}
        logger.info("PPO keeps step %d of %d (validation reward %.4f)", best["step"], state.step, best["val_reward"])
    if config.output_dir and accelerator.is_main_process:
        policy.save(Path(config.output_dir) / POLICY_FOLDER, extra={"ppo": config.to_dict(), **kept})
    accelerator.wait_for_everyone()  # every process returns once the policy folder is written
    return policy, state.history
