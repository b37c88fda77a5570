"""AppTest: the run and the annotator live in the URL (reload, bookmark, shared link) and across pages."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from analysis.errors import NegScopeError
from analysis.runs.locate import latest_run, resolve_run_id, run_id_for
from analysis.runs.workspace import runs_dir
from tests.synthetic import make_synthetic_run
from ui.state import ANNOTATOR_KEY, ANNOTATOR_WIDGET, RUN_KEY

REPO = Path(__file__).resolve().parent.parent
APP = REPO / "app.py"
PAGES = sorted((REPO / "pages").glob("*.py"))
# every script that shows a run (the Teaching page needs none)
HOME = REPO / "home.py"
SCRIPTS = [p for p in (HOME, *PAGES) if "require_run()" in p.read_text() or "get_run()" in p.read_text()]


@pytest.fixture
def two_runs() -> tuple[Path, Path]:
    """Two small runs in the workspace: ``old`` written first, ``new`` most recent (by folder mtime)."""
    old, _ = make_synthetic_run(runs_dir() / "run-old", n_pairs=40, k=3, seed=1)
    new, _ = make_synthetic_run(runs_dir() / "run-new", n_pairs=40, k=3, seed=2)
    os.utime(old.path, (1_000_000, 1_000_000))
    os.utime(new.path, (2_000_000, 2_000_000))
    return old.path.resolve(), new.path.resolve()


def _open(script: Path, **params: str) -> AppTest:
    at = AppTest.from_file(str(script), default_timeout=180)
    for name, value in params.items():
        at.query_params[name] = value
    at.run()
    assert not at.exception, at.exception
    return at


def test_run_ids_name_workspace_runs_and_refuse_the_rest(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    old, new = two_runs
    assert run_id_for(old) == "run-old"
    assert resolve_run_id("run-old") == old
    assert latest_run() == new
    outside, _ = make_synthetic_run(tmp_path / "elsewhere", n_pairs=10, k=2)
    assert run_id_for(outside.path) is None  # pytest's tmp folder is not an allowed folder
    for bad in ("", "run-missing", "../../..", str(outside.path), "/etc", "a\x00b", "x" * 2000):
        with pytest.raises(NegScopeError):
            resolve_run_id(bad)


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_url_opens_its_run_on_every_page(script: Path, two_runs: tuple[Path, Path]) -> None:
    old, _ = two_runs
    at = _open(script, run="run-old")
    assert Path(at.session_state[RUN_KEY]) == old  # not the most recent run
    assert at.query_params["run"] == "run-old"
    assert not any("No run is loaded" in i.value for i in at.info)


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_no_run_in_url_opens_the_latest_run(script: Path, two_runs: tuple[Path, Path]) -> None:
    _, new = two_runs
    at = _open(script)
    assert Path(at.session_state[RUN_KEY]) == new
    assert at.query_params["run"] == "run-new"  # written back, so a reload or a bookmark keeps it
    assert not any("No run is loaded" in i.value for i in at.info)


def test_bad_run_in_url_says_so_and_falls_back(two_runs: tuple[Path, Path]) -> None:
    _, new = two_runs
    at = _open(PAGES[0], run="../../etc")
    assert Path(at.session_state[RUN_KEY]) == new
    assert any("cannot open" in w.value and "run-new" in w.value for w in at.warning)
    assert at.query_params["run"] == "run-new"


@pytest.mark.slow
def test_fresh_workspace_page_opens_the_sample() -> None:
    at = _open(PAGES[0])
    path = Path(at.session_state[RUN_KEY])
    assert path.parent == runs_dir().resolve()
    assert at.query_params["run"] == path.name
    assert not any("No run is loaded" in i.value for i in at.info)


@pytest.mark.slow
def test_annotator_kept_across_pages_and_reloads(two_runs: tuple[Path, Path]) -> None:
    at = AppTest.from_file(str(APP), default_timeout=180).run()
    fn, ln, scores = (str(p.relative_to(REPO)) for p in (PAGES[3], PAGES[4], PAGES[0]))
    at.switch_page(fn).run()
    assert not at.exception, at.exception
    at.text_input(key=ANNOTATOR_WIDGET).set_value("  Ada  ").run()
    assert at.session_state[ANNOTATOR_KEY] == "Ada"
    assert at.query_params["annotator"] == "Ada"
    for page in (ln, scores, fn):  # the label-noise page, a page without the field, back to false negatives
        at.switch_page(page).run()
        assert not at.exception, at.exception
        assert at.session_state[ANNOTATOR_KEY] == "Ada"
        assert at.query_params["annotator"] == "Ada"
        assert at.query_params["run"] == "run-new"
    assert at.text_input(key=ANNOTATOR_WIDGET).value == "Ada"
    # a reload is a new session that only has the URL
    reloaded = _open(PAGES[4], **dict(at.query_params))
    assert reloaded.text_input(key=ANNOTATOR_WIDGET).value == "Ada"
    assert not any("Enter your name" in w.value for w in reloaded.warning)
    # and the name can be changed
    reloaded.text_input(key=ANNOTATOR_WIDGET).set_value("Grace").run()
    assert reloaded.query_params["annotator"] == "Grace"
