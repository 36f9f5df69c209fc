"""Echo prompts: texts composed near the target from its nearest stored outputs, never from an excluded row, and the
search's echo pool: its calls are counted within the budget and the policy never reads its prompts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_invert import ByteEmbedder, one_torch_thread  # noqa: F401 (autouse fixture)
from test_search import pieces  # noqa: F401 (fixture)
from tiny import DIMS

from e2p_lib.echo import ECHO_TEMPLATES, compose, echo_prompts, echo_texts, sentences
from e2p_lib.store import make_vector_store

OUTPUTS = [
    "Rain falls on the hills. The river rises.",
    "Bake the bread for an hour.\nLet it cool.",
    "Cats sleep most of the day.",
    "Rain falls on the hills. The river rises.",  # the same output as row 0
    "Clouds gather before the storm! Thunder follows.",
]


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


def test_echo_texts_never_use_an_excluded_row(tmp_path):
    embedder = ByteEmbedder()
    store = make_vector_store("local", name="echo", dimensions=DIMS, root=tmp_path)
    ids = [f"row-{i}" for i in range(len(OUTPUTS))]
    store.upsert(
        ids,
        np.stack([embedder.vector(o) for o in OUTPUTS]),
        [{"prompt": f"p{i}", "output": o} for i, o in enumerate(OUTPUTS)],
    )
    target = embedder.vector(OUTPUTS[0])[None]
    [free] = echo_texts(store, target, embedder, k=2)
    assert free.text == OUTPUTS[0] and free.cosine == pytest.approx(1.0, abs=1e-5)  # its own output: a lookup
    [left_out] = echo_texts(store, target, embedder, k=2, exclude_ids=[["row-0", "row-3"]])
    assert "Rain falls on the hills." not in left_out.text and "The river rises." not in left_out.text
    assert left_out.text and left_out.cosine < 1.0


def test_echo_prompts_use_the_templates_best_first():
    texts = compose(np.eye(DIMS, dtype=np.float32)[:1], [["Hello there."]], ByteEmbedder())
    [row] = echo_prompts(texts, 2)
    assert row == [t.format(text="Hello there.") for t in ECHO_TEMPLATES[:2]]
    assert echo_prompts(compose(np.eye(DIMS, dtype=np.float32)[:1], [[]], ByteEmbedder()), 1) == [[]]
    with pytest.raises(ValueError, match="echo templates"):
        echo_prompts(texts, len(ECHO_TEMPLATES) + 1)


def test_the_search_spends_its_echo_calls_within_the_budget_and_never_shows_them(pieces):  # noqa: F811
    inverter, store, embedder, lm = pieces["inverter"], pieces["store"], pieces["embedder"], pieces["lm"]
    targets = np.stack([embedder.vector(t) for t in (OUTPUTS[4], OUTPUTS[2])])  # the echoes answer nearest
    with pytest.raises(ValueError, match="retrieval="):
        inverter.invert(targets, budget=4, echo=1)
    ids = [f"out-{i}" for i in range(len(OUTPUTS))]
    store.upsert(
        ids,
        np.stack([embedder.vector(o) for o in OUTPUTS]),
        [{"prompt": f"p{i}", "output": o} for i, o in enumerate(OUTPUTS)],
    )
    inverter.retrieval, inverter.retrieval_k = store, 3
    shown = []
    original = inverter.shown_hypotheses
    inverter.shown_hypotheses = lambda candidates: shown.append(original(candidates)) or shown[-1]
    sent_before = len(lm.received)
    results = inverter.invert(targets, budget=5, samples=2, seed=2, echo=2, max_prompt_tokens=6, retrieved_share=0.0)
    sent = lm.received[sent_before:]
    for result in results:
        echoes = [c for c in result.candidates if c.source == "echo"]
        assert len(echoes) == 2 and all(not np.isnan(c.achieved_cosine) for c in echoes)
        assert [c.prompt.split("\n\n")[-1] for c in echoes[:1]] == ["Repeat the text above word for word."]
        assert result.environment_calls <= 5 and result.achieved_cosine >= max(c.achieved_cosine for c in echoes)
    assert sent[:4] == [c.prompt for r in results for c in r.candidates if c.source == "echo"]  # echoes first
    assert len(sent) == sum(r.environment_calls for r in results)
    best = [max(r.candidates, key=lambda c: np.nan_to_num(c.achieved_cosine, nan=-1)) for r in results]
    assert all(c.source == "echo" for c in best)  # the best answered: what the policy would read first
    assert shown and not any("Repeat the text above" in h.prompt for row in shown for h in row)
    # one call: no echo is answered before it; the composed text's cosine decides against the index's known one
    kept = inverter.invert(targets, budget=1, echo=2, echo_margin=math.inf)
    top = [row[0].prompt for row in pieces["index"].hypotheses(targets, k=1)]
    assert [r.prompt for r in kept] == top and [r.environment_calls for r in kept] == [1, 1]
    assert all(np.isnan(c.achieved_cosine) for r in kept for c in r.candidates if c.source == "echo")
    switched = inverter.invert(targets, budget=1, echo=2, echo_margin=-1.0)  # any text beats any known cosine
    assert [r.prompt.endswith("Repeat the text above word for word.") for r in switched] == [True, True]
    assert [r.environment_calls for r in switched] == [1, 1] and all(r.prompt not in top for r in switched)
    with pytest.raises(ValueError, match="echo"):
        inverter.invert(targets, budget=4, echo=-1)
