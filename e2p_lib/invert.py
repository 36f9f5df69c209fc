"""Inversion: the best prompt for a target embedding (or a text), with best-of-N, refinement and interpolation.

This is e2p's top-level API, modelled on vec2text's `api.py`: load the trained pieces once, then ask for prompts.

    >>> import e2p_lib
    >>> inverter = e2p_lib.load_inverter()                    # trained policy, forward model, SmolLM2 environment
    >>> inverter.invert(["Paris is the capital of France."])[0].prompt            # greedy, no environment call
    >>> inverter.invert(vectors, best_of=8)                                       # re-ranked by the forward model
    >>> inverter.invert(vectors, best_of=8, rerank="environment")                 # re-ranked by real answers
    >>> inverter.invert(vectors, best_of=4, refine_steps=3)                       # feedback loop, trajectory kept
    >>> inverter.invert(vectors, budget=8)              # the search: answer index + rewrites, <= 8 calls per target
    >>> inverter.interpolate("A poem about the sea.", "A recipe for bread.", steps=5)   # DataFrame, one row a point
    >>> e2p_lib.invert_strings(["A haiku about rain."])        # the same, through a default inverter loaded once

Targets are texts (embedded first with the inverter's embedder, through the embedding cache) or vectors of shape
(d,) or (n, d) from that same embedder; they are L2-normalised, so raw vectors are fine. Every call returns one
`InversionResult` per target, in order; `results_frame` turns them into a DataFrame.

How a prompt is chosen (`Inverter.invert`):
    budget=B     the search (`Inverter.search`), the method to use and what 05_eval reports as `e2p, <=B calls`:
                 the answer index's nearest prompts (real cosines known, free), the prompts of the nearest stored
                 outputs and the policy's rewrites, at most B environment calls per target in all.
    best_of=1    the policy's greedy prompt alone. No forward model or environment is needed.
    best_of=N    the greedy prompt plus N-1 samples (`temperature`, `top_p`), re-ranked by `rerank`: "forward" (the
                 forward model's predicted cosine, no environment call) or "environment" (real answers, up to N
                 calls); None picks "forward" when there is a forward model. Greedy is always a candidate.
    refine_steps=k  k feedback rounds (needs the environment): answer the pick, embed its answer `a`, condition the
                 policy on c <- normalise(c + (t - a)) (`feedback_target`), propose and pick again; the best real
                 cosine over the rounds wins, each round's pick is kept in `trajectory`. A fixed-rule version of
                 vec2text's corrector loop (Morris et al. 2023).
    measure=True answer the final prompt even when nothing above needed it (1 call), filling `achieved_cosine`.

Environment calls are counted exactly per target (`environment_calls`): one per distinct non-empty prompt sent.
A prompt already answered for the same target is not sent again, and an empty prompt is never sent (it has no answer);
empty prompts score NaN and are never picked over a non-empty one. The environment answers greedily, up to
`answer_max_new_tokens` tokens (128: the answer a user gets; `make_lm` caches answers, so a repeat costs nothing).

Sampling is seeded: the same targets, in the same order, with the same `seed` give the same candidates. Samples for
one target depend on the other targets in the call (the policy samples them all from one random stream).

Interpolation (`Inverter.interpolate`): prompts for points on the great circle between two targets (`slerp`,
Shoemake 1985), the seed write-up's "future work": does the answer move smoothly from one meaning to the other?

Loading (`load_inverter`): the policy 04_rl chose by its validation score (`e2p_lib.policy_choice`; PPO's
`policy-rl/policy` when no choice is recorded), else the SFT one (`policy-sft/policy`, from 03_sft); the forward
model `forward-transformer`, else `forward-mlp`, when present; the embedder of the forward model's vector space (else
the local MiniLM); the local SmolLM2 environment with its answer cache; 02_pinecone's answer index for that
environment and its store of outputs, when built (`default_answer_index`, `default_retrieval_store`). Each can be
given instead.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from e2p_lib.answer_index import DEFAULT_ANSWER_TOKENS
from e2p_lib.checks import check_int, check_positive_int
from e2p_lib.echo import echo_prompts, echo_texts
from e2p_lib.embed.base import Embedder, check_texts, l2_normalise
from e2p_lib.embed.cache import embed_texts
from e2p_lib.ground import GROUND_MARGIN, grounded_prompts
from e2p_lib.ground import check_count as check_grounded_count
from e2p_lib.lm.base import DEFAULT_MAX_NEW_TOKENS
from e2p_lib.models.policy import Hypotheses, Hypothesis
from e2p_lib.store.retrieval import retrieved_rows
from e2p_lib.train.rewards import AnswerCosineReward

RERANK_METHODS = ("forward", "environment")
# At one call, an echo's composed text must land this much nearer the target than the best indexed prompt's real
# answer: chosen on 120 validation targets of the demo data (bench/echo.py), where a repeat loses ~0.1 on average.
ECHO_MARGIN = 0.05
POLICY_RUNS = ("policy-rl", "policy-sft")  # under models_dir(), most trained first (04_rl, then 03_sft)
FORWARD_MODEL_RUNS = ("forward-transformer", "forward-mlp")  # under models_dir(), better model first (03_sft table)
log = logging.getLogger(__name__)
ANTIPODAL_TOLERANCE = 1e-6  # cosine within this of -1: no single great circle joins the two vectors
IDENTICAL_TOLERANCE = 1e-6  # sin(angle) below this: the two vectors are (numerically) the same direction


# ---------------------------------------------------------------------------------------------------------------------
# Pure helpers


# The candidate sources the policy reads as hypotheses: dataset-style prompts. Echo (copy instructions) and grounded
# prompts (other rows' outputs appended as ideas) are answered and kept, never shown: it was not trained on them.
_SHOWN_SOURCES = frozenset({"index", "retrieved", "greedy", "sampled"})


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


def _best_index(scores: Sequence[float]) -> int:
    """Index of the highest score, NaN counting as lowest, the first on ties (so greedy, first, wins a tie)."""
    values = np.asarray(scores, dtype=np.float64)
    return int(np.argmax(np.where(np.isnan(values), -np.inf, values)))


def _real_or_lowest(candidate: Candidate) -> float:
    return -np.inf if math.isnan(candidate.achieved_cosine) else candidate.achieved_cosine


# ---------------------------------------------------------------------------------------------------------------------
# Results


@dataclass
class Candidate:
    """One prompt considered for one target, with what is known about it."""

    prompt: str
    step: int  # 0: the first round; k: the k-th refinement round
    source: str  # "greedy"/"sampled" (the policy's), "index" (answer index), "retrieved" (output retrieval), "echo",
    # "grounded" (Inverter.search)
    condition_cosine: float  # cosine(vector the policy was conditioned on, target): 1.0 in round 0
    predicted_cosine: float = math.nan  # forward model's cosine to the target; NaN without one, or for ""
    achieved_cosine: float = math.nan  # cosine(target, embedded answer); NaN when not answered
    answer: str | None = None  # the environment's answer, when it was asked


@dataclass
class InversionResult:
    """The chosen prompt for one target, its scores, the environment calls it cost, and how it was found."""

    prompt: str
    predicted_cosine: float  # NaN without a forward model
    achieved_cosine: float  # NaN when the environment was not used
    answer: str | None
    environment_calls: int  # distinct non-empty prompts the environment answered for this target
    rerank: str | None  # "forward", "environment", or None (best_of=1: the greedy prompt)
    candidates: list[Candidate] = field(default_factory=list)  # every prompt proposed, all rounds, in order
    trajectory: list[Candidate] = field(default_factory=list)  # each round's pick: round 0, then each refinement

    @property
    def greedy_prompt(self) -> str:
        """The first round's greedy prompt, what `best_of=1` returns: one best-of-N call also scores plain greedy."""
        return next(c.prompt for c in self.candidates if c.step == 0 and c.source == "greedy")

    def candidates_frame(self) -> pd.DataFrame:
        """The candidates as a DataFrame (one row each), with a `picked` column marking each round's pick."""
        picked = {id(c) for c in self.trajectory}
        return pd.DataFrame(
            [{**asdict(c), "picked": id(c) in picked} for c in self.candidates],
            columns=[*Candidate.__dataclass_fields__, "picked"],
        )


