"""NegScope's entry point: ``streamlit run app.py``.

It lists the pages in the sidebar ("Home" first, then every ``pages/*.py`` file with the title and icon of
its ``st.set_page_config``), and starts the background compilation of UMAP's numba kernels once per
server process, so that the embedding map never waits for it.
"""

from __future__ import annotations

import re
from pathlib import Path

import streamlit as st

from ui.map_jobs import umap_warmup

st.set_page_config(page_title="NegScope", page_icon="🔬", layout="wide")

ROOT = Path(__file__).resolve().parent
PAGES_DIR = ROOT / "pages"
_TITLE = re.compile(r"page_title=\"([^\"·]+?)\s*(?:·[^\"]*)?\"")
_ICON = re.compile(r"page_icon=\"([^\"]+)\"")


def page_entry(path: Path) -> st.Page:
    """A sidebar entry for one page file: the title and icon of its ``st.set_page_config`` call."""
    text = path.read_text(encoding="utf-8")
    title = _TITLE.search(text)
    icon = _ICON.search(text)
    return st.Page(
        f"pages/{path.name}",
        title=title.group(1).strip() if title else path.stem.split("_", 1)[-1].replace("_", " "),
        icon=icon.group(1) if icon else None,
    )


umap_warmup()
pages = [st.Page("home.py", title="Home", icon="🏠", default=True)]
pages += [page_entry(p) for p in sorted(PAGES_DIR.glob("*.py"))]
st.navigation(pages).run()
