"""Rewards for prompts: how close the environment's answer lands to the target, plus optional shaping.

The real reward is the end objective itself: `cosine(target, embed(lm.generate(prompt)))`. The environment LM
(`e2p_lib.lm`) and the embedder (`e2p_lib.embed`) are the same ones evaluation uses; answers and their
embeddings are cached, so a prompt seen before costs nothing.

Shaping terms are switchable and reported apart from the real reward, so a curve can never flatter itself:
- `surrogate_cosine`: the forward model's predicted cosine for the prompt (`ForwardModel.predict_cosine`), cheap and
  smooth, a hint where the environment is noisy;
- `degeneracy`: 1 for an empty prompt; else the share of repeated words beyond half, plus 1 when the prompt ran
  into the length cap without ending; 0 for an ordinary prompt.

An empty prompt is never sent to the environment (it has no answer): its real reward is 0.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from e2p_lib.embed.base import Embedder
from e2p_lib.embed.cache import embed_texts

# What a blank answer (the LM stopped at once) is embedded as: a placeholder that scores like nothing said.
NO_ANSWER = "(no answer)"


def embed_answers(answers: Sequence[str], embedder: Embedder, cache_dir=None, show_progress: bool = True) -> np.ndarray:
    """Embeddings of the environment's answers (cached), a blank answer embedded as `NO_ANSWER`."""
    return embed_texts(
        [a if a.strip() else NO_ANSWER for a in answers], embedder, cache_dir, show_progress=show_progress
    )


@dataclass
class RewardResult:
    """Real rewards for a batch of prompts, with the answers behind them and where the time went."""

    rewards: np.ndarray  # (n,) cosine(target, embed(answer)); 0 for empty prompts
    answers: list[str]
    seconds: dict[str, float] = field(default_factory=dict)  # "environment", "embedding"


class AnswerCosineReward:
    """reward(prompt, target) = cosine(target, embed(environment's answer to prompt)).

    Args:
        lm: the environment, anything with `generate(prompts, max_new_tokens, temperature, seed)`.
        embedder: the embedder of the targets (same name and dimensions, or the cosine means nothing).
        max_new_tokens: answer length cap; a shorter cap makes the environment faster but embeds truncated answers
            (docs/experiments.md#answer-length).
        temperature, seed: the environment's decoding; greedy (0.0) by default, so a prompt has one answer.
        embedding_cache_dir: where answer embeddings are cached (None: the embedder's usual cache).
    """

    def __init__(
        self,
        lm,
        embedder: Embedder,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        seed: int = 0,
        embedding_cache_dir=None,
    ):
        self.lm, self.embedder = lm, embedder
        self.max_new_tokens, self.temperature, self.seed = max_new_tokens, temperature, seed
        self.embedding_cache_dir = embedding_cache_dir

    def __call__(self, prompts: Sequence[str], targets: np.ndarray) -> RewardResult:
        targets = np.asarray(targets, dtype=np.float32)
        if targets.shape != (len(prompts), self.embedder.dimensions):
            raise ValueError(
                f"Need one {self.embedder.dimensions}-d target per prompt; got {targets.shape} for "
                f"{len(prompts)} prompts (were the targets embedded with {self.embedder.name}?)."
            )
        answered = [i for i, p in enumerate(prompts) if p.strip()]
        answers, rewards = [""] * len(prompts), np.zeros(len(prompts), dtype=np.float32)
        seconds = {"environment": 0.0, "embedding": 0.0}
        if answered:
            started = time.perf_counter()
            got = self.lm.generate(
                [prompts[i] for i in answered],
                max_new_tokens=self.max_new_tokens,
                temperature=self.temperature,
                seed=self.seed,
            )
            seconds["environment"] = time.perf_counter() - started
            started = time.perf_counter()
            vectors = embed_answers(got, self.embedder, self.embedding_cache_dir, show_progress=False)
            seconds["embedding"] = time.perf_counter() - started
            for j, i in enumerate(answered):
                answers[i] = got[j]
                rewards[i] = float(vectors[j] @ targets[i])
        return RewardResult(rewards, answers, seconds)


def degeneracy(prompts: Sequence[str], token_counts: Sequence[int], ended: Sequence[bool]) -> np.ndarray:
    """Penalty per prompt: empty -> 1; repeated words beyond half the prompt -> their excess share; no end -> +1."""
    penalty = np.zeros(len(prompts), dtype=np.float32)
    for i, (prompt, did_end) in enumerate(zip(prompts, ended)):
        words = prompt.split()
        if not words:
            penalty[i] = 1.0
            continue
        repeated_share = 1.0 - len(set(words)) / len(words)
        penalty[i] = max(0.0, repeated_share - 0.5) + (0.0 if did_end else 1.0)
    return penalty
