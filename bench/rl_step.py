"""Where one PPO step's time goes, and how fast the environment answers, before and after e2p's speed-ups.

    .venv/bin/python bench/rl_step.py                      # the CPU default: 4 targets x 4 prompts, 64-token answers
    .venv/bin/python bench/rl_step.py --steps 2 --policy data/models/policy-sft/policy

Table 1 runs `train_ppo` for `--steps` steps at the CPU default configuration (real environment, MiniLM reward,
answer cache off so every answer is really generated) twice from the same policy and seed: with the old settings
(`BEFORE`: unmerged rollouts, a second forward pass for the old log-probs, minibatches padded to the rollout's
longest prompt) and with the defaults. It prints the mean wall seconds per phase (policy generation, scoring,
environment, embedding, update), the CPU seconds per step (`time.process_time`, less distorted by other processes
on a shared machine), and the ratio; then the reward at each step of both runs (the same seed: learning should
match). Without `--policy` a fresh (untrained) policy is used: the timing is similar, the prompts are not.

Table 2 is the environment alone on the same prompts: "before" is what a naive loop does (one prompt at a time,
128-token answers, no cache), then each speed-up the RL loop uses is added in turn (batching, 64-token answers,
the answer cache on a repeated rollout). Answer tokens per second and the ratio to "before" are printed.
Run it on a quiet machine: other processes on the same 2 cores distort CPU timings badly.
"""

from __future__ import annotations

import argparse
import copy
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from e2p_lib.data import load_alpaca
from e2p_lib.embed import LocalEmbedder
from e2p_lib.embed.cache import embed_dataset
from e2p_lib.lm import LocalChatLM, make_lm
from e2p_lib.models.policy import PolicyConfig, PromptPolicy
from e2p_lib.train.rewards import AnswerCosineReward
from e2p_lib.train.rl import PPOConfig, train_ppo

BEFORE = dict(merge_lora_for_rollout=False, reuse_rollout_logprobs=False, trim_minibatches=False)


def ppo_step_split(
    policy: PromptPolicy, targets: np.ndarray, embedder, steps: int, cache_dir: Path, repeats: int = 1
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(seconds per phase before/after with the ratio, reward per step before/after), from the same start.

    With `repeats` > 1 the runs alternate before, after, after, before, ... so a load that rises or falls during
    the benchmark weighs on both settings alike; the seconds are means over the repeats."""
    lm = make_lm("local", cache=False, show_progress=False)
    runs, rewards = {"before": [], "after": []}, {}
    for repeat in range(repeats):
        for name in ("before", "after") if repeat % 2 == 0 else ("after", "before"):
            options = BEFORE if name == "before" else {}
            reward = AnswerCosineReward(lm, embedder, max_new_tokens=64, embedding_cache_dir=cache_dir / name)
            config = PPOConfig(max_steps=steps, eval_every_steps=0, save_every_steps=0, show_progress=False, **options)
            cpu = time.process_time()
            _, history = train_ppo(copy.deepcopy(policy), reward, targets, config)
            cpu = (time.process_time() - cpu) / steps
            frame = history.to_frame().query("split == 'train'").pivot(index="step", columns="metric", values="value")
            seconds = frame.filter(like="seconds_").mean().rename(lambda m: m.removeprefix("seconds_"))
            runs[name].append({**seconds, "total (wall)": seconds.sum(), "CPU seconds (process_time)": cpu})
            rewards[name] = frame["reward"]
            print(f"({name} done: {seconds.sum():.1f} s, {cpu:.1f} CPU s per step)", flush=True)
    table = pd.DataFrame({name: pd.DataFrame(rows).mean() for name, rows in runs.items()})
    table["x faster"] = table["before"] / table["after"]
    return table, pd.DataFrame(rewards)


def answer_tokens(lm: LocalChatLM, answers: list[str]) -> int:
    return sum(len(lm.tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers)


def environment_speedups(prompts: list[str], cache_dir: Path) -> pd.DataFrame:
    rows = []

    def timed(label: str, lm, max_new_tokens: int) -> None:
        started = time.perf_counter()
        answers = lm.generate(prompts, max_new_tokens=max_new_tokens)
        seconds = time.perf_counter() - started
        tokens = answer_tokens(base, answers)
        rows.append({"setting": label, "seconds": seconds, "answer tokens": tokens, "tokens/s": tokens / seconds})

    base = LocalChatLM(batch_size=1, show_progress=False)
    base.generate(prompts[:2], max_new_tokens=8)  # warm-up, untimed
    timed("before: one prompt at a time, 128-token answers", base, 128)
    batched = LocalChatLM(batch_size=len(prompts), show_progress=False)
    timed("+ batched (left padding, length-sorted)", batched, 128)
    timed("+ 64-token answers (the RL default)", batched, 64)
    cached = make_lm("local", cache_dir=cache_dir, batch_size=len(prompts), show_progress=False)
    cached.generate(prompts, max_new_tokens=64)  # a first rollout fills the cache
    timed("+ answer cache (a prompt seen before)", cached, 64)
    table = pd.DataFrame(rows).set_index("setting")
    table["x before (tokens/s)"] = table["tokens/s"] / table["tokens/s"].iloc[0]
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="Alpaca file (default: $E2P_ALPACA_PATH, then load_alpaca's)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=16, help="prompts in the environment comparison")
    parser.add_argument("--policy", default=None, help="a saved policy folder (default: a fresh one)")
    parser.add_argument("--repeats", type=int, default=2, help="before/after runs, alternating (ABBA...)")
    parser.add_argument("--no-environment", action="store_true", help="skip table 2 (the environment alone)")
    args = parser.parse_args()

    frame = load_alpaca(args.data, limit=max(args.prompts, 64))
    embedder = LocalEmbedder(show_progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        targets = embed_dataset(frame, embedder, tmp / "embeddings", show_progress=False).vectors
        policy = (
            PromptPolicy.load(args.policy, trainable=True)
            if args.policy
            else PromptPolicy.from_pretrained_base(PolicyConfig(embedding_dim=embedder.dimensions))
        )
        print(f"# One PPO step at the CPU default ({platform.machine()}, {torch.get_num_threads()} torch threads)\n")
        seconds, rewards = ppo_step_split(policy, targets, embedder, args.steps, tmp / "embeddings", args.repeats)
        print(seconds.round(2).to_markdown())
        print("\n# Reward per step, same seed\n")
        print(rewards.round(4).to_markdown())
        if args.no_environment:
            return
        print(f"\n# The environment alone: {args.prompts} Alpaca prompts, greedy\n")
        print(environment_speedups(frame["prompt"].tolist()[: args.prompts], tmp / "answers").round(2).to_markdown())


if __name__ == "__main__":
    main()
