"""The pasting track (`e2p_lib.inversion.pasting`, `SearchConfig(clean=False, echo=..., ground=...)`): texts composed
near the target from its nearest stored outputs, never from an excluded row; echo prompts that ask for the text back
and grounded prompts that append it to the best known prompts; and the search's pasting calls: counted within the
budget, first, never shown to the policy, and measured as the copies they are.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_invert import ByteEmbedder, one_torch_thread  # noqa: F401 (autouse fixture)
from test_search import pieces  # noqa: F401 (fixture)
from tiny import DIMS

from e2p_lib.evaluate.quality import copied_share, words
from e2p_lib.inversion import Candidate, SearchConfig
from e2p_lib.inversion.pasting import (
    ECHO_TEMPLATES,
    GROUND_ORDER,
    GROUND_TEMPLATES,
    ComposedText,
    compose,
    composed_texts,
    echo_prompts,
    grounded_prompts,
    sentences,
)
from e2p_lib.inversion.results import known_best
from e2p_lib.store import make_vector_store
from e2p_lib.store.retrieval import nearest_rows

OUTPUTS = [
    "Rain falls on the hills. The river rises.",
    "Bake the bread for an hour.\nLet it cool.",
    "Cats sleep most of the day.",
    "Rain falls on the hills. The river rises.",  # the same output as row 0
    "Clouds gather before the storm! Thunder follows.",
]
NEIGHBOURS = 3  # stored outputs each target's text is composed from


def pasting(**options) -> SearchConfig:
    """The pasting track's config: clean=False, NEIGHBOURS stored outputs, short rewrites, no topic calls (their own
    tests are in tests/test_topics.py)."""
    return SearchConfig(clean=False, neighbours=NEIGHBOURS, max_prompt_tokens=6, **{"topics": 0, **options})


def texts_of(store, targets, embedder, exclude_ids=None) -> list[ComposedText]:
    """What the search composes: from the outputs of the NEIGHBOURS stored rows nearest each target."""
    rows = nearest_rows(store, targets, NEIGHBOURS, exclude_ids)
    return composed_texts([[nb.output for nb in row] for row in rows], targets, embedder)


# --- composing a text --------------------------------------------------------------------------------------------


def test_sentences_split_on_ends_and_lines_once_each():
    assert sentences(OUTPUTS) == [
        "Rain falls on the hills.",
        "The river rises.",
        "Bake the bread for an hour.",
        "Let it cool.",
        "Cats sleep most of the day.",
        "Clouds gather before the storm!",
        "Thunder follows.",
    ]
    assert sentences(OUTPUTS, limit=2) == ["Rain falls on the hills.", "The river rises."]


def test_compose_adds_sentences_only_while_they_bring_the_text_nearer():
    embedder = ByteEmbedder()
    pool = sentences(OUTPUTS)
    target = embedder.vector("Rain falls on the hills. Thunder follows.")
    [text] = compose(target[None], [pool], embedder)
    single = max(float(embedder.vector(s) @ target) for s in pool)
    assert text.cosine == pytest.approx(float(embedder.vector(text.text) @ target), abs=1e-5)
    assert text.cosine > single  # a composition beats the nearest single sentence here
    assert len(_split(text.text, pool)) >= 2  # made of whole pool sentences, more than one
    # the word limit holds, and a target with nothing to compose from gets an empty text
    short, empty = compose(np.stack([target, target]), [pool, []], embedder, max_words=5)
    assert 0 < len(short.text.split()) <= 5 and empty.text == "" and np.isnan(empty.cosine)
    with pytest.raises(ValueError, match="max_words"):
        compose(target[None], [pool], embedder, max_words=0)


def _split(text: str, pool: list[str]) -> list[str]:
    """The pool sentences a composed text is made of, in order."""
    found, rest = [], text
    while rest:
        head = next(s for s in pool if rest.startswith(s))
        found.append(head)
        rest = rest[len(head) :].lstrip()
    return found


def test_composed_texts_never_use_an_excluded_row(tmp_path):
    embedder = ByteEmbedder()
    store = make_vector_store("local", name="echo", dimensions=DIMS, root=tmp_path)
    ids = [f"row-{i}" for i in range(len(OUTPUTS))]
    store.upsert(
        ids,
        np.stack([embedder.vector(o) for o in OUTPUTS]),
        [{"prompt": f"p{i}", "output": o} for i, o in enumerate(OUTPUTS)],
    )
    target = embedder.vector(OUTPUTS[0])[None]
    [free] = texts_of(store, target, embedder)
    assert free.text == OUTPUTS[0] and free.cosine == pytest.approx(1.0, abs=1e-5)  # its own output: a lookup
    [left_out] = texts_of(store, target, embedder, exclude_ids=[["row-0", "row-3"]])
    assert "Rain falls on the hills." not in left_out.text and "The river rises." not in left_out.text
    assert left_out.text and left_out.cosine < 1.0


# --- the prompts -------------------------------------------------------------------------------------------------


def test_echo_prompts_use_the_templates_best_first():
    texts = compose(np.eye(DIMS, dtype=np.float32)[:1], [["Hello there."]], ByteEmbedder())
    [row] = echo_prompts(texts, 2)
    assert row == [t.format(text="Hello there.") for t in ECHO_TEMPLATES[:2]]
    assert row[0] == "Hello there.\n\nRepeat the text above word for word."
    assert echo_prompts(compose(np.eye(DIMS, dtype=np.float32)[:1], [[]], ByteEmbedder()), 1) == [[]]
    with pytest.raises(ValueError, match="echo templates"):
        echo_prompts(texts, len(ECHO_TEMPLATES) + 1)
    with pytest.raises(ValueError, match="count"):
        echo_prompts(texts, 0)


def test_grounded_prompts_append_the_text_and_skip_what_is_missing():
    texts = [ComposedText("Waves break.", 0.7), ComposedText("", float("nan")), ComposedText("Rain.", 0.5)]
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


def test_a_repeated_prompt_ranks_at_its_best_copy():
    """The prompts grounded first are the best known: a prompt known twice ranks by its better cosine."""
    known = [
        Candidate("A", 0, "index", 1.0, achieved_cosine=0.9),
        Candidate("B", 0, "index", 1.0, achieved_cosine=0.8),
        Candidate("A", 0, "retrieved", 1.0, achieved_cosine=0.5),
        Candidate("E", 0, "echo", 1.0, achieved_cosine=0.95),  # never a dataset-style prompt: not ranked
        Candidate("G", 0, "grounded", 1.0, achieved_cosine=0.97),  # nor a grounded one
        Candidate("C", 0, "sampled", 1.0),  # not answered: not ranked
    ]
    assert [(c.prompt, c.achieved_cosine) for c in known_best(known)] == [("A", 0.9), ("B", 0.8)]


# --- the search's pasting calls ----------------------------------------------------------------------------------


def _with_outputs(pieces):  # noqa: F811
    """The fixture's inverter with a store of OUTPUTS (ids out-0 ...; out-0 and out-3 share an output)."""
    inverter, store, embedder = pieces["inverter"], pieces["store"], pieces["embedder"]
    store.upsert(
        [f"out-{i}" for i in range(len(OUTPUTS))],
        np.stack([embedder.vector(o) for o in OUTPUTS]),
        [{"prompt": f"p{i}", "output": o} for i, o in enumerate(OUTPUTS)],
    )
    inverter.retrieval = store
    return inverter


