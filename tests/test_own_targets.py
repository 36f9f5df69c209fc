"""The own-text target sets: the test split is unchanged, and the validation split is disjoint from it."""

from __future__ import annotations

import pytest

from e2p_lib.evaluate.own_targets import OWN_TARGETS, OWN_VALIDATION_TARGETS, own_targets


def test_test_split_is_unchanged():
    df = own_targets()
    assert len(df) == 60
    assert df["id"].tolist() == [f"own-{i}" for i in range(60)]
    assert list(zip(df["kind"], df["text"])) == OWN_TARGETS
    assert own_targets("test").equals(df)


def test_val_split_ids():
    df = own_targets("val")
    assert len(df) >= 50
    assert len(df) == len(OWN_VALIDATION_TARGETS)
    assert df["id"].is_unique
    assert df["id"].str.startswith("own-val-").all()
    assert df["id"].tolist() == [f"own-val-{i}" for i in range(len(df))]


def test_val_texts_are_disjoint_from_test_and_each_other():
    test_texts = {t.strip().lower() for t in own_targets("test")["text"]}
    val_texts = [t.strip().lower() for t in own_targets("val")["text"]]
    assert not test_texts & set(val_texts)
    assert len(set(val_texts)) == len(val_texts)


def test_val_kinds_occur_in_test_and_texts_are_non_empty():
    test, val = own_targets("test"), own_targets("val")
    assert set(val["kind"]) <= set(test["kind"])
    assert all(isinstance(t, str) and t.strip() for t in val["text"])


def test_bad_split_raises():
    with pytest.raises(ValueError, match="validation") as info:
        own_targets("validation")
    assert "'test'" in str(info.value) and "'val'" in str(info.value)
