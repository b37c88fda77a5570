"""Every page, opened with no run loaded and no sample to fall back on, says so and links home instead of failing."""

from __future__ import annotations

from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

PAGES = sorted((Path(__file__).resolve().parent.parent / "pages").glob("*.py"))
#: Pages that need no run: they work on their own data.
NO_RUN_NEEDED = {"7_Teaching"}


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_page_without_run_explains_itself(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # no run in the workspace, and no bundled sample to open instead
    monkeypatch.setattr("ui.state.SAMPLE_DATA", tmp_path / "no-sample.csv")
    st.cache_data.clear()
    st.cache_resource.clear()
    at = AppTest.from_file(str(page), default_timeout=60).run()
    assert not at.exception, at.exception
    if page.stem in NO_RUN_NEEDED:
        assert not any("No run is loaded yet" in i.value for i in at.info)
        assert at.title and at.metric, "the page shows its own numbers"
    else:
        assert any("No run is loaded yet" in i.value for i in at.info)
