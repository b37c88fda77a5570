"""The current run and the annotator, shared across pages, reloads and links.

Both live in ``st.session_state`` (for page switches within a session) and in the page URL
(``?run=<run id>&annotator=<name>``, so a reload, a bookmark or a shared link opens the same run with the same
name). Every page calls :func:`require_run` (the home page :func:`get_run`), which reads the URL, falls back to
the session's run, then to the workspace's most recent run, then to the bundled sample (embedded once), and
writes the result back into the URL.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from streamlit.errors import StreamlitAPIException

from analysis.errors import NegScopeError
from analysis.runs.folder import Run, load_run
from analysis.runs.locate import latest_run, resolve_run_id, run_id_for
from analysis.runs.workspace import SAMPLE_CHECKPOINT, SAMPLE_DATA
from ui.safe_text import escape_text

RUN_KEY = "negscope_run_path"
ANNOTATOR_KEY = "negscope_annotator"
ANNOTATOR_WIDGET = "negscope_annotator_input"
RUN_PARAM = "run"
ANNOTATOR_PARAM = "annotator"
ANNOTATOR_COOKIE = "negscope_annotator"
MAX_NAME = 80
_URL_WARNING = "negscope_run_url_warning"


@st.cache_resource(max_entries=4, show_spinner=False)
def cached_run(path: str, mtime: float) -> Run:
    """Load a run folder once per (path, manifest mtime) and share it between sessions."""
    return load_run(path)


def _set_param(name: str, value: str | None) -> None:
    """Write one query parameter (or remove it), touching the URL only when it changes."""
    if value:
        if st.query_params.get(name) != value:
            st.query_params[name] = value
    elif name in st.query_params:
        del st.query_params[name]


def set_current_run(path: str | Path) -> None:
    """Make ``path`` the run every page shows, and name it in the URL when a URL can name it."""
    st.session_state[RUN_KEY] = str(path)
    st.session_state.pop(_URL_WARNING, None)
    _set_param(RUN_PARAM, run_id_for(path))


def current_run_path() -> str | None:
    """The run folder this page shows: the URL's run, else the session's, else the workspace's latest.

    A run id in the URL that names no run (or a folder outside the allowed ones) is refused with a message
    shown by :func:`require_run`, and the page falls back. The URL is updated to name the run shown.
    """
    session = st.session_state.get(RUN_KEY)
    url = st.query_params.get(RUN_PARAM)
    if url and (not session or url != run_id_for(session)):
        try:
            session = str(resolve_run_id(url))
            st.session_state[RUN_KEY] = session
            st.session_state.pop(_URL_WARNING, None)
        except NegScopeError as exc:
            st.session_state[_URL_WARNING] = (
                f"The link names a run this server cannot open ({escape_text(exc)}); showing "
            )
    if not session:
        latest = latest_run()
        if latest is not None:
            session = str(latest)
            st.session_state[RUN_KEY] = session
    _set_param(RUN_PARAM, run_id_for(session) if session else None)
    return session


def get_run() -> Run | None:
    """The current run, loaded (cached), or None when there is none or it cannot be read."""
    path = current_run_path()
    if not path:
        return None
    manifest = Path(path) / "manifest.json"
    try:
        return cached_run(path, manifest.stat().st_mtime)
    except (OSError, NegScopeError) as exc:
        st.error(f"The selected run cannot be read: {escape_text(exc)}")
        return None


def open_sample() -> Run | None:
    """Embed the bundled sample (or reuse its run folder) and make it the current run; None without a sample."""
    from analysis.embedding.engine import embed_to_run

    if not (SAMPLE_DATA.is_file() and SAMPLE_CHECKPOINT.is_dir()):
        return None
    try:
        with st.spinner("Opening the bundled sample…"):
            path = embed_to_run(SAMPLE_DATA, SAMPLE_CHECKPOINT, device="cpu")
    except NegScopeError as exc:
        st.error(f"The bundled sample cannot be opened: {escape_text(exc)}")
        return None
    set_current_run(path)
    return get_run()


def require_run() -> Run:
    """The run this page shows (URL, session, latest run, else the sample); stops the page when there is none.

    Also keeps the annotator's name in the URL, so it survives the page switch and a reload.
    """
    run = get_run()
    if run is None and not current_run_path():
        run = open_sample()
    remembered_annotator()
    warning = st.session_state.pop(_URL_WARNING, None)  # said once, on the page the link opened
    if warning and run is not None:
        st.warning(warning + f"run {escape_text(run.run_id)}.")
    if run is None:
        st.info("No run is loaded yet. Open the home page to load a dataset and a checkpoint.")
        try:
            st.page_link("home.py", label="Go to the home page", icon="🏠")  # app.py lists home.py as "Home"
        except StreamlitAPIException:  # the page runs on its own (AppTest, or `streamlit run pages/...`)
            st.caption("Home page: app.py")
        st.stop()
    return run


def clean_name(text: object) -> str:
    """An annotator name as stored: stripped, printable, at most ``MAX_NAME`` characters ('' when unusable)."""
    if not isinstance(text, str):
        return ""
    name = "".join(ch for ch in text if ch.isprintable()).strip()
    return name[:MAX_NAME].strip()


def _cookie_name() -> str:
    try:
        return clean_name(st.context.cookies.get(ANNOTATOR_COOKIE, ""))
    except (AttributeError, RuntimeError, StreamlitAPIException):  # no browser context (AppTest, bare mode)
        return ""


def remembered_annotator() -> str:
    """The annotator's name: the session's, else the URL's, else the browser cookie's ('' when none).

    The name found is kept in the session and written into the URL (``?annotator=``).
    """
    name = clean_name(st.session_state.get(ANNOTATOR_KEY, ""))
    if not name:
        name = clean_name(st.query_params.get(ANNOTATOR_PARAM, "")) or _cookie_name()
    st.session_state[ANNOTATOR_KEY] = name
    _set_param(ANNOTATOR_PARAM, name or None)
    return name


def _name_changed() -> None:
    name = clean_name(st.session_state.get(ANNOTATOR_WIDGET, ""))
    st.session_state[ANNOTATOR_KEY] = name
    _set_param(ANNOTATOR_PARAM, name or None)


def annotator_name() -> str:
    """The annotator's name, asked once in the sidebar, remembered across pages and reloads, changeable."""
    name = remembered_annotator()
    if st.session_state.get(ANNOTATOR_WIDGET) != name:
        st.session_state[ANNOTATOR_WIDGET] = name
    st.sidebar.text_input(
        "Annotator name",
        key=ANNOTATOR_WIDGET,
        on_change=_name_changed,
        max_chars=MAX_NAME,
        help="Recorded with every decision; kept in the page address, so a reload or a bookmark keeps it.",
    )
    return name