def _spy_on_shown(inverter) -> list:
    """Record every list of hypotheses the search shows the policy."""
    shown = []
    original = inverter.shown_hypotheses
    inverter.shown_hypotheses = lambda candidates: shown.append(original(candidates)) or shown[-1]
    return shown


def search_counted(inverter, lm, targets, config) -> tuple[list, list[str]]:
    """Search, and the prompts the environment received for it: every call counted, each target within the budget."""
    sent_before = len(lm.received)
    results = inverter.search(targets, config)
    sent = lm.received[sent_before:]
    assert len(sent) == sum(r.environment_calls for r in results)
    assert all(1 <= r.environment_calls <= config.budget for r in results)
    return results, sent


def test_the_search_spends_its_echo_calls_first_within_the_budget_and_never_shows_them(pieces):  # noqa: F811
    inverter, embedder, lm = pieces["inverter"], pieces["embedder"], pieces["lm"]
    targets = np.stack([embedder.vector(t) for t in (OUTPUTS[4], OUTPUTS[2])])  # the echoes answer nearest
    with pytest.raises(ValueError, match="echo=1 reads the stored outputs.*retrieval=.*pass echo=0"):
        inverter.search(targets, pasting(budget=4, echo=1))  # no store of outputs to compose from
    inverter = _with_outputs(pieces)
    shown = _spy_on_shown(inverter)
    sent_before = len(lm.received)
    results = inverter.search(targets, pasting(budget=5, samples=2, seed=2, echo=2, retrieved_share=0.0))
    sent = lm.received[sent_before:]
    for result in results:
        echoes = [c for c in result.candidates if c.source == "echo"]
        assert len(echoes) == 2 and all(not np.isnan(c.achieved_cosine) for c in echoes)
        assert [c.prompt.split("\n\n")[-1] for c in echoes[:1]] == ["Repeat the text above word for word."]
        for c in echoes:  # measured as the copy it is: every word of its text that lies in a 5-word run of OUTPUTS
            text_words = words(c.prompt.split("\n\n")[0])  # the text; the template's words are not copied
            assert c.copied_share > 0 and c.copied_share == pytest.approx(copied_share(c.prompt, OUTPUTS))
            assert c.copied_share * len(words(c.prompt)) <= len(text_words)
        margin = SearchConfig().fluency_margin  # a more fluent pick may land this much lower
        assert (
            result.environment_calls <= 5 and result.achieved_cosine >= max(c.achieved_cosine for c in echoes) - margin
        )
    assert sent[:4] == [c.prompt for r in results for c in r.candidates if c.source == "echo"]  # echoes first
    assert len(sent) == sum(r.environment_calls for r in results)
    best = [max(r.candidates, key=lambda c: np.nan_to_num(c.achieved_cosine, nan=-1)) for r in results]
    assert all(c.source == "echo" for c in best)  # the best answered: what the policy would read first
    assert shown and not any("Repeat the text above" in h.prompt for row in shown for h in row)


