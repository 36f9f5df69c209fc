"""PPO: the pure helpers, learning a synthetic reward on a tiny policy, resume, and one real step.

The tiny policy is SmolLM2's architecture at 2 layers of width 32 with random weights (tests/tiny.py); the real
step uses the real SmolLM2 environment and MiniLM embedder.
"""

from __future__ import annotations

import contextlib
import copy

import numpy as np
import pytest
import torch
from tiny import tiny_policy, unit_vectors

from e2p_lib.train.rl import (
    PPOConfig,
    adapt_kl_coef,
    clipped_surrogate_loss,
    group_advantages,
    masked_mean,
    relative_advantages,
    train_ppo,
)


def red_reward(prompts, targets):
    """A reward the policy can learn in a few steps: the share of its words that are "red" (rather than "blue")."""
    return np.array([p.split().count("red") / max(len(p.split()), 1) for p in prompts], dtype=np.float32)


@pytest.fixture(scope="module")
def red_blue_policy(smollm2_tokenizer):
    """A tiny policy taught by SFT to write four words, each "red" or "blue" at random: a 50/50 starting point.

    A randomly initialised model spreads its probability over 49k tokens, where no reward is learnable in a few
    steps; after this SFT it writes only those two words, so PPO's effect on their balance shows at once.
    """
    from e2p_lib.train.sft import PolicyTrainingConfig, train_policy

    rng = np.random.default_rng(0)
    prompts = [" ".join(rng.choice(["red", "blue"], 4)) for _ in range(32)]
    policy = tiny_policy(smollm2_tokenizer)
    config = PolicyTrainingConfig(
        batch_size=16,
        max_steps=40,
        learning_rate=1e-2,
        mapper_learning_rate=1e-2,
        lr_scheduler="constant",
        warmup_fraction=0.0,
        eval_every_steps=0,
        show_progress=False,
        val_rows=4,
    )
    train_policy(unit_vectors(32, seed=1), prompts, unit_vectors(4), prompts[:4], config, policy=policy)
    return policy


def tiny_config(**overrides) -> PPOConfig:
    # Shrunk for 2 cores: 4 targets x 4 samples of at most 6 tokens, one PPO epoch of 2 minibatches per step.
    values = dict(
        max_steps=12,
        targets_per_step=4,
        samples_per_target=4,
        batch_size=8,
        ppo_epochs=1,
        learning_rate=3e-3,
        mapper_learning_rate=3e-3,
        max_prompt_tokens=6,
        kl_coef=0.01,
        degeneracy_weight=0.0,
        eval_every_steps=0,
        save_every_steps=0,
        show_progress=False,
    )
    return PPOConfig(**{**values, **overrides})


def test_group_advantages_center_each_target_and_whiten():
    rewards = torch.tensor([1.0, 2.0, 3.0, 10.0, 10.0, 16.0])
    adv = group_advantages(rewards, samples_per_target=3, whiten=False)
    assert torch.allclose(adv, torch.tensor([-1.0, 0.0, 1.0, -2.0, -2.0, 4.0]))
    assert torch.allclose(group_advantages(rewards, 3).std(), torch.tensor(1.0))
    with pytest.raises(ValueError, match="groups of 4"):
        group_advantages(rewards, 4)


def test_relative_credit_gives_the_best_hypothesis_written_back_nothing():
    """Group of 2 per target. Target 1: both samples equal the best hypothesis's cosine 0.5 (written back): zero.
    Target 2: one matches the hypothesis (0.5), one loses (0.3): the match gets nothing, the loss is penalised.
    Target 3: both beat the floor: the better one gains against the other (leave-one-out)."""
    rewards = torch.tensor([0.5, 0.5, 0.5, 0.3, 0.8, 0.6])
    floors = torch.tensor([0.5, 0.5, 0.5])
    adv = relative_advantages(rewards, floors, samples_per_target=2, scale=False)
    assert torch.allclose(adv, torch.tensor([0.0, 0.0, 0.0, -0.2, 0.2, -0.2]))
    # a plain group mean cancels the per-target constant: it cannot tell losing to the hypothesis from matching it
    assert torch.allclose(group_advantages(torch.tensor([0.3, 0.3]), 2, whiten=False), torch.zeros(2))
    assert torch.allclose(
        relative_advantages(torch.tensor([0.3, 0.3]), torch.tensor([0.5]), 2, scale=False), torch.tensor([-0.2, -0.2])
    )
    scaled = relative_advantages(rewards, floors, samples_per_target=2)
    assert scaled[0] == 0 and scaled[4] > 0 > scaled[3]  # scaled, never centred: a match stays at zero
    with pytest.raises(ValueError, match="need 3 floors"):
        relative_advantages(rewards, floors[:2], samples_per_target=2)


