"""Grounded prompts: the best prompts known for a target, with a text composed near the target as ideas to use.

An indexed prompt's answer lands near the target when the two share a task, and misses on content: what the answer
talks about. The composed text (`e2p_lib.echo.compose`: sentences of the stored outputs nearest the target) carries
that content, and appending it as ideas keeps the prompt a dataset-style instruction, not a copy instruction.

    grounded_prompts([["Write a poem about the sea.", "Describe a storm."]], [EchoText("Waves break.", 0.7)], 4)
    # [['Write a poem about the sea.\\nUse these ideas: Waves break.',
    #   'Write a poem about the sea.\\nWrite about: Waves break.',
    #   'Write a poem about the sea.\\nInclude these points: Waves break.',
    #   'Describe a storm.\\nUse these ideas: Waves break.']]

On the demo's 120 test targets, the better of the index's top prompt and the first variant (two calls) beat the top
prompt by +0.054 [+0.043, +0.068] answer cosine (bench/index_variants.py; README, "Grounded prompts"); alone a
variant is about even with the top prompt, so each is worth a call; it replaces the top prompt unanswered only at one
call, where its composed text lies GROUND_MARGIN nearer than the top prompt's answer (bench/one_call_switch.py). At 8
calls, seven of them beat three followed by the retrieved prompts and the policy's rewrites (bench/search_pools.py).
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
# Which known prompt each grounded call grounds (its rank among the target's answered dataset-style prompts, best
# first) and with which wording (GROUND_TEMPLATES' index). On the demo's 120 validation targets the three wordings on
# the best prompt (four calls with it) reach 0.632; a wording on the second or third prompt then adds more than one
# on other composed texts (from the 4 or 16 nearest outputs) or on the best answer so far (bench/ground_schedules.py).
GROUND_ORDER = ((0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (2, 0), (2, 1))
# At one call nothing is answered before the final answer: the first grounded prompt replaces the index's top 1 when
# the composed text's own cosine is more than this above the top 1's known answer cosine. Chosen on the demo's 120
# validation targets (+0.019 [-0.000, +0.035]; 0.05: +0.017, bench/index_variants.py), then measured once on its 120
# test targets: +0.028 [+0.009, +0.045] over the top 1, 0.596 (bench/one_call_switch.py; README, "One call").
GROUND_MARGIN = 0.1
# What `e2p invert --budget B` and 05_eval's `search_ground` spend on them: all of GROUND_ORDER, so that at 8 calls
# no call is left for the retrieved prompts or the policy's rewrites. On the demo's 120 test targets that beat 3
# grounded calls followed by them, +0.016 [+0.007, +0.028], in less than half the time (README, "Grounded prompts").
DEFAULT_GROUND_CALLS = len(GROUND_ORDER)


def check_count(count: int, name: str = "count") -> None:
    """Refuse a number of grounded prompts that is not 1 to len(GROUND_ORDER), naming the option (`name`)."""
    check_positive_int(count, name)
    if count > len(GROUND_ORDER):
        raise ValueError(
            f"{name}={count}: there are {len(GROUND_ORDER)} grounded prompts per target (3 wordings of the best known "
            "prompt, 2 of the second, 2 of the third); at most that."
        )


def grounded_prompts(ranked: Sequence[Sequence[str]], texts: Sequence[EchoText], count: int = 1) -> list[list[str]]:
    """Per target, the first `count` entries of GROUND_ORDER made from its known prompts (`ranked`, best first) and
    its composed text; entries whose prompt rank is missing are skipped, and a target with no text gets none."""
    check_count(count)
    if len(ranked) != len(texts):
        raise ValueError(f"{len(ranked)} rows of prompts for {len(texts)} composed texts: pass one of each per target.")
    return [
        [
            GROUND_TEMPLATES[wording].format(prompt=prompts[rank], text=e.text)
            for rank, wording in GROUND_ORDER[:count]
            if rank < len(prompts) and prompts[rank].strip()
        ]
        if e.text
        else []
        for prompts, e in zip(ranked, texts)
    ]
