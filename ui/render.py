"""Drawing one item (an image or a text) safely: user text is never rendered as HTML or markdown."""

from __future__ import annotations

import streamlit as st

from analysis.errors import NegScopeError
from analysis.runs.folder import Run
from ui.safe_text import escape_text


def show_item(run: Run, item_id: int, *, caption: str = "", width: int = 160) -> None:
    """Render item ``item_id`` of ``run`` with an optional caption line (scores, role).

    Images are drawn from inside the dataset folder only; text is shown verbatim.
    """
    row = run.items.iloc[int(item_id)]
    if caption:
        st.caption(escape_text(caption))  # callers put labels and pair ids in it
    if row["modality"] == "image":
        try:
            path = run.image_path(int(item_id))
            if not path.is_file():
                raise OSError(f"{row['content']} is missing")
            st.image(str(path), width=width, clamp=True)
        except (NegScopeError, OSError) as exc:
            st.warning(f"Image of item {item_id} cannot be shown: {escape_text(exc)}")
        st.text(str(row["content"]))
    else:
        st.text(str(row["content"]))
    label = run.labels[int(item_id)]
    if label is not None:
        st.caption(f"item {item_id} · label {escape_text(label)}")
    else:
        st.caption(f"item {item_id}")
