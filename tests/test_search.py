"""The answer index and the search under an environment budget: no leak, the budget holds, seeded runs repeat, the
one-call rule, and the clean filter (no prompt above the clean line is sent, shown to the policy or returned).

Same doubles as tests/test_invert.py: the tiny random policy, `ByteEmbedder`, and `EchoLM`, which records every
prompt it is sent, so the environment calls are counted from what the environment really received.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_invert import (  # noqa: F401 (autouse and data_folder fixtures)
    ByteEmbedder,
    EchoLM,
    data_folder,
    one_torch_thread,
    tiny_forward_model,
)
from tiny import DIMS, tiny_policy

from e2p_lib.answer_index import answer_namespace, build_answer_index, leave_out
from e2p_lib.evaluate.baselines import (
    answered_cosines,
    best_answered,
    best_of_first,
    budget_curve,
    forward_ranked,
    retrieval_candidates,
)
from e2p_lib.evaluate.quality import copied_share
from e2p_lib.inversion import Inverter, SearchConfig
from e2p_lib.inversion.config import ANSWER_TOKENS
from e2p_lib.models.policy import Hypothesis
from e2p_lib.pipeline import best_known_prompts, improves_on_hypotheses, row_answers, row_hypotheses
from e2p_lib.store import make_vector_store
from e2p_lib.store.retrieval import nearest_rows

PROMPTS = [
    "Name a fruit.",
    "List three colours.",
    "Write a haiku about rain.",
    "Define gravity.",
    "Translate cat into French.",
    "Give a synonym for happy.",
    "Summarise Hamlet.",
    "What is 2 + 2?",
]


def search_pieces(tmp_path, tokenizer, prompts) -> dict:
    """An answer index of `prompts` (EchoLM answers, ByteEmbedder vectors) and an inverter over it with the tiny
    policy reading 2 hypotheses: what the search and expert-iteration tests share."""
    embedder, lm = ByteEmbedder(), EchoLM()
    store = make_vector_store("local", name="test", dimensions=DIMS, root=tmp_path / "stores")
    ids = [f"row-{i}" for i in range(len(prompts))]
    index = build_answer_index(store, lm, embedder, ids, prompts, chunk_size=3, embedding_cache_dir=tmp_path)
    policy = tiny_policy(tokenizer)
    policy.config.hypotheses = 2
    inverter = Inverter(
        policy, embedder, tiny_forward_model(embedder, tmp_path), lm, index=index, embedding_cache_dir=tmp_path
    )
    return {
        "embedder": embedder,
        "lm": lm,
        "store": store,
        "ids": ids,
        "index": index,
        "inverter": inverter,
        "tmp": tmp_path,
    }


@pytest.fixture()
def pieces(tmp_path, smollm2_tokenizer):
    return search_pieces(tmp_path, smollm2_tokenizer, PROMPTS)


def test_the_index_holds_each_prompt_once_with_its_real_answer_and_resumes(pieces):
    index, lm, store = pieces["index"], pieces["lm"], pieces["store"]
    assert len(index) == len(PROMPTS) and sorted(lm.received) == sorted(PROMPTS)
    record = store.fetch(["row-2"], namespace=index.namespace)["row-2"]
    assert record.metadata == {"prompt": PROMPTS[2], "answer": f"Answer to: {PROMPTS[2]}"}
    np.testing.assert_allclose(record.vector, pieces["embedder"].vector(f"Answer to: {PROMPTS[2]}"), atol=1e-6)
    # a rebuild answers nothing again: every id is already indexed
    again = build_answer_index(
        store, lm, pieces["embedder"], pieces["ids"], PROMPTS, chunk_size=3, embedding_cache_dir=pieces["tmp"]
    )
    assert again.namespace == index.namespace and len(lm.received) == len(PROMPTS)


def test_namespaces_differ_by_environment_settings_and_answer_length():
    embedder, lm = ByteEmbedder(), EchoLM()
    assert answer_namespace(lm, embedder, 64) != answer_namespace(lm, embedder, 128)
    other = EchoLM()
    other.settings = lambda: {"system_prompt": "other"}
    assert answer_namespace(lm, embedder, 64) != answer_namespace(other, embedder, 64)


def test_no_leak_a_row_never_retrieves_itself_or_a_row_with_the_same_output(pieces):
    index, embedder = pieces["index"], pieces["embedder"]
    outputs = ["a", "b", "c", "a", "e", "f", "g", "h"]  # rows 0 and 3 share an output
    exclusions = leave_out(pieces["ids"], outputs)
    assert sorted(exclusions[0]) == ["row-0", "row-3"] and exclusions[1] == ["row-1"]
    targets = np.stack([embedder.vector(f"Answer to: {p}") for p in PROMPTS])  # each row's own answer: top-1
    found = index.hypotheses(targets, k=len(PROMPTS), exclude_ids=exclusions)
    for i, row in enumerate(found):
        assert all(h.id not in exclusions[i] for h in row)
        assert len(row) == len(PROMPTS) - len(exclusions[i])
        assert [h.cosine for h in row] == sorted((h.cosine for h in row), reverse=True)
    unfiltered = index.hypotheses(targets, k=1)
    assert [row[0].id for row in unfiltered] == pieces["ids"]  # without exclusions it would be a lookup


@pytest.mark.parametrize("budget", [1, 2, 5])
def test_the_budget_holds_and_calls_are_counted_from_what_the_environment_received(pieces, budget):
    inverter, lm = pieces["inverter"], pieces["lm"]
    targets = np.stack([pieces["embedder"].vector(t) for t in ("A poem about rain.", "Three colours please")])
    sent_before = len(lm.received)
    results = inverter.search(
        targets,
        SearchConfig(budget=budget, samples=3, seed=1, max_prompt_tokens=6, fluency_margin=0.0),
        exclude_ids=[["row-2"], ["row-1"]],
    )
    sent = len(lm.received) - sent_before
    for result in results:
        assert 1 <= result.environment_calls <= budget and result.method == "search"
        assert result.prompt.strip() and not np.isnan(result.achieved_cosine)
        answered = [c for c in result.candidates if not np.isnan(c.achieved_cosine)]
        assert result.achieved_cosine == max(c.achieved_cosine for c in answered)  # the best real cosine wins
        assert result.trajectory[-1].prompt == result.prompt  # the trajectory ends at the final prompt
    if budget == 1:
        assert [r.environment_calls for r in results] == [1, 1]
    # the environment's answer cache is not in play here: every counted call reached EchoLM
    assert sent == sum(r.environment_calls for r in results)


@pytest.mark.parametrize("margin", [0.0, 0.05, 2.0])
def test_the_final_pick_is_the_most_fluent_prompt_within_the_margin_and_the_budget(pieces, margin):
    from e2p_lib.evaluate.metrics import perplexity
    from e2p_lib.inversion.inverter import base_lm

    inverter, lm = pieces["inverter"], pieces["lm"]
    targets = np.stack([pieces["embedder"].vector(t) for t in ("A poem about rain.", "Three colours please")])
    config = SearchConfig(budget=4, samples=3, seed=1, max_prompt_tokens=6, fluency_margin=margin)
    sent_before = len(lm.received)
    results = inverter.search(targets, config, exclude_ids=[["row-2"], ["row-1"]])
    assert len(lm.received) - sent_before == sum(r.environment_calls for r in results)
    model, tokenizer = base_lm("cpu")
    for result in results:
        assert result.environment_calls <= config.budget  # a known prompt is picked only with a call left for it
        known = [c for c in result.candidates if not np.isnan(c.achieved_cosine)]
        best = max(c.achieved_cosine for c in known)
        window = [c for c in known if c.achieved_cosine >= best - margin]
        assert result.achieved_cosine >= best - margin
        fluency = dict(zip([c.prompt for c in window], perplexity([c.prompt for c in window], model, tokenizer)))
        answered_here = [c for c in window if c.answer is not None]  # every candidate picked is answered at the end
        assert fluency[result.prompt] == min(fluency[c.prompt] for c in answered_here)
        if margin == 2.0:  # any cosine: the most fluent known prompt; a call was kept for it if the index's
            assert fluency[result.prompt] == min(fluency.values())
    if margin == 2.0:
        assert any(r.achieved_cosine < max(c.achieved_cosine for c in r.candidates) for r in results)


@pytest.mark.parametrize("margin", [0.0, 0.05])
def test_a_known_prompt_is_picked_only_while_a_call_is_left_to_answer_it(pieces, margin):
    """The index's best prompt carries the index's cosine, but returning it costs the call that answers it: with
    every call spent, the pick is the best answered prompt (the search once returned the known one, budget + 1)."""
    from e2p_lib.inversion.results import Candidate
    from e2p_lib.inversion.search import _Search

    inverter, lm = pieces["inverter"], pieces["lm"]
    target = pieces["embedder"].vector("A poem about rain.")[None]
    search = _Search(inverter, target, SearchConfig(budget=2, fluency_margin=margin), None, None, None)
    known = Candidate(PROMPTS[2], 0, "index", 1.0, achieved_cosine=0.90, copied_share=0.0)
    answered = [
        Candidate(prompt, 0, "greedy", 1.0, achieved_cosine=cosine, copied_share=0.0)
        for prompt, cosine in (("Write about rain.", 0.89), ("Rain?", 0.50))
    ]
    search.history[0] = [known, *answered]
    search.memo[0] = {c.prompt: (c.achieved_cosine, f"Answer to: {c.prompt}") for c in answered}  # both calls spent
    assert search.picks()[0] is answered[0]
    sent_before = len(lm.received)
    [result] = search.final_pick()
    assert result.prompt == "Write about rain." and result.environment_calls == 2 and len(lm.received) == sent_before
    if margin == 0.0:  # a call left: the known prompt, the best cosine, is returned and answered
        search.memo[0].pop("Rain?")
        assert search.picks()[0] is known


def test_excluded_rows_never_become_candidates(pieces):
    inverter = pieces["inverter"]
    target = pieces["embedder"].vector(f"Answer to: {PROMPTS[4]}")[None]
    config = SearchConfig(budget=3, samples=2, max_prompt_tokens=6)
    result = inverter.search(target, config, exclude_ids=[["row-4"]])[0]
    assert PROMPTS[4] not in [c.prompt for c in result.candidates if c.source == "index"]
    unexcluded = inverter.search(target, config)[0]  # without the exclusion it is the index's best: a lookup
    assert unexcluded.prompt == PROMPTS[4] and unexcluded.achieved_cosine == pytest.approx(1.0, abs=1e-5)


def test_seeded_search_repeats_exactly(pieces):
    inverter = pieces["inverter"]
    targets = np.stack([pieces["embedder"].vector(t) for t in ("rain and clouds", "a fruit salad")])
    first = inverter.invert(targets, budget=4, samples=3, seed=5, max_prompt_tokens=6)
    second = inverter.search(targets, SearchConfig(budget=4, samples=3, seed=5, max_prompt_tokens=6))
    assert [r.prompt for r in first] == [r.prompt for r in second]
    assert [[c.prompt for c in r.candidates] for r in first] == [[c.prompt for c in r.candidates] for r in second]


def test_invert_takes_a_config_or_options_and_refuses_bad_ones_before_any_call(pieces):
    inverter, lm = pieces["inverter"], pieces["lm"]
    sent_before = len(lm.received)
    with pytest.raises(ValueError, match="budget=0"):
        inverter.invert(np.ones((1, DIMS)), budget=0)
    with pytest.raises(TypeError, match="not both"):
        inverter.invert(np.ones((1, DIMS)), SearchConfig(budget=2), samples=3)
    with pytest.raises(TypeError, match="switch_margin"):
        inverter.invert(np.ones((1, DIMS)), switch_margin=0.1)  # removed: the one-call rule has no margin
    with pytest.raises(ValueError, match="one per target"):
        inverter.search(np.ones((2, DIMS)), SearchConfig(budget=2), exclude_ids=[["row-1"]])
    assert len(lm.received) == sent_before


def test_retrieval_baselines_spend_what_they_say(pieces, tmp_path):
    store, embedder, lm = pieces["store"], pieces["embedder"], pieces["lm"]
    store.upsert(pieces["ids"], np.stack([embedder.vector(p) for p in PROMPTS]), [{"prompt": p} for p in PROMPTS])
    targets = np.stack([embedder.vector(t) for t in ("rain poem", "colour list")])
    candidates = retrieval_candidates(store, targets, ["row-2", "not-stored"], k=4)
    assert all(len(row) == 4 for row in candidates) and PROMPTS[2] not in candidates[0]
    picked = forward_ranked(candidates, targets, tiny_forward_model(embedder, tmp_path))
    assert all(p in row for p, row in zip(picked, candidates))
    from e2p_lib.train.rewards import AnswerCosineReward

    reward = AnswerCosineReward(lm, embedder, embedding_cache_dir=tmp_path)
    prompts, cosines, calls = best_answered(candidates, targets, reward, budget=3)
    assert calls == [3, 3] and all(p in row[:3] for p, row in zip(prompts, candidates))
    asked_sizes = []

    def counting(prompts, vectors):
        asked_sizes.append(len(prompts))
        return reward(prompts, vectors)

    _, answered = answered_cosines(candidates, targets, counting, budget=4)
    assert asked_sizes == [8]  # a curve up to 4 calls answers each target's first 4 candidates once
    curve = budget_curve({"retrieval": lambda b: best_of_first(answered, b)}, [1, 2, 4])
    assert list(curve["max_calls"]) == [1, 2, 4]
    assert curve["mean_cosine"].is_monotonic_increasing  # best of more, from the same ordered list
    for budget in (1, 2, 4):  # the prefix maxima are what answering the first `budget` anew gives
        assert np.allclose(best_of_first(answered, budget)[0], best_answered(candidates, targets, reward, budget)[1])
    with pytest.raises(ValueError, match=r"Targets \[1\] have no candidate prompts"):
        answered_cosines([["a prompt"], []], targets, reward, budget=2)


def test_hypothesis_round_trip_into_the_policy_context(pieces):
    policy = pieces["inverter"].policy
    ids = policy.hypothesis_ids([Hypothesis("Name a fruit.", 0.5, "row-0")])
    assert "50: Name a fruit." in policy.tokenizer.decode(ids)


def test_load_inverter_finds_the_answer_index_of_its_environment_and_answer_length(
    data_folder,  # noqa: F811 (a fixture)
    tmp_path,
    smollm2_tokenizer,
):
    from e2p_lib.inversion.api import default_answer_index, default_retrieval_store, load_inverter

    embedder, lm = ByteEmbedder(), EchoLM()
    assert default_answer_index(lm, embedder, ANSWER_TOKENS) is None  # nothing built yet ...
    assert not (data_folder / "vectorstores").exists()  # ... and looking created no empty store
    store = make_vector_store("local", name="alpaca", dimensions=DIMS)
    ids = [f"row-{i}" for i in range(len(PROMPTS))]
    build_answer_index(store, lm, embedder, ids, PROMPTS, embedding_cache_dir=tmp_path)
    found = default_answer_index(lm, embedder, ANSWER_TOKENS)
    assert found is not None and len(found) == len(PROMPTS)
    assert found.namespace == answer_namespace(lm, embedder, ANSWER_TOKENS)
    with pytest.raises(ValueError, match=f"none for test/echo with answer_tokens={ANSWER_TOKENS * 2}"):
        default_answer_index(lm, embedder, ANSWER_TOKENS * 2)  # 02 ran with other answers: said, not searched without
    assert default_answer_index(None, embedder, ANSWER_TOKENS) is None  # no environment: no search

    # load_inverter looks for the index of its answer length (SearchConfig's default unless told)
    folder = tmp_path / "policy"
    tiny_policy(smollm2_tokenizer).save(folder)
    loaded = load_inverter(folder, forward_model_dir=False, environment=lm, embedder=embedder, retrieval=None)
    assert loaded.index is not None and loaded.index.namespace == found.namespace
    with pytest.raises(ValueError, match="answer_tokens=128"):  # 02's index is of another length: said at load
        load_inverter(folder, forward_model_dir=False, environment=lm, embedder=embedder, answer_tokens=128)
    # a search at another answer length than the index's is refused before any call: its cosines are not the same
    sent_before = len(lm.received)
    with pytest.raises(ValueError, match="answer_tokens=32"):
        loaded.search(embedder.vector("rain")[None], SearchConfig(budget=2, answer_tokens=32))
    assert len(lm.received) == sent_before

    assert default_retrieval_store(embedder) is None  # the outputs are not stored yet (only the answer index is)
    store.upsert(ids, np.stack([embedder.vector(p) for p in PROMPTS]), [{"prompt": p} for p in PROMPTS])
    assert default_retrieval_store(embedder).count() == len(PROMPTS)
    assert default_retrieval_store(ByteEmbedder(dimensions=DIMS * 2)) is None  # another space: not these vectors
    assert load_inverter(folder, forward_model_dir=False, environment=lm, embedder=embedder).retrieval is not None


def test_the_search_retrieves_from_its_store_and_never_an_excluded_row(pieces):
    inverter, store, embedder, lm = pieces["inverter"], pieces["store"], pieces["embedder"], pieces["lm"]
    # the store holds the indexed rows and two rows the index does not hold (e.g. val/test rows)
    extra = ["Translate dog into French.", "Translate bird into French."]
    stored = PROMPTS + extra
    ids = pieces["ids"] + ["row-x", "row-y"]
    store.upsert(ids, np.stack([embedder.vector(p) for p in stored]), [{"prompt": p} for p in stored])
    inverter.retrieval = store
    config = SearchConfig(budget=4, samples=2, pool=1, neighbours=6, max_prompt_tokens=6, max_copied_share=0.2)
    target = embedder.vector(PROMPTS[4])[None]  # its own stored output is the nearest: excluded, never retrieved
    nearest = retrieval_candidates(store, target, None, k=6, exclude_ids=[["row-4"]])[0]
    assert set(extra) <= set(nearest) and any(p in PROMPTS for p in nearest)  # both kinds are retrieved
    sent_before = len(lm.received)
    result = inverter.search(target, config, exclude_ids=[["row-4"]])[0]
    sent = lm.received[sent_before:]
    assert PROMPTS[4] not in nearest + [c.prompt for c in result.candidates if c.source == "index"]
    # retrieved rows the index holds join with their indexed cosine and are never sent to the environment
    known = {h.prompt: h.cosine for h in pieces["index"].hypotheses(target, k=len(PROMPTS), exclude_ids=[["row-4"]])[0]}
    indexed = {c.prompt: c.achieved_cosine for c in result.candidates if c.source == "index"}
    assert {p for p in nearest if p in PROMPTS} <= set(indexed)
    assert all(indexed[p] == pytest.approx(known[p], abs=1e-5) for p in indexed)
    assert not set(sent) & set(indexed) - {result.prompt}  # only the final answer may repeat an indexed prompt
    # the others join as candidates, nearest first; floor(0.5 x 3 exploring calls) = 1 call answers the nearest
    assert [c.prompt for c in result.candidates if c.source == "retrieved"] == [p for p in nearest if p in extra]
    assert sent[:1] == [p for p in nearest if p in extra][:1] and result.environment_calls == len(sent) <= 4


def test_calls_retrieval_cannot_use_go_to_the_rewrites(pieces):
    inverter, lm, embedder = pieces["inverter"], pieces["lm"], pieces["embedder"]
    target = embedder.vector("A poem about rain.")[None]
    sent_before = len(lm.received)
    # 4 exploring calls, 2 of them retrieval's; it has one prompt, so 3 go to the rewrites (+ the final answer)
    config = SearchConfig(budget=5, samples=6, max_prompt_tokens=6, pool=1)
    result = inverter.search(target, config, retrieved=[["Paint it."]])[0]
    answered = [c for c in result.candidates if c.source in ("greedy", "sampled") and not np.isnan(c.achieved_cosine)]
    assert len(answered) >= 3 and result.environment_calls == len(lm.received) - sent_before <= 5


def test_retrieved_prompts_get_their_share_of_the_calls_nearest_first(pieces):
    inverter, lm, embedder = pieces["inverter"], pieces["lm"], pieces["embedder"]
    targets = np.stack([embedder.vector(t) for t in ("A poem about rain.", "Three colours please")])
    retrieved = [["Write a rain poem.", "Describe a storm.", "Name a cloud.", "Write a rain poem."], ["Paint it."]]
    sent_before = len(lm.received)
    results = inverter.search(
        targets,
        SearchConfig(budget=5, samples=2, seed=3, max_prompt_tokens=6, spend_all=False),  # the share alone
        retrieved=retrieved,
        exclude_ids=[["row-2"], []],
    )
    sent = lm.received[sent_before:]
    # 0.5 x 4 exploring calls = 2 per target, in retrieval order; the second target has only one to ask
    assert sent[:3] == ["Write a rain poem.", "Describe a storm.", "Paint it."]
    for result, row in zip(results, retrieved):
        assert result.environment_calls <= 5
        asked = [c for c in result.candidates if c.source == "retrieved" and not np.isnan(c.achieved_cosine)]
        assert [c.prompt for c in asked] == list(dict.fromkeys(row))[:2]
        margin = SearchConfig().fluency_margin  # a more fluent pick may land this much lower
        assert result.achieved_cosine >= max(c.achieved_cosine for c in asked) - margin  # never worse than it asked
    assert len(sent) == sum(r.environment_calls for r in results)

    # all of the exploring calls to retrieval: no rewrite is answered before the final pick
    config = SearchConfig(budget=3, samples=2, retrieved_share=1.0)
    only = inverter.search(targets[:1], config, retrieved=retrieved[:1])[0]
    answered = [c for c in only.candidates if not np.isnan(c.achieved_cosine) and c.source != "index"]
    assert {c.source for c in answered} == {"retrieved"} and only.environment_calls <= 3
    with pytest.raises(ValueError, match="one per target"):
        inverter.search(targets, SearchConfig(budget=3), retrieved=retrieved[:1])


def test_calls_the_rounds_leave_go_to_the_best_ranked_unanswered_candidates(pieces):
    inverter, lm, embedder = pieces["inverter"], pieces["lm"], pieces["embedder"]
    target = embedder.vector("A poem about rain.")[None]
    retrieved = [["Write a rain poem.", "Describe a storm.", "Name a cloud.", "Paint it.", "Sing.", "Count to ten."]]
    # 5 exploring calls: 1 to retrieval (0.25 x 5), up to 4 to one round of a single greedy rewrite, which takes 1
    config = SearchConfig(budget=6, samples=1, rounds=1, pool=1, max_prompt_tokens=6, retrieved_share=0.25)
    runs = {}
    for spend_all in (False, True):
        sent_before = len(lm.received)
        result = inverter.search(
            target, SearchConfig(**{**config.to_dict(), "spend_all": spend_all}), retrieved=retrieved
        )
        runs[spend_all] = (result[0], lm.received[sent_before:])
    (kept, kept_sent), (spent, spent_sent) = runs[False], runs[True]
    assert len(kept_sent) == kept.environment_calls <= 3  # retrieval's call, the rewrite, perhaps the final answer
    assert (
        len(spent_sent) == spent.environment_calls == 6
    )  # every call: the rest, then the final pick (answered here or again)
    extra = [p for p in spent_sent if p not in kept_sent]
    ranked = sorted(
        (c for c in spent.candidates if c.prompt in extra), key=lambda c: -c.predicted_cosine
    )  # the rest went to the candidates the forward model ranks best, in that order
    assert extra == [c.prompt for c in ranked] and len(extra) >= 3
    assert spent.achieved_cosine >= kept.achieved_cosine - config.fluency_margin  # more answered, no worse a pick


def test_a_row_improves_on_its_hypotheses_only_when_its_own_answer_lands_nearer(pieces):
    """Row 0's target is its own answer (nothing shown can beat it); row 1's target is row 2's answer, which the
    index shows it as a hypothesis at cosine 1, so row 1's own prompt does worse than what it reads."""
    index, embedder, ids = pieces["index"], pieces["embedder"], pieces["ids"]
    frame = pd.DataFrame({"id": ids, "output": [f"out {i}" for i in range(len(ids))]})
    vectors = np.stack([embedder.vector(f"Answer to: {p}") for p in PROMPTS])
    vectors[1] = embedder.vector(f"Answer to: {PROMPTS[2]}")
    rows = np.array([0, 1, 3])
    shown = row_hypotheses(index, frame, rows, vectors, k=2)
    assert shown[1][0].id == "row-2" and shown[1][0].cosine == pytest.approx(1.0, abs=1e-5)
    assert improves_on_hypotheses(index, frame, rows, vectors, shown).tolist() == [True, False, True]
    # nothing shown, or a row the index does not hold: nothing says it does worse
    assert improves_on_hypotheses(index, frame, rows, vectors, [[], [], []]).all()
    assert improves_on_hypotheses(index, frame.assign(id=["gone"] * len(ids)), rows, vectors, shown).all()
    # a margin asks for more than beating the best hypothesis
    assert not improves_on_hypotheses(index, frame, rows[:1], vectors, shown[:1], margin=1.5).any()
    with pytest.raises(ValueError, match="one per row"):
        improves_on_hypotheses(index, frame, rows, vectors, shown[:2])


