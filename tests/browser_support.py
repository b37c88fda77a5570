"""Shared scaffolding of the browser tests: the app under ``streamlit run``, Debian's Chromium, a settled page.

``serve_app`` starts ``streamlit run app.py`` on a free loopback port over a given workspace and stops it
afterwards; ``launch_chromium`` opens headless Chromium with the flags every browser test uses; ``settle``
waits until Streamlit's script run has finished. ``app_url`` / ``browser_home`` are module-scoped fixtures
(the app over an empty workspace, which then opens on the bundled sample) for test modules to import.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

#: The marks of every browser test module (``pytestmark = BROWSER_MARKS``).
BROWSER_MARKS = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"),
]

#: Headless Chromium in a container: no sandbox, no GPU, no background traffic.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve_app(
    home: Path, *, log: Path, extra_env: Mapping[str, str] | None = None, start_timeout_s: float = 60
) -> Iterator[str]:
    """Run ``streamlit run app.py`` over the workspace ``home``; yield its URL; stop it on exit.

    Parameters
    ----------
    home : Path
        The app's ``NEGSCOPE_HOME`` (its runs and review database).
    log : Path
        Where the server's stdout and stderr go (shown when it does not start).
    extra_env : Mapping[str, str], optional
        More environment variables for the server (e.g. ``NEGSCOPE_DATA_DIRS``).
    start_timeout_s : float
        How long to wait for the port to accept connections.

    Yields
    ------
    str
        ``http://127.0.0.1:<port>``.
    """
    port = free_port()
    env = {**os.environ, **(extra_env or {}), "NEGSCOPE_HOME": str(home)}
    command = [
        sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
        "--server.address", "127.0.0.1", "--server.port", str(port),
        "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
    ]  # fmt: skip
    with log.open("w") as out:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + start_timeout_s
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


def launch_chromium(p: Any) -> Any:
    """Headless Debian Chromium from a ``sync_playwright()`` handle ``p``, with ``CHROMIUM_ARGS``."""
    return p.chromium.launch(executable_path=CHROMIUM, headless=True, args=list(CHROMIUM_ARGS))


def settle(page: Any, *, timeout_s: float = 180) -> None:
    """Wait until the script run has finished (the status widget gone for two seconds) and the page has content."""
    page.wait_for_selector('[data-testid="stAppViewContainer"]', timeout=60_000)
    deadline = time.time() + timeout_s
    quiet_since = None
    while time.time() < deadline:
        if page.locator('[data-testid="stStatusWidget"]').count() > 0:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.time()
        elif time.time() - quiet_since > 2.0:
            return
        time.sleep(0.25)
    raise AssertionError("the page kept running past the time limit")


def assert_clean(page: Any, name: str) -> None:
    """The page shows no Streamlit exception box and no traceback; ``name`` says which page failed."""
    exceptions = page.locator('[data-testid="stException"]')
    assert exceptions.count() == 0, f"{name} shows an exception: {exceptions.first.inner_text()[:500]}"
    assert "Traceback" not in page.content(), f"{name} shows a traceback"


@pytest.fixture(scope="module")
def browser_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The workspace of the app under test (its runs and review database)."""
    return tmp_path_factory.mktemp("browser_home")


@pytest.fixture(scope="module")
def app_url(tmp_path_factory: pytest.TempPathFactory, browser_home: Path) -> Iterator[str]:
    """``streamlit run app.py`` over ``browser_home`` on a free loopback port; stopped afterwards."""
    with serve_app(browser_home, log=tmp_path_factory.mktemp("browser_log") / "streamlit.log") as url:
        yield url