def test_the_hypothesis_baseline_learns_what_beats_the_hypothesis(red_blue_policy):
    """Every row's best hypothesis reaches 0.5 red share: only samples redder than that earn credit, and the policy
    learns to write them."""
    from e2p_lib.models.policy import Hypothesis

    policy = copy.deepcopy(red_blue_policy)
    targets = unit_vectors(16)
    hypotheses = [[Hypothesis("red blue", 0.5)] for _ in range(16)]
    _, history = train_ppo(policy, red_reward, targets, tiny_config(baseline="hypothesis"), train_hypotheses=hypotheses)
    frame = history.to_frame().query("split == 'train'").pivot(index="step", columns="metric", values="value")
    assert frame["reward"].iloc[-3:].mean() > frame["reward"].iloc[:3].mean() + 0.15
    assert frame["beat_hypothesis"].iloc[-3:].mean() > frame["beat_hypothesis"].iloc[:3].mean()
    with pytest.raises(ValueError, match="pass train_hypotheses"):
        train_ppo(policy, red_reward, targets, tiny_config(baseline="hypothesis", max_steps=1))
    with pytest.raises(ValueError, match="baseline='best'"):
        PPOConfig(baseline="best")


def test_the_copy_penalty_makes_pasting_lose(red_blue_policy):
    """The reward pays for "red"; the stored text the rows could copy is all "red" runs (copying counted on word
    pairs here, n=2, since the tiny policy writes four words). Without the penalty the policy learns to paste red
    runs; with it, pasting loses and the red share does not climb."""
    from e2p_lib.evaluate.quality import References

    targets = unit_vectors(16)
    references = [References({"row": "red red red red"}, n=2) for _ in range(16)]
    finals = {}
    for weight in (0.0, 2.0):
        policy = copy.deepcopy(red_blue_policy)
        _, history = train_ppo(
            policy, red_reward, targets, tiny_config(copy_penalty=weight), train_references=references
        )
        frame = history.to_frame().query("split == 'train'").pivot(index="step", columns="metric", values="value")
        finals[weight] = frame["reward"].iloc[-3:].mean()
        if weight:
            assert "copied_share" in frame and frame["copied_share"].iloc[-3:].mean() < 0.5
    assert finals[0.0] > finals[2.0] + 0.1, finals
    with pytest.raises(ValueError, match="needs train_references"):
        train_ppo(policy, red_reward, targets, tiny_config(copy_penalty=1.0, max_steps=1))


def test_clipped_surrogate_is_minus_advantage_at_ratio_one_and_clips_beyond():
    old = torch.zeros(2, 3)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    adv = torch.tensor([1.0, -1.0])
    loss, stats = clipped_surrogate_loss(old.clone(), old, adv, mask, clip_range=0.2)
    assert torch.isclose(loss, torch.tensor((-1 * 2 + 1 * 3) / 5)) and stats["clip_fraction"] == 0
    far = torch.full((2, 3), 1.0)  # ratio e: beyond 1.2, so positive advantages stop pulling
    _, stats = clipped_surrogate_loss(far, old, adv, mask, clip_range=0.2)
    assert stats["clip_fraction"] == 1.0 and stats["approx_kl"] == pytest.approx(0.5)
    assert masked_mean(torch.tensor([[1.0, 5.0]]), torch.tensor([[1, 0]])) == 1.0


def test_adaptive_kl_moves_towards_its_target():
    assert adapt_kl_coef(0.1, observed_kl=10.0, target=4.0, samples=100, horizon=1000) > 0.1
    assert adapt_kl_coef(0.1, observed_kl=1.0, target=4.0, samples=100, horizon=1000) < 0.1


def test_bad_ppo_config_fails_before_any_model_loads():
    with pytest.raises(ValueError, match="at least 2 samples"):
        PPOConfig(samples_per_target=1)
    with pytest.raises(ValueError, match="temperature=0"):
        PPOConfig(temperature=0)
    with pytest.raises(ValueError, match="needs max_steps"):
        PPOConfig(max_steps=None)