def test_best_known_prompts_are_the_own_prompt_or_the_hypothesis_that_beats_it(pieces):
    """As above: row 1's own prompt loses to its first hypothesis (row 2's prompt, cosine 1): it is trained to write
    that hypothesis back; rows 0 and 3 keep their own prompts."""
    index, embedder, ids = pieces["index"], pieces["embedder"], pieces["ids"]
    frame = pd.DataFrame({"id": ids, "prompt": PROMPTS, "output": [f"out {i}" for i in range(len(ids))]})
    vectors = np.stack([embedder.vector(f"Answer to: {p}") for p in PROMPTS])
    vectors[1] = embedder.vector(f"Answer to: {PROMPTS[2]}")
    rows = np.array([0, 1, 3])
    shown = row_hypotheses(index, frame, rows, vectors, k=2)
    answers = [[Hypothesis("an answer", 0.9, kind="answer")] for _ in rows]  # read too, never a target
    with_answers = [a + h for a, h in zip(answers, shown)]
    assert best_known_prompts(index, frame, rows, vectors, with_answers) == [PROMPTS[0], PROMPTS[2], PROMPTS[3]]


def test_a_row_reads_the_stored_answers_nearest_it_but_never_its_own(pieces):
    store, embedder, ids = pieces["store"], pieces["embedder"], pieces["ids"]
    outputs = [f"Answer to: {p}" for p in PROMPTS]
    outputs[5] = outputs[4]  # row 5 repeats row 4's output: row 4 must not read it either
    store.upsert(
        ids,
        np.stack([embedder.vector(o) for o in outputs]),
        [{"prompt": p, "output": o} for p, o in zip(PROMPTS, outputs)],
    )
    frame = pd.DataFrame({"id": ids, "prompt": PROMPTS, "output": outputs})
    vectors = np.stack([embedder.vector(o) for o in outputs])
    read = row_answers(store, frame, np.array([4, 0]), vectors, k=3)
    assert all(h.kind == "answer" for row in read for h in row) and [len(row) for row in read] == [3, 3]
    assert not {"row-4", "row-5"} & {h.id for h in read[0]} and "row-0" not in {h.id for h in read[1]}
    assert [h.cosine for h in read[0]] == sorted((h.cosine for h in read[0]), reverse=True)
    assert all(h.prompt == outputs[int(h.id.split("-")[1])] for row in read for h in row)


