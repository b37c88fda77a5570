"""What a user sees in headless Chromium: "Home" first in the sidebar, no "Deploy", labels that are not cut off.

The app runs under ``streamlit run app.py`` (the fixtures of ``tests/browser_support.py``). A label is cut off when
its text is wider than its box (``scrollWidth > clientWidth``): Streamlit then ends it with an ellipsis. Issue #14
named the places where this happened: the false-negative evidence ("mutual…", "Rank among anchor's …", "Its own
anchor vs this …"), "Flagg…", "Hardest negative above …", "Lines between p…" and the Sources multiselect's "mined"
chip; the test looks for each of them (under their current names) and checks them whole.
"""

from __future__ import annotations

import time

import pytest

from tests.browser_support import BROWSER_MARKS, REPO, app_url, browser_home, launch_chromium  # noqa: F401 - fixtures used by name
from tests.browser_support import settle as _settle

pytestmark = BROWSER_MARKS
SHOTS = REPO / "screenshots"

#: Labels of widgets and metric cards, metric values and deltas, text blocks (the evidence list) and the chips of
#: multiselects: the texts shown cut off.
CUT_OFF_JS = """() => {
  const boxes = [
    '[data-testid="stWidgetLabel"]', '[data-testid="stMetricLabel"]', '[data-tag]',
    '[data-testid="stMetricValue"]', '[data-testid="stMetricDelta"]', '[data-testid="stText"]',
  ].join(', ');
  const out = [];
  let checked = 0;
  for (const box of document.querySelectorAll(boxes)) {
    if (!box.innerText) continue;
    checked += 1;
    // the ellipsis sits on an inner block (a markdown container, a chip's title span): test every block inside
    for (const el of [box, ...box.querySelectorAll('*')]) {
      if (el.clientWidth > 0 && el.scrollWidth > el.clientWidth + 1) { out.push(box.innerText); break; }
    }
  }
  return {checked: checked, cut: out};
}"""


def _open(page, label: str) -> None:
    link = page.locator('[data-testid="stSidebarNav"] a').filter(has_text=label).first
    link.click()
    page.wait_for_selector("h1", timeout=120_000)
    _settle(page)


def _cut_off(page) -> list[str]:
    """The labels on the page that are cut off (and a check that labels were found at all)."""
    deadline = time.monotonic() + 60
    found = page.evaluate(CUT_OFF_JS)
    while found["checked"] < 3 and time.monotonic() < deadline:  # widgets load lazily after the script ends
        time.sleep(0.5)
        found = page.evaluate(CUT_OFF_JS)
    assert found["checked"] >= 3, "no labels found: the selectors no longer match Streamlit's markup"
    time.sleep(1.0)  # the layout settles once every widget is drawn
    return page.evaluate(CUT_OFF_JS)["cut"]


def _whole(page, text: str) -> None:
    """``text`` is on the page, visible, and shown whole (it and its three nearest boxes at least as wide as it)."""
    element = page.get_by_text(text, exact=True).first
    element.wait_for(timeout=60_000)
    assert element.is_visible(), text
    cut = element.evaluate(
        "e => { let n = e; for (let up = 0; n && up < 4; up += 1, n = n.parentElement) {"
        " if (n.clientWidth > 0 && n.scrollWidth > n.clientWidth + 1) return true; } return false; }"
    )
    assert not cut, f"{text!r} is cut off"


def test_home_first_no_deploy_and_whole_labels(app_url: str) -> None:  # noqa: F811 - a fixture
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(app_url)
            page.wait_for_selector('[data-testid="stSidebarNav"] a', timeout=120_000)
            _settle(page)
            page.get_by_text("Loaded run:").wait_for(timeout=180_000)
            entries = page.locator('[data-testid="stSidebarNav"] a')
            names = [entries.nth(i).inner_text().split("\n")[-1].strip() for i in range(entries.count())]
            assert names[0] == "Home", names
            assert {"Score distributions", "Temperature", "Modality gap", "Embedding map", "Teaching"} <= set(names)
            assert page.get_by_text("Deploy", exact=True).count() == 0
            assert page.locator('[data-testid="stAppDeployButton"]').count() == 0

            _open(page, "Score distributions")
            page.get_by_text("Recall@1").first.wait_for(timeout=180_000)
            assert page.get_by_text("Hardest neg > positive").count() == 1  # was "Hardest negative above …"
            _whole(page, "Hardest neg > positive")
            chips = page.locator('[data-testid="stSidebar"] [data-testid="stMultiSelectTagsContainer"] [data-tag]')
            chips.first.wait_for(timeout=30_000)
            assert sorted(chips.nth(i).inner_text() for i in range(chips.count())) == ["given", "in_batch", "mined"]
            for i in range(chips.count()):
                assert chips.nth(i).is_visible()
            assert _cut_off(page) == [], "Score distributions"

            _open(page, "Temperature")
            for view in ("Loss vs τ", "Gradient at τ", "Loss variants", "Alignment & uniformity"):
                button = page.locator("button").filter(has_text=view).first
                button.wait_for(timeout=60_000)
                button.click()
                _settle(page)
                assert _cut_off(page) == [], view

            _open(page, "Modality gap")
            assert _cut_off(page) == [], "Modality gap"

            _open(page, "Embedding map")
            page.get_by_text("Pair lines").wait_for(timeout=60_000)  # was "Lines between p…"
            _whole(page, "Pair lines")
            assert _cut_off(page) == [], "Embedding map"

            _open(page, "Teaching")
            assert _cut_off(page) == [], "Teaching"

            # The review pages: filters, evidence cards and the export options.
            _open(page, "False negatives")
            page.get_by_text("Neighbour rank").first.wait_for(timeout=240_000)  # was "Rank among anchor's …"
            _whole(page, "Anchor vs its own anchor")  # was "Its own anchor vs this …"
            _whole(page, "Flagged only")
            # the evidence flags (were "mutual…" in a metric card): a list of whole words
            _whole(page, "Other evidence")
            texts = page.locator('[data-testid="stText"]')
            blocks = [texts.nth(i).inner_text().strip().split("\n") for i in range(texts.count())]
            flags = [b for b in blocks if set(b) <= {"mutual kNN", "same cluster", "same label", "other label", "none"}]
            assert len(flags) == 1, blocks
            SHOTS.mkdir(exist_ok=True)
            page.get_by_text("Other evidence").first.scroll_into_view_if_needed()
            page.screenshot(path=str(SHOTS / "layout_fn_evidence.png"))
            assert _cut_off(page) == [], "False negatives"

            _open(page, "Label noise")
            page.get_by_text("Flagged only").first.wait_for(timeout=240_000)  # was "Flagg…"
            _whole(page, "Flagged only")
            assert _cut_off(page) == [], "Label noise"

            # Compare opens on the sample's three checkpoints (embedded on first visit) with every view.
            _open(page, "Compare checkpoints")
            for view in ("Metrics", "Trajectory", "Pairs", "False negatives"):
                button = page.locator("main button").filter(has_text=view).first
                button.wait_for(timeout=240_000)
                button.click()
                _settle(page)
                assert page.locator('[data-testid="stException"]').count() == 0, view
                assert _cut_off(page) == [], f"Compare: {view}"
            assert page.get_by_text("epoch_05").count() + page.get_by_text("epoch 5").count() >= 1
        finally:
            browser.close()
