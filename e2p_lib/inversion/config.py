"""`SearchConfig`: every option of e2p's search in one place; its defaults are the method 05_eval reports.

The CLI (`e2p invert`), 05_eval and the experiments read their settings from here, so what a user runs is the method
05 measures. Values are checked when the config is made, before any model loads.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from e2p_lib.checks import check_int, check_positive_int

ANSWER_TOKENS = 64  # the answer cap everywhere: 02's index, 04, 05, the CLI (docs/experiments.md#answer-length)
ECHO_TEMPLATE_COUNT = 3  # len(pasting.ECHO_TEMPLATES), kept here so that checking a config imports no numpy
GROUND_CALL_COUNT = 7  # len(pasting.GROUND_ORDER), likewise
TOPIC_CALL_COUNT = 7  # len(topics.TOPIC_ORDER), likewise
MAX_BUDGET = 256  # environment calls per target; more is almost surely a typo (each call is an LM answer)


@dataclass(frozen=True)
class SearchConfig:
    """How e2p searches for a target's prompt.

    Parameters that control the budget:
        budget (`int`, defaults to `8`): environment calls per target, at most (1 to 256). With `1`, the only call
            answers the policy's greedy rewrite of the index's best prompts; where that is a prompt already known, or
            with `use_policy=False`, the best known prompt.
        answer_tokens (`int`, defaults to `64`): the environment's answer cap. Must be the answer index's (02
            builds it with the same value), or the index's cosines are not the ones the search measures.

    Parameters that control the candidate pools:
        pool (`int`, defaults to `8`): indexed prompts per target whose real answers land nearest it (known for free
            from 02's answer index); the policy reads the best of them as hypotheses.
        neighbours (`int`, defaults to `8`): stored outputs nearest the target that the search reads: their prompts
            join the candidates, and their text is what a prompt's copied share is measured against.
        retrieved_share (`float`, defaults to `0.5`): share of the exploring calls (`budget - 1`, rounded down) spent
            on the neighbours' prompts that the index does not know (indexed ones are known for free). If `0.0`,
            none; without the policy, all.
        topics (`int`, defaults to `3`): calls on the best known prompts with the target's topic words added
            (`e2p_lib.inversion.topics`: phrases of the neighbours' outputs, nearest the target; clean), before the
            retrieved prompts and the rewrites (0 to 7; none at budget 1, whose call is the policy's). More take
            calls from the policy's rewrites.

    Parameters that control the corrector rounds (the policy's rewrites):
        rounds (`int`, defaults to `2`): rounds of rewriting; each round's answered rewrites join the hypotheses
            the next round reads.
        samples (`int`, defaults to `6`): prompts the policy writes per target and round: greedy plus
            `samples - 1` sampled; the forward model ranks them and the best-ranked are answered (budget 1: greedy).
        temperature (`float`, defaults to `0.8`), top_p (`float`, defaults to `1.0`): how rewrites are sampled.
        max_prompt_tokens (`int` or `None`, defaults to `48`): the longest rewrite in tokens, at most the policy's
            own cap (None: that cap). Rewrites that reach 48 tokens are mostly a prompt followed by other text.
        seed (`int`, defaults to `0`): seeds the sampling; the same targets in the same order repeat exactly.
        spend_all (`bool`, defaults to `True`): calls the rounds leave (where rewrites repeat known prompts) go to
            the best-ranked candidates not answered yet, and the final call too when the final pick is known. If
            `False`, those calls stay unspent.
        use_policy (`bool`, defaults to `True`): if `False`, no rewrites: every exploring call goes to retrieved
            prompts the index does not know (what 05 compares against, to show what the learned policy adds).

    Parameters that control prompt quality:
        clean (`bool`, defaults to `True`): send and return only prompts whose copied share (`e2p_lib.evaluate.
            quality`) is at most the clean line; pasting prompts (echo, ground) need `clean=False`.
        max_copied_share (`float` or `None`, defaults to `None`): the clean line. None: the line 02 recorded for
            the run (the original prompts' 90th percentile on validation targets).
        fluency_margin (`float`, defaults to `0.02`): the final pick (budget > 1) is the most fluent (lowest
            perplexity under the base LM) of the prompts whose answer lands within this cosine of the best one's;
            a known prompt (the index's) only while a call is left for its answer, and `spend_all` keeps the final
            call where the pick so far is one. If `0.0`, the best cosine alone (ties still go to the more fluent).

    Parameters that control the pasting track (opt-in, `clean=False` only):
        echo (`int`, defaults to `0`): calls on prompts that ask the environment to repeat a text composed from the
            nearest stored outputs (1 to 3).
        echo_margin (`float`, defaults to `0.05`): at one call, an echo prompt replaces the final prompt when its
            text lies this much nearer the target than the best known answer.
        ground (`int`, defaults to `0`): calls on the best known prompts with that text appended as ideas (1 to 7).
        ground_margin (`float`, defaults to `0.1`): at one call, the grounded prompt replaces the final prompt when
            the text lies this much nearer than the best known answer.
    """

    budget: int = 8
    answer_tokens: int = ANSWER_TOKENS
    pool: int = 8
    neighbours: int = 8
    retrieved_share: float = 0.5
    topics: int = 3  # docs/experiments.md#topic-prompts
    rounds: int = 2
    samples: int = 6
    temperature: float = 0.8
    top_p: float = 1.0
    max_prompt_tokens: int | None = 48  # docs/experiments.md#rewrite-length
    seed: int = 0
    spend_all: bool = True  # docs/experiments.md#unspent-calls
    use_policy: bool = True
    clean: bool = True
    max_copied_share: float | None = None
    fluency_margin: float = 0.02  # docs/experiments.md#fluent-final-pick
    echo: int = 0
    echo_margin: float = 0.05  # docs/experiments.md#echo-prompts
    ground: int = 0
    ground_margin: float = 0.1  # docs/experiments.md#one-call-grounding-margin

    def __post_init__(self) -> None:
        check_int(self.budget, "budget", maximum=MAX_BUDGET, hint=" environment calls per target")
        for name in ("answer_tokens", "pool", "neighbours", "rounds", "samples"):
            check_positive_int(getattr(self, name), name)
        check_int(self.seed, "seed", minimum=0)
        if self.max_prompt_tokens is not None:
            check_positive_int(self.max_prompt_tokens, "max_prompt_tokens")
        if not 0.0 <= self.retrieved_share <= 1.0:
            raise ValueError(f"retrieved_share={self.retrieved_share!r} must be between 0 and 1 (a share of calls).")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature={self.temperature!r} must be a finite number > 0 (0.8 by default).")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p={self.top_p!r} must be in (0, 1].")
        if not (math.isfinite(self.fluency_margin) and 0.0 <= self.fluency_margin <= 2.0):
            raise ValueError(
                f"fluency_margin={self.fluency_margin!r} must be a cosine difference between 0 and 2 (0: the best "
                "cosine alone)."
            )
        if self.max_copied_share is not None and not 0.0 <= self.max_copied_share <= 1.0:
            raise ValueError(f"max_copied_share={self.max_copied_share!r} must be between 0 and 1.")
        for name, most in (("echo", ECHO_TEMPLATE_COUNT), ("ground", GROUND_CALL_COUNT)):
            count = check_int(getattr(self, name), name, minimum=0, maximum=most, hint=f" ({most} {name} prompts)")
            if count and self.clean:
                raise ValueError(
                    f"{name}={count} pastes stored outputs' text into prompts, which a clean search never sends: "
                    f"pass clean=False as well (the pasting track), or {name}=0."
                )
        most = TOPIC_CALL_COUNT
        check_int(self.topics, "topics", minimum=0, maximum=most, hint=f" ({most} topic prompts)")
        for name in ("echo_margin", "ground_margin"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name}={getattr(self, name)!r} must be a finite number.")

    def to_dict(self) -> dict:
        """The options as plain values (saved beside results, printed in reports)."""
        return asdict(self)
