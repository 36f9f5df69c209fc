"""The rows notebooks 02-05 train and score on, and the hypotheses each row is shown (never its own answer).

>>> train = split_rows(frame, "train")                           # positions of the train split (add_split)
>>> rows, targets, excluded = held_out(frame, vectors, "val", 40, 60)  # with the ids each must never be shown
>>> val, choice = split_parts(frame, "val", 8, 32)               # disjoint: 8 pick PPO's step, 32 pick the policy
>>> hypotheses = row_hypotheses(index, frame, train, vectors, k=3)   # never a row's own, or same-output, rows
>>> answers = row_answers(store, frame, train, vectors, k=1)      # the nearest stored outputs, never its own
>>> keep = improves_on_hypotheses(index, frame, train, vectors, hypotheses)  # own prompt answers nearer than they
>>> targets = best_known_prompts(index, frame, train, vectors, hypotheses)   # own prompt, or the hypothesis
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from e2p_lib.answer_index import AnswerIndex, leave_out
from e2p_lib.embed.base import l2_normalise
from e2p_lib.models.policy import Hypothesis
from e2p_lib.store.retrieval import nearest_rows

SPLITS = ("train", "val", "test")


def split_rows(frame: pd.DataFrame, split: str, limit: int | None = None) -> np.ndarray:
    """Positions of the rows of `split` (the `split` column from `data.add_split`), the first `limit` of them."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r}; choose one of {SPLITS}.")
    if "split" not in frame:
        raise ValueError("The frame has no 'split' column: pass it through e2p_lib.data.add_split first.")
    return np.flatnonzero(frame["split"].to_numpy() == split)[:limit]


def held_out(
    frame: pd.DataFrame, vectors: np.ndarray, split: str, start: int = 0, count: int | None = None
) -> tuple[np.ndarray, np.ndarray, list[list[str]]]:
    """Rows `start` to `start + count` of `split`, their target vectors, and per row the ids it must never be shown
    (its own and those with the same output, `leave_out`): what scoring held-out targets starts from."""
    rows = split_rows(frame, split)[start : None if count is None else start + count]
    exclusions = leave_out(frame["id"].tolist(), frame["output"].tolist())
    return rows, vectors[rows], [exclusions[r] for r in rows]


def split_parts(frame: pd.DataFrame, split: str, *sizes: int) -> list[np.ndarray]:
    """Disjoint, consecutive parts of `split`'s rows, `sizes[i]` rows each.

    Why: targets that chose a checkpoint (PPO's best validated step) favour it in a later comparison on the same
    targets; the comparison needs a part of its own.

    Raises:
        ValueError: a size below 1, or fewer rows in `split` than the sizes add up to.
    """
    if not sizes or any(int(size) < 1 for size in sizes):
        raise ValueError(f"split_parts needs sizes of at least 1 row each; got {list(sizes)}.")
    rows = split_rows(frame, split)
    if sum(sizes) > len(rows):
        raise ValueError(
            f"The {split!r} split has {len(rows)} rows, but parts of {list(sizes)} need {sum(sizes)}: lower the "
            "sizes (04_rl's validation_targets and choice_targets) or embed more rows (01_embed's limit)."
        )
    bounds = np.cumsum([0, *sizes])
    return [rows[start:end] for start, end in zip(bounds[:-1], bounds[1:])]


def row_hypotheses(
    index: AnswerIndex, frame: pd.DataFrame, rows: np.ndarray, vectors: np.ndarray, k: int
) -> list[list[Hypothesis]]:
    """The `k` hypotheses of each row in `rows` (positions in `frame`, whose outputs `vectors` embeds), leaving out
    the row itself and every row of `frame` with the same output (`leave_out`), so training never sees the answer."""
    exclusions = leave_out(frame["id"].tolist(), frame["output"].tolist())
    return index.hypotheses(vectors[rows], k=k, exclude_ids=[exclusions[r] for r in rows])


