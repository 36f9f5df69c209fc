"""Grounded prompts: the best known prompt with a composed text appended, and the search's grounded calls: counted
within the budget, made from the best indexed prompt and never from an excluded row, never shown to the policy."""

from __future__ import annotations

import numpy as np
import pytest
from test_echo import OUTPUTS
from test_invert import one_torch_thread  # noqa: F401 (autouse fixture)
from test_search import pieces  # noqa: F401 (fixture)

from e2p_lib.echo import EchoText, echo_texts
from e2p_lib.ground import GROUND_MARGIN, GROUND_ORDER, GROUND_TEMPLATES, grounded_prompts


def test_grounded_prompts_append_the_text_and_skip_what_is_missing():
    texts = [EchoText("Waves break.", 0.7), EchoText("", float("nan")), EchoText("Rain.", 0.5)]
    assert grounded_prompts([["Write a poem."], ["Name a fruit."], []], texts) == [
        ["Write a poem.\nUse these ideas: Waves break."],
        [],  # nothing composed
        [],  # no prompt known
    ]
    [two] = grounded_prompts([["P"]], texts[:1], 2)  # the templates in order, the prompt first in each
    assert two == ["P\nUse these ideas: Waves break.", "P\nWrite about: Waves break."]
    [all_of_them] = grounded_prompts([["P", "Q", "R"]], texts[:1], len(GROUND_ORDER))
    assert all_of_them == [GROUND_TEMPLATES[w].format(prompt="PQR"[r], text="Waves break.") for r, w in GROUND_ORDER]
    assert all_of_them[3:] == [
        "Q\nUse these ideas: Waves break.",
        "Q\nWrite about: Waves break.",
        "R\nUse these ideas: Waves break.",
        "R\nWrite about: Waves break.",
    ]
    [two_known] = grounded_prompts([["P", "Q"]], texts[:1], len(GROUND_ORDER))  # no third prompt: its two skipped
    assert two_known == all_of_them[:5]
    with pytest.raises(ValueError, match="one of each per target"):
        grounded_prompts([["a"]], texts)
    with pytest.raises(ValueError, match="grounded prompts per target"):
        grounded_prompts([["a"]], texts[:1], len(GROUND_ORDER) + 1)
    with pytest.raises(ValueError, match="count"):
        grounded_prompts([["a"]], texts[:1], 0)


def _with_outputs(pieces):  # noqa: F811
    """The fixture's inverter with a retrieval store of OUTPUTS (ids out-0 ...; out-0 and out-3 share an output)."""
    inverter, store, embedder = pieces["inverter"], pieces["store"], pieces["embedder"]
    store.upsert(
        [f"out-{i}" for i in range(len(OUTPUTS))],
        np.stack([embedder.vector(o) for o in OUTPUTS]),
        [{"prompt": f"p{i}", "output": o} for i, o in enumerate(OUTPUTS)],
    )
    inverter.retrieval, inverter.retrieval_k = store, 3
    return inverter


