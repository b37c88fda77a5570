"""AppTest of the False negatives page: with decisions recorded, "learn from decisions" shows the learned weights
(preset, change, learned) and the cross-validated precision the library computes, and re-ranks the queue."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from analysis.detectors.false_negatives import ONE_TO_MANY, Settings, find_false_negatives, with_decisions
from analysis.detectors.fn_learning import fit_weights
from analysis.review.decisions import current_decisions, dataset_keys, negative_decisions
from analysis.review.rows import negative_row
from analysis.review.store import ReviewStore
from analysis.runs.workspace import review_db_path
from tests.synthetic import make_synthetic_run, write_image_files
from ui.state import ANNOTATOR_KEY, RUN_KEY

PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "4_False_Negatives.py")


@pytest.mark.slow
def test_the_page_shows_the_learned_weights_and_cross_validated_precision(tmp_path: Path) -> None:
    run, truth = make_synthetic_run(tmp_path / "run", n_pairs=60, k=4, seed=5)
    write_image_files(run)
    # 60 listed negatives decided from the planted truth, as reviewers on the page would record them
    t = truth.false_negative.merge(run.pairs[["pair_id", "anchor_id"]], on="pair_id").head(60)
    store = ReviewStore(review_db_path())
    store.record_many(
        [
            negative_row(
                run,
                int(r.anchor_id),
                int(r.negative_id),
                "false_negative" if r.is_false_negative else "negative",
                "ann",
            )
            for r in t.itertuples(index=False)
        ]
    )
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state[RUN_KEY] = str(run.path)
    at.session_state[ANNOTATOR_KEY] = "ann"
    at.run()
    assert not at.exception, at.exception
    at.selectbox(key="fn_preset").set_value("one_to_many").run()
    at.toggle(key="fn_learn").set_value(True).run()
    assert not at.exception, at.exception

    # the same fit through the library, on the page's table (default settings, the chosen preset)
    table = find_false_negatives(run, settings=Settings(mine_k=10, use_labels=True, weights=ONE_TO_MANY))
    decisions = negative_decisions(run, current_decisions(store, dataset_keys(run), kind="negative"))
    learned = fit_weights(with_decisions(table, decisions))
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Decided (used)"] == f"{learned.n_decided:,}"
    assert metrics["Cross-validated precision"] == f"{learned.cv_precision:.2f}"
    assert metrics["Cross-validated AUPRC"] == f"{learned.cv_auprc:.2f}"
    shown = next(d.value for d in at.dataframe if list(d.value.columns) == ["evidence", "preset", "change", "learned"])
    expected = learned.weight_table()
    assert shown["evidence"].tolist() == expected["evidence"].tolist()
    np.testing.assert_allclose(shown["learned"], expected["learned"], atol=1e-9)
    # the preset column is the chosen preset's weights; learned = preset + change
    preset = dict(zip(shown["evidence"], shown["preset"], strict=True))
    assert preset["neg_z"] == ONE_TO_MANY.neg_z and preset["claimed"] == ONE_TO_MANY.claimed
    np.testing.assert_allclose(shown["learned"], shown["preset"] + shown["change"], atol=1e-9)
