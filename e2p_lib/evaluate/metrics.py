"""Evaluation metrics for 05_eval: how close each method's answers land to held-out targets, and at what cost.

Every method is scored the same way: its prompt for each target is answered by the same environment LM
(`e2p_lib.lm`) and the answer is embedded by the same embedder as the targets, so the headline number,
`cosine(target, embed(answer))`, is comparable across methods. This module turns per-method prompts, answers and
answer vectors into numbers; `e2p_lib.evaluate.plots` turns them into figures.

    >>> cosines = {name: answer_cosines(vectors, targets) for name, vectors in answer_vectors.items()}
    >>> summarise(cosines)                       # mean, median, 95% CI, win rates against oracle and retrieval, n
    >>> noise_ceiling(oracle_seed_a, oracle_seed_b, targets).summary()   # how much of a gap is sampling noise
    >>> prompt_overlap(prompts["SFT"], prompts["original prompt"])      # BLEU and ROUGE-L per pair
    >>> perplexity(prompts["SFT"], model, tokenizer)                    # fluency under SmolLM2 (NaN: empty)
    >>> perplexity_rows(prompts, model, tokenizer)                      # every method's, each distinct prompt once
    >>> distinct_n(prompts["SFT"], 2), mean_pairwise_cosine(answer_vectors["SFT"])          # diversity
    >>> table = results_table(targets, answer_vectors, prompts=prompts, reference_prompts=prompts["original prompt"],
    ...                       perplexities=ppl, eval_env_calls=calls)   # everything, one row per method
    >>> save_results(table, reports_dir())                              # results.csv + results.json, atomically

Conventions:
- Method names. The oracle (the target's own Alpaca prompt) is `REFERENCE` = "original prompt" and the retrieval
  baseline is `RETRIEVAL` = "nearest neighbour"; both can be renamed or switched off (None) per call.
- Win rate of A against B: the share of targets where A's cosine is strictly higher, ties counting half, so a method
  that returns the oracle's own prompts scores exactly 0.5 against it, and A-vs-B plus B-vs-A is always 1. Cosines
  within `TIE_TOLERANCE` of each other tie: two float32 paths to the same answer can differ in the last bits.
- Confidence intervals are bootstrap 95% intervals of the mean over targets (scipy.stats.bootstrap, BCa, seeded).
  They cover the choice of targets, not the environment's sampling noise; `noise_ceiling` measures that.
- Environment calls are passed in: `eval_env_calls` counts every prompt the environment answered to produce a
  method's row (default: one per target), `train_env_calls` the answers spent while training (RL rollouts).
- Perplexity of an empty (or blank) prompt is NaN: it has no tokens to score. Tables report the median over the
  rest (perplexity is heavy-tailed) and the share of empty prompts beside it.
- Lengths are cl100k tokens (`e2p_lib.tokens.count_tokens`), as elsewhere in e2p.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from e2p_lib.atomic import write_atomically
from e2p_lib.embed.base import l2_normalise

REFERENCE = "original prompt"  # the oracle: the target's own Alpaca prompt
RETRIEVAL = "nearest neighbour"  # the prompt of the nearest stored output (e2p_lib.store.retrieval)
TIE_TOLERANCE = 1e-6  # cosines closer than this tie (float32 rounding, not a real difference)
CONFIDENCE = 0.95
# Where SmolLM2-Instruct meets a prompt: a ChatML user turn. Scoring prompts there measures how natural they are as
# requests to the base LM; any other tokenizer should pass its own `context` (its BOS token, say).
DEFAULT_PERPLEXITY_CONTEXT = "<|im_start|>user\n"
SUMMARY_COLUMNS = [
    "n_targets",
    "mean_cosine",
    "median_cosine",
    "ci95_low",
    "ci95_high",
    "win_vs_reference",
    "win_vs_retrieval",
]


# --- input checks ------------------------------------------------------------------------------------------------


def check_cosines(cosines_by_method: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The cosines as 1-D float64 arrays, all the same length (the same targets, in the same order), all finite."""
    if not cosines_by_method:
        raise ValueError("No methods given: pass a dict of method name -> (n,) answer cosines.")
    arrays = {name: np.asarray(values, dtype=np.float64) for name, values in cosines_by_method.items()}
    lengths = {name: a.shape for name, a in arrays.items()}
    if any(len(shape) != 1 for shape in lengths.values()) or len({s[0] for s in lengths.values()}) != 1:
        raise ValueError(
            f"Every method needs one cosine per target, as a 1-D array of the same length; got shapes "
            f"{lengths}. Score every method on the same targets, in the same order."
        )
    if next(iter(lengths.values()))[0] == 0:
        raise ValueError("The cosine arrays are empty: evaluate at least one target.")
    for name, a in arrays.items():
        if not np.all(np.isfinite(a)):
            raise ValueError(
                f"Method {name!r} has {int(np.sum(~np.isfinite(a)))} non-finite cosines (first at "
                f"target {int(np.flatnonzero(~np.isfinite(a))[0])}); score a missing answer as 0."
            )
    return arrays


