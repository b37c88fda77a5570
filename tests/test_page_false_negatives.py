"""AppTest of the false-negative review page: buttons record decisions in the store, undo, filters, bulk, export."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from analysis.review.store import ReviewStore
from analysis.runs.folder import Run
from analysis.runs.workspace import review_db_path
from tests.synthetic import make_synthetic_run, write_image_files
from ui.state import ANNOTATOR_KEY, RUN_KEY

PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "4_False_Negatives.py")


@pytest.fixture
def image_run(tmp_path: Path) -> Run:
    """A small two-modality synthetic run whose anchor images exist on disk."""
    run, _ = make_synthetic_run(tmp_path / "run", n_pairs=60, k=4, seed=5)
    write_image_files(run)
    return run


def _page(run: Run, *, name: str = "") -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state[RUN_KEY] = str(run.path)
    at.session_state[ANNOTATOR_KEY] = name
    at.run()
    assert not at.exception, at.exception
    return at


def _shown_candidate(at: AppTest, run: Run) -> tuple[str, str]:
    """Content keys (anchor, candidate) of the candidate shown one-at-a-time, read from the captions."""
    texts = [t.value for t in at.text]
    # show_item writes each item's content verbatim; the three columns are anchor, positive, candidate
    contents = run.items["content"].astype(str).tolist()
    shown = [t for t in texts if t in contents]
    anchor, candidate = shown[0], shown[2]
    key_of = dict(zip(run.items["content"].astype(str), run.items["key"].astype(str), strict=True))
    return key_of[anchor], key_of[candidate]


def test_page_explains_and_refuses_to_record_without_a_name(image_run: Run) -> None:
    at = _page(image_run)
    assert at.title[0].value == "False negatives"
    assert len(at.get("latex")) >= 4
    metrics = {m.label: m.value for m in at.metric}
    assert int(metrics["Candidates"].replace(",", "")) > 60 * 4  # listed negatives plus mined ones
    assert any("Enter your name" in w.value for w in at.warning)
    at.button(key="fn_btn_false_negative").click().run()
    assert not at.exception
    assert any("Enter your name" in e.value for e in at.error)
    assert ReviewStore(review_db_path()).count() == 0


def test_buttons_record_decisions_and_undo_restores(image_run: Run) -> None:
    at = _page(image_run, name="alice")
    anchor_key, cand_key = _shown_candidate(at, image_run)
    at.button(key="fn_btn_false_negative").click().run()
    assert not at.exception
    assert any("Saved" in s.value for s in at.success)
    store = ReviewStore(review_db_path())
    latest = store.latest(image_run.content_hash, kind="negative")
    assert len(latest) == 1
    row = latest.iloc[0]
    assert (row["anchor_key"], row["candidate_key"], row["decision"], row["annotator"]) == (
        anchor_key,
        cand_key,
        "false_negative",
        "alice",
    )
    # the undecided queue moved on to another candidate; decide it as a plain negative
    nxt = _shown_candidate(at, image_run)
    assert nxt != (anchor_key, cand_key)
    at.button(key="fn_btn_negative").click().run()
    assert len(store.latest(image_run.content_hash, kind="negative")) == 2
    # skip moves on without writing
    before = _shown_candidate(at, image_run)
    at.button(key="fn_btn_skip").click().run()
    assert _shown_candidate(at, image_run) != before
    assert store.count() == 2
    # undo takes back the latest decision (the negative), then the first
    at.button(key="fn_undo").click().run()
    latest = store.latest(image_run.content_hash, kind="negative")
    assert list(latest["decision"]) == ["false_negative"]
    at.button(key="fn_undo").click().run()
    assert store.latest(image_run.content_hash, kind="negative").empty
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Decided false negatives"] == "0"


def test_filters_grid_bulk_and_before_after(image_run: Run) -> None:
    at = _page(image_run, name="bob")
    at.multiselect(key="fn_sources").set_value(["given"]).run()
    at.slider(key="fn_min_score").set_value(0.2).run()
    assert not at.exception
    # the grid view has per-card buttons
    at.radio(key="fn_view").set_value("Grid").run()
    assert not at.exception
    at.button(key="fn_grid_0_false_negative").click().run()
    store = ReviewStore(review_db_path())
    assert len(store.latest(image_run.content_hash)) == 1
    # decided rows show under "Decided"
    at.selectbox(key="fn_state").set_value("Decided").run()
    assert not at.exception
    # the before/after table counts the decided false negative
    frames = [d.value for d in at.dataframe if "metric" in d.value.columns]
    before_after = frames[0].set_index("metric")
    assert (before_after["after"] >= before_after["before"]).all()
    assert before_after.loc["recall_at_10", "after"] >= before_after.loc["recall_at_10", "before"]
    assert any("1 decided false negatives counted" in c.value for c in at.caption)
    # the export is offered for download
    assert len(at.get("download_button")) >= 1
    assert not at.exception


def test_bulk_decision_on_a_selection(image_run: Run) -> None:
    at = _page(image_run, name="carol")
    at.toggle(key="fn_show_table").set_value(True).run()
    key = at.session_state["fn_table_key"]
    table = at.dataframe(key=key).value
    # select three rows the way the browser does: the widget state carries the selected row positions
    at.session_state[key] = {"selection": {"rows": [0, 1, 2], "columns": []}}
    at.selectbox(key="fn_bulk_decision").set_value("negative").run()
    at.button(key="fn_bulk_apply").click().run()
    assert not at.exception
    store = ReviewStore(review_db_path())
    latest = store.latest(image_run.content_hash, kind="negative")
    assert len(latest) == 3 and set(latest["decision"]) == {"negative"}
    assert set(latest["annotator"]) == {"carol"}
    keys = dict(zip(image_run.items["item_id"], image_run.items["key"].astype(str), strict=True))
    expected = {(keys[int(r.anchor_id)], keys[int(r.candidate_id)]) for r in table.head(3).itertuples()}
    assert set(zip(latest["anchor_key"], latest["candidate_key"], strict=True)) == expected
    # the applied rows left the undecided queue, so the table (and its selection) changed
    assert at.session_state["fn_table_key"] != key


def test_page_without_a_run_links_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ui.state

    monkeypatch.setattr(ui.state, "SAMPLE_DATA", tmp_path / "missing.csv")  # else a fresh workspace opens it
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.run()
    assert not at.exception
    assert any("No run is loaded" in i.value for i in at.info)


def test_page_on_the_digits_sample(sample_run: Run) -> None:
    at = _page(sample_run, name="dana")
    assert not at.warning or not any("cannot be shown" in w.value for w in at.warning)
    at.button(key="fn_btn_false_negative").click().run()
    assert not at.exception
    latest = ReviewStore(review_db_path()).latest(sample_run.content_hash, kind="negative")
    assert len(latest) == 1 and latest.iloc[0]["annotator"] == "dana"
    keys = set(sample_run.items["key"])
    assert latest.iloc[0]["anchor_key"] in keys and latest.iloc[0]["candidate_key"] in keys
