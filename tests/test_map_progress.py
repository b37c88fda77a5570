"""The map's staged progress (a bar that moves while numba compiles) and its selection kept across redraws."""

from __future__ import annotations

import time

import numpy as np
import plotly.graph_objects as go
import pytest

from ui.map_jobs import follow_umap, map_stages, warmup_stages
from ui.map_progress import MAX_BEFORE_DONE, TIME_SHARE, Stage, StagedProgress
from ui.map_selection import SelectionState, figure_signature, next_selection


class Clock:
    """A hand-driven clock (seconds)."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _stages() -> list[Stage]:
    return [
        Stage("compile", "compiling UMAP's numba kernels (first time only)", 2.0, 20.0),
        Stage("graph", "neighbours", 1.0, 2.0),
        Stage("layout", "optimising the layout", 1.0),
    ]


def test_a_silent_stage_moves_with_time_and_stops_short_of_its_end() -> None:
    clock = Clock()
    progress = StagedProgress(_stages(), clock=clock)
    assert progress.view().fraction == 0.0 and progress.view().step == 0
    progress.enter("compile")
    seen = []
    for _ in range(120):  # two minutes of compiling, nothing reported: 6x the stage's estimate
        clock.now += 1.0
        seen.append(progress.view().fraction)
    assert all(b > a for a, b in zip(seen, seen[1:], strict=False))  # it moves every second
    # the stage is half the bar: time fills at most TIME_SHARE of it
    assert seen[-1] < 0.5 * TIME_SHARE + 1e-12
    np.testing.assert_allclose(seen[19], 0.5 * TIME_SHARE * (1 - np.exp(-1.0)), rtol=1e-12)  # at its estimate
    view = progress.view()
    assert view.step == 1 and view.steps == 3 and view.stage_elapsed_s == pytest.approx(120.0)
    assert "step 1 of 3: compiling UMAP's numba kernels (first time only)" in view.text()
    assert "— 120 s, longer than the usual 20 s (the machine is busy)" in view.text()


def test_stages_in_order_fraction_monotone_and_never_full_before_done() -> None:
    clock = Clock()
    progress = StagedProgress(_stages(), clock=clock)
    progress.enter("compile")
    clock.now += 5.0
    first = progress.view()
    assert first.text() == "step 1 of 3: compiling UMAP's numba kernels (first time only) — 5 s of usually about 20 s"
    progress.enter("graph")  # the next stage starts at the compile stage's end (weight 2 of 4)
    assert progress.view().fraction == pytest.approx(0.5)
    progress.report(0.5)
    assert progress.view().fraction == pytest.approx(0.625)
    progress.report(0.2)  # a lower report never moves the bar back
    assert progress.view().fraction == pytest.approx(0.625)
    with pytest.raises(ValueError, match="comes before"):
        progress.enter("compile")
    with pytest.raises(ValueError, match="no stage"):
        progress.enter("nope")
    progress.enter("layout")
    steps, fractions = [], []
    for epoch in range(0, 201):
        progress.report(epoch / 200, f"{epoch}/200 epochs")
        view = progress.view()
        steps.append(view.step)
        fractions.append(view.fraction)
    assert steps == sorted(steps) and steps[-1] == 3
    assert fractions == sorted(fractions)
    assert max(fractions) == MAX_BEFORE_DONE  # all epochs reported, yet not done: never 100 %
    assert not progress.view().done
    clock.now += 1.0
    progress.finish()
    done = progress.view()
    assert done.fraction == 1.0 and done.done and done.text() == "done in 6 s"


def test_a_stage_entered_late_counts_the_skipped_ones_as_done() -> None:
    progress = StagedProgress(_stages(), clock=Clock())
    progress.enter("graph")  # the compilation had already finished
    assert progress.view().fraction == pytest.approx(0.5) and progress.view().step == 2


def test_bad_stage_lists_are_refused() -> None:
    with pytest.raises(ValueError):
        StagedProgress([])
    with pytest.raises(ValueError):
        StagedProgress([Stage("a", "a", 1.0), Stage("a", "b", 1.0)])
    with pytest.raises(ValueError):
        StagedProgress([Stage("a", "a", 0.0)])


def test_umap_reports_walk_the_map_stages_in_order() -> None:
    clock = Clock()
    stages = map_stages(20_000, compile_first=True, cached=False)
    assert [s.key for s in stages] == ["compile", "graph", "fuzzy", "layout"]
    assert stages[0].label == "compiling UMAP's numba kernels (first time only)" and stages[0].estimate_s > 10
    assert [s.key for s in map_stages(10, compile_first=False, cached=True)] == ["graph", "fuzzy", "layout"]
    progress = StagedProgress(stages, clock=clock)
    progress.enter("compile")
    clock.now += 30.0
    report = follow_umap(progress)
    keys, fractions = [], []
    # umap_2d's own fractions: neighbours up to 0.3, "loading UMAP" 0.3, layout start 0.35, epochs to 1
    for f in [0.0, 0.1, 0.3, 0.35, *np.linspace(0.36, 1.0, 30)]:
        report(float(f), "m")
        clock.now += 0.5
        view = progress.view()
        keys.append(progress.stage.key)
        fractions.append(view.fraction)
    assert keys == sorted(keys, key=["compile", "graph", "fuzzy", "layout"].index)
    assert {"graph", "fuzzy", "layout"} <= set(keys)
    assert fractions == sorted(fractions) and fractions[-1] <= MAX_BEFORE_DONE
    report(0.8, "optimising the layout (200 epochs)")
    assert progress.view().text().startswith("step 4 of 4: optimising the layout · 200 epochs — ")


def test_warmup_stages_say_whether_they_compile_or_load() -> None:
    first, cached = warmup_stages(cached=False), warmup_stages(cached=True)
    assert [s.key for s in first] == [s.key for s in cached] == ["import", "kernels"]
    assert sum(s.estimate_s for s in first) > 5 * sum(s.estimate_s for s in cached)


@pytest.mark.slow
def test_a_real_map_job_reports_moving_staged_progress(synthetic_run) -> None:
    """The background UMAP of a page: polled as the page's fragment does, the bar moves and ends at 100 %."""
    import streamlit as st

    from analysis.maps.embedding_map import MapParams
    from ui.map_jobs import map_job

    run, _ = synthetic_run
    st.cache_resource.clear()
    job = map_job(str(run.path), MapParams().key(), run, MapParams())
    views = []
    deadline = time.monotonic() + 300
    while not job.done.is_set() and time.monotonic() < deadline:
        views.append(job.progress.view())
        time.sleep(0.1)
    job.done.wait(timeout=10)
    assert job.error == "" and job.result is not None and len(job.result) == len(run.items)
    final = job.progress.view()
    assert final.done and final.fraction == 1.0
    fractions = [v.fraction for v in views]
    assert fractions == sorted(fractions) and all(f < 1.0 for f in fractions)
    steps = [v.step for v in views]
    assert steps == sorted(steps)
    compiling = [v.fraction for v in views if v.label.startswith("compiling")]
    if len(compiling) > 20:  # numba compiled during this test (not earlier in the process): the bar moved meanwhile
        assert len(set(compiling)) > 10 and compiling[-1] > compiling[0]


