"""The current run, shared across pages through ``st.session_state``."""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from streamlit.errors import StreamlitAPIException

from analysis.errors import NegScopeError
from analysis.runs.folder import Run, load_run

RUN_KEY = "negscope_run_path"
ANNOTATOR_KEY = "negscope_annotator"


@st.cache_resource(max_entries=4, show_spinner=False)
def cached_run(path: str, mtime: float) -> Run:
    """Load a run folder once per (path, manifest mtime) and share it between sessions."""
    return load_run(path)


def set_current_run(path: str | Path) -> None:
    """Make ``path`` the run every page shows."""
    st.session_state[RUN_KEY] = str(path)


def current_run_path() -> str | None:
    """The selected run folder, or None."""
    return st.session_state.get(RUN_KEY)


def get_run() -> Run | None:
    """The selected run, loaded (cached), or None when none is selected or it cannot be read."""
    path = current_run_path()
    if not path:
        return None
    manifest = Path(path) / "manifest.json"
    try:
        return cached_run(path, manifest.stat().st_mtime)
    except (OSError, NegScopeError) as exc:
        st.error(f"The selected run cannot be read: {exc}")
        return None


def require_run() -> Run:
    """Return the current run, or say there is none, link to the home page and stop the page."""
    run = get_run()
    if run is None:
        st.info("No run is loaded yet. Open the home page to load a dataset and a checkpoint.")
        try:
            st.page_link("app.py", label="Go to the home page", icon="🏠")
        except StreamlitAPIException:  # the page runs on its own (AppTest, or `streamlit run pages/...`)
            st.caption("Home page: app.py")
        st.stop()
    return run


def annotator_name() -> str:
    """The annotator's name, asked once in the sidebar and shared by the review pages."""
    st.session_state.setdefault(ANNOTATOR_KEY, "")
    return st.sidebar.text_input("Annotator name", key=ANNOTATOR_KEY, help="Recorded with every decision.")