def test_ppo_raises_a_learnable_reward_while_kl_stays_bounded(red_blue_policy):
    policy = copy.deepcopy(red_blue_policy)
    targets = unit_vectors(16)
    _, history = train_ppo(policy, red_reward, targets, tiny_config())
    frame = history.to_frame().query("split == 'train'").pivot(index="step", columns="metric", values="value")
    first, last = frame["reward"].iloc[:3].mean(), frame["reward"].iloc[-3:].mean()
    assert 0.2 < first < 0.8 and last > first + 0.15, (first, last)
    assert frame["kl"].abs().max() < 20, "the policy stayed near its reference"
    for metric in (
        "entropy",
        "clip_fraction",
        "approx_kl",
        "prompt_tokens",
        "seconds_policy_generation",
        "seconds_update",
        "reward_std",
    ):
        assert np.isfinite(frame[metric]).all(), metric


def test_resume_continues_the_same_run(red_blue_policy, tmp_path):
    targets = unit_vectors(16)
    straight = copy.deepcopy(red_blue_policy)
    train_ppo(straight, red_reward, targets, tiny_config(max_steps=4))

    interrupted = copy.deepcopy(red_blue_policy)
    reference = copy.deepcopy(red_blue_policy)
    config = dict(output_dir=str(tmp_path), save_every_steps=1)
    train_ppo(interrupted, red_reward, targets, tiny_config(max_steps=2, **config), reference=reference)
    resumed = copy.deepcopy(red_blue_policy)  # a fresh process reloads the SFT policy, then resumes
    _, history = train_ppo(resumed, red_reward, targets, tiny_config(max_steps=4, **config), reference=reference)
    assert sorted(set(history.to_frame()["step"])) == [1, 2, 3, 4]
    for (name, a), b in zip(straight.named_parameters(), resumed.parameters()):
        assert torch.allclose(a, b, atol=1e-6), name
    assert (tmp_path / "policy" / "policy_config.json").is_file()


def test_the_policy_kept_is_the_best_validated_one_also_when_a_run_is_resumed_or_reopened(
    red_blue_policy, tmp_path, caplog
):
    """Validation rewards 0.2 / 0.9 / 0.4 at steps 2 / 4 / 6: step 4's weights are returned and saved as `policy`,
    checkpoint.pt keeps step 6's to resume from; reopening the finished run, or resuming one stopped at step 4,
    keeps step 4's; reopening with other validation targets cannot reuse a choice measured on these."""
    import json

    from e2p_lib.train.loop import load_checkpoint
    from e2p_lib.train.sft import TrainableWeights

    targets, val = unit_vectors(16), unit_vectors(3, seed=1)
    scripted = iter([0.2, 0.9, 0.4, 0.2, 0.9, 0.4])

    def reward(prompts, vectors):  # rollouts: the learnable reward; validations (3 targets): the script
        if len(prompts) == len(val):
            return np.full(len(prompts), next(scripted), np.float32)
        return red_reward(prompts, vectors)

    def trainable(policy):
        return TrainableWeights(policy).state_dict()

    def config(folder, steps=6):
        return tiny_config(max_steps=steps, eval_every_steps=2, save_every_steps=2, output_dir=str(folder))

    kept, history = train_ppo(copy.deepcopy(red_blue_policy), reward, targets, config(tmp_path), val_vectors=val)
    frame = history.to_frame().query("split == 'val'")
    assert frame["step"].tolist() == [2, 4, 6] and frame["value"].round(2).tolist() == [0.2, 0.9, 0.4]
    checkpoint = load_checkpoint(tmp_path)
    best = checkpoint["extra"]["best"]
    assert (best["step"], checkpoint["step"]) == (4, 6) and best["val_reward"] == pytest.approx(0.9)
    weights = trainable(kept)
    assert all(torch.equal(weights[n], w) for n, w in best["weights"].items())
    assert any(not torch.equal(best["weights"][n], w) for n, w in checkpoint["model"].items())  # step 6 differs
    saved = json.loads((tmp_path / "policy" / "policy_config.json").read_text())
    assert (saved["step"], saved["last_step"]) == (4, 6)
    saved_mapper = torch.load(tmp_path / "policy" / "mapper.pt", weights_only=True)
    assert all(torch.equal(saved_mapper[n.removeprefix("mapper.")], w) for n, w in weights.items() if "mapper." in n)
    # a finished run reopened: no step runs, no validation (the script would run dry), the same choice
    reopened, _ = train_ppo(copy.deepcopy(red_blue_policy), reward, targets, config(tmp_path), val_vectors=val)
    assert all(torch.equal(w, weights[n]) for n, w in trainable(reopened).items())
    # stopped at step 4, then resumed to 6: step 6's 0.4 does not displace step 4's 0.9
    stopped = tmp_path / "stopped"
    train_ppo(copy.deepcopy(red_blue_policy), reward, targets, config(stopped, steps=4), val_vectors=val)
    resumed, _ = train_ppo(copy.deepcopy(red_blue_policy), reward, targets, config(stopped), val_vectors=val)
    assert load_checkpoint(stopped)["extra"]["best"]["step"] == 4
    assert all(torch.allclose(w, weights[n], atol=1e-6) for n, w in trainable(resumed).items())  # step 4 again
    # other validation targets: the stored choice is not theirs, so the last step's weights come back, with a warning
    with caplog.at_level("WARNING", logger="e2p_lib.train.rl"):
        other, _ = train_ppo(copy.deepcopy(red_blue_policy), reward, targets, config(tmp_path), val_vectors=val[:2])
    assert "on other targets" in caplog.text
    assert all(torch.equal(w, checkpoint["model"][n]) for n, w in trainable(other).items())