def test_one_call_sends_the_echo_prompt_only_when_its_text_lies_its_margin_nearer(pieces):  # noqa: F811
    inverter, embedder = _with_outputs(pieces), pieces["embedder"]
    targets = np.stack([embedder.vector(t) for t in (OUTPUTS[4], OUTPUTS[2])])
    top = [row[0].prompt for row in pieces["index"].hypotheses(targets, k=1)]
    # no echo is answered before the one call; the composed text's cosine decides against the index's known one
    kept = inverter.search(targets, pasting(budget=1, echo=2, echo_margin=3.0, use_policy=False))  # never nearer
    assert [r.prompt for r in kept] == top and [r.environment_calls for r in kept] == [1, 1]
    assert all(np.isnan(c.achieved_cosine) for r in kept for c in r.candidates if c.source == "echo")
    rewritten = inverter.search(targets, pasting(budget=1, echo=2, echo_margin=3.0, samples=3))
    # the policy's greedy rewrite, or the best known prompt where it wrote nothing new: never the echo prompt
    assert all(next(c for c in r.candidates if c.prompt == r.prompt).source in ("greedy", "index") for r in rewritten)
    switched = inverter.search(targets, pasting(budget=1, echo=2, echo_margin=-3.0))  # any text is nearer
    assert [r.prompt.endswith("Repeat the text above word for word.") for r in switched] == [True, True]
    assert [r.environment_calls for r in switched] == [1, 1] and all(r.prompt not in top for r in switched)


@pytest.mark.parametrize(("budget", "ground"), [(1, 1), (2, 1), (5, 1), (3, 3), (6, 3), (5, 7), (8, 7)])
def test_the_search_spends_its_grounded_calls_within_the_budget_and_never_shows_them(pieces, budget, ground):  # noqa: F811
    embedder, lm = pieces["embedder"], pieces["lm"]
    targets = np.stack([embedder.vector(t) for t in (OUTPUTS[4], OUTPUTS[2])])
    with pytest.raises(ValueError, match=f"ground={ground} reads the stored outputs"):
        pieces["inverter"].search(targets, pasting(budget=budget, ground=ground))
    inverter = _with_outputs(pieces)
    shown = _spy_on_shown(inverter)
    results, sent = search_counted(inverter, lm, targets, pasting(budget=budget, samples=2, seed=2, ground=ground))
    grounded = [[c for c in r.candidates if c.source == "grounded"] for r in results]
    texts = texts_of(inverter.retrieval, targets, embedder)
    if budget == 1:  # no call before the final answer: the first grounded prompt is sent instead, or not, unanswered
        assert [r.environment_calls for r in results] == [1, 1] and [len(row) for row in grounded] == [1, 1]
        top = pieces["index"].hypotheses(targets, k=1)
        margin = SearchConfig().ground_margin
        wins = [t.cosine - margin > h[0].cosine for t, h in zip(texts, top)]
        for result, won, row in zip(results, wins, grounded):
            source = next(c.source for c in result.candidates if c.prompt == result.prompt)
            assert (result.prompt == row[0].prompt) if won else (source in ("greedy", "index"))  # the one-call rule
        for margin, expected in ((-3.0, [g[0].prompt for g in grounded]), (3.0, [h[0].prompt for h in top])):
            config = pasting(budget=1, ground=ground, ground_margin=margin, use_policy=False)
            again = inverter.search(targets, config)
            assert [r.prompt for r in again] == expected and [r.environment_calls for r in again] == [1, 1]
            assert [r.trajectory[-1].prompt for r in again] == expected  # the trajectory ends at what was sent
        # echo's rule is asked first: with both margins at -3 the echo prompt goes, the grounded one is not sent
        both = inverter.search(targets, pasting(budget=1, echo=1, ground=ground, echo_margin=-3.0, ground_margin=-3.0))
        assert [next(c.source for c in r.candidates if c.prompt == r.prompt) for r in both] == ["echo", "echo"]
        assert [r.environment_calls for r in both] == [1, 1]
        return
    ranked = [[h.prompt for h in row] for row in pieces["index"].hypotheses(targets, k=3)]
    assert all(len(row) == 3 for row in ranked)  # three known prompts each: every entry of GROUND_ORDER applies
    spent = min(ground, budget - 1)  # the last call is the final answer's
    for row, prompts, text in zip(grounded, ranked, texts):
        assert all(not np.isnan(c.achieved_cosine) for c in row)  # each one answered
        expected = [GROUND_TEMPLATES[w].format(prompt=prompts[r], text=text.text) for r, w in GROUND_ORDER[:spent]]
        assert [c.prompt for c in row] == expected  # the best indexed prompts, grounded, one entry per call
    assert sent[: 2 * spent] == [c.prompt for row in grounded for c in row]  # first: before retrieval and rewrites
    assert not any(c.prompt == h.prompt for r in grounded for c in r for row in shown for h in row)


