"""Where one PPO step's time goes, and how fast the environment answers, before and after e2p's speed-ups.

    .venv/bin/python bench/rl_step.py                      # the CPU default: 4 targets x 4 prompts, 64-token answers
    .venv/bin/python bench/rl_step.py --steps 2 --policy data/models/policy-sft/policy

Table 1 runs `train_ppo` for `--steps` steps at the CPU default configuration (real SmolLM2 environment, MiniLM
reward, answer cache off so every answer is really generated) and prints the mean seconds per phase: policy
generation, environment, embedding, update. Without `--policy` a fresh (untrained) policy is used: the timing is the
same, the prompts are not.

Table 2 is the environment alone on the same prompts: "before" is what a naive loop does (one prompt at a time,
128-token answers, no cache), then each speed-up the RL loop uses is added in turn (batching, 64-token answers,
the answer cache on a repeated rollout). Answer tokens per second and the ratio to "before" are printed.
Run it on a quiet machine: other processes on the same 2 cores distort CPU timings badly.
"""

from __future__ import annotations

import argparse
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


def ppo_step_split(policy: PromptPolicy, targets: np.ndarray, embedder, steps: int, cache_dir: Path) -> pd.DataFrame:
    reward = AnswerCosineReward(
        make_lm("local", cache=False, show_progress=False), embedder, max_new_tokens=64, embedding_cache_dir=cache_dir
    )
    config = PPOConfig(max_steps=steps, eval_every_steps=0, save_every_steps=0, show_progress=False)
    _, history = train_ppo(policy, reward, targets, config)
    frame = history.to_frame()
    seconds = frame[frame["metric"].str.startswith("seconds_")].groupby("metric")["value"].mean()
    table = seconds.rename(lambda m: m.removeprefix("seconds_")).to_frame("seconds per step")
    table["share"] = (table["seconds per step"] / table["seconds per step"].sum()).map("{:.0%}".format)
    return table


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
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/alpaca_5000.json"))
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=16, help="prompts in the environment comparison")
    parser.add_argument("--policy", default=None, help="a saved policy folder (default: a fresh one)")
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
        print(ppo_step_split(policy, targets, embedder, args.steps, tmp / "embeddings").round(2).to_markdown())
        print(f"\n# The environment alone: {args.prompts} Alpaca prompts, greedy\n")
        print(environment_speedups(frame["prompt"].tolist()[: args.prompts], tmp / "answers").round(2).to_markdown())


if __name__ == "__main__":
    main()