def _check_method_name(name: str | None, methods: Sequence[str], what: str) -> None:
    if name is not None and name not in methods:
        raise ValueError(
            f"{what}={name!r} is not among the methods {list(methods)}; pass {what}=None to leave "
            f"that comparison out, or the method's name as it appears in the dict."
        )


def _check_keys(mapping: Mapping[str, object] | None, methods: Sequence[str], what: str) -> dict:
    """`mapping` as a dict, refusing methods that are not in the table (a typo would otherwise vanish silently)."""
    mapping = dict(mapping or {})
    unknown = sorted(set(mapping) - set(methods))
    if unknown:
        raise ValueError(
            f"{what} names methods {unknown} that have no answer vectors; the methods are {list(methods)}."
        )
    return mapping


def _check_pairs(generated: Sequence[str], references: Sequence[str]) -> tuple[list[str], list[str]]:
    if isinstance(generated, str) or isinstance(references, str):
        raise TypeError("Pass lists of prompts, not single strings: wrap one prompt as [prompt].")
    generated, references = list(generated), list(references)
    if len(generated) != len(references):
        raise ValueError(
            f"{len(generated)} generated prompts but {len(references)} references; pair them one "
            f"to one (one of each per target)."
        )
    return generated, references


# --- answer cosines ----------------------------------------------------------------------------------------------


def answer_cosines(answer_vectors: np.ndarray, target_vectors: np.ndarray) -> np.ndarray:
    """cosine(answer_i, target_i) per target, shape (n,); rows are L2-normalised first, so any scale is fine.

    A zero row (an answer that was never embedded) raises rather than scoring 0: embed a placeholder such as
    `NO_ANSWER` as `e2p_lib.train.rewards.embed_answers` does, or set that target's cosine to 0 yourself.
    """
    answers, targets = np.asarray(answer_vectors), np.asarray(target_vectors)
    if answers.ndim != 2 or answers.shape != targets.shape:
        raise ValueError(
            f"answer_vectors {answers.shape} and target_vectors {targets.shape} must both be (n, d), "
            f"one answer per target in the same order, embedded in the same space."
        )
    return np.sum(l2_normalise(answers) * l2_normalise(targets), axis=1)


# --- win rate and bootstrap ----------------------------------------------------------------------------------------


def win_rate(cosines: np.ndarray, against: np.ndarray, tie_tolerance: float = TIE_TOLERANCE) -> float:
    """Share of targets where `cosines` beats `against` (strictly, beyond `tie_tolerance`); ties count half."""
    difference = np.asarray(cosines, dtype=np.float64) - np.asarray(against, dtype=np.float64)
    wins, ties = np.sum(difference > tie_tolerance), np.sum(np.abs(difference) <= tie_tolerance)
    return float((wins + 0.5 * ties) / len(difference))