RESULT_COLUMNS = ["prompt", "predicted_cosine", "achieved_cosine", "answer", "environment_calls", "rerank"]


def results_frame(results: Sequence[InversionResult]) -> pd.DataFrame:
    """One row per result, in order: prompt, predicted and achieved cosine, answer, environment calls, rerank."""
    return pd.DataFrame([{c: getattr(r, c) for c in RESULT_COLUMNS} for r in results], columns=RESULT_COLUMNS)


# ---------------------------------------------------------------------------------------------------------------------
# The inverter


class Inverter:
    """A trained prompt policy with what it needs to aim and check its prompts.

    Args:
        policy: a `PromptPolicy` (`PromptPolicy.load(...)`).
        embedder: the embedder of the policy's vector space: it embeds text targets and the environment's answers.
        forward_model: a `ForwardModel` of that same space, for cheap re-ranking (`rerank="forward"`); optional.
        environment: the LM that answers prompts (a `ChatLM`, e.g. `make_lm("local")`), for `rerank="environment"`,
            refinement and `measure`; optional.
        answer_max_new_tokens: answer length cap in the environment (128, `e2p_lib.lm`'s default: the answer a
            user gets; RL trains with a shorter cap for speed).
        generation_batch_size: prompts the policy writes per forward pass (targets x candidates); bounds memory.
        embedding_cache_dir: where text and answer embeddings are cached (None: the embedder's usual cache).
        index: an `AnswerIndex` of this environment and embedder (`e2p_lib.answer_index`): known prompts with their
            real answers, the first candidates and hypotheses of `search`; optional. Its answers must have the
            inverter's `answer_max_new_tokens`, or its cosines are not the ones `search` measures.
        retrieval: the store of the dataset's outputs with their prompts (02_pinecone's default namespace): `search`
            also asks the prompts of the `retrieval_k` outputs nearest each target; optional.

    Raises:
        ValueError: the pieces disagree on the vector space (dimensions, or the forward model's space name).
    """

    def __init__(
        self,
        policy,
        embedder: Embedder,
        forward_model=None,
        environment=None,
        *,
        index=None,
        retrieval=None,
        retrieval_k: int = 8,
        answer_max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        generation_batch_size: int = 64,
        embedding_cache_dir: str | Path | None = None,
    ):
        dims = int(policy.config.embedding_dim)
        if int(embedder.dimensions) != dims:
            raise ValueError(
                f"The policy reads {dims}-d targets but the embedder {embedder.name} gives "
                f"{embedder.dimensions}-d vectors; pass the embedder the policy was trained with."
            )
        if forward_model is not None and (forward_model.target_space, int(forward_model.dimensions)) != (
            embedder.name,
            dims,
        ):
            raise ValueError(
                f"The forward model predicts {forward_model.target_space} vectors "
                f"({forward_model.dimensions}-d), but the embedder is {embedder.name} ({dims}-d); pass "
                "a forward model trained in the embedder's space, or forward_model=None."
            )
        if environment is not None and not callable(getattr(environment, "generate", None)):
            raise TypeError(
                f"environment must be an LM with generate(prompts, ...) (e.g. make_lm('local')); got "
                f"{type(environment).__name__}."
            )
        check_positive_int(generation_batch_size, "generation_batch_size")
        check_positive_int(retrieval_k, "retrieval_k")
        self.policy, self.embedder, self.forward_model, self.environment = policy, embedder, forward_model, environment
        self.index = index  # an AnswerIndex of this environment and embedder: the search's first candidates
        self.retrieval, self.retrieval_k = retrieval, retrieval_k  # the outputs' store: the search's second pool
        self.dimensions = dims
        self.generation_batch_size = generation_batch_size
        self.embedding_cache_dir = embedding_cache_dir
        self.reward = (
            None
            if environment is None
            else AnswerCosineReward(
                environment, embedder, max_new_tokens=answer_max_new_tokens, embedding_cache_dir=embedding_cache_dir
            )
        )

    # --- 1. targets -----------------------------------------------------------------------------------------------

    def target_vectors(self, targets) -> np.ndarray:
        """(n, d) unit float32 targets from texts (embedded here), one (d,) vector, or (n, d) vectors.

        Raises:
            ValueError: no targets, a blank text, a vector of the wrong size (naming the size expected), a zero,
                NaN or infinite vector, or texts and vectors mixed.
        """
        if isinstance(targets, str):
            targets = [targets]
        if isinstance(targets, (list, tuple)) and not targets:
            raise ValueError("No targets given: pass at least one text or vector.")
        if isinstance(targets, (list, tuple)) and any(isinstance(t, str) for t in targets):
            if not all(isinstance(t, str) for t in targets):
                raise TypeError("Targets mix texts and vectors; pass a list of texts or an array of vectors.")
            return embed_texts(check_texts(targets), self.embedder, self.embedding_cache_dir, show_progress=False)
        if hasattr(targets, "detach"):  # a torch tensor, possibly on the GPU
            targets = targets.detach().cpu().numpy()
        vectors = np.asarray(targets, dtype=np.float32)
        if vectors.ndim == 1:
            vectors = vectors[None]
        if vectors.ndim != 2 or vectors.shape[1] != self.dimensions:
            raise ValueError(
                f"Targets have shape {vectors.shape}; expected ({self.dimensions},) or (n, "
                f"{self.dimensions}): vectors of {self.embedder.name}, the policy's space. Embed texts "
                "with that embedder, or pass them as strings."
            )
        if len(vectors) == 0:
            raise ValueError("No targets given: pass at least one text or vector.")
        norms = np.linalg.norm(vectors, axis=1)
        bad = np.flatnonzero(~np.isfinite(norms) | (norms == 0))
        if len(bad):
            raise ValueError(
                f"{len(bad)} target(s) are zero, NaN or infinite (first at row {bad[0]}); such a vector "
                "has no direction. Drop those rows."
            )
        return vectors / norms[:, None]

    # --- 2. proposals: the greedy prompt, then best_of - 1 samples, per conditioning vector --------------------------

    def propose(
        self,
        conditions: np.ndarray,
        best_of: int,
        temperature: float,
        top_p: float,
        seed: int,
        max_prompt_tokens: int | None,
        hypotheses: Hypotheses = None,
    ) -> list[list[str]]:
        """For each row of `conditions` (n, d): [greedy prompt, best_of - 1 sampled prompts], each written with the
        row's `hypotheses` in the policy's context when given."""
        greedy = self._generate(conditions, max_new_tokens=max_prompt_tokens, hypotheses=hypotheses)
        sampled = [[] for _ in conditions]
        if best_of > 1:
            # One stream for the whole call: reproducible for the same targets and order. Like
            # PromptPolicy.generate(seed=...), this reseeds torch's global generator.
            torch.manual_seed(seed)
            rows = self._generate(
                conditions,
                temperature=temperature,
                top_p=top_p,
                num_return_sequences=best_of - 1,
                max_new_tokens=max_prompt_tokens,
                hypotheses=hypotheses,
            )
            sampled = [rows[i * (best_of - 1) : (i + 1) * (best_of - 1)] for i in range(len(conditions))]
        return [[g, *s] for g, s in zip(greedy, sampled)]

    def _generate(
        self, conditions: np.ndarray, num_return_sequences: int = 1, hypotheses: Hypotheses = None, **options
    ) -> list[str]:
        """`policy.generate` over chunks of targets, at most `generation_batch_size` prompts per pass."""
        from tqdm.auto import tqdm

        per_chunk = max(1, self.generation_batch_size // num_return_sequences)
        prompts: list[str] = []
        # A bar only when there is more than one chunk: a single text inverts in one pass, with nothing to watch.
        for start in tqdm(
            range(0, len(conditions), per_chunk),
            desc="writing prompts",
            unit="chunk",
            disable=len(conditions) <= per_chunk,
        ):
            chunk = None if hypotheses is None else hypotheses[start : start + per_chunk]
            prompts += self.policy.generate(
                conditions[start : start + per_chunk],
                hypotheses=chunk,
                num_return_sequences=num_return_sequences,
                **options,
            )
        return prompts

    # --- 3. scores: predicted (forward model) and achieved (environment) cosines ---------------------------------

    def predict(self, candidates: list[list[Candidate]], targets: np.ndarray) -> None:
        """Fill in each candidate's forward-model cosine to its target (one batched call; "" stays NaN)."""
        if self.forward_model is None:
            return
        pairs = [(c, i) for i, row in enumerate(candidates) for c in row if c.prompt.strip()]
        if not pairs:
            return
        cosines = self.forward_model.predict_cosine([c.prompt for c, _ in pairs], targets[[i for _, i in pairs]])
        for (candidate, _), cosine in zip(pairs, cosines):
            candidate.predicted_cosine = float(cosine)

    def answer(self, candidates: list[list[Candidate]], targets: np.ndarray, memo: list[dict]) -> None:
        """Fill in the achieved cosine and answer of each candidate, asking the environment only for prompts not
        answered before for that target (`memo[i]`: prompt -> (cosine, answer)), in one batched call."""
        asks = list(
            dict.fromkeys(
                (i, c.prompt)
                for i, row in enumerate(candidates)
                for c in row
                if c.prompt.strip() and c.prompt not in memo[i]
            )
        )
        if asks:
            result = self.reward([p for _, p in asks], targets[[i for i, _ in asks]])
            for (i, prompt), cosine, answer in zip(asks, result.rewards, result.answers):
                memo[i][prompt] = (float(cosine), answer)
        for i, row in enumerate(candidates):
            self._fill(row, memo[i])

    @staticmethod
    def _fill(candidates: list[Candidate], memo: dict[str, tuple[float, str]]) -> None:
        for c in candidates:
            if c.prompt in memo:
                c.achieved_cosine, c.answer = memo[c.prompt]

    # --- 4. the search ---------------------------------------------------------------------------------------------

    def invert(
        self,
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
        budget: int | None = None,
        **search_options: Any,
    ) -> list[InversionResult]:
        """The best prompt for each target (see the module docstring for how it is chosen).

        With `budget=B`, the search under an environment budget instead (`search`: at most B calls per target;
        `best_of`, `rerank`, `refine_steps` and `measure` do not apply, `search_options` go to it).

        Args:
            targets: a text, a list of texts, a (d,) vector or (n, d) vectors of the embedder's space.
            best_of: candidates per target and round: the greedy prompt plus best_of - 1 samples.
            temperature, top_p: how candidates are sampled (ignored when best_of=1); temperature must be > 0.
            rerank: "forward", "environment", or None ("forward" when there is a forward model); unused when
                best_of=1 (one candidate per round: nothing to rank).
            refine_steps: feedback rounds after the first pick (needs the environment).
            measure: answer the final prompt with the environment even when nothing else needed it.
            seed: seeds the sampling (round k uses seed + k).
            max_prompt_tokens: the longest prompt written (None: the policy's own cap).

        Raises:
            ValueError: bad targets (see `target_vectors`) or options, or an option that needs a missing piece
                (the message says which to pass).
        """
        if budget is not None:
            return self.search(
                targets,
                budget,
                temperature=temperature,
                top_p=top_p,
                seed=seed,
                max_prompt_tokens=max_prompt_tokens,
                **search_options,
            )
        if search_options:
            raise TypeError(f"{sorted(search_options)} apply to the budgeted search only: pass budget=B as well.")
        rerank = self._check_options(best_of, temperature, rerank, refine_steps, measure)
        targets = self.target_vectors(targets)
        uses_environment = rerank == "environment" or refine_steps > 0 or measure
        memo: list[dict[str, tuple[float, str]]] = [{} for _ in targets]  # per target: prompt -> (cosine, answer)
        history: list[list[Candidate]] = [[] for _ in targets]
        trajectory: list[list[Candidate]] = [[] for _ in targets]
        conditions = targets.copy()
        for step in range(refine_steps + 1):
            # 1. propose: greedy + samples from the current conditioning vectors
            proposals = self.propose(conditions, best_of, temperature, top_p, seed + step, max_prompt_tokens)
            candidates = [
                [
                    Candidate(p, step, "greedy" if j == 0 else "sampled", float(conditions[i] @ targets[i]))
                    for j, p in enumerate(row)
                ]
                for i, row in enumerate(proposals)
            ]
            # 2. score: the forward model always (cheap), the environment for every candidate when it re-ranks
            self.predict(candidates, targets)
            if rerank == "environment":
                self.answer(candidates, targets, memo)
            # 3. pick one per target by the re-ranking score (the greedy prompt when best_of=1)
            picks = [row[_best_index([self._score(c, rerank) for c in row])] for row in candidates]
            # 4. answer the picks (free when re-ranked by the environment: already answered)
            if uses_environment:
                self.answer([[p] for p in picks], targets, memo)
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
                        self.embedder,
                        self.embedding_cache_dir,
                        show_progress=False,
                    )
                    for i, vector in zip(answered, achieved):
                        conditions[i] = feedback_target(conditions[i], targets[i], vector)
        for i, row in enumerate(history):  # a prompt answered in any round has that answer wherever it appears
            self._fill(row, memo[i])
        results = []
        for i in range(len(targets)):
            final = (
                trajectory[i][_best_index([c.achieved_cosine for c in trajectory[i]])]
                if uses_environment
                else trajectory[i][0]
            )
            results.append(
                InversionResult(
                    final.prompt,
                    final.predicted_cosine,
                    final.achieved_cosine,
                    final.answer,
                    environment_calls=len(memo[i]),
                    rerank=rerank,
                    candidates=history[i],
                    trajectory=trajectory[i],
                )
            )
        return results

    # --- 5. search under an environment budget --------------------------------------------------------------------

    def search(
        self,
        targets,
        budget: int,
        *,
        exclude_ids: Sequence | None = None,
        retrieved: Sequence[Sequence[str]] | None = None,
        retrieved_share: float = 0.5,
        samples: int = 8,
        pool: int = 8,
        rounds: int = 2,
        temperature: float = 0.8,
        top_p: float = 1.0,
        seed: int = 0,
        switch_margin: float = math.inf,
        max_prompt_tokens: int | None = None,
        echo: int = 0,
        echo_margin: float = ECHO_MARGIN,
        ground: int = 0,
        ground_margin: float = GROUND_MARGIN,
    ) -> list[InversionResult]:
        """The best prompt for each target found with at most `budget` environment calls per target.

        Candidates: the `pool` indexed prompts whose real answers land nearest the target (the answer index, free:
        answered once for all targets) and the policy's rewrites of the best of them (greedy + `samples` - 1 samples
        per round). The forward model pre-ranks the rewrites at no environment cost; `budget - 1` calls answer the
        best-ranked ones over `rounds` rounds, each round's answered rewrites joining the hypotheses the next round
        reads (the corrector loop); the last call answers the final prompt unless it was answered already. The result
        is the prompt with the best real cosine; with `budget=1` the only call is that final answer, and a rewrite
        replaces the best indexed prompt only when the forward model predicts it `switch_margin` higher. The default
        never switches: on the demo's test targets the forward model's switch lost at every margin tried (README,
        `bench/switch_margin.py`), so one call answers the indexed prompt whose real answer lands nearest (unless
        `echo` or `ground`, below, replace it), and the policy writes no rewrites at all (none could be picked) unless
        a target has no indexed prompt.

        `retrieved` (per target, prompts nearest first; None: the prompts of the `retrieval_k` stored outputs
        nearest the target, from the inverter's `retrieval` store, when it has one) adds the other pool: before the
        rewrite rounds, `retrieved_share` of the `budget - 1` calls (rounded up) answer the first of them not known
        yet, and their real cosines join the hypotheses the policy reads; calls they leave unused go to the rewrites.
        Rows retrieved from the store whose ids the index holds are known already (their answers were indexed) and
        join at no call; prompts passed as `retrieved` carry no ids and are all answered. The index holds the
        environment's answers to train prompts, retrieval the dataset's outputs; which is nearer depends on the
        target, so the search asks both. At `budget=1` they compete with the rewrites for the forward model's switch.

        `echo` (needs the `retrieval` store) spends up to that many of the `budget - 1` calls first on echo prompts
        (`e2p_lib.echo`): a text composed from the nearest stored outputs' sentences, which the environment is asked
        to repeat, one template per call. They are candidates like the others (source "echo") but the policy never
        reads them: it was trained on dataset prompts, not copy instructions. At `budget=1` nothing is answered
        before the final call: the first echo prompt replaces the best indexed prompt when its text's own cosine is
        more than `echo_margin` above the indexed prompt's real one (a small LM repeats loosely; README, "Echo").

        `ground` (needs the `retrieval` store) spends up to that many calls, after the echoes and before the
        retrieved prompts, on the best indexed prompts (never an echo) with the same composed text appended, one
        prompt and wording per call in `e2p_lib.ground.GROUND_ORDER` (three wordings of the best, then the second and
        third best; source "grounded"). Like echoes, the policy never reads them: their text is other rows' outputs,
        not an instruction of the kind it was trained on. At `budget=1` the first grounded prompt replaces the best
        indexed prompt when the composed text's own cosine is more than `ground_margin` above that prompt's real one
        (an echo's rule, when `echo` is set, is asked first; with the default margins, 0.05 against 0.1, the grounded
        prompt is then never sent at one call). Both rules compare with the best real cosine known, also where the
        forward model's switch picked a rewrite.

        Every call is counted (`environment_calls` <= budget); `trajectory` holds each round's best.
        """
        check_positive_int(budget, "budget")
        if not 0.0 <= retrieved_share <= 1.0:
            raise ValueError(f"retrieved_share={retrieved_share!r} must be between 0 and 1 (a share of the calls).")
        for name, value in (("samples", samples), ("pool", pool), ("rounds", rounds)):
            check_positive_int(value, name)
        check_int(echo, "echo", minimum=0)
        check_int(ground, "ground", minimum=0)
        if ground:  # refused before any call, not when the prompts are written
            check_grounded_count(ground, "ground")
        if (echo or ground) and self.retrieval is None:
            option, fix = (f"echo={echo}", "echo=0") if echo else (f"ground={ground}", "ground=0")
            raise ValueError(
                f"{option} composes texts from the stored outputs nearest each target, and no store of them is "
                "loaded: run notebooks/02_pinecone.ipynb (load_inverter then opens its store), build the Inverter "
                f"with retrieval=<a VectorStore of the outputs>, or pass {fix}."
            )
        if self.environment is None:
            raise ValueError(
                "search(budget=...) answers prompts, which needs an environment LM; pass "
                "environment=make_lm('local') (load_inverter does by default)."
            )
        targets = self.target_vectors(targets)
        n = len(targets)
        retrieved_pairs = None
        if retrieved is None and self.retrieval is not None:
            retrieved_pairs = retrieved_rows(self.retrieval, targets, None, k=self.retrieval_k, exclude_ids=exclude_ids)
            retrieved = [[prompt for _, prompt in row] for row in retrieved_pairs]
        if retrieved is not None and len(retrieved) != n:
            raise ValueError(f"retrieved holds {len(retrieved)} rows of prompts for {n} targets: pass one per target.")
        # per target: indexed candidates, real cosines known (retrieved rows that the index holds among them)
        history = self._indexed(targets, pool, exclude_ids, retrieved_pairs)
        memo: list[dict[str, tuple[float, str]]] = [{} for _ in targets]  # prompts answered in this search
        trajectory: list[list[Candidate]] = [[] for _ in targets]
        left = [max(budget - 1, 0)] * n  # calls for exploring; the last call is kept for the final answer
        if echo or ground:
            texts = echo_texts(self.retrieval, targets, self.embedder, k=self.retrieval_k, exclude_ids=exclude_ids)
        if echo:
            echoes = echo_prompts(texts, echo)
            self._spend(echoes, [min(echo, c) for c in left], "echo", history, left, targets, memo)
        if ground:  # the best known prompts, grounded in the composed text, within the calls left
            rows = grounded_prompts([[c.prompt for c in self._known_best(row)] for row in history], texts, ground)
            rows = [row[:c] if budget > 1 else row[:1] for row, c in zip(rows, left)]  # 1: the one-call rule's
            self._spend(rows, [min(ground, c) for c in left], "grounded", history, left, targets, memo)
            firsts = [row[0] if row else None for row in rows]
        if retrieved is not None:  # nearest first: retrieval's own order
            shares = [math.ceil(c * retrieved_share) for c in left]
            self._spend(retrieved, shares, "retrieved", history, left, targets, memo)
        # At budget 1 a rewrite can become the final prompt only through the forward model's switch, or where nothing
        # real is known; otherwise writing rewrites would only fill `candidates` (05's one-call search: minutes).
        can_pick_rewrite = any(left) or (math.isfinite(switch_margin) and self.forward_model is not None)
        all_known = all(any(not math.isnan(c.achieved_cosine) for c in row) for row in history)
        steps = rounds if any(left) else int(can_pick_rewrite or not all_known)
        for step in range(steps):
            shown = [self.shown_hypotheses(history[i]) for i in range(n)]
            proposals = self.propose(
                targets, samples, temperature, top_p, seed + step, max_prompt_tokens, hypotheses=shown
            )
            fresh = self._unseen(proposals, history, step, lambda j: "greedy" if j == 0 else "sampled", targets)
            for i, row in enumerate(fresh):
                row.sort(key=lambda c: -np.nan_to_num(c.predicted_cosine, nan=-np.inf))
                history[i] += row
            quotas = [c // rounds + (step < c % rounds) for c in left]  # this round's share of each target's calls
            if any(quotas):
                self.answer([row[:q] for row, q in zip(fresh, quotas)], targets, memo)
            for i in range(n):
                trajectory[i].append(max(history[i], key=_real_or_lowest))
        if steps == 0:
            trajectory = [[max(row, key=_real_or_lowest)] for row in history]
        finals = [self._final(history[i], budget, switch_margin, targets[i]) for i in range(n)]
        if budget == 1 and (echo or ground):  # nothing answered yet: the composed text's cosine stands in for theirs
            for i in range(n):
                known = max((_real_or_lowest(c) for c in history[i]), default=-np.inf)  # the best real answer
                sent = None
                if echo and echoes[i] and texts[i].cosine - echo_margin > known:
                    sent = echoes[i][0]
                elif ground and firsts[i] and texts[i].cosine - ground_margin > known:
                    sent = firsts[i]
                if sent is not None:
                    finals[i] = next(c for c in history[i] if c.prompt == sent)
                    trajectory[i][-1] = finals[i]
        self.answer([[f] for f in finals], targets, memo)  # a cache hit, or the one call of budget=1
        for i, row in enumerate(history):
            self._fill(row, memo[i])
        return [
            InversionResult(
                f.prompt,
                f.predicted_cosine,
                f.achieved_cosine,
                f.answer,
                environment_calls=len(memo[i]),
                rerank="search",
                candidates=history[i],
                trajectory=trajectory[i],
            )
            for i, f in enumerate(finals)
        ]

    def _spend(self, rows, calls: list[int], source: str, history, left: list[int], targets, memo) -> None:
        """Add `rows`' unseen prompts to `history` as `source` candidates and answer the first `calls[i]` of target
        i's; calls a row could not use stay in `left` for the rewrites."""
        pooled = self._unseen(rows, history, 0, lambda j: source, targets)
        self.answer([row[:c] for row, c in zip(pooled, calls)], targets, memo)
        for i, row in enumerate(pooled):
            history[i] += row
            left[i] -= min(calls[i], len(row))

    def _unseen(self, rows, history, step: int, source, targets: np.ndarray) -> list[list[Candidate]]:
        """Per target, candidates of the distinct non-empty prompts in `rows` that `history` does not hold yet,
        scored by the forward model; `source(j)` names the j-th distinct prompt of a row."""
        unseen = []
        for row, seen in zip(rows, history):
            known = {c.prompt for c in seen}
            unseen.append(
                [
                    Candidate(p, step, source(j), 1.0)
                    for j, p in enumerate(dict.fromkeys(row))
                    if p.strip() and p not in known
                ]
            )
        self.predict(unseen, targets)
        return unseen

    def _indexed(self, targets: np.ndarray, pool: int, exclude_ids, retrieved_pairs=None) -> list[list[Candidate]]:
        """The answer index's nearest prompts as candidates whose real cosine is already known (none without one),
        and those of the retrieved (id, prompt) rows that the index holds: answering them again would spend calls
        on answers known for free (with every train prompt indexed, that is most of what retrieval returns)."""
        if self.index is None:
            return [[] for _ in targets]
        found = self.index.hypotheses(targets, k=pool, exclude_ids=exclude_ids)
        if retrieved_pairs is not None:
            for row, also in zip(found, self.index.known(retrieved_pairs, targets)):
                have = {h.prompt for h in row}
                row += [h for h in also if h.prompt not in have]
        rows = [[Candidate(h.prompt, 0, "index", 1.0, achieved_cosine=h.cosine) for h in row] for row in found]
        self.predict(rows, targets)
        return rows

    @staticmethod
    def _known_best(candidates: list[Candidate]) -> list[Candidate]:
        """The distinct dataset-style prompts (`_SHOWN_SOURCES`) with a real cosine, best first."""
        answered = sorted(
            (c for c in candidates if not math.isnan(c.achieved_cosine) and c.source in _SHOWN_SOURCES),
            key=lambda c: -c.achieved_cosine,
        )
        best: dict[str, Candidate] = {}
        for c in answered:  # a repeated prompt at its best copy's rank
            best.setdefault(c.prompt, c)
        return list(best.values())

    def shown_hypotheses(self, candidates: list[Candidate]) -> list[Hypothesis]:
        """What the policy reads: the candidates with a real cosine, best first, as many as it was trained on."""
        known = self._known_best(candidates)
        return [Hypothesis(c.prompt, c.achieved_cosine) for c in known[: self.policy.config.hypotheses]]

    def _final(self, candidates: list[Candidate], budget: int, switch_margin: float, target) -> Candidate:
        """The best real cosine; at budget 1, a rewrite the forward model rates `switch_margin` above it instead."""
        best = max(candidates, key=_real_or_lowest) if candidates else None
        if budget > 1 or self.forward_model is None or best is None or math.isnan(best.achieved_cosine):
            if best is None or math.isnan(best.achieved_cosine):  # nothing known: the best-ranked rewrite
                return max(candidates, key=lambda c: np.nan_to_num(c.predicted_cosine, nan=-np.inf))
            return best
        rewrite = max(
            (c for c in candidates if c.source != "index"),
            key=lambda c: np.nan_to_num(c.predicted_cosine, nan=-np.inf),
            default=None,
        )
        if rewrite is not None and rewrite.predicted_cosine > best.predicted_cosine + switch_margin:
            return rewrite
        return best

    @staticmethod
    def _score(candidate: Candidate, rerank: str | None) -> float:
        return candidate.achieved_cosine if rerank == "environment" else candidate.predicted_cosine

    def _check_options(
        self, best_of: int, temperature: float, rerank: str | None, refine_steps: int, measure: bool
    ) -> str | None:
        """Check `invert`'s options before any work; return the re-ranking method to use (None: nothing to rank)."""
        check_positive_int(best_of, "best_of")
        check_int(refine_steps, "refine_steps", minimum=0)
        if best_of > 1 and not (
            isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0
        ):
            raise ValueError(
                f"temperature={temperature!r}: best_of={best_of} samples candidates, which needs a "
                "finite temperature > 0 (0.8 by default); use best_of=1 for the greedy prompt alone."
            )
        if rerank is not None and rerank not in RERANK_METHODS:
            raise ValueError(f"rerank={rerank!r}; choose one of {RERANK_METHODS} (or None for the default).")
        needs_ranking = best_of > 1
        if rerank is None:
            if needs_ranking and self.forward_model is None and self.environment is None:
                raise ValueError(
                    f"best_of={best_of} re-ranks candidates, which needs a forward model or an "
                    "environment LM; this inverter has neither. Pass one (load_inverter does), or use "
                    "best_of=1."
                )
            rerank = "forward" if self.forward_model is not None else "environment"
        if needs_ranking and rerank == "forward" and self.forward_model is None:
            raise ValueError(
                "rerank='forward' needs a forward model: load one (load_inverter finds it after 03_sft) "
                "or use rerank='environment'."
            )
        if self.environment is None:
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

    # --- 5. interpolation -------------------------------------------------------------------------------------------

    def interpolate(self, a, b, steps: int = 5, **options: Any) -> pd.DataFrame:
        """Prompts for `steps` evenly spaced points on the great circle from `a` to `b` (texts or (d,) vectors).

        Returns `results_frame` of `invert(points, **options)` with the position `t` (0 at `a`, 1 at `b`) first.
        """
        check_int(steps, "steps", minimum=2, hint=" (both ends are included)")
        ends = []
        for name, end in (("a", a), ("b", b)):
            vectors = self.target_vectors(end)
            if len(vectors) != 1:
                raise ValueError(f"{name} must be one text or one ({self.dimensions},) vector; got {len(vectors)}.")
            ends.append(vectors[0])
        ts = np.linspace(0.0, 1.0, steps)
        frame = results_frame(self.invert(slerp(ends[0], ends[1], ts), **options))
        frame.insert(0, "t", ts)
        return frame


# ---------------------------------------------------------------------------------------------------------------------
# Loading the trained pieces


def default_policy_dir() -> Path:
    """The policy `load_inverter` uses: the one 04_rl chose by validation score (`policy_choice`), else 04's PPO
    policy (`models_dir()/policy-rl/policy`) if saved, else 03_sft's.

    Raises:
        FileNotFoundError: none exists.
    """
    from e2p_lib.config import models_dir
    from e2p_lib.policy_choice import chosen_policy_run, has_saved_policy
    from e2p_lib.train.sft import POLICY_FOLDER

    runs = [chosen_policy_run(models_dir()), *POLICY_RUNS]  # 04's choice (None when not recorded) first
    for run in runs:
        if run is not None and has_saved_policy(models_dir(), run):
            return models_dir() / run / POLICY_FOLDER
    folders = [models_dir() / run / POLICY_FOLDER for run in POLICY_RUNS]
    raise FileNotFoundError(
        f"No trained policy in {' or '.join(map(str, folders))}. Run notebooks/03_sft.ipynb "
        "(and 04_rl.ipynb for the RL policy), or pass policy_dir."
    )


def default_forward_model_dir() -> Path | None:
    """The forward model `load_inverter` uses: `models_dir()/forward-transformer`, else `forward-mlp`, else None."""
    from e2p_lib.config import models_dir
    from e2p_lib.train.loop import CHECKPOINT_FILE

    for run in FORWARD_MODEL_RUNS:
        if (models_dir() / run / CHECKPOINT_FILE).is_file():
            return models_dir() / run
    return None


def load_inverter(
    policy_dir: str | Path | None = None,
    forward_model_dir: str | Path | None | bool = None,
    environment: Any = "local",
    embedder: Embedder | None = None,
    device: str = "auto",
    index: Any = "auto",
    retrieval: Any = "auto",
    **options: Any,
) -> Inverter:
    """An `Inverter` over the trained models on disk (see the module docstring for the defaults).

    Args:
        policy_dir: a saved policy folder (None: `default_policy_dir()`).
        forward_model_dir: a saved forward model (None: `default_forward_model_dir()`, if any; False: none).
        environment: "local" or "openai" (`make_lm`, answers cached), an LM object, or None (no environment).
        embedder: the policy's embedder (None: the forward model's space, else the local MiniLM).
        device: for the policy and forward model ("auto": CUDA when available).
        index: the answer index `search` starts from: "auto" (02_pinecone's, in the local store `alpaca`, for this
            environment, embedder and answer length; none when it was not built), an `AnswerIndex`, or None.
        retrieval: the store of the dataset's outputs `search` also retrieves from: "auto" (02_pinecone's local
            store `alpaca`, when it holds vectors of the embedder's size), a `VectorStore`, or None.
        options: passed to `Inverter` (answer_max_new_tokens, generation_batch_size, embedding_cache_dir);
            answer_max_new_tokens defaults to the answer index's length (`DEFAULT_ANSWER_TOKENS`, as `e2p invert`
            does), so the search finds 02's index and its answers compare with the index's.

    Raises:
        FileNotFoundError: no trained policy (run 03_sft / 04_rl), or no forward model in `forward_model_dir`.
        ValueError: the pieces are of different vector spaces.
    """
    from e2p_lib.embed import embedder_from_name, make_embedder
    from e2p_lib.models.forward import ForwardModel
    from e2p_lib.models.policy import PromptPolicy

    if forward_model_dir is True:
        raise ValueError("forward_model_dir=True is ambiguous: pass a folder, None (the default one) or False.")
    policy_dir = policy_dir or default_policy_dir()  # first: a missing policy fails before anything loads
    policy = PromptPolicy.load(policy_dir, device=device)
    forward_dir = default_forward_model_dir() if forward_model_dir is None else forward_model_dir or None
    forward_model = ForwardModel.load(forward_dir, embedder=embedder, device=device) if forward_dir else None
    if embedder is None:
        embedder = (
            forward_model.embedder or embedder_from_name(forward_model.target_space, forward_model.dimensions)
            if forward_model is not None
            else make_embedder("local")
        )
    if isinstance(environment, str):
        from e2p_lib.lm import make_lm

        environment = make_lm(environment)
    if isinstance(index, str) and index != "auto":
        raise ValueError(f"index={index!r}: pass 'auto', an AnswerIndex or None.")
    if isinstance(retrieval, str) and retrieval != "auto":
        raise ValueError(f"retrieval={retrieval!r}: pass 'auto', a VectorStore or None.")
    options.setdefault("answer_max_new_tokens", DEFAULT_ANSWER_TOKENS)  # 128 would find no index built by 02
    if isinstance(index, str) or isinstance(retrieval, str):  # both live in 02's store: open it once
        store = _existing_local_store("alpaca")
        if isinstance(index, str):
            index = default_answer_index(environment, embedder, options["answer_max_new_tokens"], store)
        if isinstance(retrieval, str):
            retrieval = default_retrieval_store(embedder, store)
    return Inverter(policy, embedder, forward_model, environment, index=index, retrieval=retrieval, **options)


def _existing_local_store(store_name: Any):
    """The local store `store_name`, or None when it was never built (opening a missing store would create it);
    a store already opened (or None) is returned as it is."""
    from e2p_lib.config import data_dir
    from e2p_lib.store import make_vector_store

    if not isinstance(store_name, str):
        return store_name
    if not (data_dir() / "vectorstores" / store_name).is_dir():
        log.info("No local store %r: run notebooks/02_pinecone.ipynb to build it.", store_name)
        return None
    return make_vector_store("local", store_name)


def default_retrieval_store(embedder: Embedder, store: Any = "alpaca"):
    """02_pinecone's local store of the dataset's outputs, when it holds vectors of `embedder`'s size, else None.

    `store`: the local store's name (opened only if it was built), or a store already opened (or None)."""
    store = _existing_local_store(store)
    if store is None or store.count() == 0 or int(store.dimensions) != int(embedder.dimensions):
        return None
    return store


def default_answer_index(environment: Any, embedder: Embedder, max_new_tokens: int, store: Any = "alpaca"):
    """02_pinecone's answer index in the local store `store` for this environment, embedder and answer length,
    or None (no environment, no such store, or no index of these settings in it): the search then starts from the
    policy's rewrites alone, which the README's results show is weaker. `store`: as in `default_retrieval_store`."""
    from e2p_lib.answer_index import AnswerIndex, answer_namespace

    if environment is None:
        return None
    store = _existing_local_store(store)
    if store is None:
        return None
    index = AnswerIndex(store, answer_namespace(environment, embedder, max_new_tokens))
    if len(index) == 0:
        log.info(
            "No answer index for %s with %d-token answers in store %r: run 02_pinecone with those settings.",
            environment.name,
            max_new_tokens,
            store,
        )
        return None
    return index


# ---------------------------------------------------------------------------------------------------------------------
# Top-level functions (vec2text's invert_embeddings / invert_strings)


@functools.lru_cache(maxsize=1)
def default_inverter() -> Inverter:
    """`load_inverter()` once per process; call `default_inverter.cache_clear()` after training a new model."""
    return load_inverter()


def invert_embeddings(embeddings, inverter: Inverter | None = None, **options: Any) -> list[InversionResult]:
    """The best prompt for each embedding ((d,) or (n, d)); `options` as in `Inverter.invert`.

    `inverter` None uses `default_inverter()` (the trained models on disk, loaded on first use).
    """
    if isinstance(embeddings, str) or (
        isinstance(embeddings, (list, tuple)) and embeddings and isinstance(embeddings[0], str)
    ):
        raise TypeError("invert_embeddings takes vectors; for texts use invert_strings.")
    return (inverter or default_inverter()).invert(embeddings, **options)


def invert_strings(strings: Sequence[str], inverter: Inverter | None = None, **options: Any) -> list[InversionResult]:
    """The best prompt for each text's embedding (the text is embedded first): a prompt whose answer means the same.

    `inverter` None uses `default_inverter()`; `options` as in `Inverter.invert`.
    """
    if isinstance(strings, str):
        raise TypeError("invert_strings takes a list of texts, not one string: wrap it as [text].")
    return (inverter or default_inverter()).invert(check_texts(strings), **options)