# --- one call ------------------------------------------------------------------------------------------------------


def spy_on_generate(policy, monkeypatch) -> list[dict]:
    """Record the options of every `policy.generate` call (the hypotheses it read among them)."""
    calls: list[dict] = []
    real = policy.generate

    def generate(targets, **options):
        calls.append({"targets": np.asarray(targets), **options})
        return real(targets, **options)

    monkeypatch.setattr(policy, "generate", generate)
    return calls


def rounded(hypotheses, ids: bool = True) -> list[list[tuple]]:
    """(prompt, id, cosine to 5 places) per hypothesis: the cosines of one target differ in the last float bits
    between a normalised and a raw unit vector."""
    return [[(h.prompt, h.id if ids else None, round(h.cosine, 5)) for h in row] for row in hypotheses]


def test_one_call_answers_the_policy_s_greedy_rewrite_or_the_best_known_prompt_it_copied(pieces, monkeypatch):
    inverter, lm, index = pieces["inverter"], pieces["lm"], pieces["index"]
    targets = np.stack([pieces["embedder"].vector(t) for t in ("A poem about rain.", "Three colours please")])
    exclude = [["row-2"], ["row-1"]]
    calls = spy_on_generate(inverter.policy, monkeypatch)
    sent_before = len(lm.received)
    results = inverter.search(targets, SearchConfig(budget=1, samples=3, max_prompt_tokens=6), exclude_ids=exclude)
    assert [r.environment_calls for r in results] == [1, 1]
    assert lm.received[sent_before:] == [r.prompt for r in results], "exactly one call per target: the final one"
    # one greedy prompt per target (samples apply from budget 2), reading the index's two best prompts
    assert len(calls) == 1 and calls[0].get("num_return_sequences", 1) == 1
    top = index.hypotheses(targets, k=2, exclude_ids=exclude)
    assert rounded(calls[0]["hypotheses"], ids=False) == rounded(top, ids=False)
    greedy = inverter.policy.generate(targets, max_new_tokens=6, hypotheses=calls[0]["hypotheses"])
    for result, written, known in zip(results, greedy, top):
        new = written.strip() and written not in [h.prompt for h in known]
        assert result.prompt == (written if new else known[0].prompt)  # a copy, or nothing, sends the best known
    # the policy copies the index's second prompt: the call goes to the better first one instead
    monkeypatch.setattr(inverter.policy, "generate", lambda targets, **options: [row[1].prompt for row in top])
    copied = inverter.search(targets, SearchConfig(budget=1), exclude_ids=exclude)
    assert [r.prompt for r in copied] == [row[0].prompt for row in top] and [r.environment_calls for r in copied] == [
        1,
        1,
    ]
    monkeypatch.undo()
    calls = spy_on_generate(inverter.policy, monkeypatch)

    # without the policy: the index's best prompt, and the policy is never asked
    calls.clear()
    sent_before = len(lm.received)
    kept = inverter.search(targets, SearchConfig(budget=1, use_policy=False), exclude_ids=exclude)
    assert calls == []
    assert [r.prompt for r in kept] == [row[0].prompt for row in index.hypotheses(targets, k=1, exclude_ids=exclude)]
    assert all(c.source == "index" for r in kept for c in r.candidates)
    assert [r.environment_calls for r in kept] == [1, 1] and len(lm.received) - sent_before == 2