def test_grounding_starts_from_the_best_indexed_prompt_even_when_an_echo_answered_nearer(pieces):  # noqa: F811
    inverter = _with_outputs(pieces)
    targets = np.stack([pieces["embedder"].vector(t) for t in (OUTPUTS[4], OUTPUTS[2])])
    results = inverter.search(targets, pasting(budget=6, samples=2, seed=2, echo=2, ground=2))
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
    [free] = inverter.search(target, pasting(budget=2, ground=1))
    [kept_out] = inverter.search(target, pasting(budget=2, ground=1), exclude_ids=[["out-0", "out-3"]])
    [ground_free] = [c.prompt for c in free.candidates if c.source == "grounded"]
    [ground_kept_out] = [c.prompt for c in kept_out.candidates if c.source == "grounded"]
    assert "Rain falls on the hills." in ground_free  # the target's own output, when nothing is excluded
    assert "Rain falls on the hills." not in ground_kept_out and "The river rises." not in ground_kept_out


def test_a_seeded_grounded_search_repeats_exactly(pieces):  # noqa: F811
    inverter = _with_outputs(pieces)
    targets = np.stack([pieces["embedder"].vector(t) for t in ("rain and clouds", "a fruit salad")])
    first = inverter.search(targets, pasting(budget=4, samples=3, seed=5, ground=2))
    second = inverter.search(targets, pasting(budget=4, samples=3, seed=5, ground=2))
    assert [r.prompt for r in first] == [r.prompt for r in second]
    assert [[(c.prompt, c.achieved_cosine) for c in r.candidates] for r in first] == [
        [(c.prompt, c.achieved_cosine) for c in r.candidates] for r in second
    ]


def test_a_target_with_fewer_known_prompts_grounds_only_those_and_spends_the_rest(pieces):  # noqa: F811
    """With two indexed prompts left after the exclusions, GROUND_ORDER's entries for a third are skipped: five
    grounded calls, and the calls they leave go to the other pools, the budget still holding."""
    inverter, lm = _with_outputs(pieces), pieces["lm"]
    ids = pieces["ids"]
    target = pieces["embedder"].vector(OUTPUTS[2])[None]
    kept = ids[:2]
    exclude = [[i for i in ids if i not in kept]]
    sent_before = len(lm.received)
    [result] = inverter.search(
        target, pasting(budget=8, samples=2, seed=2, ground=len(GROUND_ORDER)), exclude_ids=exclude
    )
    known = [h.prompt for h in pieces["index"].hypotheses(target, k=8, exclude_ids=exclude)[0]]
    assert len(known) == 2
    [text] = texts_of(inverter.retrieval, target, pieces["embedder"], exclude_ids=exclude)
    grounded = [c.prompt for c in result.candidates if c.source == "grounded"]
    assert grounded == [GROUND_TEMPLATES[w].format(prompt=known[r], text=text.text) for r, w in GROUND_ORDER if r < 2]
    assert len(grounded) == 5
    spent_elsewhere = [c for c in result.candidates if c.source not in ("index", "grounded")]
    final_was_indexed = next(c.source for c in result.candidates if c.prompt == result.prompt) == "index"
    # the two calls left, both used, and the final call too unless an indexed prompt is answered again at the end
    assert sum(not np.isnan(c.achieved_cosine) for c in spent_elsewhere) == 2 + (not final_was_indexed)
    assert result.environment_calls == len(lm.received) - sent_before == 8


def test_echo_calls_that_use_every_exploring_call_leave_no_unanswered_grounded_prompt(pieces):  # noqa: F811
    inverter = _with_outputs(pieces)
    target = pieces["embedder"].vector(OUTPUTS[2])[None]
    [result] = inverter.search(target, pasting(budget=2, echo=1, ground=2))
    assert [c for c in result.candidates if c.source == "grounded"] == []  # no call was left for one
    assert any(c.source == "echo" and not np.isnan(c.achieved_cosine) for c in result.candidates)
