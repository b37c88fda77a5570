"""End to end: the real app under ``streamlit run`` in headless Debian Chromium, every page opened.

Screenshots are saved in ``screenshots/`` (one per page). The test drives the app through its own sidebar
links, so the run loaded on the home page stays selected, exactly as a user sees it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.browser_support import BROWSER_MARKS, REPO, app_url, browser_home, launch_chromium  # noqa: F401 - fixtures used by name
from tests.browser_support import assert_clean as _assert_clean
from tests.browser_support import settle as _settle

SHOTS = REPO / "screenshots"

pytestmark = BROWSER_MARKS


def _record_one_false_negative(page) -> None:
    """On the False Negatives page: type an annotator name, then press "False negative" once."""
    name = page.get_by_role("textbox", name="Annotator name")
    name.fill("browser-test")
    name.press("Enter")
    _settle(page)
    # the button also shows its keyboard shortcut (F), which is part of its accessible name
    page.get_by_role("button", name=re.compile(r"^False negative(?!s)")).first.click()
    _settle(page)


def test_every_page_in_chromium(app_url: str, browser_home: Path) -> None:  # noqa: F811 - fixtures
    playwright = pytest.importorskip("playwright.sync_api")
    SHOTS.mkdir(exist_ok=True)
    pages = sorted((REPO / "pages").glob("*.py"))
    with playwright.sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 2400})
            page.goto(app_url)
            _settle(page)
            # The home page opens on the bundled sample: its summary must be there.
            page.get_by_text("The loaded run").wait_for(timeout=120_000)
            assert page.get_by_text("1,797").count() > 0
            _assert_clean(page, "home")
            page.screenshot(path=str(SHOTS / "00_home.png"), full_page=True)
            for i, script in enumerate(pages, start=1):
                label = script.stem.split("_", 1)[-1].replace("_", " ")
                nav = page.locator('[data-testid="stSidebarNav"] a').filter(has_text=re.compile(label, re.I))
                assert nav.count() > 0, f"no sidebar link for {script.name}"
                nav.first.click()
                _settle(page)
                assert page.get_by_text("No run is loaded yet").count() == 0, f"{script.name} lost the run"
                _assert_clean(page, script.name)
                page.screenshot(path=str(SHOTS / f"{i:02d}_{script.stem}.png"), full_page=True)
                if "False_Negatives" in script.stem:
                    _record_one_false_negative(page)
                    _assert_clean(page, "false-negative decision")
        finally:
            browser.close()

    # The decision made in the browser is in the review database, under the sample's content-only hash.
    import json

    from analysis.review.store import ReviewStore

    # (the Compare page also embeds the sample with its earlier checkpoints: one dataset, several runs)
    manifests = list((browser_home / "runs").glob("*/manifest.json"))
    hashes = {json.loads(m.read_text())["dataset_content_hash"] for m in manifests}
    assert len(hashes) == 1
    (dataset_hash,) = hashes
    decided = ReviewStore(browser_home / "reviews.sqlite").latest(dataset_hash, kind="negative")
    assert list(decided["decision"]) == ["false_negative"]
    assert list(decided["annotator"]) == ["browser-test"]