# --- sampling reads the index's hypotheses ---------------------------------------------------------------------


def test_sample_reads_the_index_s_hypotheses_and_refuses_a_hypotheses_policy_without_an_index(pieces, monkeypatch):
    inverter, index = pieces["inverter"], pieces["index"]
    targets = np.stack([pieces["embedder"].vector(t) for t in ("A poem about rain.", "Three colours please")])
    exclude = [["row-2"], []]
    calls = spy_on_generate(inverter.policy, monkeypatch)
    results = inverter.sample(targets, best_of=3, exclude_ids=exclude, max_prompt_tokens=6)
    assert len(results) == 2 and [len(r.candidates) for r in results] == [3, 3]
    expected = index.hypotheses(targets, k=inverter.policy.config.hypotheses, exclude_ids=exclude)
    assert [rounded(c["hypotheses"]) for c in calls] == [rounded(expected)], "greedy and samples read them, once"
    assert calls[0]["greedy_first"] and calls[0]["num_return_sequences"] == 3
    assert all(h.id != "row-2" for h in expected[0]) and len(expected[0]) == 2

    calls.clear()
    inverter.index = None  # a policy trained with hypotheses, and nothing to read them from
    with pytest.raises(ValueError, match="trained to read 2 known prompts.*notebooks/02_pinecone.ipynb"):
        inverter.sample(targets)
    assert calls == [], "refused before the policy wrote anything"
    inverter.policy.config.hypotheses = 0  # a policy trained without them needs no index
    assert len(inverter.sample(targets)) == 2 and calls[0]["hypotheses"] is None


