"""Expert iteration on a synthetic task with a learnable reward: the tiny policy, `EchoLM` and `ByteEmbedder`.

The reward of a prompt is the cosine between a target and the bytes of "Answer to: <prompt>", so some prompts are
better than others and the policy can learn to write them: after a round, its greedy prompts must score higher.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_invert import ByteEmbedder, EchoLM, one_torch_thread  # noqa: F401 (autouse fixture)
from test_search import PROMPTS as SEARCH_PROMPTS
from test_search import search_pieces
from tiny import DIMS, tiny_policy

from e2p_lib.answer_index import leave_out
from e2p_lib.inversion import Inverter
from e2p_lib.train.expert import ExpertIterationConfig, expert_iteration
from e2p_lib.train.rewards import AnswerCosineReward

PROMPTS = [
    *SEARCH_PROMPTS,
    "Describe the sea.",
    "Count to five.",
    "Spell banana.",
    "Explain tides.",
]


def test_expert_iteration_raises_the_greedy_reward_and_counts_its_calls(tmp_path, smollm2_tokenizer):
    pieces = search_pieces(tmp_path, smollm2_tokenizer, PROMPTS)
    embedder, lm, ids, index, inverter = (pieces[k] for k in ("embedder", "lm", "ids", "index", "inverter"))
    policy = inverter.policy
    targets = np.stack([embedder.vector(f"Answer to: {p} please") for p in PROMPTS])
    exclusions = leave_out(ids, [f"own output {i}" for i in range(len(PROMPTS))])  # each row excludes itself
    hypotheses = index.hypotheses(targets, k=2, exclude_ids=exclusions)
    reward = AnswerCosineReward(lm, embedder, embedding_cache_dir=tmp_path)

    def greedy_reward() -> float:
        prompts = policy.generate(targets, hypotheses=hypotheses, max_new_tokens=12)
        return float(reward([p if p.strip() else "(empty)" for p in prompts], targets).rewards.mean())

    before = greedy_reward()
    sent_before = len(lm.received)
    for p in policy.parameters():
        p.requires_grad_(True)
    log = expert_iteration(
        inverter,
        targets,
        exclusions,
        ExpertIterationConfig(
            rounds=2,
            targets_per_round=len(PROMPTS),
            budget=3,
            samples=2,
            steps_per_round=30,
            batch_size=12,
            learning_rate=1e-2,
            output_dir=str(tmp_path / "ei"),
        ),
    )
    assert list(log["environment_calls"]) and (log["environment_calls"] <= 3 * len(PROMPTS)).all()
    assert int(log["environment_calls"].sum()) <= len(lm.received) - sent_before
    after = greedy_reward()  # ByteEmbedder cosines start high (about 0.9): the room to gain is small
    assert after > before + 0.01, (before, after, log)
    assert (tmp_path / "ei" / "policy" / "policy_config.json").is_file()


def test_expert_iteration_needs_trainable_weights(tmp_path, smollm2_tokenizer):
    policy = tiny_policy(smollm2_tokenizer)
    for p in policy.parameters():
        p.requires_grad_(False)
    inverter = Inverter(policy, ByteEmbedder(), None, EchoLM())
    with pytest.raises(ValueError, match="trainable"):
        expert_iteration(inverter, np.ones((2, DIMS), dtype=np.float32), [[], []])


def _spied(tmp_path, tokenizer, monkeypatch) -> tuple:
    """The search pieces over PROMPTS with a trainable policy, `train_policy` replaced by a record of the prompts it
    was given (`trained`), and every search's results recorded (`searched`)."""
    import e2p_lib.train.expert as expert

    pieces = search_pieces(tmp_path, tokenizer, PROMPTS)
    embedder, ids, inverter = pieces["embedder"], pieces["ids"], pieces["inverter"]
    for p in inverter.policy.parameters():
        p.requires_grad_(True)
    targets = np.stack([embedder.vector(f"Answer to: {p} please") for p in PROMPTS])
    exclusions = leave_out(ids, [f"own output {i}" for i in range(len(PROMPTS))])
    trained, searched = [], []
    monkeypatch.setattr(expert, "train_policy", lambda vectors, prompts, *a, **k: trained.append(list(prompts)))
    real_search = inverter.search
    monkeypatch.setattr(inverter, "search", lambda *a, **k: searched.append(real_search(*a, **k)) or searched[-1])
    return pieces, targets, exclusions, trained, searched


SETTINGS = dict(targets_per_round=len(PROMPTS), budget=3, samples=2, steps_per_round=1)


def test_keep_rewrites_trains_only_on_targets_where_a_rewrite_beat_the_index(tmp_path, smollm2_tokenizer, monkeypatch):
    from e2p_lib.train.expert import _is_rewrite

    pieces, targets, exclusions, trained, searched = _spied(tmp_path, smollm2_tokenizer, monkeypatch)
    inverter = pieces["inverter"]
    log = expert_iteration(inverter, targets, exclusions, ExpertIterationConfig(keep="rewrites", **SETTINGS))
    won = [r.prompt for r in searched[0] if _is_rewrite(r)]
    indexed = [r.prompt for r in searched[0] if not _is_rewrite(r)]
    assert won and indexed, "the synthetic search should let rewrites win some targets and the index others"
    assert trained == [won] and log["trained_on"].tolist() == [len(won)]
    trained.clear()
    log = expert_iteration(inverter, targets, exclusions, ExpertIterationConfig(keep="all", **SETTINGS))
    assert len(trained[0]) == len(PROMPTS) and log["trained_on"].tolist() == [len(PROMPTS)]
    with pytest.raises(ValueError, match="keep="):
        ExpertIterationConfig(keep="best")


def test_topics_puts_topic_calls_in_its_searches_and_trains_on_what_they_find(tmp_path, smollm2_tokenizer, monkeypatch):
    pieces, targets, exclusions, trained, searched = _spied(tmp_path, smollm2_tokenizer, monkeypatch)
    inverter, store, embedder = pieces["inverter"], pieces["store"], pieces["embedder"]
    outputs = [f"The {p.lower()} answer covers waves, sea salt and tides." for p in PROMPTS]  # phrases to find
    store.upsert(
        pieces["ids"],
        np.stack([embedder.vector(o) for o in outputs]),
        [{"prompt": p, "output": o} for p, o in zip(PROMPTS, outputs)],
    )
    inverter.retrieval, inverter.clean_line = store, 0.0  # a clean search: nothing copied from the outputs
    for topics in (0, 2):
        searched.clear()
        expert_iteration(inverter, targets, exclusions, ExpertIterationConfig(topics=topics, **SETTINGS))
        made = [c for r in searched[0] for c in r.candidates if c.source == "topics"]
        assert bool(made) == bool(topics)  # 0 (the default): none; 2: the searches spend topic calls
    assert trained[-1] == [r.prompt for r in searched[0]]  # what the searches found, topic prompts included
    with pytest.raises(ValueError, match="topics=8"):
        ExpertIterationConfig(topics=8)
