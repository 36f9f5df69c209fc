"""Best-of-N and refinement from the policy, and interpolation between targets.

`sample` is the policy's own proposals re-ranked, without the search's pools: each round the policy writes a greedy
prompt plus `best_of - 1` samples, conditioned on the target and, when the inverter has an answer index, on the
index's best known prompts (what it was trained to read: a policy trained with hypotheses is never asked without).

    best_of=1        the greedy prompt alone; no forward model or environment needed.
    best_of=N        the greedy prompt plus N-1 samples, re-ranked by `rerank`: "forward" (the forward model's
                     predicted cosine, no environment call) or "environment" (real answers, up to N calls).
    refine_steps=k   k feedback rounds (needs the environment): answer the pick, embed its answer `a`, condition
                     the policy on c <- normalise(c + (t - a)) (`feedback_target`), propose and pick again; the best
                     real cosine over the rounds wins. A fixed-rule version of vec2text's corrector loop.
    measure=True     answer the final prompt even when nothing above needed it (1 call).

Sampling is seeded: the same targets, in the same order, with the same `seed` give the same candidates.

Interpolation (`slerp`, `Inverter.interpolate`): points on the great circle between two targets (Shoemake 1985):
does the answer move smoothly from one meaning to the other?
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from e2p_lib.checks import check_int, check_positive_int
from e2p_lib.embed.base import l2_normalise
from e2p_lib.embed.cache import embed_texts
from e2p_lib.inversion.config import ANSWER_TOKENS
from e2p_lib.inversion.results import Candidate, InversionResult, best_index, fill

RERANK_METHODS = ("forward", "environment")
ANTIPODAL_TOLERANCE = 1e-6  # cosine within this of -1: no single great circle joins the two vectors
IDENTICAL_TOLERANCE = 1e-6  # sin(angle) below this: the two vectors are (numerically) the same direction


def slerp(a: np.ndarray, b: np.ndarray, t: float | Sequence[float] | np.ndarray) -> np.ndarray:
    """Spherical linear interpolation from direction `a` (t=0) to direction `b` (t=1) along their great circle.

    `a` and `b` are (d,) vectors, normalised here. A scalar `t` gives a (d,) unit vector, an array of m values
    gives (m, d). The angle to `a` grows linearly with t (a straight line between unit vectors would cut through the
    sphere and bunch the points near the middle); t outside [0, 1] continues along the same circle.

    Raises:
        ValueError: shapes differ or are not (d,), a zero or non-finite vector or t, or `a` and `b` point in
            opposite directions (every great circle through one passes through the other: pick a midpoint).
    """
    a, b = (np.asarray(v, dtype=np.float64) for v in (a, b))
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"slerp needs two (d,) vectors of one size; got shapes {a.shape} and {b.shape}.")
    a, b = (l2_normalise(v[None])[0].astype(np.float64) for v in (a, b))
    ts = np.asarray(t, dtype=np.float64)
    if not np.all(np.isfinite(ts)):
        raise ValueError(f"t must be finite; got {t!r}.")
    cosine = float(np.clip(a @ b, -1.0, 1.0))
    if cosine < -1.0 + ANTIPODAL_TOLERANCE:
        raise ValueError(
            f"a and b point in opposite directions (cosine {cosine:.6f}); no single great circle "
            "joins them. Interpolate through a chosen midpoint: slerp(a, m, t) then slerp(m, b, t)."
        )
    angle = math.acos(cosine)
    weights_t = np.atleast_1d(ts)[:, None]  # (m, 1)
    if math.sin(angle) < IDENTICAL_TOLERANCE:
        points = (1 - weights_t) * a + weights_t * b  # same direction: the straight line is the arc
    else:
        points = (np.sin((1 - weights_t) * angle) * a + np.sin(weights_t * angle) * b) / math.sin(angle)
    points = l2_normalise(points)  # (m, d) float32; exact unit length despite rounding
    return points[0] if ts.ndim == 0 else points


def feedback_target(condition: np.ndarray, target: np.ndarray, achieved: np.ndarray) -> np.ndarray:
    """The next vector to condition the policy on: normalise(condition + (target - achieved)), all (d,).

    The policy conditioned on `condition` wrote a prompt whose answer landed at `achieved`; the miss
    `target - achieved` is added to what the policy was asked for, so the next prompt is aimed past the target on
    the side the answer fell short. Applied round after round, the misses accumulate (an integral controller, step
    size 1). When the answer hits the target exactly, the condition is unchanged.
    """
    condition, target, achieved = (
        l2_normalise(np.asarray(v, dtype=np.float32)[None])[0] for v in (condition, target, achieved)
    )
    corrected = condition + (target - achieved)
    if np.linalg.norm(corrected) < IDENTICAL_TOLERANCE:  # only when condition = -target and achieved = target
        return condition
    return l2_normalise(corrected[None])[0]


def sample(
    inverter,
    targets,
    *,
    best_of: int = 1,
    temperature: float = 0.8,
    top_p: float = 1.0,
    rerank: str | None = None,
    refine_steps: int = 0,
    measure: bool = False,
    seed: int = 0,
    max_prompt_tokens: int | None = None,
    answer_tokens: int = ANSWER_TOKENS,
    exclude_ids=None,
) -> list[InversionResult]:
    """The policy's best prompt for each target by best-of-N and refinement (see the module docstring).

    Args:
        targets: a text, a list of texts, a (d,) vector or (n, d) vectors of the embedder's space.
        best_of: candidates per target and round: the greedy prompt plus best_of - 1 samples.
        temperature, top_p: how candidates are sampled (when best_of > 1); temperature must be > 0.
        rerank: "forward", "environment", or None ("forward" when there is a forward model); needed only when
            best_of > 1.
        refine_steps: feedback rounds after the first pick (needs the environment).
        measure: answer the final prompt with the environment even when nothing else needed it.
        seed: seeds the sampling (round k uses seed + k).
        max_prompt_tokens: the longest prompt written (None: the policy's own cap).
        answer_tokens: the environment's answer cap.
        exclude_ids: per target, index rows its hypotheses must never come from (its own row, say).

    Raises:
        ValueError: bad targets or options, or an option that needs a missing piece (the message says which to
            pass), all before any model runs.
    """
    rerank = _check_options(inverter, best_of, temperature, top_p, rerank, refine_steps, measure)
    inverter.check_reading()
    targets = inverter.target_vectors(targets)
    hypotheses = inverter.reading(targets, exclude_ids)
    uses_environment = rerank == "environment" or refine_steps > 0 or measure
    reward = inverter.reward(answer_tokens) if uses_environment else None
    memo: list[dict[str, tuple[float, str]]] = [{} for _ in targets]  # per target: prompt -> (cosine, answer)
    history: list[list[Candidate]] = [[] for _ in targets]
    trajectory: list[list[Candidate]] = [[] for _ in targets]
    conditions = targets.copy()
    for step in range(refine_steps + 1):
        # 1. propose: greedy + samples from the current conditioning vectors
        proposals = inverter.propose(
            conditions, best_of, temperature, top_p, seed + step, max_prompt_tokens, hypotheses=hypotheses
        )
        candidates = [
            [
                Candidate(p, step, "greedy" if j == 0 else "sampled", float(conditions[i] @ targets[i]))
                for j, p in enumerate(row)
            ]
            for i, row in enumerate(proposals)
        ]
        # 2. score: the forward model always (cheap), the environment for every candidate when it re-ranks
        inverter.predict(candidates, targets)
        if rerank == "environment":
            inverter.answer(candidates, targets, memo, reward)
        # 3. pick one per target by the re-ranking score (the greedy prompt when best_of=1)
        score = (lambda c: c.achieved_cosine) if rerank == "environment" else (lambda c: c.predicted_cosine)
        picks = [row[best_index([score(c) for c in row])] for row in candidates]
        # 4. answer the picks (free when re-ranked by the environment: already answered)
        if uses_environment:
            inverter.answer([[p] for p in picks], targets, memo, reward)
        for i, pick in enumerate(picks):
            history[i] += candidates[i]
            trajectory[i].append(pick)
        # 5. feedback: aim the next round past the target by the picks' misses
        if step < refine_steps:
            # No answer (an empty pick, or a blank answer) gives no direction to correct in: keep the condition.
            answered = [i for i, pick in enumerate(picks) if pick.answer and pick.answer.strip()]
            if answered:  # the answers were embedded when scored, so these are embedding-cache hits
                achieved = embed_texts(
                    [picks[i].answer for i in answered],
                    inverter.embedder,
                    inverter.embedding_cache_dir,
                    show_progress=False,
                )
                for i, vector in zip(answered, achieved):
                    conditions[i] = feedback_target(conditions[i], targets[i], vector)
    results = []
    for i in range(len(targets)):
        fill(history[i], memo[i])  # a prompt answered in any round has that answer wherever it appears
        final = (
            trajectory[i][best_index([c.achieved_cosine for c in trajectory[i]])]
            if uses_environment
            else trajectory[i][0]
        )
        results.append(InversionResult.of(final, len(memo[i]), rerank, history[i], trajectory[i]))
    return results


def _check_options(
    inverter, best_of: int, temperature: float, top_p: float, rerank: str | None, refine_steps: int, measure: bool
):
    """Check `sample`'s options before any work; return the re-ranking method to use (None: nothing to rank)."""
    check_positive_int(best_of, "best_of")
    check_int(refine_steps, "refine_steps", minimum=0)
    if best_of == 1 and rerank is not None:
        raise ValueError(f"rerank={rerank!r} ranks best_of candidates; with best_of=1 there is one: pass best_of > 1.")
    if not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
        raise ValueError(f"top_p={top_p!r} must be in (0, 1] (1.0: no nucleus cut).")
    if best_of > 1 and not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(
            f"temperature={temperature!r}: best_of={best_of} samples candidates, which needs a "
            "finite temperature > 0 (0.8 by default); use best_of=1 for the greedy prompt alone."
        )
    if rerank is not None and rerank not in RERANK_METHODS:
        raise ValueError(f"rerank={rerank!r}; choose one of {RERANK_METHODS} (or None for the default).")
    needs_ranking = best_of > 1
    if rerank is None:
        if needs_ranking and inverter.forward_model is None and inverter.environment is None:
            raise ValueError(
                f"best_of={best_of} re-ranks candidates, which needs a forward model or an environment LM; this "
                "inverter has neither. Pass one (load_inverter does), or use best_of=1."
            )
        rerank = "forward" if inverter.forward_model is not None else "environment"
    if needs_ranking and rerank == "forward" and inverter.forward_model is None:
        raise ValueError(
            "rerank='forward' needs a forward model: load one (load_inverter finds it after 03_sft) "
            "or use rerank='environment'."
        )
    if inverter.environment is None:
        wanted = [
            what
            for what, on in (
                ("rerank='environment'", needs_ranking and rerank == "environment"),
                (f"refine_steps={refine_steps}", refine_steps > 0),
                ("measure=True", measure),
            )
            if on
        ]
        if wanted:
            raise ValueError(
                f"{' and '.join(wanted)} {'needs' if len(wanted) == 1 else 'need'} an environment LM "
                "to answer prompts; pass environment=make_lm('local') (load_inverter does by "
                "default) or drop the option."
            )
    return rerank if needs_ranking else None