# --- the clean filter -------------------------------------------------------------------------------------------

RAIN = "Rain falls on the hills all night long."
QUOTING_INDEX_PROMPT = f"Say this: {RAIN}"  # an indexed prompt that pastes another row's output
OUTPUT_ROWS = {  # the store of outputs: id -> (prompt, output)
    "out-0": ("Describe the weather in the hills.", RAIN),
    "out-1": (f"Rewrite this sentence: {RAIN}", "The hills get rain all night."),  # quotes out-0's output
    "out-2": ("Name a cat breed.", "The Siamese is a cat breed."),
}
LOW_LINE = 0.2


def with_outputs_and_a_quoting_prompt(pieces):
    """The pieces' inverter over a store of OUTPUT_ROWS, its index also holding QUOTING_INDEX_PROMPT ("q-0")."""
    inverter, store, embedder, lm = pieces["inverter"], pieces["store"], pieces["embedder"], pieces["lm"]
    build_answer_index(store, lm, embedder, ["q-0"], [QUOTING_INDEX_PROMPT], embedding_cache_dir=pieces["tmp"])
    store.upsert(
        list(OUTPUT_ROWS),
        np.stack([embedder.vector(output) for _, output in OUTPUT_ROWS.values()]),
        [{"prompt": prompt, "output": output} for prompt, output in OUTPUT_ROWS.values()],
    )
    inverter.retrieval = store
    return inverter


