"""What an inversion returns: one `InversionResult` per target, with every `Candidate` it considered."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

# Where a candidate came from. The policy reads only dataset-style prompts as hypotheses; echo and grounded prompts
# (the pasting track: stored outputs' text in the prompt) are answered and kept, never shown.
POLICY_SOURCES = ("greedy", "sampled")
SHOWN_SOURCES = frozenset({"index", "retrieved", *POLICY_SOURCES})
PASTING_SOURCES = frozenset({"echo", "grounded"})


@dataclass
class Candidate:
    """One prompt considered for one target, with what is known about it."""

    prompt: str
    step: int  # 0: the first round; k: the k-th corrector or refinement round
    source: str  # "greedy"/"sampled" (the policy's), "index", "retrieved", "echo", "grounded"
    condition_cosine: float  # cosine(vector the policy was conditioned on, target): 1.0 unless refined
    predicted_cosine: float = math.nan  # forward model's cosine to the target; NaN without one, or for ""
    achieved_cosine: float = math.nan  # cosine(target, embedded answer); NaN when not answered
    answer: str | None = None  # the environment's answer, when it was asked
    copied_share: float = math.nan  # share of its words in 5-grams of the texts it could read (NaN: not measured)
    row_id: str | None = None  # the dataset row a stored prompt came from (its own output is not "copied")


@dataclass
class InversionResult:
    """The chosen prompt for one target, its scores, the environment calls it cost, and how it was found."""

    prompt: str
    predicted_cosine: float  # NaN without a forward model
    achieved_cosine: float  # NaN when the environment was not used
    answer: str | None
    environment_calls: int  # distinct non-empty prompts the environment answered for this target
    method: str  # "search", or the re-ranking of `sample`: "forward", "environment", None (greedy alone)
    copied_share: float = math.nan
    candidates: list[Candidate] = field(default_factory=list)  # every prompt proposed, all rounds, in order
    trajectory: list[Candidate] = field(default_factory=list)  # each round's pick
    reading: list | None = None  # what the policy read beside the target when it first wrote (None: it did not)

    @classmethod
    def of(
        cls, final: Candidate, calls: int, method: str | None, candidates, trajectory, reading=None
    ) -> InversionResult:
        """The result that returns `final`, found among `candidates` with `calls` environment calls."""
        return cls(
            final.prompt,
            final.predicted_cosine,
            final.achieved_cosine,
            final.answer,
            environment_calls=calls,
            method=method,
            copied_share=final.copied_share,
            candidates=candidates,
            trajectory=trajectory,
            reading=reading,
        )

    def candidates_frame(self) -> pd.DataFrame:
        """The candidates as a DataFrame (one row each), with a `picked` column marking each round's pick."""
        picked = {id(c) for c in self.trajectory}
        return pd.DataFrame(
            [{**asdict(c), "picked": id(c) in picked} for c in self.candidates],
            columns=[*Candidate.__dataclass_fields__, "picked"],
        )


RESULT_COLUMNS = [
    "prompt",
    "predicted_cosine",
    "achieved_cosine",
    "copied_share",
    "answer",
    "environment_calls",
    "method",
]


def results_frame(results: Sequence[InversionResult]) -> pd.DataFrame:
    """One row per result, in order: prompt, predicted and achieved cosine, copied share, answer, calls, method."""
    return pd.DataFrame([{c: getattr(r, c) for c in RESULT_COLUMNS} for r in results], columns=RESULT_COLUMNS)


def best_index(scores: Sequence[float]) -> int:
    """Index of the highest score, NaN counting as lowest, the first on ties (so greedy, first, wins a tie)."""
    values = np.asarray(scores, dtype=np.float64)
    return int(np.argmax(np.where(np.isnan(values), -np.inf, values)))


def real_or_lowest(candidate: Candidate) -> float:
    """The achieved cosine, -inf when not answered: the key that ranks candidates by what is known."""
    return -np.inf if math.isnan(candidate.achieved_cosine) else candidate.achieved_cosine


def predicted_or_lowest(candidate: Candidate) -> float:
    """The forward model's cosine, -inf when it gave none: the key that ranks candidates not answered yet."""
    return -np.inf if math.isnan(candidate.predicted_cosine) else candidate.predicted_cosine


def fill(candidates: list[Candidate], memo: dict[str, tuple[float, str]]) -> None:
    """Copy each answered prompt's cosine and answer onto every candidate that holds it."""
    for c in candidates:
        if c.prompt in memo:
            c.achieved_cosine, c.answer = memo[c.prompt]


def known_best(candidates: list[Candidate]) -> list[Candidate]:
    """The distinct dataset-style prompts (`SHOWN_SOURCES`) with a real cosine, best first; a repeated prompt at
    its best copy's rank."""
    answered = sorted(
        (c for c in candidates if not np.isnan(c.achieved_cosine) and c.source in SHOWN_SOURCES),
        key=lambda c: -c.achieved_cosine,
    )
    best: dict[str, Candidate] = {}
    for c in answered:
        best.setdefault(c.prompt, c)
    return list(best.values())