# ------------------------------------------------------------------------------------------------ the selection


def test_the_selection_survives_a_redrawn_chart_and_follows_the_user() -> None:
    state = SelectionState()
    # first draw: nothing selected
    state = next_selection(state, chart_sig="pca", event_ids=[], chart_was_drawn=False)
    assert state.selected == ()
    # the user lassos on the PCA map
    state = next_selection(state, chart_sig="pca", event_ids=[5, 9], chart_was_drawn=True)
    assert state.selected == (5, 9)
    # UMAP replaces PCA: a new chart, whose selection starts empty; the kept ids stay
    state = next_selection(state, chart_sig="umap", event_ids=[], chart_was_drawn=True)
    assert state.selected == (5, 9)
    # another rerun on the same chart (a table click): its event is still empty, nothing changes
    state = next_selection(state, chart_sig="umap", event_ids=[], chart_was_drawn=True)
    assert state.selected == (5, 9)
    # back from another page: the chart's old state was dropped; the kept ids stay
    state = next_selection(state, chart_sig="umap", event_ids=[], chart_was_drawn=False)
    assert state.selected == (5, 9)
    # a new selection on the UMAP map replaces them
    state = next_selection(state, chart_sig="umap", event_ids=[1], chart_was_drawn=True)
    assert state.selected == (1,)
    # cleared on that same chart (double-click): empty
    state = next_selection(state, chart_sig="umap", event_ids=[], chart_was_drawn=True)
    assert state.selected == ()


def _fig(colour: str, xs: list[float]) -> go.Figure:
    return go.Figure(go.Scattergl(x=np.asarray(xs, dtype=np.float32), y=[0, 1], marker={"color": colour}))


def test_figure_signature_changes_with_what_is_drawn() -> None:
    base = figure_signature(_fig("red", [0.0, 1.0]), {"scrollZoom": True})
    assert base == figure_signature(_fig("red", [0.0, 1.0]), {"scrollZoom": True})
    assert base != figure_signature(_fig("blue", [0.0, 1.0]), {"scrollZoom": True})
    assert base != figure_signature(_fig("red", [0.0, 1.5]), {"scrollZoom": True})
    assert base != figure_signature(_fig("red", [0.0, 1.0]), {"scrollZoom": False})
    text = go.Figure(go.Scattergl(x=[0, 1], y=[0, 1], text=np.array(["a", "b"], dtype=object)))
    other = go.Figure(go.Scattergl(x=[0, 1], y=[0, 1], text=np.array(["a", "c"], dtype=object)))
    assert figure_signature(text) != figure_signature(other)
    assert figure_signature(text, skip=("text",)) == figure_signature(other, skip=("text",))
    titled = [go.Figure(text).update_layout(legend_title_text=t) for t in ("Label", "Modality")]
    assert figure_signature(titled[0], skip=("text",)) != figure_signature(titled[1], skip=("text",))