@pytest.mark.slow
def test_one_real_step_with_smollm2_environment_and_minilm(smollm2_tokenizer, tmp_path):
    from e2p_lib.embed import LocalEmbedder
    from e2p_lib.lm import make_lm
    from e2p_lib.train.rewards import AnswerCosineReward

    embedder = LocalEmbedder(show_progress=False)
    targets = embedder.embed(["Paris is the capital of France.", "Water boils at 100 degrees Celsius."])
    reward = AnswerCosineReward(
        make_lm("local", cache_dir=tmp_path / "answers"),
        embedder,
        max_new_tokens=16,
        embedding_cache_dir=tmp_path / "embeddings",
    )
    policy = tiny_policy(smollm2_tokenizer, embedding_dim=384)
    _, history = train_ppo(
        policy,
        reward,
        targets,
        tiny_config(max_steps=1, targets_per_step=2, samples_per_target=2, degeneracy_weight=0.1),
        val_vectors=targets,
    )
    frame = history.to_frame()
    train = frame.query("split == 'train'").set_index("metric")["value"]
    assert -1 <= train["reward"] <= 1 and train["seconds_environment"] > 0 and train["seconds_embedding"] > 0
    assert frame.query("split == 'val'")["metric"].tolist() == ["reward"]


def test_ppo_with_hypotheses_learns_and_conditions_every_log_prob(red_blue_policy, tmp_path, monkeypatch):
    """With hypotheses, every rollout and log-prob sees its row's list; learning still happens; the best-validation
    policy is kept."""
    from e2p_lib.models.policy import Hypothesis

    policy = copy.deepcopy(red_blue_policy)
    policy.config.hypotheses = 1
    targets = unit_vectors(16)
    hypotheses = [[Hypothesis("red red" if i % 2 else "blue blue", 0.3)] for i in range(16)]
    seen = []
    original = type(policy).token_logprobs

    def recording(self, vectors, ids, mask=None, with_entropy=False, hypotheses=None, contexts=None):
        seen.append((hypotheses, contexts))
        return original(self, vectors, ids, mask, with_entropy=with_entropy, hypotheses=hypotheses, contexts=contexts)

    monkeypatch.setattr(type(policy), "token_logprobs", recording)
    _, history = train_ppo(
        policy,
        red_reward,
        targets,
        tiny_config(eval_every_steps=6, output_dir=str(tmp_path)),
        train_hypotheses=hypotheses,
        val_vectors=targets[:4],
        val_hypotheses=hypotheses[:4],
    )
    assert seen and all(h is not None for h, _ in seen)
    # a rollout of 16 samples (4 targets x 4) or a minibatch of 8, each target's context read once for its samples
    assert all(len(c) in (4 * 4, 8) and len(h) == len(set(c.tolist())) <= 4 for h, c in seen)
    frame = history.to_frame().query("split == 'train'").pivot(index="step", columns="metric", values="value")
    assert frame["reward"].iloc[-3:].mean() > frame["reward"].iloc[:3].mean() + 0.1
    assert (tmp_path / "policy" / "policy_config.json").is_file()
    with pytest.raises(ValueError, match="one list per target row"):
        train_ppo(policy, red_reward, targets, tiny_config(max_steps=1), train_hypotheses=hypotheses[:3])


def lora_policy(tokenizer, seed: int = 0):
    """A tiny LoRA policy whose adapters change its outputs (peft starts lora_B at zero, where merging is a no-op)."""
    policy = tiny_policy(tokenizer, finetune="lora", seed=seed)
    with torch.no_grad():
        for name, p in policy.lm.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    return policy


