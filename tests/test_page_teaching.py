"""AppTest of the teaching page: InfoNCE on the unit circle with its own tau, readable numbers, spread labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from analysis.metrics.teaching import toy_state, toy_tau_curve
from ui.teaching_plots import shares_curve, spread_angles, toy_figure

PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "7_Teaching.py")


def _metric(at: AppTest, label: str) -> str:
    values = [m.value for m in at.metric if m.label == label]
    assert values, f"no metric {label!r}; have {[m.label for m in at.metric]}"
    return values[0]


def test_teaching_page_needs_no_run_and_places_points() -> None:
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception, at.exception
    assert at.expander[0].label == "How this is computed"
    at.radio(key="teach_mode").set_value("Place by angles").run()
    at.slider(key="teach_n").set_value(2).run()
    at.number_input(key="teach_anchor").set_value(0.0).run()
    at.number_input(key="teach_positive").set_value(10.0).run()
    at.number_input(key="teach_neg_0").set_value(20.0).run()
    at.number_input(key="teach_neg_1").set_value(180.0).run()
    options = [float(o) for o in at.select_slider(key="teach_tau").options]
    at.select_slider(key="teach_tau").set_value(options[0]).run()
    assert not at.exception
    cold = float(_metric(at, "Effective negatives").split(" of ")[0])
    at.select_slider(key="teach_tau").set_value(options[-1]).run()
    warm = float(_metric(at, "Effective negatives").split(" of ")[0])
    assert cold < 1.05 < warm
    # the table holds the float64 values of the toy (the column format shows them in scientific notation)
    table = at.dataframe[0].value
    ref = toy_state(0.0, 10.0, [20.0, 180.0], options[-1]).table
    np.testing.assert_allclose(table["softmax p"].to_numpy()[1:], ref["p"].to_numpy()[1:], rtol=1e-12)
    at.radio(key="teach_arrows").set_value("Gradient step of every point").run()
    assert not at.exception


def test_spread_angles_keeps_labels_apart() -> None:
    angles = np.array([10.0, 11.0, 12.0, 200.0, 359.0])
    out = spread_angles(angles, min_gap=15.0)
    diffs = np.abs((out[:, None] - out[None, :] + 180.0) % 360.0 - 180.0)
    np.fill_diagonal(diffs, 360.0)
    assert diffs.min() >= 15.0 - 1e-6
    # a lone label stays on its point
    assert out[3] == pytest.approx(200.0)


def test_toy_figures_have_legends() -> None:
    res = toy_state(0.0, 20.0, [30.0, 35.0, 180.0], 0.1)
    circle = toy_figure(res.table, "Forces on the anchor")
    assert {t.name for t in circle.data if t.showlegend is not False} >= {"anchor", "positive", "negative"}
    curve = shares_curve(toy_tau_curve(0.0, 20.0, [30.0, 35.0, 180.0], np.geomspace(0.01, 5, 9)), 0.1)
    assert curve.layout.showlegend is True
    assert [t.name for t in curve.data] == ["negative 1", "negative 2", "negative 3"]
