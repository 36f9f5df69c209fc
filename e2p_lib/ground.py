"""Grounded prompts: the best prompt known for a target, with a text composed near the target as ideas to use.

An indexed prompt's answer lands near the target when the two share a task, and misses on content: what the answer
talks about. The composed text (`e2p_lib.echo.compose`: sentences of the stored outputs nearest the target) carries
that content, and appending it as ideas keeps the prompt a dataset-style instruction, not a copy instruction.

    grounded_prompts(["Write a poem about the sea."], [EchoText("Waves break on the rocks.", 0.7)], 2)
    # [['Write a poem about the sea.\\nUse these ideas: Waves break on the rocks.',
    #   'Write a poem about the sea.\\nWrite about: Waves break on the rocks.']]

On the demo's 120 test targets, the better of the index's top prompt and the first variant (two calls) beat the top
prompt by +0.054 [+0.043, +0.068] answer cosine (bench/index_variants.py; README, "Grounded prompts"); alone a
variant is about even with the top prompt, so each is worth a call, never a replacement unanswered.
"""

from __future__ import annotations

from collections.abc import Sequence

from e2p_lib.checks import check_positive_int
from e2p_lib.echo import EchoText

# A line of its own after the prompt's instruction and input. On the demo's 120 validation targets each alone ties
# the top prompt (0.559 / 0.557 / 0.556 against 0.563) and the better of it and the top prompt is 0.611 / 0.609 /
# 0.612; a second wording beside the first adds +0.014 (bench/index_variants.py). Most measured first.
GROUND_TEMPLATES = (
    "{prompt}\nUse these ideas: {text}",
    "{prompt}\nWrite about: {text}",
    "{prompt}\nInclude these points: {text}",
)
# What `e2p invert --budget B` and 05_eval's `search_ground` spend on them: all three wordings (README, "Grounded
# prompts": at <=8 calls on the demo's 120 test targets, 3 grounded calls against 1 and against none).
DEFAULT_GROUND_CALLS = 3


def check_count(count: int, name: str = "count") -> None:
    """Refuse a number of grounded prompts that is not 1 to len(GROUND_TEMPLATES), naming the option (`name`)."""
    check_positive_int(count, name)
    if count > len(GROUND_TEMPLATES):
        raise ValueError(
            f"{name}={count}: there are {len(GROUND_TEMPLATES)} grounding templates (one wording each); at most that."
        )


def grounded_prompts(prompts: Sequence[str | None], texts: Sequence[EchoText], count: int = 1) -> list[list[str]]:
    """Per target, its prompt grounded in its composed text with the first `count` templates; none where either is
    missing or empty."""
    check_count(count)
    if len(prompts) != len(texts):
        raise ValueError(f"{len(prompts)} prompts for {len(texts)} composed texts: pass one of each per target.")
    return [
        [t.format(prompt=p, text=e.text) for t in GROUND_TEMPLATES[:count]] if p and p.strip() and e.text else []
        for p, e in zip(prompts, texts)
    ]