def share(prompt: str) -> float:
    """A prompt's copied share against every stored output (no prompt here quotes its own row's)."""
    return copied_share(prompt, [output for _, output in OUTPUT_ROWS.values()])


def test_a_clean_search_never_sends_shows_nor_returns_a_prompt_above_the_line(pieces, monkeypatch):
    inverter, lm, embedder = with_outputs_and_a_quoting_prompt(pieces), pieces["lm"], pieces["embedder"]
    quoting = [QUOTING_INDEX_PROMPT, OUTPUT_ROWS["out-1"][0]]
    assert min(share(p) for p in quoting) > 0.5 > LOW_LINE  # both paste RAIN
    # the quoting index prompt answers exactly at the first target: without the filter it is the best prompt known
    targets = np.stack([embedder.vector(f"Answer to: {QUOTING_INDEX_PROMPT}"), embedder.vector(RAIN)])
    config = SearchConfig(budget=4, samples=2, max_prompt_tokens=6, retrieved_share=1.0, topics=0)  # the policy's calls
    calls = spy_on_generate(inverter.policy, monkeypatch)

    sent_before = len(lm.received)
    with pytest.raises(ValueError, match="needs the clean line"):
        inverter.search(targets, config)  # a store of outputs to copy from, and no line: refused ...
    assert len(lm.received) == sent_before  # ... before any call

    inverter.clean_line = LOW_LINE
    clean = inverter.search(targets, config)
    sent = lm.received[sent_before:]
    assert sent and max(share(p) for p in sent) <= LOW_LINE, "no prompt above the line reached the environment"
    assert all(share(r.prompt) <= LOW_LINE and r.copied_share <= LOW_LINE for r in clean)
    shown = [h.prompt for call in calls for row in call["hypotheses"] for h in row]
    assert shown and not set(shown) & set(quoting), "the policy never reads a prompt above the line"
    considered = {c.prompt: c.copied_share for r in clean for c in r.candidates}
    assert all(considered[p] > LOW_LINE for p in quoting), "they were candidates, measured and filtered out"
    assert clean[0].prompt != QUOTING_INDEX_PROMPT

    # clean=False (the pasting track): the same search sends the quoting retrieved prompt and returns the quote
    sent_before = len(lm.received)
    pasting = inverter.search(targets, SearchConfig(**{**config.to_dict(), "clean": False}))
    sent = lm.received[sent_before:]
    assert OUTPUT_ROWS["out-1"][0] in sent and max(share(p) for p in sent) > LOW_LINE
    assert pasting[0].prompt == QUOTING_INDEX_PROMPT and pasting[0].copied_share > LOW_LINE
    # the config's line overrides the inverter's: at 1.0 nothing is above it
    loose = inverter.search(targets, SearchConfig(**{**config.to_dict(), "max_copied_share": 1.0}))
    assert loose[0].prompt == QUOTING_INDEX_PROMPT


