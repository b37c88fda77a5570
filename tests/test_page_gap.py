"""AppTest of the modality-gap page: metric cards, PCA views, the lambda sweep, the project-out comparison."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from analysis.metrics.modality_gap import gap_metrics, modality_groups
from analysis.runs.folder import Run, load_run, write_run
from tests.synthetic import make_synthetic_run
from ui.state import RUN_KEY

PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "3_Modality_Gap.py")


def _page(run: Run) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=180)
    at.session_state[RUN_KEY] = str(run.path)
    at.run()
    assert not at.exception, at.exception
    return at


def _metric(at: AppTest, label: str) -> str:
    values = [m.value for m in at.metric if m.label == label]
    assert values, f"no metric {label!r}; have {[m.label for m in at.metric]}"
    return values[0]


def test_two_modality_page(tmp_path: Path) -> None:
    run, _ = make_synthetic_run(tmp_path / "run", n_pairs=120, gap=1.5)
    at = _page(run)
    assert at.title[0].value == "Modality gap"
    # numbers first: the formulas are kept, folded in the expander right below the title
    assert at.expander[0].label == "How this is computed" and len(at.expander[0].latex) >= 2
    expected = gap_metrics(run.embeddings, modality_groups(run))
    assert float(_metric(at, "Centroid distance")) == pytest.approx(expected.centroid_distance, abs=1e-3)
    assert float(_metric(at, "Separability")) > 0.9
    _metric(at, "Cone width: image")
    _metric(at, "Cone width: text")
    assert not at.info  # the groups are modalities: no one-modality note
    # the lambda sweep table includes lambda = 0 and the closing lambda, whose centroid distance is near 0
    sweep = at.dataframe[0].value
    assert 0.0 in set(sweep["lambda"])
    assert sweep["centroid_distance"].min() < 0.1 * expected.centroid_distance
    assert float(_metric(at, "Centroid distance with the gap closed")) < 0.1 * expected.centroid_distance
    # project-out comparison is on by default
    summary = at.dataframe[1].value
    assert list(summary["embedding"]) == ["original", "gap projected out"]


def test_widgets_change_the_views(tmp_path: Path) -> None:
    run, _ = make_synthetic_run(tmp_path / "run", n_pairs=80, gap=1.0)
    at = _page(run)
    at.radio(key="gap_dims").set_value("3-D").run()
    assert not at.exception
    at.slider(key="gap_pairs").set_value(0).run()
    assert not at.exception
    at.slider(key="gap_range").set_value((0.0, 1.0)).run()
    at.slider(key="gap_steps").set_value(3).run()
    assert not at.exception
    lambdas = sorted(at.dataframe[0].value["lambda"])
    assert lambdas[0] == 0.0 and 0.5 in lambdas and 1.0 in lambdas and len(lambdas) == 4  # + the closing lambda
    at.toggle(key="gap_project").set_value(False).run()
    assert not at.exception
    assert len(at.dataframe) == 1


def test_one_modality_page_says_what_the_groups_are(tmp_path: Path) -> None:
    run, _ = make_synthetic_run(tmp_path / "one", n_pairs=80, two_modalities=False)
    at = _page(run)
    assert any("anchor side" in i.value and "one modality" in i.value for i in at.info)
    _metric(at, "Cone width: anchor side")
    _metric(at, "Cone width: positive side")


def test_tiny_run_warns(tmp_path: Path) -> None:
    run, _ = make_synthetic_run(tmp_path / "tiny", n_pairs=6, k=2, n_classes=2)
    at = _page(run)
    assert any("separability needs at least" in w.value for w in at.warning)
    assert _metric(at, "Separability") == "—"
    assert np.isfinite(float(_metric(at, "Centroid distance")))


def test_page_without_a_run_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ui.state.SAMPLE_DATA", tmp_path / "no-sample.csv")  # nothing to fall back on
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.run()
    assert not at.exception
    assert any("No run is loaded" in i.value for i in at.info)


def test_user_text_in_the_pca_hover_is_escaped(tmp_path: Path) -> None:
    run, _ = make_synthetic_run(tmp_path / "run", n_pairs=40, gap=1.0)
    items = run.items.copy()
    items.loc[items["modality"] == "text", "content"] = '<a href="http://x">click</a> caption'
    write_run(
        tmp_path / "html",
        manifest=run.manifest,
        items=items,
        embeddings=run.embeddings,
        pairs=run.pairs,
        negatives=run.negatives,
    )
    at = _page(load_run(tmp_path / "html"))
    specs = " ".join(chart.proto.spec for chart in at.get("plotly_chart"))
    assert "&lt;a href=" in specs
    assert '<a href=\\"http://x\\">' not in specs and '<a href="http://x">' not in specs


def test_centroids_stand_out_of_the_points(tmp_path: Path) -> None:
    from analysis.metrics.modality_gap import gap_pca
    from ui.gap_plots import pca_figure

    run, _ = make_synthetic_run(tmp_path / "run", n_pairs=120, gap=1.5)
    groups = modality_groups(run)
    pca = gap_pca(run, groups=groups, n_pairs=10)
    for three_d in (False, True):
        fig = pca_figure(pca, groups, run, three_d)
        centroids = [t for t in fig.data if t.name == "centroids (gap)"]
        points = [t for t in fig.data if t.name in groups.names]
        assert len(centroids) == 1 and fig.data[-1].name == "centroids (gap)", "drawn last, on top"
        marker = centroids[0].marker
        assert marker.size >= 2.5 * max(p.marker.size for p in points)
        assert marker.line.width >= 2 and marker.line.color == "black"
        np.testing.assert_allclose(np.asarray(centroids[0].x, dtype=float), pca.centroids["pc1"].to_numpy(float))


def test_closing_lambda_on_a_sample_is_close_to_the_exact_one(tmp_path: Path) -> None:
    from analysis.metrics.modality_gap import centroid_distance_after_shift, closing_lambda

    run, _ = make_synthetic_run(tmp_path / "run", n_pairs=400, gap=1.5, seed=5)
    groups = modality_groups(run)
    gap = gap_metrics(run.embeddings, groups).gap_vector
    exact = closing_lambda(run.embeddings, groups, gap)
    sampled = closing_lambda(run.embeddings, groups, gap, max_items=300)
    assert sampled != exact  # the sample was used
    start = centroid_distance_after_shift(run.embeddings, groups, gap, 0.0)
    # the sampled lambda closes the full gap nearly as well as the exact one
    assert centroid_distance_after_shift(run.embeddings, groups, gap, sampled) < 0.1 * start
    assert closing_lambda(run.embeddings, groups, gap, max_items=10_000) == exact  # small runs: every item
