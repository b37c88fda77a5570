"""AppTest of the temperature page: curves, tau slider, per-pair view, variants, geometry (one view at a time)."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from analysis.review.store import Decision, ReviewStore
from analysis.runs.folder import Run
from analysis.runs.workspace import review_db_path
from tests.synthetic import make_synthetic_run, write_image_files
from ui.state import RUN_KEY

PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "2_Temperature.py")


def _with_images(run: Run) -> Run:
    write_image_files(run)
    return run


@pytest.fixture
def image_run(tmp_path: Path) -> Run:
    run, _ = make_synthetic_run(tmp_path / "run", n_pairs=80, k=6)
    return _with_images(run)


def _page(run: Run, view: str | None = None) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state[RUN_KEY] = str(run.path)
    if view is not None:
        at.session_state["temp_view"] = view
    at.run()
    assert not at.exception, at.exception
    return at


def _view(at: AppTest, view: str) -> AppTest:
    """Switch the view selector and rerun."""
    at.session_state["temp_view"] = view
    at.run()
    assert not at.exception, at.exception
    return at


def _metric(at: AppTest, label: str) -> str:
    values = [m.value for m in at.metric if m.label == label]
    assert values, f"no metric {label!r}; have {[m.label for m in at.metric]}"
    return values[0]


def test_page_renders_with_the_learned_tau(image_run: Run) -> None:
    at = _page(image_run)
    assert at.title[0].value == "Temperature and loss"
    # the formulas are kept, folded in the expander right below the title
    assert at.expander[0].label == "How this is computed"
    assert len(at.expander[0].latex) >= 4
    slider = at.select_slider(key="temp_tau")
    assert slider.value == pytest.approx(0.07)
    assert not at.error
    # two modalities: the query side can be switched
    assert at.radio(key="temp_direction").options == ["anchor → candidates", "positive → anchors"]
    assert any("symmetric" in c.value for c in at.caption)
    # the first view computes only its own section: no gradient metrics yet
    assert not [m for m in at.metric if m.label == "Mean loss"]
    _view(at, "Gradient at τ")
    for label in ("Mean loss", "Effective negatives", "Hardest's share"):
        _metric(at, label)
    _view(at, "Alignment & uniformity")
    for label in ("Alignment", "Uniformity", "Tolerance"):
        _metric(at, label)
    assert not [m for m in at.metric if m.label == "Mean loss"]


def test_tau_slider_changes_the_gradient(image_run: Run) -> None:
    at = _page(image_run, "Gradient at τ")
    eff_learned = float(_metric(at, "Effective negatives"))
    options = [float(o) for o in at.select_slider(key="temp_tau").options]
    at.select_slider(key="temp_tau").set_value(options[0]).run()
    assert not at.exception
    eff_cold = float(_metric(at, "Effective negatives"))
    assert eff_cold < eff_learned
    at.select_slider(key="temp_tau").set_value(options[-1]).run()
    assert float(_metric(at, "Effective negatives")) > eff_learned


def test_direction_pair_view_and_variants(image_run: Run) -> None:
    at = _page(image_run, "Gradient at τ")
    at.radio(key="temp_direction").set_value("reverse").run()
    assert not at.exception
    at.number_input(key="temp_pair_rank").set_value(3).run()
    assert not at.exception
    assert any(m.value.startswith("Pair **") for m in at.markdown)
    at.text_input(key="temp_pair_id").set_value("17").run()
    assert any(m.value.startswith("Pair **17**") for m in at.markdown)
    at.text_input(key="temp_pair_id").set_value("no-such-pair").run()
    assert any("No pair has id" in w.value for w in at.warning)
    _view(at, "Loss variants")
    at.slider(key="temp_tau_plus").set_value(0.2).run()
    at.slider(key="temp_beta").set_value(2.0).run()
    assert not at.exception
    table = at.dataframe[0].value
    assert len(table) == 5 and table.iloc[:, 1].notna().all()


def test_review_decisions_show_the_false_negative_share(image_run: Run) -> None:
    run = image_run
    keys = run.items["key"].to_numpy()
    negs = run.negatives.head(6)
    anchor_of = dict(zip(run.pairs["pair_id"], run.pairs["anchor_id"], strict=True))
    ReviewStore(review_db_path()).record_many(
        Decision(run.dataset_hash, "negative", keys[anchor_of[r.pair_id]], keys[r.negative_id], "false_negative", "a")
        for r in negs.itertuples()
    )
    at = _page(run, "Gradient at τ")
    assert _metric(at, "False-negative share").endswith("%")
    assert any("review decisions" in c.value for c in at.caption)


def test_one_modality_run_has_forward_only(tmp_path: Path) -> None:
    run, _ = make_synthetic_run(tmp_path / "one", n_pairs=60, two_modalities=False)
    at = _page(run)
    assert not [r for r in at.radio if r.key == "temp_direction"]
    assert any("One modality" in c.value for c in at.caption)


def test_too_small_run_warns_about_geometry(tmp_path: Path) -> None:
    run, _ = make_synthetic_run(tmp_path / "tiny", n_pairs=4, k=2, n_classes=2)
    at = _page(_with_images(run), "Alignment & uniformity")
    assert any("at least 10" in w.value for w in at.warning)


def test_page_without_a_run_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ui.state.SAMPLE_DATA", tmp_path / "no-sample.csv")  # nothing to fall back on
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.run()
    assert not at.exception
    assert any("No run is loaded" in i.value for i in at.info)