def test_a_clean_search_with_nothing_below_the_line_says_so(pieces):
    inverter, embedder = with_outputs_and_a_quoting_prompt(pieces), pieces["embedder"]
    inverter.clean_line, inverter.index = 0.0, None
    config = SearchConfig(budget=2, use_policy=False)
    target = embedder.vector(RAIN)[None]
    with pytest.raises(ValueError, match=r"Targets \[0\] have no prompt to answer"):
        inverter.search(target, config, retrieved=[[OUTPUT_ROWS["out-1"][0]]])
    [result] = inverter.search(target, config, retrieved=[["Describe rain.", OUTPUT_ROWS["out-1"][0]]])
    assert result.prompt == "Describe rain." and result.environment_calls == 1


def test_without_the_policy_every_exploring_call_goes_to_retrieved_prompts(pieces, monkeypatch):
    inverter, lm = pieces["inverter"], pieces["lm"]
    calls = spy_on_generate(inverter.policy, monkeypatch)
    target = pieces["embedder"].vector("A poem about rain.")[None]
    retrieved = [["Write a rain poem.", "Describe a storm.", "Name a cloud.", "Paint the sky.", "Draw a wave.", "Hum."]]
    sent_before = len(lm.received)
    [result] = inverter.search(
        target, SearchConfig(budget=5, use_policy=False, retrieved_share=0.5, spend_all=False), retrieved=retrieved
    )  # spend_all=False: the retrieved calls alone (the rest may take the final call too)
    assert calls == []  # the policy is never asked
    asked = [c.prompt for c in result.candidates if c.source == "retrieved" and not np.isnan(c.achieved_cosine)]
    assert asked == retrieved[0][:4]  # all 4 exploring calls, whatever retrieved_share says, nearest first
    assert lm.received[sent_before : sent_before + 4] == asked and result.environment_calls <= 5


