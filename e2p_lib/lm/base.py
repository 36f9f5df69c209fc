"""The interface every environment LM implements (`ChatLM`), its defaults, and the checks of its inputs."""

from __future__ import annotations

import hashlib
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any

from e2p_lib.checks import check_int
from e2p_lib.embed.base import check_texts

DEFAULT_MAX_NEW_TOKENS = 128  # see e2p_lib.lm's docstring
DEFAULT_TEMPERATURE = 0.0  # greedy
DEFAULT_SEED = 0
# Concise answers, closer to Alpaca's short outputs and half the tokens to generate (docs/experiments.md#system-prompt).
DEFAULT_SYSTEM_PROMPT: str | None = (
    "You are a helpful assistant. Answer the request directly and concisely, in under 100 words."
)
BACKENDS = ("local", "openai")


# ---------------------------------------------------------------------------------------------------------------------
# Input checks


def check_prompts(prompts: Sequence[str]) -> list[str]:
    """`prompts` as a list, or raise naming every position that is not a non-blank string."""
    return check_texts(
        prompts,
        verb="generate()",
        item="prompt",
        noun="prompt",
        advice="An LM cannot answer them; drop or fill them first.",
    )


def check_generation_args(
    n_prompts: int, max_new_tokens: int, temperature: float, seed: int | Sequence[int]
) -> list[int]:
    """Check the generation parameters; return one seed per prompt."""
    check_int(max_new_tokens, "max_new_tokens", hint=f" (default {DEFAULT_MAX_NEW_TOKENS})")
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or not math.isfinite(temperature)
        or temperature < 0
    ):
        raise ValueError(f"temperature={temperature!r} must be a finite number >= 0 (0 = greedy decoding).")
    seeds = [seed] * n_prompts if _is_int(seed) else seed
    if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__len__"):
        raise TypeError(f"seed={seed!r} must be an int, or a sequence of ints with one per prompt.")
    seeds = list(seeds)
    if len(seeds) != n_prompts:
        raise ValueError(f"Got {len(seeds)} seeds for {n_prompts} prompts: pass one int, or one seed per prompt.")
    bad = [i for i, s in enumerate(seeds) if not _is_int(s)]
    if bad:
        raise TypeError(f"Seeds must be integers; position {bad[0]} is {seeds[bad[0]]!r}.")
    return [int(s) for s in seeds]


def check_answer_settings(system_prompt: str | None, top_p: float) -> tuple[str | None, float]:
    """The settings every environment shares, checked: (system_prompt, top_p as float)."""
    if system_prompt is not None and not isinstance(system_prompt, str):
        raise TypeError(f"system_prompt must be a string or None, got {type(system_prompt).__name__}.")
    if isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
        raise ValueError(f"top_p={top_p!r} must be in (0, 1] (1.0: no nucleus cut).")
    return system_prompt, float(top_p)


def _is_int(value: Any) -> bool:
    import numbers

    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def prompt_seed(seed: int, prompt: str) -> int:
    """The seed of one prompt's random stream: a hash of (seed, prompt), the same on every machine and process."""
    digest = hashlib.blake2b(f"{seed}\n{prompt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


# ---------------------------------------------------------------------------------------------------------------------
# The interface


class ChatLM(ABC):
    """A chat model that answers a list of user prompts: subclasses implement `_iter_generate`.

    `name` identifies the model ("local/SmolLM2-135M-Instruct", "openai/gpt-4o-mini"), `settings()` everything
    else that changes its answers (system prompt, top_p, dtype...): together they key the answer cache.
    """

    name: str

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """JSON-serialisable settings that change the answers, beside the call's own parameters."""

    @abstractmethod
    def _iter_generate(
        self, prompts: list[str], max_new_tokens: int, temperature: float, seeds: list[int]
    ) -> Iterator[tuple[list[int], list[str]]]:
        """Yield (positions in `prompts`, answers) as they finish; every position exactly once. Inputs are checked."""

    def iter_generate(
        self,
        prompts: Sequence[str],
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        temperature: float = DEFAULT_TEMPERATURE,
        seed: int | Sequence[int] = DEFAULT_SEED,
    ) -> Iterator[tuple[list[int], list[str]]]:
        """Like `generate`, but yield (positions, answers) batch by batch as they finish, so callers can save each.

        Raises:
            TypeError / ValueError: bad prompts or parameters (see the module docstring), before any work.
        """
        prompts = check_prompts(prompts)
        seeds = check_generation_args(len(prompts), max_new_tokens, temperature, seed)
        if prompts:
            yield from self._iter_generate(prompts, max_new_tokens, float(temperature), seeds)

    def generate(
        self,
        prompts: Sequence[str],
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        temperature: float = DEFAULT_TEMPERATURE,
        seed: int | Sequence[int] = DEFAULT_SEED,
    ) -> list[str]:
        """One answer per prompt, in input order (see the module docstring for the parameters)."""
        prompts = check_prompts(prompts)
        answers: list[str | None] = [None] * len(prompts)
        for positions, batch in self.iter_generate(prompts, max_new_tokens, temperature, seed):
            for position, answer in zip(positions, batch):
                answers[position] = answer
        missing = [i for i, a in enumerate(answers) if a is None]
        if missing:  # a backend bug, not bad input
            raise RuntimeError(f"{self.name} returned no answer for prompt(s) {missing[:10]}.")
        return answers  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, settings={self.settings()!r})"
