"""End to end: a dataset whose labels, captions and ids hold Markdown / HTML, opened in headless Chromium.

The hostile text must show as literal text on every page that displays it, and the browser must make no
request outside the app's origin (an image in Markdown or HTML would be fetched from 198.51.100.7).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import pytest

from tests.browser_support import BROWSER_MARKS, launch_chromium, serve_app
from tests.browser_support import assert_clean as _assert_clean
from tests.browser_support import settle as _settle
from tests.hostile.datasets import markup_dataset
from tests.hostile.strings import MARKUP, OUTSIDE

PAGES = ("Score Distributions", "False Negatives", "Label Noise", "Embedding Map")

pytestmark = BROWSER_MARKS


@pytest.fixture(scope="module")
def hostile_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app, on a loopback port, over a workspace whose only run is the markup dataset's."""
    from analysis.embedding.engine import embed_to_run
    from analysis.runs.workspace import SAMPLE_CHECKPOINT

    home = tmp_path_factory.mktemp("hostile_home")
    data = tmp_path_factory.mktemp("hostile_data")
    table = markup_dataset(data / "markup")
    old = os.environ.get("NEGSCOPE_HOME")
    os.environ["NEGSCOPE_HOME"] = str(home)
    try:
        embed_to_run(table, SAMPLE_CHECKPOINT, device="cpu")
    finally:
        if old is None:
            os.environ.pop("NEGSCOPE_HOME", None)
        else:
            os.environ["NEGSCOPE_HOME"] = old
    log = tmp_path_factory.mktemp("hostile_log") / "streamlit.log"
    with serve_app(home, log=log, extra_env={"NEGSCOPE_DATA_DIRS": str(data)}) as url:
        yield url


def test_markup_in_the_data_stays_text(hostile_app: str) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    requests: list[str] = []
    seen_text: set[str] = set()
    with playwright.sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 2400})
            page.on("request", lambda request: requests.append(request.url))
            page.goto(hostile_app)
            _settle(page)
            page.get_by_text("The loaded run").wait_for(timeout=120_000)
            _assert_clean(page, "home")
            for label in PAGES:
                nav = page.locator('[data-testid="stSidebarNav"] a').filter(has_text=re.compile(label, re.I))
                assert nav.count() > 0, f"no sidebar link for {label}"
                nav.first.click()
                _settle(page)
                _assert_clean(page, label)
                body = page.inner_text("body").replace("\u200b", "")  # escape_text's zero-width spaces
                seen_text.update(m for m in MARKUP if m in body)
                # no element made from the data: no link or image pointing outside
                live = page.locator(f'a[href*="{OUTSIDE[7:]}"], img[src*="{OUTSIDE[7:]}"]')
                found = [
                    live.nth(i).evaluate("e => (e.closest('[data-testid]')||e).getAttribute('data-testid') + ': ' + e.outerHTML")
                    for i in range(min(live.count(), 5))
                ]
                assert found == [], label
                assert page.locator("main b, main i").filter(has_text=re.compile("bold|^it$")).count() == 0, label
        finally:
            browser.close()
    outside = [u for u in requests if not u.startswith((hostile_app, "data:", "blob:"))]
    assert outside == [], outside
    # the hostile strings were shown, literally (image Markdown, HTML image and link among them)
    assert {MARKUP[0], MARKUP[1], MARKUP[2]} <= seen_text, seen_text
