"""The false-negative reasons (one text per candidate row), written once per distinct combination of codes,
against a slow per-row reference, and their two-decimal numbers against Python's own ``format``."""

from __future__ import annotations

import numpy as np

from analysis.detectors.false_negatives import REASON_TEXT, _reasons, _two_decimals


def _reference(ev: dict, contrib: dict, labels: np.ndarray) -> list[str]:
    """Row by row: the similarities, then the (up to) three strongest contributions >= 0.5, ties by key order."""
    keys = [k for k in contrib if np.any(contrib[k] >= 0.5)]
    out = []
    for i in range(len(ev["neg_sim"])):
        neg, pos = float(ev["neg_sim"][i]), float(ev["pos_sim"][i])
        text = f"neg_sim {neg:.2f}{' >= ' if neg >= pos else ' < '}pos_sim {pos:.2f}; "
        scored = sorted(((-float(contrib[k][i]), j, k) for j, k in enumerate(keys)), key=lambda t: (t[0], t[1]))
        shown = []
        for neg_value, _, key in scored[:3]:
            if -neg_value < 0.5:
                break
            piece = REASON_TEXT[key]
            if key == "sim_to_positive" and np.isfinite(ev["sim_to_positive"][i]):
                piece = f"{piece} ({float(ev['sim_to_positive'][i]):.2f})"
            elif key == "rank":
                piece = f"{piece} (rank {int(ev['rank'][i])})"
            elif key == "label" and labels[i] is not None:
                piece = f"{piece} {labels[i]}"
            shown.append(piece)
        out.append(text + ("; ".join(shown) if shown else "little evidence"))
    return out


def test_two_decimals_equal_python_format_on_boundaries_and_specials() -> None:
    rng = np.random.default_rng(0)
    halves = (np.arange(-200, 201) + 0.5) / 100.0  # x.xx5: where rounding could go either way
    values = np.concatenate(
        [
            rng.uniform(-1.0, 1.0, 5000),
            halves,
            np.nextafter(halves, np.inf),
            np.nextafter(halves, -np.inf),
            [0.0, -0.0, -0.004, 0.004, -0.005, 0.005, 1.0, -1.0, 123.456, -98765.4321, 3e16, -1e200, np.nan, np.inf, -np.inf],
        ]
    )
    codes, strings = _two_decimals(values)
    assert [strings[c] for c in codes] == [format(float(v), ".2f") for v in values]
    assert len(strings) < len(values)  # the distinct texts only


def test_reasons_equal_the_row_by_row_reference() -> None:
    rng = np.random.default_rng(1)
    m = 3000
    ev = {
        "neg_sim": np.round(rng.uniform(-1, 1, m), 3),  # equal values included
        "pos_sim": np.round(rng.uniform(-1, 1, m), 2),
        "sim_to_positive": np.where(rng.random(m) < 0.2, np.nan, rng.uniform(-1, 1, m)),
        "rank": rng.integers(1, 102, m),
    }
    ev["pos_sim"][:50] = ev["neg_sim"][:50]  # neg == pos: ">="
    keys = ["sim_diff", "sim_to_positive", "rank", "mutual", "label", "csls", "other_mode"]
    contrib = {k: np.round(rng.normal(0.3, 0.6, m), 1) for k in keys}  # rounded: equal contributions tie
    contrib["other_mode"] = np.zeros(m)  # never fires: left out
    labels = np.array([None if rng.random() < 0.3 else f"class {rng.integers(0, 7)}" for _ in range(m)], dtype=object)
    got = _reasons(ev, contrib, labels)
    assert len(got) == m and got.categories.is_unique
    assert got.tolist() == _reference(ev, contrib, labels)


def test_reasons_without_any_firing_evidence_and_without_rows() -> None:
    ev = {
        "neg_sim": np.array([0.5, np.nan]),
        "pos_sim": np.array([0.4, 0.1]),
        "sim_to_positive": np.zeros(2),
        "rank": np.ones(2),
    }
    contrib = {"sim_diff": np.array([0.1, 0.2])}
    assert _reasons(ev, contrib, np.array([None, None], dtype=object)).tolist() == [
        "neg_sim 0.50 >= pos_sim 0.40; little evidence",
        "neg_sim nan < pos_sim 0.10; little evidence",
    ]
    empty = {k: np.zeros(0) for k in ev}
    assert _reasons(empty, {"sim_diff": np.zeros(0)}, np.zeros(0, dtype=object)).tolist() == []
