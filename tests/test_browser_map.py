"""The embedding map on a fresh install, in headless Chromium: PCA at once, a progress bar that moves while numba
compiles, UMAP replacing PCA, and a lasso selection that survives the swap and a new colouring.

The app runs under ``streamlit run app.py`` over an empty workspace (``tests/browser_support.py``), so numba's cache
is empty and UMAP's kernels compile while the page is open. Screenshots go to ``screenshots/map_*.png``.
"""

from __future__ import annotations

import re
import time

import pytest

from tests.browser_support import BROWSER_MARKS, REPO, app_url, assert_clean, browser_home, launch_chromium, settle  # noqa: F401 - fixtures used by name

SHOTS = REPO / "screenshots"
SELECTION = re.compile(r"^Selection: ([\d,]+) items?$")

pytestmark = BROWSER_MARKS


def _progress(page) -> tuple[float, str] | None:
    """The UMAP progress bar's value (0-100) and text, or None when there is none."""
    bars = page.locator('[data-testid="stProgress"]')
    if bars.count() == 0:
        return None
    try:
        value = bars.first.get_by_role("progressbar").get_attribute("aria-valuenow", timeout=2_000)
        return float(value or 0), bars.first.inner_text(timeout=2_000)
    except Exception:  # noqa: BLE001 - the bar went away between the two reads (UMAP finished)
        return None


def _caption(page) -> str:
    """The map's caption ("PCA (UMAP on its way) map of ..." or "UMAP map of ...")."""
    caption = page.get_by_text(re.compile(r"map of [\d,]+ items \(")).first
    caption.wait_for(timeout=120_000)
    return caption.inner_text()


def _selected(page) -> int:
    """The count in the selection panel's heading."""
    heading = page.get_by_role("heading").filter(has_text=SELECTION).first
    heading.wait_for(timeout=60_000)
    return int(SELECTION.match(heading.inner_text().strip()).group(1).replace(",", ""))


def _lasso(page) -> None:
    """Draw a lasso around the middle of the map (the chart's drag layer), as a user does with the mouse."""
    layer = page.locator('[data-testid="stPlotlyChart"] .nsewdrag').first
    layer.wait_for(timeout=60_000)
    box = layer.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    rx, ry = box["width"] * 0.12, box["height"] * 0.12
    page.mouse.move(cx - rx, cy - ry)
    page.mouse.down()
    for x, y in ((cx + rx, cy - ry), (cx + rx, cy + ry), (cx - rx, cy + ry), (cx - rx, cy - ry + 2)):
        page.mouse.move(x, y, steps=12)
    page.mouse.up()


def _ringed(page) -> str:
    """The legend entry of the selection's rings ('' when there is none)."""
    entries = page.locator('[data-testid="stPlotlyChart"] .legendtext').filter(has_text="selected (")
    return (entries.first.text_content() or "").strip() if entries.count() else ""  # SVG: no innerText


def test_map_on_a_fresh_install_keeps_the_selection_when_umap_arrives(app_url: str) -> None:  # noqa: F811
    playwright = pytest.importorskip("playwright.sync_api")
    SHOTS.mkdir(exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1500})
            page.goto(app_url)
            page.get_by_text("Loaded run:").wait_for(timeout=240_000)  # the sample, embedded on first visit
            page.locator('[data-testid="stSidebarNav"] a').filter(has_text="Embedding map").first.click()
            opened = time.monotonic()
            page.wait_for_selector('[data-testid="stPlotlyChart"]', timeout=120_000)
            first_map_s = time.monotonic() - opened
            caption = _caption(page)
            on_pca = caption.startswith("PCA (UMAP on its way)")
            readings = []
            if on_pca:  # numba compiles meanwhile: the bar must move (value or elapsed seconds) and say so
                for _ in range(3):
                    reading = _progress(page)
                    if reading is not None:
                        readings.append(reading)
                    time.sleep(2.5)
                page.screenshot(path=str(SHOTS / "map_1_pca_while_umap_computes.png"), full_page=True)
                assert readings, "no progress bar while UMAP is on its way"
                assert any("compil" in text or "step" in text for _, text in readings), readings
                if len(readings) >= 2:
                    assert [v for v, _ in readings] == sorted(v for v, _ in readings), readings
                    assert readings[-1] != readings[0], readings  # it moved
                    assert all(v < 100 for v, _ in readings)

            _lasso(page)
            page.wait_for_function(
                "() => [...document.querySelectorAll('h3')].some(h => /^Selection: [1-9][\\d,]* items?$/.test("
                "h.innerText.trim()))",
                timeout=90_000,
            )
            selected = _selected(page)
            assert selected > 0
            made_on_pca = _caption(page).startswith("PCA (UMAP on its way)")
            page.wait_for_function(
                "() => [...document.querySelectorAll('.legendtext')].some(e => e.textContent.startsWith('selected ('))",
                timeout=60_000,
            )
            assert _ringed(page) == f"selected ({selected:,})"
            page.screenshot(
                path=str(SHOTS / ("map_2_selected_on_pca.png" if made_on_pca else "map_2_selected.png")), full_page=True
            )

            # UMAP replaces PCA (the progress fragment reruns the page): the selection is still there
            page.get_by_text(re.compile(r"^UMAP map of [\d,]+ items")).first.wait_for(timeout=300_000)
            settle(page)
            assert_clean(page, "Embedding map")
            assert _selected(page) == selected
            assert _ringed(page) == f"selected ({selected:,})"
            if made_on_pca:
                assert page.get_by_text("Selected on the PCA map; ringed on the UMAP map shown now.").count() == 1
            page.screenshot(path=str(SHOTS / "map_3_umap_selection_kept.png"), full_page=True)

            # another colouring redraws the chart: still kept; thumbnails of the selected digit images are shown
            colour = page.get_by_role("combobox", name="Colour by")
            colour.click()
            page.get_by_role("option", name="Label", exact=True).click()
            settle(page)
            assert _selected(page) == selected and _ringed(page) == f"selected ({selected:,})"
            assert page.get_by_text(re.compile(r"^[\d,]+ of [\d,]+ selected images")).count() == 1
            page.screenshot(path=str(SHOTS / "map_4_recoloured.png"), full_page=True)
            assert first_map_s < 30, f"the first map took {first_map_s:.1f} s to appear"
            print(f"first map {first_map_s:.1f} s after the click; progress readings {readings}")

            # another page and back: the chart's own state is gone, the kept selection is not
            page.locator('[data-testid="stSidebarNav"] a').filter(has_text="Teaching").first.click()
            page.wait_for_selector("h1:has-text('Teaching')", timeout=120_000)
            settle(page)
            page.locator('[data-testid="stSidebarNav"] a').filter(has_text="Embedding map").first.click()
            page.wait_for_selector('[data-testid="stPlotlyChart"]', timeout=120_000)
            settle(page)
            assert _selected(page) == selected and _ringed(page) == f"selected ({selected:,})"

            page.get_by_role("button", name="Clear the selection").click()
            settle(page)
            assert _selected(page) == 0 and _ringed(page) == ""
        finally:
            browser.close()