def test_rollout_logprobs_equal_recomputed_ones(smollm2_tokenizer):
    """The log-probs generation returns are what a teacher-forced pass computes, with and without hypotheses
    (left-padded contexts) and with merged adapters; only the masked tail may differ."""
    from e2p_lib.models.policy import Hypothesis

    policy = lora_policy(smollm2_tokenizer).eval()
    policy.config.hypotheses = 1
    targets = unit_vectors(3)
    for hypotheses in (None, [[], [Hypothesis("red blue red", 0.4)], [Hypothesis("blue", 0.9)]]):
        for merged in (False, True):
            with policy.merged_lora() if merged else contextlib.nullcontext():
                ids, rollout = policy.generate_ids(
                    targets,
                    temperature=1.0,
                    num_return_sequences=2,
                    seed=3,
                    hypotheses=hypotheses,
                    return_logprobs=True,
                )
            mask = policy.completion_mask(ids)
            per_sample = None if hypotheses is None else [h for h in hypotheses for _ in range(2)]
            with torch.no_grad():
                recomputed = policy.token_logprobs(np.repeat(targets, 2, axis=0), ids, mask, hypotheses=per_sample)
            assert ids.shape == rollout.shape and mask.sum() > ids.shape[0]
            torch.testing.assert_close(rollout * mask, recomputed * mask, atol=1e-4, rtol=1e-4)


def test_merged_lora_rollouts_equal_unmerged_and_leave_the_weights_as_they_were(smollm2_tokenizer):
    policy = lora_policy(smollm2_tokenizer).eval()
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    targets = unit_vectors(4)
    greedy = policy.generate_ids(targets)
    with torch.no_grad():
        unmerged = policy.token_logprobs(targets, greedy)
    with policy.merged_lora():
        assert any(torch.ne(before[k], v).any() for k, v in policy.state_dict().items() if "base_layer" in k)
        assert torch.equal(policy.generate_ids(targets), greedy)
        with torch.no_grad():
            torch.testing.assert_close(policy.token_logprobs(targets, greedy), unmerged, atol=1e-5, rtol=1e-5)
    after = policy.state_dict()
    for k, v in before.items():
        assert torch.equal(after[k], v), f"{k} changed: merging must not leave rounding behind"
    with torch.no_grad():
        assert torch.equal(policy.token_logprobs(targets, greedy), unmerged), "the adapters are active again"


def length_reward(prompts, targets):
    """A reward that differs between samples of a random policy, so every step updates the weights."""
    return np.array([(len(p) % 7) / 7 for p in prompts], dtype=np.float32)


def test_fast_ppo_step_updates_as_the_old_path_does(smollm2_tokenizer):
    """Merged rollouts and trimmed minibatches change the time a step takes, not its update: the weights after two
    steps (step 2 samples from the updated policy) are bit for bit the old path's. Reused log-probs and shared
    contexts differ from recomputed ones by float rounding only (and LoRA dropout drawn once per context), which
    Adam's first steps amplify on near-zero gradient coordinates, so with them the update is the same in direction
    and metrics, not bitwise."""
    targets = unit_vectors(16)
    old_path = dict(
        merge_lora_for_rollout=False, reuse_rollout_logprobs=False, trim_minibatches=False, share_contexts=False
    )
    settings = {"old": old_path, "exact": dict(reuse_rollout_logprobs=False, share_contexts=False), "fast": {}}
    runs = {}
    for name, options in settings.items():
        policy = lora_policy(smollm2_tokenizer)
        _, history = train_ppo(policy, length_reward, targets, tiny_config(max_steps=2, ppo_epochs=2, **options))
        weights = torch.cat([p.detach().flatten() for p in policy.parameters()])
        runs[name] = weights, history.to_frame().query("split == 'train'").set_index(["step", "metric"])["value"]
    start = torch.cat([p.detach().flatten() for p in lora_policy(smollm2_tokenizer).parameters()])
    (old, old_metrics), (exact, _), (fast, fast_metrics) = runs["old"], runs["exact"], runs["fast"]
    assert (old - start).abs().max() > 1e-3, "the steps moved the weights"
    assert torch.equal(exact, old)
    cosine = torch.nn.functional.cosine_similarity(fast - start, old - start, dim=0)
    assert cosine > 0.97, float(cosine)
    for metric in ("reward", "kl", "policy_loss", "clip_fraction", "entropy", "prompt_tokens"):
        assert fast_metrics[1, metric] == pytest.approx(old_metrics[1, metric], abs=1e-5), metric
    assert fast_metrics[2, "reward"] == old_metrics[2, "reward"], "step 2 sampled the same prompts"
    assert (fast_metrics.xs("seconds_scoring", level="metric") >= 0).all()
