"""End to end: two annotators in two browser contexts on one ``streamlit run app.py`` server.

Both review the same False negatives queue at the same time with the keyboard; a reload keeps each one's
run, page and name; the agreement figures on the page equal scikit-learn's ``cohen_kappa_score`` on the
stored decisions; the conflicts view lists exactly the disagreements; the export follows the chosen rule.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from tests.browser_support import BROWSER_MARKS, REPO, launch_chromium, serve_app
from tests.browser_support import settle as _settle

KEYS = {"f": "false_negative", "n": "negative", "u": "unsure"}
ANN = ["f", "n", "f", "u", "n"]
BOB = ["f", "f", "n", "u", "f"]

pytestmark = BROWSER_MARKS


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The app on a free loopback port over a workspace that holds the embedded sample (``run-sample``)."""
    from analysis.embedding.engine import embed_to_run
    from analysis.runs.workspace import SAMPLE_CHECKPOINT, SAMPLE_DATA

    home = tmp_path / "home"
    embed_to_run(SAMPLE_DATA, SAMPLE_CHECKPOINT, out=home / "runs" / "run-sample", device="cpu")
    with serve_app(home, log=tmp_path / "streamlit.log") as url:
        yield url, home


def _assert_clean(page) -> None:
    errors = page.locator('[data-testid="stException"]')
    assert errors.count() == 0, errors.first.inner_text()[:500]


def _choose(page, label: str, option: str) -> None:
    """Pick ``option`` in the selectbox labelled ``label``."""
    box = page.get_by_role("combobox", name=label)
    for _ in range(3):
        box.scroll_into_view_if_needed()
        box.click()
        choice = page.get_by_role("option", name=option, exact=True)
        try:
            choice.wait_for(timeout=5_000)
        except Exception:  # noqa: BLE001 - the list closed (a rerun redrew the box): open it again
            page.keyboard.press("Escape")
            continue
        choice.click()
        _settle(page)
        assert box.input_value() == option
        return
    page.screenshot(path=str(REPO / "screenshots" / "annotators_choose_failed.png"), full_page=True)
    raise AssertionError(f"could not choose {option!r} in {label!r}")


def _params(page) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlparse(page.url).query).items()}


def _table(page, header: str) -> list[dict[str, str]]:
    """The rows of the st.table whose header holds ``header``, as dicts of cell text."""
    table = page.locator('[data-testid="stTable"] table').filter(has=page.locator("th", has_text=header)).first
    heads = [h.inner_text().strip() for h in table.locator("thead th").all()]
    rows = []
    for tr in table.locator("tbody tr").all():
        cells = [c.inner_text().strip() for c in tr.locator("td, th").all()]
        rows.append(dict(zip(heads[-len(cells):], cells, strict=True)))
    return rows


def _wait_rows(db: Path, dataset_hash: str, n: int, *, timeout_s: float = 60) -> None:
    from analysis.review.store import ReviewStore

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if db.exists() and ReviewStore(db).count(dataset_hash) >= n:
            return
        time.sleep(0.2)
    raise AssertionError(f"expected {n} decisions in the log")


def _export_false_negatives(page) -> int:
    """The false negatives the export panel says its files remove (its counts are those of the files)."""
    line = page.get_by_text(re.compile(r"^[0-9,]+ decided false negatives: ")).first
    line.wait_for(timeout=60_000)
    return int(line.inner_text().split(" ", 1)[0].replace(",", ""))


def test_two_annotators_review_together(server: tuple[str, Path]) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    expect = playwright.expect
    from sklearn.metrics import cohen_kappa_score

    from analysis.review.agreement import conflicts, ratings
    from analysis.review.decisions import annotator_decisions, run_decisions
    from analysis.review.store import ReviewStore
    from analysis.runs.folder import load_run

    url, home = server
    run = load_run(home / "runs" / "run-sample")
    db = home / "reviews.sqlite"
    with playwright.sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            pages = {}
            for name in ("ann", "bob"):
                context = browser.new_context(viewport={"width": 1400, "height": 2200})
                page = context.new_page()
                page.goto(f"{url}/False_Negatives?annotator={name}")  # no run in the URL: the latest opens
                pages[name] = page
            for name, page in pages.items():
                _settle(page)
                page.get_by_role("heading", name="False negatives").wait_for(timeout=120_000)
                _assert_clean(page)
                assert _params(page) == {"run": "run-sample", "annotator": name}
                # both walk the same queue in the same order: show every candidate, decided or not
                _choose(page, "Decision state", "All")
            # the same candidates, decided at the same time with the keyboard
            for i, (a, b) in enumerate(zip(ANN, BOB, strict=True)):
                for page, key in ((pages["ann"], a), (pages["bob"], b)):
                    page.get_by_role("heading", name="False negatives").click()  # focus the page, not a field
                    page.keyboard.press(key)
                _wait_rows(db, run.content_hash, 2 * (i + 1))
                for page in pages.values():
                    _settle(page)
            _assert_clean(pages["ann"])
            states = annotator_decisions(ReviewStore(db), run.content_hash, kind="negative")
            assert len(states) == 2 * len(ANN)
            by_name = {n: states[states["annotator"] == n].sort_values("id") for n in ("ann", "bob")}
            assert by_name["ann"]["decision"].tolist() == [KEYS[k] for k in ANN]
            assert by_name["bob"]["decision"].tolist() == [KEYS[k] for k in BOB]
            key = ["anchor_key", "candidate_key"]
            assert by_name["ann"][key].values.tolist() == by_name["bob"][key].values.tolist()  # same candidates

            # a reload keeps each one's run, page and name
            for name, page in pages.items():
                page.reload()
                _settle(page)
                page.get_by_role("heading", name="False negatives").wait_for(timeout=120_000)
                assert _params(page) == {"run": "run-sample", "annotator": name}
                expect(page.get_by_role("textbox", name="Annotator name")).to_have_value(name, timeout=60_000)
                assert page.get_by_text("No run is loaded").count() == 0

            # agreement on the page = scikit-learn on the stored decisions; conflicts = the disagreements
            page = pages["ann"]
            page.get_by_text("Agreement between annotators and conflicts").click()
            _settle(page)
            merged = by_name["ann"].merge(by_name["bob"], on=key, suffixes=("_a", "_b"))
            expected = cohen_kappa_score(ratings(merged.rename(columns={"decision_a": "decision", "label_a": "label"})),
                                         ratings(merged.rename(columns={"decision_b": "decision", "label_b": "label"})))  # fmt: skip
            kappa_rows = _table(page, "Cohen's kappa")
            assert [(r["annotator_a"], r["annotator_b"], r["Cohen's kappa"]) for r in kappa_rows] == [
                ("ann", "bob", f"{expected:.4f}")
            ]
            shown = {r["decisions"] for r in _table(page, "n_annotators")}
            disputed = conflicts(states)
            assert shown == set(disputed["decisions"])
            assert len(disputed) == sum(a != b for a, b in zip(ANN, BOB, strict=True))

            # the export follows the chosen rule
            for rule, label in (("unanimous", "Unanimous only"), ("latest", "Latest decision wins")):
                _choose(page, "Adjudication rule for the export", label)
                chosen = run_decisions(run, ReviewStore(db), kind="negative", rule=rule)
                assert _export_false_negatives(page) == int((chosen["decision"] == "false_negative").sum())
            unanimous = sum(a == b == "f" for a, b in zip(ANN, BOB, strict=True))
            assert unanimous == 1
            _assert_clean(page)
        finally:
            browser.close()
