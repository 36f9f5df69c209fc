"""Topic prompts (`e2p_lib.inversion.topics`, `SearchConfig(topics=...)`): phrases cut from the nearest stored
outputs, the nearest the target kept without shared words or copied runs, added to the best known prompts; and the
search's topic calls: clean, counted within the budget, none at one call, never shown to the policy.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_invert import ByteEmbedder, one_torch_thread  # noqa: F401 (autouse fixture)
from test_pasting import OUTPUTS, _spy_on_shown, _with_outputs, search_counted
from test_search import PROMPTS, pieces  # noqa: F401 (fixture)

from e2p_lib.evaluate.quality import copied_share
from e2p_lib.inversion import SearchConfig
from e2p_lib.inversion.topics import TOPIC_ORDER, TOPIC_TEMPLATES, choose_topics, joined, phrases, topic_prompts
from e2p_lib.store.retrieval import nearest_rows


def clean(**options) -> SearchConfig:
    """A clean search whose line is 0: no prompt may share a 5-word run with the stored outputs it could read."""
    return SearchConfig(max_copied_share=0.0, neighbours=3, max_prompt_tokens=6, **options)


def test_phrases_are_runs_of_content_words_cut_at_stop_words_digits_and_punctuation():
    text = "Solar panels cut energy bills, and LED bulbs last much longer than 2 old lamps.\n"
    text += "Use smart thermostat schedules"
    assert phrases([text, "Solar panels cut energy bills."]) == [
        "solar panels cut",  # five content words in a row: cut into pieces of three and two
        "energy bills",
        "led bulbs",
        "longer",
        "old lamps",
        "use smart thermostat",
        "schedules",
    ]
    assert phrases([text], limit=2) == ["solar panels cut", "energy bills"]
    assert phrases(["The and of a", "", "x 42"]) == []  # stop words, digits and single letters make no phrase


def test_choose_topics_keeps_the_nearest_phrases_that_share_no_word_and_copy_no_run():
    embedder = ByteEmbedder()
    outputs = [["red green blue and cyan magenta", "deep red wine, green tea"]]
    target = embedder.vector("red green blue")[None]
    [chosen] = choose_topics(target, outputs, embedder.embed, count=4)
    assert chosen[0] == "red green blue"  # the phrase nearest the target comes first
    words = [w for phrase in chosen for w in phrase.split()]
    assert len(words) == len(set(words))  # no two phrases share a word: "deep red wine" and "green tea" are out
    # "cyan magenta" would make "red green blue and cyan": a 5-word run of the first output
    assert "cyan magenta" not in chosen and copied_share(joined(chosen), outputs[0]) == 0.0
    pool = phrases(outputs[0])
    cosines = {p: float(embedder.vector(p) @ target[0]) for p in pool}
    assert all(cosines[a] >= cosines[b] for a, b in zip(chosen, chosen[1:]))  # nearest first
    assert choose_topics(np.stack([target[0], target[0]]), [outputs[0], []], embedder.embed)[1] == []
    with pytest.raises(ValueError, match="one row per target"):
        choose_topics(target, outputs * 2, embedder.embed)


def test_topic_prompts_follow_the_schedule_and_skip_what_is_missing():
    [all_of_them] = topic_prompts([["P", "Q", "R"]], [["waves", "sea salt"]], len(TOPIC_ORDER))
    assert all_of_them == [
        TOPIC_TEMPLATES[w].format(prompt="PQR"[r], topics="waves and sea salt") for r, w in TOPIC_ORDER
    ]
    assert all_of_them[0] == "P Mention waves and sea salt."
    [two_known] = topic_prompts([["P", "Q"]], [["waves"]], len(TOPIC_ORDER))  # no third prompt: its two skipped
    assert len(two_known) == 5 and all(not p.startswith("R") for p in two_known)
    assert topic_prompts([["P"]], [[]], 3) == [[]]  # nothing found: no topic prompt
    with pytest.raises(ValueError, match="at most that"):
        topic_prompts([["P"]], [["waves"]], len(TOPIC_ORDER) + 1)


@pytest.mark.parametrize(("budget", "topics"), [(1, 3), (2, 1), (4, 3), (8, 7)])
def test_the_search_spends_its_topic_calls_clean_within_the_budget_and_never_shows_them(pieces, budget, topics):  # noqa: F811
    embedder, lm = pieces["embedder"], pieces["lm"]
    targets = np.stack([embedder.vector(t) for t in (OUTPUTS[4], OUTPUTS[2])])
    config = clean(budget=budget, samples=2, seed=2, topics=topics)
    # no store of outputs: no topics to add, the calls go to the other pools
    without, _ = search_counted(pieces["inverter"], lm, targets, config)
    assert not any(c.source == "topics" for r in without for c in r.candidates)
    inverter = _with_outputs(pieces)
    shown = _spy_on_shown(inverter)
    results, sent = search_counted(inverter, lm, targets, config)
    rows = [[c for c in r.candidates if c.source == "topics"] for r in results]
    if budget == 1:  # the one call is the policy's: no topic prompt is written
        assert rows == [[], []]
        return
    ranked = [[h.prompt for h in row] for row in pieces["index"].hypotheses(targets, k=3)]
    outputs = [[nb.output for nb in row] for row in nearest_rows(inverter.retrieval, targets, 3)]
    found = choose_topics(targets, outputs, embedder.embed)
    spent = min(topics, budget - 1)  # the last call is the final answer's
    for row, prompts, topics_found, texts in zip(rows, ranked, found, outputs):
        assert [c.prompt for c in row] == topic_prompts([prompts], [topics_found], topics)[0]
        answered = [c for c in row if not np.isnan(c.achieved_cosine)]
        assert len(answered) == spent and all(c.copied_share == 0.0 for c in row)
        assert all(copied_share(c.prompt, texts) == 0.0 for c in row)  # clean against what the search could read
    assert sent[: 2 * spent] == [c.prompt for row in rows for c in row if not np.isnan(c.achieved_cosine)]
    assert not any(c.prompt == h.prompt for row in rows for c in row for seen in shown for h in seen)
    assert all(r.copied_share == 0.0 for r in results)


def test_topics_are_checked_with_the_config():
    with pytest.raises(ValueError, match="topics"):
        SearchConfig(topics=len(TOPIC_ORDER) + 1)
    with pytest.raises(ValueError, match="topics"):
        SearchConfig(topics=-1)
    assert SearchConfig(topics=3).clean  # topic prompts are clean: no need to leave the clean track


def test_a_topic_prompt_is_judged_as_the_dataset_prompt_it_extends(pieces):  # noqa: F811
    embedder, lm, store = pieces["embedder"], pieces["lm"], pieces["store"]
    # each row's stored output quotes its prompt (the echo environment's answer): "Write a haiku about rain." is a
    # 5-word run of row-2's output, as a dataset prompt whose input the output repeats
    outputs = [f"Answer to: {p}" for p in PROMPTS]
    store.upsert(
        pieces["ids"],
        np.stack([embedder.vector(o) for o in outputs]),
        [{"prompt": p, "output": o} for p, o in zip(PROMPTS, outputs)],
    )
    inverter = pieces["inverter"]
    inverter.retrieval = store
    target = embedder.vector(outputs[2])[None]
    [result], _ = search_counted(inverter, lm, target, clean(budget=4, samples=2, seed=2, topics=3))
    made = [c for c in result.candidates if c.source == "topics"]
    on_own = [c for c in made if c.prompt.startswith(PROMPTS[2])]
    assert on_own and all(c.row_id == "row-2" for c in on_own)
    for c in on_own:  # against every output it copies row-2's; without its own row's output it copies nothing
        assert copied_share(c.prompt, outputs) > 0 and c.copied_share == 0.0
    assert any(not np.isnan(c.achieved_cosine) for c in on_own)  # so it is sent, as the dataset prompt itself is