@pytest.mark.parametrize(("budget", "ground"), [(1, 1), (2, 1), (5, 1), (3, 3), (6, 3), (5, 7), (8, 7)])
def test_the_search_spends_its_grounded_calls_within_the_budget_and_never_shows_them(pieces, budget, ground):  # noqa: F811
    embedder, lm = pieces["embedder"], pieces["lm"]
    targets = np.stack([embedder.vector(t) for t in (OUTPUTS[4], OUTPUTS[2])])
    with pytest.raises(ValueError, match=f"ground={ground} composes texts"):
        pieces["inverter"].invert(targets, budget=budget, ground=ground)
    inverter = _with_outputs(pieces)
    shown = []
    original = inverter.shown_hypotheses
    inverter.shown_hypotheses = lambda candidates: shown.append(original(candidates)) or shown[-1]
    sent_before = len(lm.received)
    results = inverter.invert(targets, budget=budget, samples=2, seed=2, ground=ground, max_prompt_tokens=6)
    sent = lm.received[sent_before:]
    assert len(sent) == sum(r.environment_calls for r in results)
    assert all(1 <= r.environment_calls <= budget for r in results)
    grounded = [[c for c in r.candidates if c.source == "grounded"] for r in results]
    if budget == 1:  # no call before the final answer: the first grounded prompt is sent instead, or not, unanswered
        assert [r.environment_calls for r in results] == [1, 1] and [len(row) for row in grounded] == [1, 1]
        top = pieces["index"].hypotheses(targets, k=1)
        texts = echo_texts(inverter.retrieval, targets, embedder, k=3)
        rule = [
            g[0].prompt if t.cosine - GROUND_MARGIN > h[0].cosine else h[0].prompt
            for g, t, h in zip(grounded, texts, top)
        ]
        assert [r.prompt for r in results] == rule
        for margin, sent in ((-np.inf, [g[0].prompt for g in grounded]), (np.inf, [h[0].prompt for h in top])):
            again = inverter.invert(targets, budget=1, ground=ground, ground_margin=margin, max_prompt_tokens=6)
            assert [r.prompt for r in again] == sent and [r.environment_calls for r in again] == [1, 1]
            assert [r.trajectory[-1].prompt for r in again] == sent  # the trajectory ends at what was sent
        # echo's rule is asked first: with both margins at -inf the echo prompt goes, the grounded one is not sent
        both = inverter.invert(targets, budget=1, echo=1, ground=ground, echo_margin=-np.inf, ground_margin=-np.inf)
        assert [next(c.source for c in r.candidates if c.prompt == r.prompt) for r in both] == ["echo", "echo"]
        assert [r.environment_calls for r in both] == [1, 1]
        return
    ranked = [[h.prompt for h in row] for row in pieces["index"].hypotheses(targets, k=3)]
    assert all(len(row) == 3 for row in ranked)  # three known prompts each: every entry of GROUND_ORDER applies
    texts = echo_texts(inverter.retrieval, targets, embedder, k=3)
    spent = min(ground, budget - 1)  # the last call is the final answer's
    for row, prompts, text in zip(grounded, ranked, texts):
        assert all(not np.isnan(c.achieved_cosine) for c in row)  # each one answered
        expected = [GROUND_TEMPLATES[w].format(prompt=prompts[r], text=text.text) for r, w in GROUND_ORDER[:spent]]
        assert [c.prompt for c in row] == expected  # the best indexed prompts, grounded, one entry per call
    assert sent[: 2 * spent] == [c.prompt for row in grounded for c in row]  # first: before retrieval and rewrites
    assert not any(c.prompt == h.prompt for r in grounded for c in r for row in shown for h in row)
    with pytest.raises(ValueError, match="ground"):
        inverter.invert(targets, budget=budget, ground=-1)
    sent_before = len(lm.received)
    with pytest.raises(ValueError, match="ground=8: there are 7 grounded prompts per target"):
        inverter.invert(targets, budget=budget, ground=len(GROUND_ORDER) + 1)
    assert len(lm.received) == sent_before  # refused before any call


def test_grounding_starts_from_the_best_indexed_prompt_even_when_an_echo_answered_nearer(pieces):  # noqa: F811
    inverter = _with_outputs(pieces)
    targets = np.stack([pieces["embedder"].vector(t) for t in (OUTPUTS[4], OUTPUTS[2])])
    results = inverter.invert(targets, budget=6, samples=2, seed=2, echo=2, ground=2, max_prompt_tokens=6)
    top = [row[0].prompt for row in pieces["index"].hypotheses(targets, k=1)]
    for result, prompt in zip(results, top):
        echoes = [c.achieved_cosine for c in result.candidates if c.source == "echo"]
        grounded = [c for c in result.candidates if c.source == "grounded"]
        assert max(echoes) > max(c.achieved_cosine for c in result.candidates if c.source == "index")
        assert len(grounded) == 2 and all(c.prompt.startswith(prompt + "\n") for c in grounded)
        assert result.environment_calls <= 6


def test_the_grounded_text_never_comes_from_an_excluded_row(pieces):  # noqa: F811
    inverter = _with_outputs(pieces)
    target = pieces["embedder"].vector(OUTPUTS[0])[None]
    [free] = inverter.invert(target, budget=2, ground=1, max_prompt_tokens=6)
    [kept_out] = inverter.invert(target, budget=2, ground=1, max_prompt_tokens=6, exclude_ids=[["out-0", "out-3"]])
    [ground_free] = [c.prompt for c in free.candidates if c.source == "grounded"]
    [ground_kept_out] = [c.prompt for c in kept_out.candidates if c.source == "grounded"]
    assert "Rain falls on the hills." in ground_free  # the target's own output, when nothing is excluded
    assert "Rain falls on the hills." not in ground_kept_out and "The river rises." not in ground_kept_out


