"""AppTest of the annotator tools on the review pages: shortcuts, agreement, conflicts, the rule, the shares."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score
from streamlit.testing.v1 import AppTest

from analysis.review.assignment import queue_key, share_mask
from analysis.review.decisions import run_decisions
from analysis.review.rows import negative_row
from analysis.review.store import ReviewStore
from analysis.runs.folder import Run
from analysis.runs.workspace import review_db_path
from tests.synthetic import make_synthetic_run
from ui.annotators import OVERLAP_KEY, TEAM_KEY
from ui.review import ADJUDICATOR_KEY, RULE_KEY
from ui.state import ANNOTATOR_KEY, RUN_KEY

PAGES = Path(__file__).resolve().parent.parent / "pages"
FN_PAGE = str(PAGES / "4_False_Negatives.py")
LN_PAGE = str(PAGES / "5_Label_Noise.py")
ANN = ["false_negative", "negative", "negative", "unsure", "negative", "false_negative", "negative", "negative"]
BOB = ["false_negative", "negative", "false_negative", "unsure", "negative", "negative", "negative", "unsure"]


@pytest.fixture
def run() -> Run:
    run, _ = make_synthetic_run(Path(str(review_db_path().parent)) / "runs" / "run-team", n_pairs=40, k=3, seed=3)
    return run


def _decide_both(run: Run) -> list[tuple[int, int]]:
    """ANN and BOB decide the same eight (anchor, listed negative) candidates."""
    negs = run.negatives.merge(run.pairs, on="pair_id").head(len(ANN))
    ids = [(int(a), int(n)) for a, n in zip(negs["anchor_id"], negs["negative_id"], strict=True)]
    store = ReviewStore(review_db_path())
    for name, values in (("ann", ANN), ("bob", BOB)):
        store.record_many(negative_row(run, a, n, v, name) for (a, n), v in zip(ids, values, strict=True))
    return ids


def _page(path: str, run: Run, name: str, **state: object) -> AppTest:
    at = AppTest.from_file(path, default_timeout=120)
    at.session_state[RUN_KEY] = str(run.path)
    at.session_state[ANNOTATOR_KEY] = name
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, at.exception
    return at


def test_keyboard_shortcuts_are_set_and_listed(run: Run) -> None:
    at = _page(FN_PAGE, run, "ann")
    shortcuts = {key: at.button(key=key).proto.shortcut for key in
                 ("fn_btn_false_negative", "fn_btn_negative", "fn_btn_unsure", "fn_undo", "fn_btn_prev", "fn_btn_skip")}
    assert shortcuts == {"fn_btn_false_negative": "f", "fn_btn_negative": "n", "fn_btn_unsure": "u",
                         "fn_undo": "z", "fn_btn_prev": "left", "fn_btn_skip": "right"}  # fmt: skip
    assert any(c.value.startswith("Keyboard: F false negative") for c in at.caption)
    at.button(key="fn_btn_negative").click().run()
    assert [t.value.replace("\\", "") for t in at.toast] == ["Saved: negative"]  # shown as text, escaped
    at.button(key="fn_undo").click().run()
    assert [t.value.replace("\\", "") for t in at.toast] == ["Undone: back to cleared"]
    ln = _page(LN_PAGE, run, "ann")
    assert ln.button(key="ln_pair_mismatched").proto.shortcut == "f"
    assert ln.button(key="ln_next").proto.shortcut == "right"


def test_agreement_panel_equals_sklearn_and_conflicts_are_the_disagreements(run: Run) -> None:
    ids = _decide_both(run)
    at = _page(FN_PAGE, run, "cy")
    kappa = next(t.value for t in at.table if "annotator_a" in t.value.columns)
    assert kappa[["annotator_a", "annotator_b", "items both decided"]].values.tolist() == [["ann", "bob", 8]]
    assert kappa["Cohen's kappa"].iloc[0] == f"{cohen_kappa_score(ANN, BOB):.4f}"
    conflicts = next(t.value for t in at.table if "n_annotators" in t.value.columns)
    disputed = [i for i, (a, b) in enumerate(zip(ANN, BOB, strict=True)) if a != b]
    assert len(conflicts) == len(disputed)
    expected = {f"ann: {ANN[i]}; bob: {BOB[i]}" for i in disputed}
    assert set(conflicts["decisions"]) == expected
    # the adjudicator settles the first conflict: appended, signed, and it wins under the adjudicator rule
    pick = at.selectbox(key="fn_conflict_pick")
    row = conflicts.iloc[int(pick.value)]
    choice = row["decisions"].split("; ")[1].split(": ")[1]  # bob's decision
    options = sorted({p.split(": ")[1] for p in row["decisions"].split("; ")})
    at.button(key=f"fn_settle_{options.index(choice)}").click().run()
    assert not at.exception, at.exception
    store = ReviewStore(review_db_path())
    assert store.count() == 2 * len(ANN) + 1
    chosen = run_decisions(run, store, rule="adjudicator", adjudicator="cy")
    settled = chosen[chosen["annotator"] == "cy"]
    assert settled["decision"].tolist() == [choice]
    assert len({(a, n) for a, n in ids}) == len(ids)


def _counts(at: AppTest) -> pd.DataFrame:
    return next(d.value for d in at.dataframe if list(d.value.columns) == ["kind", "decision", "items"])


def test_rule_is_chosen_explicitly_and_counted(run: Run) -> None:
    _decide_both(run)
    at = _page(FN_PAGE, run, "ann")
    for rule in ("latest", "majority", "unanimous"):
        at.selectbox(key="review_rule_input").set_value(rule).run()
        assert not at.exception, at.exception
        assert at.session_state[RULE_KEY] == rule
        counts = _counts(at)
        expected = run_decisions(run, ReviewStore(review_db_path()), rule=rule)
        expected = expected.groupby("decision").size()
        assert dict(zip(counts["decision"], counts["items"], strict=True)) == expected.to_dict()
    # unanimous leaves the disputed keys out
    assert int(_counts(at)["items"].sum()) == sum(a == b for a, b in zip(ANN, BOB, strict=True))
    at.selectbox(key="review_rule_input").set_value("adjudicator").run()
    at.text_input(key="review_adjudicator_input").set_value("bob").run()
    assert at.session_state[ADJUDICATOR_KEY] == "bob"
    counts = _counts(at)
    assert dict(zip(counts["decision"], counts["items"], strict=True)) == pd.Series(BOB).value_counts().to_dict()


def test_each_annotator_sees_their_share_of_the_queue(run: Run) -> None:
    full = _page(FN_PAGE, run, "ann")
    total = int(next(m.value for m in full.metric if m.label == "Candidates").replace(",", ""))
    at = _page(FN_PAGE, run, "ann", **{TEAM_KEY: "ann, bob", OVERLAP_KEY: 0.5})
    mine = int(next(m.value for m in at.metric if m.label == "Candidates (my share)").replace(",", ""))
    # the reference: the detector's candidate keys through the documented assignment
    from analysis.detectors.false_negatives import Settings, find_false_negatives

    table = find_false_negatives(run, settings=Settings(mine_k=10, use_labels=True))
    keys = run.item_keys
    names = [queue_key(keys[a], keys[c]) for a, c in zip(table["anchor_id"], table["candidate_id"], strict=True)]
    assert len(names) == total
    expected = share_mask(names, "ann", ["ann", "bob"], overlap=0.5)
    assert mine == int(np.sum(expected))
    assert 0.5 * total < mine < total


def test_label_noise_next_previous_and_inline_refusal(run: Run) -> None:
    at = _page(LN_PAGE, run, "")
    at.toggle(key="ln_flagged_only").set_value(False).run()
    options = at.session_state["ln_options"]
    first = at.session_state["ln_pick"]
    assert first == options[0]
    at.button(key="ln_next").click().run()
    assert at.session_state["ln_pick"] == options[1]
    at.button(key="ln_prev").click().run()
    assert at.session_state["ln_pick"] == options[0]
    # no name: the refusal shows beside the buttons and as a toast, and nothing is written
    assert any("Enter your name" in w.value for w in at.warning)
    at.button(key="ln_pair_mismatched").click().run()
    assert any("Enter your name" in t.value for t in at.toast)
    assert ReviewStore(review_db_path()).count() == 0


def test_decisions_in_the_fragment_flag_the_rest_of_the_page_as_stale(run: Run) -> None:
    from unittest import mock

    from benchmarks.review_decision import _fragment_runner

    at = _page(FN_PAGE, run, "ann")
    fragments = list(at._fragment_storage._fragments)  # noqa: SLF001 - the page's queue fragment
    assert len(fragments) == 1
    with mock.patch("streamlit.testing.v1.local_script_runner.LocalScriptRunner.run", _fragment_runner(fragments)):
        at.button(key="fn_btn_negative").click().run()  # reruns the queue alone, as the browser does
    assert not at.exception, at.exception
    assert ReviewStore(review_db_path()).count() == 1
    assert any(c.value.startswith("1 decisions were recorded since this page was drawn") for c in at.caption)
    at.run()  # a whole-page run draws the agreement, the counts and the export again
    assert not any("since this page was drawn" in c.value for c in at.caption)
