"""Agreement between annotators against published and float64 references."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score

from analysis.review.agreement import (
    agreement_summary,
    alpha_nominal,
    conflicts,
    pairwise_kappa,
    value_counts,
)
from analysis.review.decisions import annotator_decisions
from analysis.review.store import Decision, ReviewStore

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 observers, 12 units,
# nominal values with missing data; the paper reports alpha = 0.743.
KRIPPENDORFF_2011 = {
    "A": [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    "B": [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    "C": [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    "D": [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
}


def _states(table: dict[str, list], *, kind: str = "negative") -> pd.DataFrame:
    rows = []
    for name, values in table.items():
        for unit, v in enumerate(values):
            if v is not None:
                rows.append((kind, f"u{unit:02d}", "", name, str(v), "", 0.0, len(rows)))
    return pd.DataFrame(rows, columns=["kind", "anchor_key", "candidate_key", "annotator", "decision", "label",
                                       "time", "id"])  # fmt: skip


def _alpha_reference(counts: np.ndarray) -> float:
    """Nominal alpha from the coincidence matrix, written out in float64 (Krippendorff 2011, eq. C)."""
    counts = counts.astype(np.float64)
    counts = counts[counts.sum(axis=1) >= 2]
    v = counts.shape[1]
    o = np.zeros((v, v))
    for n_u in counts:
        m_u = n_u.sum()
        pairs = np.outer(n_u, n_u) - np.diag(n_u)
        o += pairs / (m_u - 1)
    n_c = o.sum(axis=1)
    n = n_c.sum()
    off = ~np.eye(v, dtype=bool)
    d_o = o[off].sum()
    d_e = (np.outer(n_c, n_c)[off]).sum() / (n - 1)
    return 1.0 - d_o / d_e


def test_alpha_matches_krippendorffs_worked_example() -> None:
    states = _states(KRIPPENDORFF_2011)
    counts, values = value_counts(states, kind="negative")
    assert values == ["1", "2", "3", "4", "5"]
    assert counts.shape == (11, 5)  # unit 12 has a single value: not pairable
    alpha = alpha_nominal(counts)
    assert round(alpha, 3) == 0.743
    assert alpha == pytest.approx(_alpha_reference(counts), abs=1e-12)


def test_alpha_is_undefined_without_variation() -> None:
    assert np.isnan(alpha_nominal(np.array([[2, 0], [3, 0]])))
    assert np.isnan(alpha_nominal(np.zeros((0, 0))))
    assert np.isnan(alpha_nominal(np.array([[1, 0], [0, 1]])))  # no unit with two ratings


def test_pairwise_kappa_equals_sklearn_and_hand_formula() -> None:
    states = _states(KRIPPENDORFF_2011)
    table = pairwise_kappa(states, kind="negative")
    assert list(zip(table["annotator_a"], table["annotator_b"], strict=True)) == [
        ("A", "B"), ("A", "C"), ("A", "D"), ("B", "C"), ("B", "D"), ("C", "D")
    ]  # fmt: skip
    for row in table.itertuples():
        a, b = KRIPPENDORFF_2011[row.annotator_a], KRIPPENDORFF_2011[row.annotator_b]
        both = [(x, y) for x, y in zip(a, b, strict=True) if x is not None and y is not None]
        ya = np.array([x for x, _ in both], dtype=np.float64)
        yb = np.array([y for _, y in both], dtype=np.float64)
        p_o = float(np.mean(ya == yb))
        cats = np.union1d(ya, yb)
        p_e = float(sum(np.mean(ya == c) * np.mean(yb == c) for c in cats))
        expected = (p_o - p_e) / (1 - p_e) if p_e < 1 else np.nan
        assert row.items == len(both)
        assert row.agreed == int((ya == yb).sum())
        assert row.kappa == pytest.approx(expected, abs=1e-12, nan_ok=True)
        assert row.kappa == pytest.approx(
            cohen_kappa_score([str(int(x)) for x in ya], [str(int(y)) for y in yb]), abs=1e-12, nan_ok=True
        )


def test_conflicts_and_summary_count_disputed_keys() -> None:
    states = _states(KRIPPENDORFF_2011)
    disputed = conflicts(states)
    # units (0-based) where the observers present disagree: 1, 5, 7
    assert disputed["anchor_key"].tolist() == ["u01", "u05", "u07"]
    assert disputed["decisions"].iloc[0] == "A: 2; B: 2; C: 3; D: 2"
    assert disputed["ratings"].tolist() == [2, 4, 2]
    summary = agreement_summary(states)
    row = summary.iloc[0]
    assert (row["kind"], row["annotators"], row["decided"], row["shared"], row["disputed"]) == (
        "negative", 4, 12, 11, 3
    )  # fmt: skip
    assert row["alpha"] == pytest.approx(_alpha_reference(value_counts(states, kind="negative")[0]), abs=1e-12)


def test_agreement_from_the_store_with_undo_and_relabels(tmp_path: Path) -> None:
    store = ReviewStore(tmp_path / "r.sqlite", synchronous="NORMAL")
    ann = {"ann": ["false_negative", "negative", "negative", "unsure", "negative", "false_negative"],
           "bob": ["false_negative", "negative", "false_negative", "unsure", "negative", "negative"]}  # fmt: skip
    for name, values in ann.items():
        store.record_many(
            Decision("h", "negative", f"a{i}", f"c{i}", v, annotator=name) for i, v in enumerate(values)
        )
    # bob changes his mind on key 5, then undoes it: his decision there is 'negative' again
    store.record(Decision("h", "negative", "a5", "c5", "false_negative", annotator="bob"))
    store.undo("h", annotator="bob", kind="negative")
    store.record(Decision("h", "label", "x1", "", "relabel", annotator="ann", label="3"))
    store.record(Decision("h", "label", "x1", "", "relabel", annotator="bob", label="4"))
    states = annotator_decisions(store, "h")
    kappa = pairwise_kappa(states, kind="negative")
    assert kappa["kappa"].iloc[0] == pytest.approx(cohen_kappa_score(ann["ann"], ann["bob"]), abs=1e-12)
    assert kappa["items"].iloc[0] == 6
    assert conflicts(states, kind="negative")["anchor_key"].tolist() == ["a2", "a5"]
    labels = conflicts(states, kind="label")
    assert labels["decisions"].tolist() == ["ann: relabel:3; bob: relabel:4"]
