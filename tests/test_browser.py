"""End to end: the real app under ``streamlit run`` in headless Debian Chromium, every page opened.

Screenshots are saved in ``screenshots/`` (one per page). The test drives the app through its own sidebar
links, so the run loaded on the home page stays selected, exactly as a user sees it.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = REPO / "screenshots"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def browser_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The workspace of the app under test (its runs and review database)."""
    return tmp_path_factory.mktemp("browser_home")


@pytest.fixture(scope="module")
def app_url(tmp_path_factory: pytest.TempPathFactory, browser_home: Path) -> Iterator[str]:
    """Start ``streamlit run app.py`` on a free loopback port; stop it afterwards."""
    port = _free_port()
    env = {**os.environ, "NEGSCOPE_HOME": str(browser_home)}
    log = tmp_path_factory.mktemp("browser_log") / "streamlit.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamlit",
                "run",
                "app.py",
                "--server.headless",
                "true",
                "--server.address",
                "127.0.0.1",
                "--server.port",
                str(port),
                "--browser.gatherUsageStats",
                "false",
                "--server.fileWatcherType",
                "none",
            ],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.5)
        else:
            raise RuntimeError(f"streamlit did not start: {log.read_text()}")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _settle(page, *, timeout_s: float = 180) -> None:
    """Wait until the script run has finished (the status widget is gone) and the page has content."""
    page.wait_for_selector('[data-testid="stAppViewContainer"]', timeout=60_000)
    deadline = time.time() + timeout_s
    quiet_since = None
    while time.time() < deadline:
        running = page.locator('[data-testid="stStatusWidget"]').count() > 0
        if running:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.time()
        elif time.time() - quiet_since > 2.0:
            return
        time.sleep(0.25)
    raise AssertionError("the page kept running past the time limit")


def _assert_clean(page, name: str) -> None:
    exceptions = page.locator('[data-testid="stException"]')
    assert exceptions.count() == 0, f"{name} shows an exception: {exceptions.first.inner_text()[:500]}"
    assert "Traceback" not in page.content(), f"{name} shows a traceback"


def _record_one_false_negative(page) -> None:
    """On the False Negatives page: type an annotator name, then press "False negative" once."""
    name = page.get_by_role("textbox", name="Annotator name")
    name.fill("browser-test")
    name.press("Enter")
    _settle(page)
    # the button also shows its keyboard shortcut (F), which is part of its accessible name
    page.get_by_role("button", name=re.compile(r"^False negative(?!s)")).first.click()
    _settle(page)


def test_every_page_in_chromium(app_url: str, browser_home: Path) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    SHOTS.mkdir(exist_ok=True)
    pages = sorted((REPO / "pages").glob("*.py"))
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
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
