"""AppTest of the label-noise page: flags listed, decisions written to the review store, export, undo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from analysis.review.store import ReviewStore
from analysis.runs.folder import Run, load_run, write_run
from analysis.runs.workspace import review_db_path
from tests.synthetic import make_synthetic_run, write_image_files
from ui.state import ANNOTATOR_KEY, RUN_KEY

PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "5_Label_Noise.py")


@pytest.fixture
def noisy_run(tmp_path: Path) -> Run:
    """A synthetic run with planted mismatched pairs and a few flipped labels."""
    run, _ = make_synthetic_run(tmp_path / "run", n_pairs=120, noise=0.2, mismatch_rate=0.08, seed=11)
    write_image_files(run)
    items = run.items.copy()
    labels = items["label"].astype(int).to_numpy().copy()
    for i in (3, 7, 19, 40, 77):
        labels[i] = (labels[i] + 5) % 10
    items["label"] = labels.astype(str)
    write_run(
        tmp_path / "noisy",
        manifest=run.manifest,
        items=items,
        embeddings=run.embeddings,
        pairs=run.pairs,
        negatives=run.negatives,
    )
    return load_run(tmp_path / "noisy")


def _page(run: Run, *, name: str = "") -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state[RUN_KEY] = str(run.path)
    at.session_state[ANNOTATOR_KEY] = name
    at.run()
    assert not at.exception, at.exception
    return at


def test_page_lists_flags_and_refuses_decisions_without_a_name(noisy_run: Run) -> None:
    at = _page(noisy_run)
    assert at.title[0].value == "Label noise"
    assert len(at.get("latex")) >= 3
    metrics = {m.label: m.value for m in at.metric}
    flagged, examined = metrics["Mismatched pair: flagged / examined"].split(" / ")
    assert int(examined) == 120 and 0 < int(flagged) < 120
    assert at.dataframe[0].value["flagged"].all()  # "flagged only" is on by default
    assert any("Enter your name" in w.value for w in at.warning)
    at.button(key="ln_pair_mismatched").click().run()  # refused right beside the buttons
    assert any("Enter your name" in e.value for e in at.error)
    assert ReviewStore(review_db_path()).count() == 0
    # filters: unflagged rows too, and only one kind
    at.toggle(key="ln_flagged_only").set_value(False).run()
    at.multiselect(key="ln_kinds").set_value(["duplicate"]).run()
    shown = at.dataframe[0].value
    assert len(shown) == 120 and set(shown["kind"]) == {"duplicate"}
    assert not at.exception


def test_mismatched_decision_is_written_with_the_annotator(noisy_run: Run) -> None:
    at = _page(noisy_run, name="alice")
    at.multiselect(key="ln_kinds").set_value(["mismatched_pair"]).run()
    top = at.dataframe[0].value.iloc[0]
    assert top["kind"] == "mismatched_pair"
    assert not at.button(key="ln_pair_mismatched").disabled
    at.button(key="ln_pair_mismatched").click().run()
    assert not at.exception, at.exception
    latest = ReviewStore(review_db_path()).latest(noisy_run.content_hash, kind="pair")
    assert len(latest) == 1
    got = latest.iloc[0]
    keys = noisy_run.items["key"]
    pair = noisy_run.pairs[noisy_run.pairs["pair_id"].astype(str) == str(top["pair_id"])].iloc[0]
    assert got["decision"] == "mismatched" and got["annotator"] == "alice"
    assert got["anchor_key"] == keys.iloc[int(pair["anchor_id"])]
    assert got["candidate_key"] == keys.iloc[int(pair["positive_id"])]
    assert any("Saved: mismatched" in s.value for s in at.success)
    # the decided pair leaves the "Undecided" list and shows under "Decided"
    assert str(top["pair_id"]) not in set(at.dataframe[0].value["pair_id"].astype(str))
    at.selectbox(key="ln_state").set_value("Decided").run()
    decided = at.dataframe[0].value
    assert decided["decision"].tolist() == ["mismatched"]
    # undo brings it back
    at.button(key="ln_undo").click().run()
    assert ReviewStore(review_db_path()).latest(noisy_run.content_hash, kind="pair").empty
    assert not at.exception


def test_corrected_label_is_chosen_from_known_classes_and_saved(noisy_run: Run) -> None:
    at = _page(noisy_run, name="bob")
    at.multiselect(key="ln_kinds").set_value(["label"]).run()
    top = at.dataframe[0].value.iloc[0]
    assert top["kind"] == "label"
    box = at.selectbox(key="ln_new_label")
    assert box.options == [str(c) for c in range(10)]
    assert box.value == str(top["suggested_label"])
    new = next(c for c in box.options if c not in (top["given_label"], top["suggested_label"]))
    box.set_value(new).run()
    at.button(key="ln_relabel").click().run()
    assert not at.exception, at.exception
    latest = ReviewStore(review_db_path()).latest(noisy_run.content_hash, kind="label")
    assert latest[["decision", "label", "annotator"]].values.tolist() == [["relabel", new, "bob"]]
    assert latest.iloc[0]["anchor_key"] == noisy_run.items["key"].iloc[int(top["item_id"])]
    # the export states the effect with its count (the files: tests/test_review_exports_agree.py)
    assert "1 rows carry a corrected label." in [t.value for t in at.text]
    assert len(at.get("download_button")) == 1


def test_duplicate_detail_and_settings(noisy_run: Run) -> None:
    emb = noisy_run.embeddings.copy()
    emb[9] = emb[2] + 1e-3 * np.random.default_rng(0).normal(size=emb.shape[1])
    path = noisy_run.path.parent / "dups"
    write_run(
        path,
        manifest=noisy_run.manifest,
        items=noisy_run.items,
        embeddings=emb,
        pairs=noisy_run.pairs,
        negatives=noisy_run.negatives,
    )
    at = _page(load_run(path), name="carol")
    at.multiselect(key="ln_kinds").set_value(["duplicate"]).run()
    shown = at.dataframe[0].value
    assert set(shown["item_id"]) == {2, 9}
    # a duplicate decision is recorded on the two anchors' keys, and the export drops the later copy's pairs
    at.button(key="ln_dup_duplicate").click().run()
    assert not at.exception, at.exception
    latest = ReviewStore(review_db_path()).latest(noisy_run.content_hash, kind="duplicate")
    keys = noisy_run.items["key"]
    assert latest[["anchor_key", "candidate_key", "decision"]].values.tolist() in (
        [[keys.iloc[2], keys.iloc[9], "duplicate"]],
        [[keys.iloc[9], keys.iloc[2], "duplicate"]],
    )
    dropped = sum(noisy_run.pairs["anchor_id"] == 9)
    assert f"{dropped} duplicate copies are dropped (one copy kept)." in [t.value for t in at.text]
    at.selectbox(key="ln_method").set_value("knn").run()
    at.number_input(key="ln_flag_rank").set_value(50).run()
    assert not at.exception, at.exception


def test_page_on_the_digits_sample(sample_run: Run) -> None:
    at = _page(sample_run, name="dora")
    top = at.dataframe[0].value.iloc[0]
    assert top["kind"] == "mismatched_pair" and top["flagged"]
    assert len(at.get("image")) == 2  # the anchor and the positive's best other anchor (the others are captions)
    assert len(at.get("text")) >= 4
    at.multiselect(key="ln_kinds").set_value(["label"]).run()
    assert not at.exception, at.exception
    assert len(at.get("image")) == 11  # the item and its ten nearest labelled neighbours
    at.button(key="ln_label_ok").click().run()
    latest = ReviewStore(review_db_path()).latest(sample_run.content_hash, kind="label")
    assert latest["decision"].tolist() == ["ok"] and latest["annotator"].tolist() == ["dora"]