def test_a_seeded_grounded_search_repeats_exactly(pieces):  # noqa: F811
    inverter = _with_outputs(pieces)
    targets = np.stack([pieces["embedder"].vector(t) for t in ("rain and clouds", "a fruit salad")])
    first = inverter.invert(targets, budget=4, samples=3, seed=5, ground=2, max_prompt_tokens=6)
    second = inverter.invert(targets, budget=4, samples=3, seed=5, ground=2, max_prompt_tokens=6)
    assert [r.prompt for r in first] == [r.prompt for r in second]
    assert [[(c.prompt, c.achieved_cosine) for c in r.candidates] for r in first] == [
        [(c.prompt, c.achieved_cosine) for c in r.candidates] for r in second
    ]


def test_a_repeated_prompt_ranks_at_its_best_copy():
    """The prompts grounded first are the best known: a prompt known twice ranks by its better cosine."""
    from e2p_lib.invert import Candidate, Inverter

    known = [
        Candidate("A", 0, "index", 1.0, achieved_cosine=0.9),
        Candidate("B", 0, "index", 1.0, achieved_cosine=0.8),
        Candidate("A", 0, "retrieved", 1.0, achieved_cosine=0.5),
        Candidate("E", 0, "echo", 1.0, achieved_cosine=0.95),  # never a dataset-style prompt: not ranked
        Candidate("C", 0, "sampled", 1.0),  # not answered: not ranked
    ]
    assert [(c.prompt, c.achieved_cosine) for c in Inverter._known_best(known)] == [("A", 0.9), ("B", 0.8)]


def test_a_target_with_fewer_known_prompts_grounds_only_those_and_spends_the_rest(pieces):  # noqa: F811
    """With two indexed prompts left after the exclusions, GROUND_ORDER's entries for a third are skipped: five
    grounded calls, and the calls they leave go to the other pools, the budget still holding."""
    inverter, lm = _with_outputs(pieces), pieces["lm"]
    ids = pieces["ids"]
    target = pieces["embedder"].vector(OUTPUTS[2])[None]
    kept = ids[:2]
    exclude = [[i for i in ids if i not in kept]]
    sent_before = len(lm.received)
    [result] = inverter.invert(
        target, budget=8, samples=2, seed=2, ground=len(GROUND_ORDER), max_prompt_tokens=6, exclude_ids=exclude
    )
    known = [h.prompt for h in pieces["index"].hypotheses(target, k=8, exclude_ids=exclude)[0]]
    assert len(known) == 2
    [text] = echo_texts(inverter.retrieval, target, pieces["embedder"], k=3, exclude_ids=exclude)
    grounded = [c.prompt for c in result.candidates if c.source == "grounded"]
    assert grounded == [GROUND_TEMPLATES[w].format(prompt=known[r], text=text.text) for r, w in GROUND_ORDER if r < 2]
    assert len(grounded) == 5
    spent_elsewhere = [c for c in result.candidates if c.source not in ("index", "grounded")]
    assert sum(not np.isnan(c.achieved_cosine) for c in spent_elsewhere) == 2  # the two calls left, both used
    final_was_indexed = next(c.source for c in result.candidates if c.prompt == result.prompt) == "index"
    assert result.environment_calls == len(lm.received) - sent_before == 7 + final_was_indexed


def test_echo_calls_that_use_every_exploring_call_leave_no_unanswered_grounded_prompt(pieces):  # noqa: F811
    inverter = _with_outputs(pieces)
    target = pieces["embedder"].vector(OUTPUTS[2])[None]
    [result] = inverter.invert(target, budget=2, echo=1, ground=2, max_prompt_tokens=6)
    assert [c for c in result.candidates if c.source == "grounded"] == []  # no call was left for one
    assert any(c.source == "echo" and not np.isnan(c.achieved_cosine) for c in result.candidates)
