"""Prompt quality (`e2p_lib.evaluate.quality`) on hand-made cases: what counts as copied, and the clean line.

A prompt's copied share is the share of its words inside a 5-word run also found in a text it could read: a pasted
sentence scores near 1, an instruction on the same topic 0. The clean line is a percentile of the original prompts'
shares, saved beside the run for `load_inverter` to read.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from e2p_lib.evaluate.quality import (
    CLEAN_LINE_FILE,
    COPY_NGRAM,
    CleanLine,
    References,
    clean_line,
    copied_share,
    load_clean_line,
    ngrams,
    save_clean_line,
    words,
)

OUTPUT = "Waves break on the shore at night."  # 7 words
PASTED = "Rewrite: waves break on the shore at night."  # 8 words, the last 7 copied


def test_words_are_lower_cased_without_punctuation_and_keep_inner_apostrophes():
    assert words("Don't STOP, now!  It's 2 o'clock...") == ["don't", "stop", "now", "it's", "2", "o'clock"]
    assert words("") == [] and words("?!") == []
    assert ngrams(["a", "b", "c"], 2) == {("a", "b"), ("b", "c")}
    assert ngrams(["a", "b"], 3) == set()  # shorter than a run: no n-gram at all


def test_a_pasted_sentence_is_caught_and_a_topical_instruction_is_not():
    assert COPY_NGRAM == 5
    assert copied_share(PASTED, [OUTPUT]) == pytest.approx(7 / 8)
    assert copied_share(OUTPUT.upper().replace(".", "!"), [OUTPUT]) == 1.0  # case and punctuation do not hide it
    # the same topic words, never five in a row: nothing copied
    assert copied_share("Write a poem about waves on a shore at dusk.", [OUTPUT]) == 0.0
    assert copied_share("Describe the night shore where waves break.", [OUTPUT]) == 0.0
    # only the words inside a shared run count: a long instruction quoting five words copies five of its words
    quoting = "Write a short story for children that ends with the words waves break on the shore."
    assert copied_share(quoting, [OUTPUT]) == pytest.approx(5 / len(words(quoting)))
    assert copied_share(PASTED, []) == 0.0 and copied_share(PASTED, ["Something else entirely here now."]) == 0.0


def test_fewer_than_five_words_never_count_as_copied():
    assert copied_share("waves break on the", [OUTPUT]) == 0.0  # four words of the output: too short a run
    assert copied_share(PASTED, ["waves break on the"]) == 0.0  # a reference too short to share a run
    assert copied_share("", [OUTPUT]) == 0.0 and copied_share("...", [OUTPUT]) == 0.0  # no words: 0, not NaN


def test_references_check_the_target_text_and_every_output_but_the_prompts_own_row():
    other = "Bake the bread for an hour and let it cool."
    refs = References({"row-7": OUTPUT, "row-8": other}, target_text=None)
    assert refs.copied_share(PASTED) == pytest.approx(7 / 8)
    assert refs.copied_share(PASTED, own_row="row-7") == 0.0  # its own output: quoting it is legitimate
    assert refs.copied_share(PASTED, own_row="row-8") == pytest.approx(7 / 8)  # another row's own is not
    assert refs.copied_share("Write a poem about waves.") == 0.0
    # the target text counts as well, whatever the own row
    with_target = References({"row-8": other}, target_text="Paris is the capital of France.")
    assert with_target.copied_share("Say: Paris is the capital of France.", own_row="row-8") == pytest.approx(6 / 7)
    assert with_target.copied_share("Bake the bread for an hour, please.", own_row="row-8") == 0.0
    assert References({}).copied_share(PASTED) == 0.0
    # References and the plain function agree
    assert refs.copied_share(PASTED, own_row="row-8") == copied_share(PASTED, [OUTPUT])


def test_the_clean_line_is_the_given_percentile_of_the_original_prompts_shares():
    shares = np.linspace(0.0, 1.0, 11)  # 0.0, 0.1, ..., 1.0
    line = clean_line(shares, neighbours=8, store="alpaca")
    assert line.max_copied_share == pytest.approx(0.9) and line.percentile == 90
    assert line.targets == 11 and line.originals_mean == pytest.approx(0.5)
    assert (line.neighbours, line.store) == (8, "alpaca")
    assert clean_line(shares, percentile=50, neighbours=8, store="alpaca").max_copied_share == pytest.approx(0.5)
    assert clean_line([0.0, 0.0, 0.0, 1.0], percentile=100, neighbours=1, store="s").max_copied_share == 1.0
    assert "copied share <= 0.900" in str(line) and "90th percentile on 11 validation targets" in str(line)
    for bad in ([], [0.2, 1.5], [-0.1], [float("nan")]):
        with pytest.raises(ValueError, match="copied shares in \\[0, 1\\]"):
            clean_line(bad, neighbours=8, store="alpaca")
    with pytest.raises(ValueError, match="percentile=101"):
        clean_line(shares, percentile=101, neighbours=8, store="alpaca")


def test_the_clean_line_round_trips_through_its_file(tmp_path):
    assert load_clean_line(tmp_path) is None  # 02 has not run: no line, no error
    line = clean_line([0.0, 0.05, 0.1, 0.3], neighbours=8, store="alpaca")
    path = save_clean_line(line, tmp_path / "data")  # the folder is made
    assert path == tmp_path / "data" / CLEAN_LINE_FILE
    assert load_clean_line(tmp_path / "data") == line
    assert isinstance(load_clean_line(tmp_path / "data"), CleanLine)
    assert not [p for p in path.parent.iterdir() if p != path], "no temporary file left beside it"


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[0.2]",
        '{"max_copied_share": 0.2}',  # fields missing
        json.dumps({"max_copied_share": 1.5, "percentile": 90, "targets": 3, "originals_mean": 0.1,
                    "neighbours": 8, "store": "alpaca"}),
        json.dumps({"max_copied_share": math.nan, "percentile": 90, "targets": 3, "originals_mean": 0.1,
                    "neighbours": 8, "store": "alpaca"}),
        json.dumps({"max_copied_share": "high", "percentile": 90, "targets": 3, "originals_mean": 0.1,
                    "neighbours": 8, "store": "alpaca"}),
    ],
)  # fmt: skip
def test_a_corrupt_clean_line_file_is_a_value_error_naming_it(tmp_path, content):
    (tmp_path / CLEAN_LINE_FILE).write_text(content)
    with pytest.raises(ValueError, match="is not a clean line") as error:
        load_clean_line(tmp_path)
    assert str(tmp_path / CLEAN_LINE_FILE) in str(error.value) and "02_pinecone" in str(error.value)


def test_a_clean_line_file_that_is_not_utf8_is_a_value_error_naming_it(tmp_path):
    (tmp_path / CLEAN_LINE_FILE).write_bytes(b"\xff\xfe{")
    with pytest.raises(ValueError, match="is not a clean line") as error:
        load_clean_line(tmp_path)
    assert str(tmp_path / CLEAN_LINE_FILE) in str(error.value)