def as_answers(neighbours) -> list[Hypothesis]:
    """Stored rows near a target (`store.retrieval.Neighbour`) as the policy reads their outputs: `kind="answer"`,
    with their cosine to the target."""
    return [Hypothesis(n.output, n.score, n.id, kind="answer") for n in neighbours]


def nearest_answers(store, targets: np.ndarray, k: int, exclude_ids=None) -> list[list[Hypothesis]]:
    """The `k` stored outputs nearest each target as the policy reads them (`as_answers`), never an id in
    `exclude_ids[i]`."""
    return [as_answers(row) for row in nearest_rows(store, targets, k, exclude_ids)]


def row_reading(index, store, frame: pd.DataFrame, rows: np.ndarray, vectors: np.ndarray, policy_config):
    """What a policy of `policy_config` reads beside each row's target in training (03, 04): the row's best
    `hypotheses` known prompts and its `answers` nearest stored outputs, never its own or a same-output row's; None
    when it reads neither."""
    if not (policy_config.hypotheses or policy_config.answers):
        return None
    known = (
        row_hypotheses(index, frame, rows, vectors, k=policy_config.hypotheses)
        if policy_config.hypotheses
        else [[] for _ in rows]
    )
    if not policy_config.answers:
        return known
    return [k + a for k, a in zip(known, row_answers(store, frame, rows, vectors, policy_config.answers))]


def row_answers(store, frame: pd.DataFrame, rows: np.ndarray, vectors: np.ndarray, k: int) -> list[list[Hypothesis]]:
    """`nearest_answers` for the rows in `rows` (positions in `frame`), leaving out each row and every row with the
    same output (`leave_out`): a row never reads its own answer."""
    exclusions = leave_out(frame["id"].tolist(), frame["output"].tolist())
    return nearest_answers(store, vectors[rows], k, [exclusions[r] for r in rows])


def improves_on_hypotheses(
    index: AnswerIndex,
    frame: pd.DataFrame,
    rows: np.ndarray,
    vectors: np.ndarray,
    hypotheses: list[list[Hypothesis]],
    margin: float = 0.0,
) -> np.ndarray:
    """Per row of `rows`, whether the environment answers the row's own prompt nearer its output (`vectors`) than
    the best of the `hypotheses` it is shown, by more than `margin`; rows with no hypothesis or no indexed answer
    count as improving (nothing says otherwise).

    The index holds the real answer to every train prompt, so this costs no environment call. Supervised rows that
    fail it teach the policy to write a prompt whose answer lands farther than one it was shown.
    """
    if len(hypotheses) != len(rows):
        raise ValueError(f"Got {len(hypotheses)} hypothesis lists for {len(rows)} rows: pass one per row.")
    ids = frame["id"].to_numpy()[rows].tolist()
    present, answers = index.answer_vectors(ids)
    answered = dict(zip(present, l2_normalise(answers) if present else answers))
    targets = l2_normalise(vectors[rows])
    keep = np.ones(len(rows), dtype=bool)
    for j, (row_id, shown) in enumerate(zip(ids, hypotheses)):
        known = [h for h in shown if h.kind == "prompt"]
        if known and row_id in answered:
            keep[j] = float(answered[row_id] @ targets[j]) > known[0].cosine + margin
    return keep


def best_known_prompts(
    index: AnswerIndex, frame: pd.DataFrame, rows: np.ndarray, vectors: np.ndarray, hypotheses: list[list[Hypothesis]]
) -> list[str]:
    """Per row, the best prompt known for its output: its own, unless the environment answers the best hypothesis
    it is shown nearer (the index knows both answers: no environment call). Supervised on these, the policy writes
    the best known prompt back where it cannot do better, instead of learning to write worse ones."""
    keep = improves_on_hypotheses(index, frame, rows, vectors, hypotheses)
    own = frame["prompt"].to_numpy()[rows]
    return [
        str(prompt) if kept else next(h.prompt for h in shown if h.kind == "prompt")
        for prompt, kept, shown in zip(own, keep, hypotheses)
    ]