def test_a_policy_that_reads_stored_answers_gets_the_nearest_outputs_in_the_search(pieces, monkeypatch):
    inverter, store, embedder, ids = pieces["inverter"], pieces["store"], pieces["embedder"], pieces["ids"]
    inverter.policy.config.answers = 1
    target = embedder.vector("A poem about rain.")[None]
    with pytest.raises(ValueError, match="stored outputs nearest each target|stored outputs nearest the target"):
        inverter.search(target, SearchConfig(budget=2, samples=2, max_prompt_tokens=6))
    outputs = [f"Output of {p}" for p in PROMPTS]
    store.upsert(
        ids,
        np.stack([embedder.vector(o) for o in outputs]),
        [{"prompt": p, "output": o} for p, o in zip(PROMPTS, outputs)],
    )
    inverter.retrieval = store
    calls = spy_on_generate(inverter.policy, monkeypatch)
    inverter.search(
        target, SearchConfig(budget=2, samples=2, max_prompt_tokens=6, max_copied_share=1.0), exclude_ids=[["row-2"]]
    )
    nearest = nearest_rows(store, target, 1, [["row-2"]])[0][0]
    for call in calls:
        [read] = call["hypotheses"]
        answers = [h for h in read if h.kind == "answer"]
        assert [(h.prompt, h.id) for h in answers] == [(nearest.output, nearest.id)] and nearest.id != "row-2"
    inverter.policy.config.answers = 0


def test_at_two_calls_the_exploring_call_is_the_policy_s(pieces):
    """floor(0.5 x 1) = 0 calls for retrieval: the one exploring call answers a rewrite, so two calls can beat one."""
    inverter, lm, embedder = pieces["inverter"], pieces["lm"], pieces["embedder"]
    target = embedder.vector("A poem about rain.")[None]
    sent_before = len(lm.received)
    [result] = inverter.search(
        target, SearchConfig(budget=2, samples=3, max_prompt_tokens=6), retrieved=[["Write a rain poem."]]
    )
    first = lm.received[sent_before]
    assert next(c.source for c in result.candidates if c.prompt == first) in ("greedy", "sampled")
    assert result.environment_calls <= 2
