"""`SearchConfig`: every bad value refused when the config is made, naming the field; its plain-value round trip.

No model is needed: the checks run before anything loads, which is what lets the CLI refuse a typo at once.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from e2p_lib.inversion.config import (
    ANSWER_TOKENS,
    ECHO_TEMPLATE_COUNT,
    GROUND_CALL_COUNT,
    MAX_BUDGET,
    SearchConfig,
)


@pytest.mark.parametrize(
    "options, field",
    [
        ({"budget": 0}, "budget=0"),
        ({"budget": MAX_BUDGET + 1}, "budget=257"),
        ({"budget": -1}, "budget=-1"),
        ({"budget": 2.0}, "budget=2.0"),  # a float is not a count
        ({"budget": True}, "budget=True"),  # nor a bool
        ({"budget": "8"}, "budget='8'"),
        ({"answer_tokens": 0}, "answer_tokens=0"),
        ({"pool": 0}, "pool=0"),
        ({"neighbours": 0}, "neighbours=0"),
        ({"rounds": 0}, "rounds=0"),
        ({"samples": 0}, "samples=0"),
        ({"seed": -1}, "seed=-1"),
        ({"max_prompt_tokens": 0}, "max_prompt_tokens=0"),
        ({"retrieved_share": -0.1}, "retrieved_share=-0.1"),
        ({"retrieved_share": 1.5}, "retrieved_share=1.5"),
        ({"temperature": 0.0}, "temperature=0.0"),
        ({"temperature": -1.0}, "temperature=-1.0"),
        ({"temperature": math.nan}, "temperature=nan"),
        ({"temperature": math.inf}, "temperature=inf"),
        ({"top_p": 0.0}, "top_p=0.0"),
        ({"top_p": 1.5}, "top_p=1.5"),
        ({"max_copied_share": 1.5}, "max_copied_share=1.5"),
        ({"max_copied_share": -0.5}, "max_copied_share=-0.5"),
        ({"fluency_margin": -0.01}, "fluency_margin=-0.01"),
        ({"fluency_margin": math.nan}, "fluency_margin=nan"),
        ({"echo": 1}, "echo=1 pastes stored outputs' text"),  # clean=True by default
        ({"ground": 2}, "ground=2 pastes stored outputs' text"),
        ({"echo": ECHO_TEMPLATE_COUNT + 1, "clean": False}, "echo=4"),
        ({"ground": GROUND_CALL_COUNT + 1, "clean": False}, "ground=8"),
        ({"echo": -1, "clean": False}, "echo=-1"),
        ({"ground": -1, "clean": False}, "ground=-1"),
        ({"echo_margin": math.nan, "clean": False}, "echo_margin=nan"),
        ({"ground_margin": math.inf, "clean": False}, "ground_margin=inf"),
    ],
)
def test_bad_values_are_refused_naming_the_field(options, field):
    with pytest.raises(ValueError) as error:
        SearchConfig(**options)
    assert field in str(error.value)


def test_pasting_with_a_clean_search_says_how_to_fix_it():
    with pytest.raises(ValueError, match=r"pass clean=False as well \(the pasting track\), or echo=0"):
        SearchConfig(echo=1)
    pasting = SearchConfig(clean=False, echo=ECHO_TEMPLATE_COUNT, ground=GROUND_CALL_COUNT, budget=MAX_BUDGET)
    assert (pasting.echo, pasting.ground, pasting.budget) == (3, 7, 256)  # the largest values are accepted


def test_the_defaults_are_the_reported_method():
    config = SearchConfig()
    assert config.clean and config.use_policy and config.echo == config.ground == 0
    assert config.answer_tokens == ANSWER_TOKENS == 64
    assert (config.budget, config.pool, config.neighbours, config.rounds, config.samples) == (8, 8, 8, 2, 6)
    assert config.max_copied_share is None  # the line 02 recorded


def test_the_pasting_counts_match_the_templates():
    """config.py keeps the counts as constants so that checking a config imports no numpy; they must stay equal."""
    from e2p_lib.inversion.pasting import ECHO_TEMPLATES, GROUND_ORDER

    assert ECHO_TEMPLATE_COUNT == len(ECHO_TEMPLATES) and GROUND_CALL_COUNT == len(GROUND_ORDER)


def test_to_dict_round_trips_through_json():
    config = SearchConfig(budget=3, samples=2, clean=False, echo=2, ground=1, max_prompt_tokens=6, seed=4)
    values = config.to_dict()
    assert values["budget"] == 3 and values["max_copied_share"] is None
    assert SearchConfig(**values) == config
    assert SearchConfig(**json.loads(json.dumps(values))) == config  # what is saved beside results loads back
    assert list(values) == [f.name for f in dataclasses.fields(SearchConfig)]
    with pytest.raises(TypeError, match="switch_margin"):
        SearchConfig(switch_margin=0.1)  # an unknown (or removed) option is an error, not ignored
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.budget = 9
