"""`Inverter`: the trained pieces held together, and what the search and sampling share (targets, writing, scoring).

    >>> inverter = load_inverter()                                   # the trained pieces (e2p_lib.inversion.api)
    >>> inverter.invert(["A haiku about rain."])                     # the search, SearchConfig() (what 05 reports)
    >>> inverter.search(vectors, SearchConfig(budget=1))             # one environment call per target
    >>> inverter.sample(vectors, best_of=8, rerank="environment")    # best-of-N (e2p_lib.inversion.sampling)
    >>> inverter.interpolate("A poem about the sea.", "A recipe for bread.", steps=5)

Targets are texts (embedded first with the inverter's embedder, through the embedding cache) or vectors of shape
(d,) or (n, d) from that same embedder; they are L2-normalised, so raw vectors are fine. Every call returns one
`InversionResult` per target, in order. Environment calls are counted exactly per target: one per distinct non-empty
prompt sent; a prompt already answered for the same target is not sent again, and an empty prompt never is.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from e2p_lib.checks import check_int, check_positive_int
from e2p_lib.embed.base import Embedder, check_texts
from e2p_lib.embed.cache import embed_texts
from e2p_lib.inversion.config import ANSWER_TOKENS, SearchConfig
from e2p_lib.inversion.results import Candidate, InversionResult, fill, known_best, results_frame
from e2p_lib.models.policy import Hypotheses, Hypothesis
from e2p_lib.train.rewards import AnswerCosineReward


class Inverter:
    """A trained prompt policy with what it needs to aim and check its prompts.

    Args:
        policy: a `PromptPolicy` (`PromptPolicy.load(...)`).
        embedder: the embedder of the policy's vector space: it embeds text targets and the environment's answers.
        forward_model: a `ForwardModel` of that same space, to rank rewrites before any call; optional.
        environment: the LM that answers prompts (a `ChatLM`, e.g. `make_lm("local")`); optional for `sample`
            with `rerank="forward"`, needed by the search.
        index: an `AnswerIndex` of this environment and embedder (`e2p_lib.answer_index`): known prompts with their
            real answers, the search's first candidates and the policy's hypotheses; optional.
        retrieval: the store of the dataset's outputs with their prompts (02's default namespace): the search reads
            the outputs nearest each target (their prompts are candidates, their text what copying is measured
            against); optional.
        clean_line: the most a clean prompt may copy (`e2p_lib.evaluate.quality.CleanLine`, or its float), as 02
            recorded it; `SearchConfig(max_copied_share=...)` overrides it.
        generation_batch_size: prompts the policy writes per forward pass (targets x candidates); bounds memory.
        embedding_cache_dir: where text and answer embeddings are cached (None: the embedder's usual cache).

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
        clean_line=None,
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
        self.policy, self.embedder, self.forward_model, self.environment = policy, embedder, forward_model, environment
        self.index, self.retrieval = index, retrieval
        if clean_line is not None and not isinstance(getattr(clean_line, "max_copied_share", clean_line), (int, float)):
            raise TypeError(
                f"clean_line={clean_line!r}: pass a CleanLine (evaluate.quality.load_clean_line), a float, or None."
            )
        self.clean_line = clean_line
        self.dimensions = dims
        self.generation_batch_size = generation_batch_size
        self.embedding_cache_dir = embedding_cache_dir

    def __repr__(self) -> str:
        return (
            f"Inverter(policy hypotheses={self.policy.config.hypotheses}, embedder={self.embedder.name}, "
            f"forward_model={getattr(self.forward_model, 'kind', None)}, "
            f"environment={getattr(self.environment, 'name', None)}, index={self.index is not None}, "
            f"retrieval={self.retrieval is not None}, clean_line={self.max_copied_share})"
        )

    @property
    def max_copied_share(self) -> float | None:
        """The clean line as a float (None when no line is known)."""
        line = self.clean_line
        return None if line is None else float(getattr(line, "max_copied_share", line))

    # --- the two methods ---------------------------------------------------------------------------------------------

    def search(
        self,
        targets,
        config: SearchConfig | None = None,
        *,
        exclude_ids=None,
        retrieved=None,
    ) -> list[InversionResult]:
        """The best prompt for each target found with at most `config.budget` environment calls
        (`e2p_lib.inversion.search`; `SearchConfig()` is what 05_eval reports).

        Args:
            targets: a text, a list of texts, a (d,) vector or (n, d) vectors of the embedder's space. Texts are
                also what a prompt's copied share is measured against.
            config: the search's options (None: `SearchConfig()`).
            exclude_ids: per target, stored row ids it must never read (its own row, same-output rows).
            retrieved: per target, prompts to try (nearest first) instead of the stored outputs' prompts.
        """
        from e2p_lib.inversion.search import run_search

        texts = _texts_of(targets)
        return run_search(self, self.target_vectors(targets), config or SearchConfig(), texts, exclude_ids, retrieved)

    def invert(self, targets, config: SearchConfig | None = None, **options: Any) -> list[InversionResult]:
        """`search` with `SearchConfig(**options)` (e.g. `invert(texts, budget=1)`), or with `config`, not both."""
        if config is not None and options:
            raise TypeError(f"Pass either config or options {sorted(options)}, not both.")
        return self.search(targets, config or SearchConfig(**options))

    def sample(self, targets, **options: Any) -> list[InversionResult]:
        """Best-of-N and refinement from the policy (`e2p_lib.inversion.sampling.sample` has the options)."""
        from e2p_lib.inversion.sampling import sample

        return sample(self, targets, **options)

    def interpolate(self, a, b, steps: int = 5, config: SearchConfig | None = None) -> pd.DataFrame:
        """Prompts for `steps` evenly spaced points on the great circle from `a` to `b` (texts or (d,) vectors).

        Returns `results_frame` of `search(points, config)` with the position `t` (0 at `a`, 1 at `b`) first.
        """
        from e2p_lib.inversion.sampling import slerp

        check_int(steps, "steps", minimum=2, hint=" (both ends are included)")
        ends = []
        for name, end in (("a", a), ("b", b)):
            vectors = self.target_vectors(end)
            if len(vectors) != 1:
                raise ValueError(f"{name} must be one text or one ({self.dimensions},) vector; got {len(vectors)}.")
            ends.append(vectors[0])
        ts = np.linspace(0.0, 1.0, steps)
        frame = results_frame(self.search(slerp(ends[0], ends[1], ts), config))
        frame.insert(0, "t", ts)
        return frame

    # --- 1. targets --------------------------------------------------------------------------------------------------

    def embed(self, texts) -> np.ndarray:
        """(n, d) unit vectors of `texts` through the embedding cache: a text seen before is not embedded again."""
        return embed_texts(texts, self.embedder, self.embedding_cache_dir, show_progress=False)

    def target_vectors(self, targets) -> np.ndarray:
        """(n, d) unit float32 targets from texts (embedded here), one (d,) vector, or (n, d) vectors.

        Raises:
            ValueError: no targets, a blank text, a vector of the wrong size (naming the size expected), a zero,
                NaN or infinite vector, or texts and vectors mixed.
        """
        texts = _texts_of(targets)
        if texts is not None:
            return self.embed(texts)
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

    def check_reading(self, index_needed: bool = True) -> None:
        """Refuse to write without what the policy was trained to read beside the target: without it the policy
        writes prompts unrelated to the target. (The search can show known prompts of its own: `index_needed`.)

        Raises:
            ValueError: known prompts are read and there is no answer index, or stored answers and no store.
        """
        config = self.policy.config
        if config.hypotheses and index_needed and self.index is None:
            raise ValueError(
                f"The policy was trained to read {config.hypotheses} known prompts (the answer index's) beside the "
                "target, and this inverter has no answer index. Run notebooks/02_pinecone.ipynb (load_inverter then "
                "finds the index) or pass index=."
            )
        if config.answers and self.retrieval is None:
            raise ValueError(
                f"The policy was trained to read the {config.answers} stored outputs nearest the target, and this "
                "inverter has no store of them. Run notebooks/02_pinecone.ipynb (load_inverter then opens it) or "
                "pass retrieval=."
            )

    def reading(self, targets: np.ndarray, exclude_ids=None) -> list[list[Hypothesis]] | None:
        """What the policy reads beside each target: the index's best known prompts and the nearest stored outputs,
        as many as it was trained on (None when it reads neither); never a row in `exclude_ids[i]`."""
        from e2p_lib.pipeline import nearest_answers

        config = self.policy.config
        if not (config.hypotheses or config.answers):
            return None
        prompts = (
            self.index.hypotheses(targets, k=config.hypotheses, exclude_ids=exclude_ids)
            if config.hypotheses
            else [[] for _ in targets]
        )
        if not config.answers:
            return prompts
        answers = nearest_answers(self.retrieval, targets, config.answers, exclude_ids)
        return [p + a for p, a in zip(prompts, answers)]

    # --- 2. writing: the greedy prompt, then best_of - 1 samples, per conditioning vector ----------------------------

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
        row's `hypotheses` in the policy's context when given; one reading of each context for all of them."""
        import torch

        if best_of == 1:
            greedy = self._generate(conditions, max_new_tokens=max_prompt_tokens, hypotheses=hypotheses)
            return [[g] for g in greedy]
        # One stream for the whole call: reproducible for the same targets and order. Like
        # PromptPolicy.generate(seed=...), this reseeds torch's global generator.
        torch.manual_seed(seed)
        rows = self._generate(
            conditions,
            temperature=temperature,
            top_p=top_p,
            num_return_sequences=best_of,
            greedy_first=True,
            max_new_tokens=max_prompt_tokens,
            hypotheses=hypotheses,
        )
        return [rows[i * best_of : (i + 1) * best_of] for i in range(len(conditions))]

    def _generate(
        self, conditions: np.ndarray, num_return_sequences: int = 1, hypotheses: Hypotheses = None, **options
    ) -> list[str]:
        """`policy.generate` over chunks of targets, at most `generation_batch_size` prompts per pass."""
        from tqdm.auto import tqdm

        per_chunk = max(1, self.generation_batch_size // num_return_sequences)
        prompts: list[str] = []
        # LoRA merged for generation: one matmul per projection instead of three, the same prompts up to rounding.
        with self.policy.merged_lora():
            # A bar only when there is more than one chunk: a single text inverts in one pass, nothing to watch.
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

    def shown_hypotheses(self, candidates: list[Candidate]) -> list[Hypothesis]:
        """What the policy reads: the distinct dataset-style prompts with a real cosine, best first, as many as it
        was trained on."""
        return [
            Hypothesis(c.prompt, c.achieved_cosine) for c in known_best(candidates)[: self.policy.config.hypotheses]
        ]

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

    def reward(self, answer_tokens: int = ANSWER_TOKENS) -> AnswerCosineReward:
        """The environment's answer cosine at `answer_tokens` (answers and embeddings cached).

        Raises:
            ValueError: no environment (the message says what to pass).
        """
        if self.environment is None:
            raise ValueError(
                "Answering prompts needs an environment LM; pass environment=make_lm('local') (load_inverter does "
                "by default)."
            )
        return AnswerCosineReward(
            self.environment, self.embedder, max_new_tokens=answer_tokens, embedding_cache_dir=self.embedding_cache_dir
        )

    def fluency(self, prompts: list[str]) -> np.ndarray:
        """Each prompt's perplexity under the base LM on the policy's device (`base_lm_perplexity`)."""
        return base_lm_perplexity(prompts, str(self.policy.device))

    def answer(self, candidates: list[list[Candidate]], targets: np.ndarray, memo: list[dict], reward) -> None:
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
            result = reward([p for _, p in asks], targets[[i for i, _ in asks]])
            for (i, prompt), cosine, answer in zip(asks, result.rewards, result.answers):
                memo[i][prompt] = (float(cosine), answer)
        for i, row in enumerate(candidates):
            fill(row, memo[i])


@functools.cache
def base_lm(device: str):
    """SmolLM2-Instruct without adapters, loaded once per process and device: what fluency is measured under."""
    from e2p_lib.lm.smollm import load_smollm2

    return load_smollm2(device=device)


def base_lm_perplexity(prompts: list[str], device: str) -> np.ndarray:
    """Each prompt's perplexity under `base_lm`: its fluency, as 05 measures it (the search's pick and the CLI's)."""
    from e2p_lib.evaluate.metrics import perplexity

    model, tokenizer = base_lm(device)
    return perplexity(prompts, model, tokenizer, show_progress=False)


def _texts_of(targets) -> list[str] | None:
    """The targets as a list of texts when they are texts (checked), else None.

    Raises:
        ValueError: an empty list, or a blank text. TypeError: texts and vectors mixed.
    """
    if isinstance(targets, str):
        targets = [targets]
    if getattr(getattr(targets, "dtype", None), "kind", None) in ("O", "U", "S"):  # a Series or array of texts
        if all(isinstance(t, str) for t in list(targets)):
            targets = list(targets)
    if isinstance(targets, (list, tuple)) and not targets:
        raise ValueError("No targets given: pass at least one text or vector.")
    if isinstance(targets, (list, tuple)) and any(isinstance(t, str) for t in targets):
        if not all(isinstance(t, str) for t in targets):
            raise TypeError("Targets mix texts and vectors; pass a list of texts or an array of vectors.")
        return check_texts(list(targets))
    return None
