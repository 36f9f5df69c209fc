"""Expert iteration: search with a budget, keep the best prompt found, fine-tune the policy on it.

Stage 2's second method, beside PPO (ReST, Gulcehre et al. 2023; RAFT, Dong et al. 2023). Each round runs the
clean budgeted search (`Inverter.search`, `SearchConfig(budget, samples)`) on a sample of training targets; the
prompt with the best *real* answer cosine becomes that target's supervised example, shown with what the policy read
when the search first asked it to write (`InversionResult.reading`), and the policy is fine-tuned on those pairs
(`train_policy`). It never trains on a sample worse than what search already found, and its environment cost is
exactly the search's calls, so it compares with PPO at an equal number of calls.

    >>> policy = PromptPolicy.load(sft_folder, trainable=True)
    >>> inverter = Inverter(policy, embedder, forward_model, lm, index=index, retrieval=store, clean_line=line)
    >>> log = expert_iteration(inverter, train_vectors, exclusions, ExpertIterationConfig(targets_per_round=48))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from e2p_lib.checks import check_positive_int
from e2p_lib.config import POLICY_FOLDER
from e2p_lib.inversion.config import ANSWER_TOKENS, SearchConfig
from e2p_lib.inversion.results import POLICY_SOURCES
from e2p_lib.train.sft import PolicyTrainingConfig, train_policy

KEEP = ("all", "rewrites")


@dataclass
class ExpertIterationConfig:
    """`rounds` rounds, each: `targets_per_round` training targets searched with `budget` calls each (`samples`
    rewrites per search round, answers of `answer_tokens`: the answer index's), then `steps_per_round` SFT steps of
    `batch_size` on the best prompts at `learning_rate`. `keep`: "all" trains on every searched target's best
    prompt; "rewrites" only on the targets where one of the policy's own rewrites beat every indexed prompt (a policy
    taught to improve on its hypotheses rather than to write the best of them back). `topics`: the searches' topic
    calls (`SearchConfig.topics`, the clean search's). `output_dir` None: the policy is not saved."""

    rounds: int = 1
    targets_per_round: int = 48
    budget: int = 8
    samples: int = 8
    answer_tokens: int = ANSWER_TOKENS
    steps_per_round: int = 24
    batch_size: int = 16
    learning_rate: float = 1e-4
    seed: int = 0
    keep: str = "all"
    topics: int = SearchConfig.topics  # the clean search's: docs/experiments.md#expert-iteration-on-topic-winners
    output_dir: str | None = None

    def __post_init__(self) -> None:
        if self.keep not in KEEP:
            raise ValueError(f"keep={self.keep!r}; choose one of {KEEP}.")
        for name in (
            "rounds",
            "targets_per_round",
            "budget",
            "samples",
            "steps_per_round",
            "batch_size",
            "answer_tokens",
        ):
            check_positive_int(getattr(self, name), name)
        SearchConfig(topics=self.topics)  # its searches' check of topics, here before any search runs
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate={self.learning_rate!r} must be > 0.")


def expert_iteration(
    inverter,
    train_vectors: np.ndarray,
    exclude_ids: Sequence[Sequence[str]],
    config: ExpertIterationConfig | None = None,
) -> pd.DataFrame:
    """Improve `inverter.policy` in place (it must be trainable: `PromptPolicy.load(..., trainable=True)`).

    `exclude_ids[i]`: the ids training target i must not retrieve (`answer_index.leave_out`). Returns one row per
    round: targets, environment calls spent, the mean best real cosine found, and the share of targets where a policy
    rewrite (not an indexed prompt) was best, and how many targets it trained on (`keep`). The policy is saved to
    `<output_dir>/policy` when `output_dir` is set.

    Raises:
        ValueError: no trainable weights, or `exclude_ids` not one entry per training target.
    """
    config = config or ExpertIterationConfig()
    policy = inverter.policy
    if not any(p.requires_grad for p in policy.parameters()):
        raise ValueError(
            "The inverter's policy has no trainable weights: load it with PromptPolicy.load(folder, trainable=True)."
        )
    if len(exclude_ids) != len(train_vectors):
        raise ValueError(
            f"Got {len(exclude_ids)} exclusion lists for {len(train_vectors)} training targets: pass one per target "
            "(answer_index.leave_out(ids, outputs), in the targets' order)."
        )
    rng = np.random.default_rng(config.seed)
    log = []
    for round_ in range(config.rounds):
        rows = rng.choice(len(train_vectors), size=min(config.targets_per_round, len(train_vectors)), replace=False)
        results = inverter.search(
            train_vectors[rows],
            SearchConfig(
                budget=config.budget,
                samples=config.samples,
                seed=config.seed + round_,
                answer_tokens=config.answer_tokens,
                topics=config.topics,
            ),
            exclude_ids=[exclude_ids[i] for i in rows],
        )
        rewrite_best = [_is_rewrite(r) for r in results]
        kept = [j for j, won in enumerate(rewrite_best) if config.keep == "all" or won]
        if kept:  # a round where no rewrite won teaches nothing under keep="rewrites"
            vectors, best = train_vectors[rows[kept]], [results[j].prompt for j in kept]
            # what the policy read when it first wrote for the target (what it reads at one call), as the search saw it
            shown = [results[j].reading or [] for j in kept]
            sft = PolicyTrainingConfig(
                max_steps=config.steps_per_round,
                batch_size=config.batch_size,
                learning_rate=config.learning_rate,
                warmup_fraction=0.0,
                eval_every_steps=config.steps_per_round,
                save_every_steps=config.steps_per_round,
                seed=config.seed + round_,
                val_rows=min(16, len(kept)),
            )
            train_policy(vectors, best, vectors, best, sft, policy=policy, train_hypotheses=shown, val_hypotheses=shown)
        log.append(
            {
                "round": round_,
                "targets": len(rows),
                "trained_on": len(kept),
                "environment_calls": int(sum(r.environment_calls for r in results)),
                "mean_best_cosine": float(np.mean([r.achieved_cosine for r in results])),
                "rewrite_best_share": float(np.mean(rewrite_best)),
            }
        )
    policy.eval()
    if config.output_dir:
        policy.save(Path(config.output_dir) / POLICY_FOLDER, extra={"expert_iteration": asdict(config)})
    return pd.DataFrame(log)


def _is_rewrite(result) -> bool:
    """Whether the search's pick is one of the policy's prompts rather than an indexed or retrieved one."""
    return next((c.source in POLICY_SOURCES for c in result.candidates if c.prompt == result.prompt), False)
