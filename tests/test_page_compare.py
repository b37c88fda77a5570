"""AppTest of the Compare page: it opens on the sample's three checkpoints, and every view renders."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from analysis.compare.sample import SAMPLE_CHECKPOINTS
from analysis.runs.workspace import runs_dir
from tests.synthetic import make_synthetic_run
from ui.state import RUN_KEY

PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "8_Compare.py")


@pytest.mark.slow
def test_opens_on_the_sample_checkpoints_and_every_view_renders() -> None:
    at = AppTest.from_file(PAGE, default_timeout=300)
    at.run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Compare checkpoints"
    assert at.expander[0].label == "How this is computed"
    chosen = at.multiselect(key="compare_runs").value
    assert len(chosen) == len(SAMPLE_CHECKPOINTS)
    # the metric table: one column per run, deltas against the first
    table = at.dataframe[0].value
    assert {"epoch 5", "epoch 20", "epoch 80", "Δ epoch 80 − epoch 5"} <= set(table.columns)
    auroc = table.set_index("key").loc["auroc"]
    assert float(auroc["epoch 80"]) > float(auroc["epoch 5"])  # training improved the model
    for view in ("Trajectory", "Pairs", "False negatives"):
        at.session_state["compare_view"] = view
        at.run()
        assert not at.exception, (view, at.exception)
    # false negatives: the sample's recorded truth, followed across the checkpoints
    assert any(m.label == "Pushed further away in run B" for m in at.metric)
    at.session_state["compare_view"] = "Pairs"
    at.session_state["compare_pair"] = 0
    at.run()
    assert not at.exception, at.exception
    assert any(t.value == "Run epoch 80" for t in at.text)


@pytest.mark.slow
def test_differing_datasets_show_a_message() -> None:
    a, _ = make_synthetic_run(runs_dir() / "run-a", n_pairs=40, seed=1)
    b, _ = make_synthetic_run(runs_dir() / "run-b", n_pairs=30, seed=2)
    at = AppTest.from_file(PAGE, default_timeout=300)
    at.session_state[RUN_KEY] = str(a.path)
    at.session_state["compare_runs"] = [str(a.path), str(b.path)]
    at.run()
    assert not at.exception, at.exception
    assert any("cannot be compared" in e.value and "differ" in e.value for e in at.error)


@pytest.mark.slow
def test_the_url_keeps_the_chosen_runs() -> None:
    a, _ = make_synthetic_run(runs_dir() / "run-a", n_pairs=40, seed=1)
    b, _ = make_synthetic_run(runs_dir() / "run-b", n_pairs=40, seed=1)
    at = AppTest.from_file(PAGE, default_timeout=300)
    at.query_params["compare"] = "run-b,run-a"
    at.run()
    assert not at.exception, at.exception
    assert at.multiselect(key="compare_runs").value == [str(b.path.resolve()), str(a.path.resolve())]
    assert at.query_params["compare"] in ("run-b,run-a", ["run-b,run-a"])
    # a run id leaving the workspace is refused, and the page falls back to the default runs
    bad = AppTest.from_file(PAGE, default_timeout=300)
    bad.query_params["compare"] = "../../etc,run-a"
    bad.run()
    assert not bad.exception, bad.exception
    assert any("cannot open" in w.value for w in bad.warning)
