"""Sharing the queue: deterministic, balanced, order-free shares with the chosen overlap."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from analysis.errors import NegScopeError
from analysis.review.assignment import assign, queue_key, share_mask

KEYS = [queue_key(f"anchor{i}", f"cand{i % 97}") for i in range(3000)]


def _weight(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def test_assignment_follows_the_documented_hashes() -> None:
    names = ["bob", "ann", "cy"]
    table = assign(KEYS[:200], names, overlap=0.3, salt="s")
    for key, first, second, twice in table.itertuples(index=False):
        ranked = sorted(names, key=lambda a: _weight(f"s|{key}|{a}"), reverse=True)
        expect_twice = _weight(f"s|overlap|{key}") < 0.3 * 2.0**64
        assert first == ranked[0]
        assert twice == expect_twice
        assert second == (ranked[1] if expect_twice else "")


def test_shares_are_balanced_and_overlap_is_the_chosen_fraction() -> None:
    names = ["ann", "bob", "cy"]
    table = assign(KEYS, names, overlap=0.2)
    shares = table["first"].value_counts(normalize=True)
    assert set(shares.index) == set(names)
    assert np.allclose(shares.to_numpy(), 1 / 3, atol=0.03)
    assert table["overlap"].mean() == pytest.approx(0.2, abs=0.02)
    assert (table.loc[table["overlap"], "second"] != table.loc[table["overlap"], "first"]).all()
    masks = [share_mask(KEYS, a, names, overlap=0.2) for a in names]
    assert (np.sum(masks, axis=0) == np.where(table["overlap"], 2, 1)).all()  # every key reviewed once or twice


def test_assignment_is_deterministic_and_ignores_name_order() -> None:
    a = assign(KEYS, ["ann", "bob"], overlap=0.1)
    b = assign(KEYS, [" bob", "ann", "ann", ""], overlap=0.1)
    assert a.equals(b)
    assert not assign(KEYS, ["ann", "bob"], overlap=0.1, salt="other").equals(a)


def test_adding_an_annotator_only_moves_keys_to_them() -> None:
    before = assign(KEYS, ["ann", "bob"])
    after = assign(KEYS, ["ann", "bob", "dee"])
    moved = before["first"] != after["first"]
    assert (after.loc[moved, "first"] == "dee").all()
    assert moved.mean() == pytest.approx(1 / 3, abs=0.03)


def test_single_annotator_and_bad_input() -> None:
    table = assign(KEYS[:50], ["solo"], overlap=1.0)
    assert (table["first"] == "solo").all() and not table["overlap"].any()
    assert not share_mask(KEYS[:5], "stranger", ["ann", "bob"]).any()
    with pytest.raises(NegScopeError):
        assign(KEYS[:5], [" ", ""])
    with pytest.raises(NegScopeError):
        assign(KEYS[:5], ["ann"], overlap=1.5)