def mean_ci(
    values: np.ndarray, n_resamples: int = 2000, seed: int = 0, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """Bootstrap confidence interval of the mean (BCa, scipy.stats.bootstrap); the same seed gives the same interval.

    BCa corrects the plain percentile interval for skew, and cosine distributions are skewed. Degenerate inputs get
    a documented answer instead of scipy's warning: fewer than 2 values -> (NaN, NaN); all values equal -> (v, v).
    """
    from scipy.stats import bootstrap

    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        return math.nan, math.nan
    if np.all(values == values[0]):
        return float(values[0]), float(values[0])
    result = bootstrap(
        (values,),
        np.mean,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method="BCa",
        rng=np.random.default_rng(seed),
        vectorized=True,
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


# --- summarise -----------------------------------------------------------------------------------------------------


def summarise(
    cosines_by_method: Mapping[str, np.ndarray],
    *,
    reference: str | None = REFERENCE,
    retrieval: str | None = RETRIEVAL,
    n_resamples: int = 2000,
    seed: int = 0,
    tie_tolerance: float = TIE_TOLERANCE,
) -> pd.DataFrame:
    """One row per method (index `method`, in the dict's order) with the columns of `SUMMARY_COLUMNS`.

    `win_vs_reference` / `win_vs_retrieval`: win rate (ties half, see `win_rate`) against the `reference` and
    `retrieval` methods; NaN throughout when that name is None. The comparator itself scores 0.5 against itself.

    Raises:
        ValueError: no methods; arrays of different lengths or with non-finite values; `reference` or `retrieval`
            not None and not a method name.
    """
    arrays = check_cosines(cosines_by_method)
    _check_method_name(reference, list(arrays), "reference")
    _check_method_name(retrieval, list(arrays), "retrieval")
    rows = []
    for name, cosines in arrays.items():
        low, high = mean_ci(cosines, n_resamples=n_resamples, seed=seed)
        rows.append(
            {
                "method": name,
                "n_targets": len(cosines),
                "mean_cosine": float(cosines.mean()),
                "median_cosine": float(np.median(cosines)),
                "ci95_low": low,
                "ci95_high": high,
                "win_vs_reference": math.nan
                if reference is None
                else win_rate(cosines, arrays[reference], tie_tolerance),
                "win_vs_retrieval": math.nan
                if retrieval is None
                else win_rate(cosines, arrays[retrieval], tie_tolerance),
            }
        )
    return pd.DataFrame(rows).set_index("method")[SUMMARY_COLUMNS]


# --- noise ceiling -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NoiseCeiling:
    """The original prompts answered twice (seeds a and b, temperature > 0), per target: how noisy is the yardstick?

    With greedy decoding both answers are the same and everything here is trivial (self-cosine 1, no spread): then
    all the variation between methods comes from the targets, which the bootstrap CI already covers.
    """

    answer_self_cosine: np.ndarray  # (n,) cosine(answer_a, answer_b): how alike two samples of one prompt are
    target_cosine_a: np.ndarray  # (n,) cosine(answer_a, target)
    target_cosine_b: np.ndarray  # (n,) cosine(answer_b, target)

    def summary(self) -> dict[str, float]:
        """The numbers to quote beside the results table.

        - `answer_self_cosine`: mean cosine between the two answers to one prompt. A method cannot be expected to
          land closer to the target's answer than the environment lands to itself.
        - `target_cosine`: the oracle's mean cosine to the targets, averaged over both seeds.
        - `seed_mean_gap`: |mean(a) - mean(b)|, the gap between two runs of the very same method.
        - `per_target_sd`: sd of one answer's cosine to its target across seeds, std(a - b) / sqrt(2) (the two
          samples are independent draws with the same variance).
        - `mean_sd`: per_target_sd / sqrt(n), the sampling noise in a method's mean with the targets held fixed;
          a paired gap between two methods below about 2 * sqrt(2) * mean_sd is within the environment's noise.
        - `seed_win_rate`: seed a's win rate against seed b (ties half); about 0.5, and its distance from 0.5 is
          what chance alone does to a win rate.
        """
        a, b = self.target_cosine_a, self.target_cosine_b
        n = len(a)
        per_target_sd = float(np.std(a - b, ddof=1) / math.sqrt(2)) if n > 1 else math.nan
        return {
            "n_targets": n,
            "answer_self_cosine": float(np.mean(self.answer_self_cosine)),
            "target_cosine": float((np.mean(a) + np.mean(b)) / 2),
            "seed_mean_gap": float(abs(a.mean() - b.mean())),
            "per_target_sd": per_target_sd,
            "mean_sd": per_target_sd / math.sqrt(n),
            "seed_win_rate": win_rate(a, b),
        }


def noise_ceiling(
    answer_vectors_a: np.ndarray, answer_vectors_b: np.ndarray, target_vectors: np.ndarray
) -> NoiseCeiling:
    """Compare two sampled answers (seeds a, b) to each original prompt with each other and with the target.

    All three arrays are (n, d) in the targets' order, embedded by the evaluation embedder.
    """
    return NoiseCeiling(
        answer_self_cosine=answer_cosines(answer_vectors_a, answer_vectors_b),
        target_cosine_a=answer_cosines(answer_vectors_a, target_vectors),
        target_cosine_b=answer_cosines(answer_vectors_b, target_vectors),
    )


# --- prompt overlap with the original prompt ---------------------------------------------------------------------


def prompt_overlap(generated: Sequence[str], references: Sequence[str]) -> pd.DataFrame:
    """Per pair: sentence BLEU (sacrebleu, 0-100) and ROUGE-L F (rouge-score, 0-1) of a prompt against the original.

    Columns `generated`, `reference`, `bleu`, `rouge_l`, one row per pair in input order (the texts stay in the
    frame so `overlap_summary` can compute corpus BLEU from it). Sentence BLEU uses sacrebleu's defaults for single
    sentences (13a tokenisation, exponential smoothing, effective order: a short prompt is not zeroed for lacking
    4-grams). ROUGE-L stems words (Porter), so "colours"/"colour" match. An empty prompt scores 0 on both.
    """
    from rouge_score import rouge_scorer
    from sacrebleu.metrics import BLEU

    generated, references = _check_pairs(generated, references)
    bleu = BLEU(effective_order=True)
    rouge = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return pd.DataFrame(
        {
            "generated": generated,
            "reference": references,
            "bleu": [bleu.sentence_score(g, [r]).score for g, r in zip(generated, references)],
            "rouge_l": [rouge.score(target=r, prediction=g)["rougeL"].fmeasure for g, r in zip(generated, references)],
        }
    )


def overlap_summary(pairs: pd.DataFrame) -> dict[str, float]:
    """Corpus-level numbers from a `prompt_overlap` frame.

    `corpus_bleu` is sacrebleu's corpus BLEU (n-gram counts pooled over all pairs, the number papers quote);
    `sentence_bleu` and `rouge_l` are the means of the per-pair scores; `exact_match` is the share of prompts
    identical to their reference after stripping white space.
    """
    from sacrebleu.metrics import BLEU

    generated, references = pairs["generated"].tolist(), pairs["reference"].tolist()
    return {
        "corpus_bleu": float(BLEU().corpus_score(generated, [references]).score),
        "sentence_bleu": float(pairs["bleu"].mean()),
        "rouge_l": float(pairs["rouge_l"].mean()),
        "exact_match": float(np.mean([g.strip() == r.strip() for g, r in zip(generated, references)])),
    }


# --- fluency: perplexity under the base LM -----------------------------------------------------------------------


def perplexity(
    prompts: Sequence[str],
    model,
    tokenizer,
    *,
    batch_size: int = 16,
    context: str = DEFAULT_PERPLEXITY_CONTEXT,
    show_progress: bool = True,
) -> np.ndarray:
    """exp(mean negative log-likelihood per token) of each prompt under `model`, shape (n,); NaN for empty prompts.

    Each prompt is scored after `context`, whose tokens are fed but not scored (the first token of a prompt needs
    something to be predicted from). Context and prompt are tokenised apart, without special tokens, so a prompt's
    tokens are exactly `tokenizer(prompt)`'s. The end-of-turn token is not scored: this measures the wording, not
    where it stops (`e2p_lib.train.rewards.degeneracy` covers prompts that run into the length cap).

    The model is put in eval mode for the call and restored after; float32 models give the same values batched as
    one by one, to rounding.

    Args:
        prompts: the prompts; blank ones get NaN.
        model: a causal LM (e.g. SmolLM2 from `e2p_lib.lm.smollm.load_smollm2`), on any device.
        tokenizer: its tokenizer.
        batch_size: prompts per forward pass; memory grows with batch_size * length * vocabulary (49k for SmolLM2).
        context: text before each prompt; the default suits ChatML models such as SmolLM2-Instruct.
        show_progress: a tqdm bar over the batches.
    """
    import torch
    from tqdm.auto import tqdm

    if isinstance(prompts, str):
        raise TypeError("perplexity() takes a list of prompts, not one string: wrap it as [prompt].")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be a positive integer.")
    prompts = list(prompts)
    context_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
    if not context_ids:
        raise ValueError(f"context={context!r} has no tokens; the first prompt token needs one to be predicted from.")
    rows = {p: tokenizer(p, add_special_tokens=False)["input_ids"] for p in dict.fromkeys(prompts) if p.strip()}
    rows = {p: ids for p, ids in rows.items() if ids}  # each distinct prompt scored once
    order = sorted(rows, key=lambda p: len(rows[p]), reverse=True)
    values = {}
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    was_training = model.training
    model.eval()
    try:
        for start in tqdm(range(0, len(order), batch_size), desc="perplexity", unit="batch", disable=not show_progress):
            batch = order[start : start + batch_size]
            sequences = [context_ids + rows[i] for i in batch]
            width = max(len(s) for s in sequences)
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            scored = torch.zeros((len(batch), width), dtype=torch.bool)  # the prompt's own tokens
            for row, sequence in enumerate(sequences):
                ids[row, : len(sequence)] = torch.tensor(sequence)
                scored[row, len(context_ids) : len(sequence)] = True
            attention = (torch.arange(width)[None, :] < torch.tensor([len(s) for s in sequences])[:, None]).long()
            with torch.no_grad():
                logits = model(input_ids=ids.to(device), attention_mask=attention.to(device)).logits.float()
            # position t predicts token t + 1: (B, T-1, V) against (B, T-1)
            nll = torch.nn.functional.cross_entropy(
                logits[:, :-1].transpose(1, 2), ids[:, 1:].to(device), reduction="none"
            ).cpu()
            mask = scored[:, 1:]
            mean_nll = (nll * mask).sum(dim=1) / mask.sum(dim=1)
            values.update(zip(batch, torch.exp(mean_nll).tolist()))
    finally:
        model.train(was_training)
    return np.array([values.get(p, np.nan) for p in prompts], dtype=float)


def perplexity_rows(rows: dict[str, Sequence[str]], model, tokenizer, **options) -> dict[str, np.ndarray]:
    """`perplexity` of every row's prompts in one pass: rows share many prompts (a policy's one-call row and e2p's)."""
    values = perplexity([p for prompts in rows.values() for p in prompts], model, tokenizer, **options)
    ends = np.cumsum([len(prompts) for prompts in rows.values()])
    return dict(zip(rows, np.split(values, ends[:-1])))


# --- diversity ---------------------------------------------------------------------------------------------------


def _words(text: str) -> list[str]:
    """Lower-cased words and punctuation marks as separate tokens ("colours." -> "colours", ".")."""
    return re.findall(r"\w+|[^\w\s]", text.lower())


def distinct_n(prompts: Sequence[str], n: int) -> float:
    """Unique n-grams / all n-grams, pooled over all prompts (Li et al. 2016, "distinct-n"); NaN if there are none.

    1.0: no n-gram is ever repeated. k identical prompts score 1/k of one prompt's own value: a method that writes
    the same prompt for every target is as low as it gets. N-grams do not cross prompt boundaries (words: `_words`).
    """
    if isinstance(prompts, str):
        raise TypeError("distinct_n() takes a list of prompts, not one string: wrap it as [prompt].")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r} must be a positive integer (1 for unigrams, 2 for bigrams, ...).")
    grams = [tuple(words[i : i + n]) for words in map(_words, prompts) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else math.nan


def mean_pairwise_cosine(vectors: np.ndarray) -> float:
    """Mean cosine over all pairs of different rows: 1.0 when every row points the same way.

    Applied to a method's answers across targets, a value near 1 means it answers everything alike whatever the
    target; compare with the same number for the targets themselves. Uses sum_ij v_i.v_j = |sum_i v_i|^2, so memory
    stays O(n d) rather than O(n^2).
    """
    unit = l2_normalise(np.asarray(vectors)).astype(np.float64)
    n = len(unit)
    if n < 2:
        raise ValueError(f"mean_pairwise_cosine needs at least 2 vectors; got {n}.")
    total = float(np.sum(unit.sum(axis=0) ** 2))  # all n^2 dot products, the n self-products (1 each) included
    return (total - n) / (n * (n - 1))


# --- paired differences and collapse -------------------------------------------------------------------------


def paired_difference(
    cosines: np.ndarray, baseline: np.ndarray, n_resamples: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of `cosines - baseline` over the same targets and its bootstrap interval: (mean, low, high).

    Paired: the bootstrap resamples targets, each keeping both of its scores, so the interval covers the choice of
    targets for the *difference*; above 0 means the method beats the baseline on such targets, not just on these.
    """
    difference = np.asarray(cosines, dtype=np.float64) - np.asarray(baseline, dtype=np.float64)
    low, high = mean_ci(difference, n_resamples=n_resamples, seed=seed)
    return float(difference.mean()), low, high


def collapse(prompts: Sequence[str], prefix_words: int = 3) -> dict[str, float | str]:
    """How much one method's prompts repeat across targets: a prompt should change when the target does.

    `distinct_prompt_share`: distinct prompts / prompts (1.0: every target got its own). `top_prefix` and
    `top_prefix_share`: the most common first `prefix_words` words (lower-cased) and the share of prompts that
    start with them ("generate a list" on 40% of unrelated targets is a collapse).
    """
    if isinstance(prompts, str) or not len(prompts):
        raise ValueError("collapse() takes a non-empty list of prompts.")
    prefixes = pd.Series([" ".join(_words(p)[:prefix_words]) for p in prompts])
    counts = prefixes.value_counts()
    return {
        "distinct_prompt_share": len(set(prompts)) / len(prompts),
        "top_prefix": str(counts.index[0]),
        "top_prefix_share": float(counts.iloc[0] / len(prompts)),
    }


def ranking_quality(predicted: Sequence[Sequence[float]], real: Sequence[Sequence[float]]) -> dict[str, float]:
    """How well predicted cosines rank one target's candidates by their real cosines, averaged over targets.

    `spearman`: mean rank correlation per target (targets with fewer than 3 candidates or constant scores are
    skipped); `top1_hit`: share of targets where the predicted best is the real best; `picked_real` and `best_real`:
    mean real cosine of the predicted best and of the real best (the gap is what ranking errors cost).
    """
    from scipy.stats import spearmanr

    rhos, hits, picked, best = [], [], [], []
    for p, r in zip(predicted, real):
        p, r = np.asarray(p, dtype=np.float64), np.asarray(r, dtype=np.float64)
        if len(p) == 0:
            continue
        picked.append(r[int(np.argmax(p))])
        best.append(r.max())
        hits.append(float(np.argmax(p) == np.argmax(r)))
        if len(p) >= 3 and np.ptp(p) > 0 and np.ptp(r) > 0:
            rhos.append(spearmanr(p, r).statistic)
    if not picked:
        raise ValueError("ranking_quality needs at least one target with candidates.")
    return {
        "spearman": float(np.mean(rhos)) if rhos else math.nan,
        "top1_hit": float(np.mean(hits)),
        "picked_real": float(np.mean(picked)),
        "best_real": float(np.mean(best)),
        "targets": len(picked),
    }


# --- the results table ---------------------------------------------------------------------------------------------


def results_table(
    target_vectors: np.ndarray,
    answer_vectors: Mapping[str, np.ndarray],
    *,
    prompts: Mapping[str, Sequence[str]] | None = None,
    reference_prompts: Sequence[str] | None = None,
    answers: Mapping[str, Sequence[str]] | None = None,
    perplexities: Mapping[str, np.ndarray] | None = None,
    copied_shares: Mapping[str, np.ndarray] | None = None,
    eval_env_calls: Mapping[str, int] | None = None,
    train_env_calls: Mapping[str, int] | None = None,
    reference: str | None = REFERENCE,
    retrieval: str | None = RETRIEVAL,
    n_resamples: int = 2000,
    seed: int = 0,
    baselines: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Everything about each method in one row (index `method`, in `answer_vectors`' order).

    Always: the `summarise` columns and `answer_pairwise_cosine` (diversity of the answers). With `prompts`:
    `words` (mean words per prompt), `distinct_prompts` (share of targets with a prompt of their own), `distinct_1`,
    `distinct_2`, `empty_prompt_share` and the `collapse` columns; with `copied_shares` (from
    `e2p_lib.evaluate.quality`): `copied_share`, their mean; with `reference_prompts` as well
    (the original prompts, in target order), the `overlap_summary` columns `corpus_bleu`, `sentence_bleu`,
    `rouge_l`, `exact_match`. With `answers`: `median_answer_tokens` (cl100k). With `perplexities` (from
    `perplexity`): `median_perplexity` over non-empty prompts. With `baselines` ({method: baseline method}): `baseline`,
    `diff_vs_baseline` and its paired 95% interval `diff_low`, `diff_high` (`paired_difference`).
    `eval_env_calls` defaults to one call per target for a method it does not name, and gives
    `eval_env_calls_per_target`; `train_env_calls` is NaN where not given. A method missing from an optional
    mapping gets NaN in that mapping's columns.

    Raises:
        ValueError: as `summarise` and `answer_cosines` do, or when an optional mapping names a method that has no
            answer vectors (a typo would otherwise vanish).
    """
    methods = list(answer_vectors)
    prompts = _check_keys(prompts, methods, "prompts")
    answers = _check_keys(answers, methods, "answers")
    perplexities = _check_keys(perplexities, methods, "perplexities")
    copied_shares = _check_keys(copied_shares, methods, "copied_shares")
    eval_env_calls = _check_keys(eval_env_calls, methods, "eval_env_calls")
    train_env_calls = _check_keys(train_env_calls, methods, "train_env_calls")
    cosines = {name: answer_cosines(vectors, target_vectors) for name, vectors in answer_vectors.items()}
    table = summarise(cosines, reference=reference, retrieval=retrieval, n_resamples=n_resamples, seed=seed)
    n_targets = len(target_vectors)
    extra = {}
    for name in methods:
        row = {"answer_pairwise_cosine": mean_pairwise_cosine(answer_vectors[name])}
        if name in prompts:
            method_prompts = list(prompts[name])
            row.update(
                words=float(np.mean([len(p.split()) for p in method_prompts])),
                distinct_prompts=len(set(method_prompts)) / len(method_prompts),
                distinct_1=distinct_n(method_prompts, 1),
                distinct_2=distinct_n(method_prompts, 2),
                empty_prompt_share=float(np.mean([not p.strip() for p in method_prompts])),
                **collapse(method_prompts),
            )
            if reference_prompts is not None:
                row.update(overlap_summary(prompt_overlap(method_prompts, reference_prompts)))
        if name in answers:
            from e2p_lib.tokens import count_tokens

            row["median_answer_tokens"] = float(np.median(count_tokens(list(answers[name]))))
        if name in copied_shares:
            row["copied_share"] = float(np.mean(copied_shares[name]))
        if name in perplexities:
            values = np.asarray(perplexities[name], dtype=np.float64)  # NaN: empty prompt
            row["median_perplexity"] = float(np.nanmedian(values)) if np.any(~np.isnan(values)) else math.nan
        if name in (baselines or {}):
            base = baselines[name]
            if base not in cosines:
                raise ValueError(f"baselines[{name!r}] = {base!r} is not a method; have {methods}.")
            mean, low, high = paired_difference(cosines[name], cosines[base], n_resamples=n_resamples, seed=seed)
            row.update(baseline=base, diff_vs_baseline=mean, diff_low=low, diff_high=high)
        calls = eval_env_calls.get(name, n_targets)
        row.update(
            eval_env_calls=calls,
            eval_env_calls_per_target=calls / n_targets,
            train_env_calls=train_env_calls.get(name, math.nan),
        )
        extra[name] = row
    return table.join(pd.DataFrame.from_dict(extra, orient="index"))


# --- save and load -------------------------------------------------------------------------------------------------


def save_results(table: pd.DataFrame, folder: str | Path, name: str = "results") -> tuple[Path, Path]:
    """Write `table` as `<folder>/<name>.csv` and `<name>.json`, each atomically; return (csv_path, json_path).

    The CSV (read back by `load_results`) keeps the index as its first column; the JSON is a list of records, one
    per method with its index under the index's name, NaN as null (strict JSON, readable from any language).
    Floats are written in their shortest round-trip form, so reloading gives the same values bit for bit.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = folder / f"{name}.csv", folder / f"{name}.json"
    write_atomically(csv_path, table.to_csv().encode("utf-8"))
    records = [
        {key: _json_value(value) for key, value in record.items()}
        for record in table.reset_index().to_dict(orient="records")
    ]
    write_atomically(json_path, (json.dumps(records, indent=2, allow_nan=False) + "\n").encode("utf-8"))
    return csv_path, json_path


def _json_value(value):
    """A JSON-ready scalar: numpy scalars as Python ones, NaN as None."""
    if isinstance(value, np.generic):
        value = value.item()
    return None if isinstance(value, float) and math.isnan(value) else value


def load_results(path: str | Path) -> pd.DataFrame:
    """The table `save_results` wrote to `path` (the .csv), first column as the index."""
    return pd.read_csv(path, index_col=0)
