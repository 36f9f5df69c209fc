"""Requests made from a target's best known prompts and one text per target, by a schedule of (rank, wording).

Grounded prompts (`pasting`) and topic prompts (`topics`) are both the best known prompts with something about the
target added; they differ in what is added and in the wordings, not in how the schedule is read.
"""

from __future__ import annotations

from collections.abc import Sequence

from e2p_lib.checks import check_positive_int

# Per call: (rank of the known prompt, best first; wording): three wordings on the best known prompt, then two on the
# second and two on the third (docs/experiments.md#seven-grounded-calls).
SCHEDULE = ((0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (2, 0), (2, 1))


def scheduled_prompts(
    ranked: Sequence[Sequence[str]], fills: Sequence[dict | None], templates: Sequence[str], count: int, kind: str
) -> list[list[str]]:
    """Per target, the first `count` entries of SCHEDULE: `templates[wording]` formatted with the known prompt of that
    rank (`ranked[i]`, best first) and `fills[i]`; missing ranks are skipped, and a target whose fill is None gets
    none. `kind` names the prompts in errors."""
    check_positive_int(count, "count")
    if count > len(SCHEDULE):
        raise ValueError(f"count={count}: there are {len(SCHEDULE)} {kind} prompts per target; ask for at most that.")
    if len(ranked) != len(fills):
        raise ValueError(f"{len(ranked)} rows of prompts for {len(fills)} {kind} texts: pass one of each per target.")
    return [
        [
            templates[wording].format(prompt=prompts[rank], **fill)
            for rank, wording in SCHEDULE[:count]
            if rank < len(prompts) and prompts[rank].strip()
        ]
        if fill is not None
        else []
        for prompts, fill in zip(ranked, fills)
    ]
