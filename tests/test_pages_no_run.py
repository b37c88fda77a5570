"""Every page, opened with no run in the workspace and no bundled sample, says so and links home instead of failing."""

from __future__ import annotations

from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

import ui.state

PAGES = sorted((Path(__file__).resolve().parent.parent / "pages").glob("*.py"))


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_page_without_run_explains_itself(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # with the sample present a fresh workspace opens it (tests/test_run_url.py); without one there is no run
    monkeypatch.setattr(ui.state, "SAMPLE_DATA", tmp_path / "missing.csv")
    st.cache_data.clear()
    st.cache_resource.clear()
    at = AppTest.from_file(str(page), default_timeout=60).run()
    assert not at.exception, at.exception
    assert any("No run is loaded yet" in i.value for i in at.info)
