"""The review database for the pages: the cached store, its version key, recording, undo, and the export panel.

Pages never construct :class:`~analysis.review.store.ReviewStore` themselves. The store is opened once per
database file (``st.cache_resource``); :func:`version` is the number of log rows of the run's dataset, which
grows with every decision and undo (the log is append-only), so anything cached on it is recomputed exactly
when a decision changes. The adjudication rule every page applies lives in ``st.session_state[RULE_KEY]``
(and the adjudicator's name in ``ADJUDICATOR_KEY``).
"""

from __future__ import annotations

import io
import re
import tempfile
import zipfile
from pathlib import Path

import pandas as pd
import streamlit as st

from analysis.errors import NegScopeError
from analysis.review.corrected import CorrectedDataset, build_corrected, describe_effects
from analysis.review.decisions import RULES, dataset_keys, run_decisions
from analysis.review.export import FORMATS, ST_STYLES, write_export
from analysis.review.store import Decision, ReviewStore
from analysis.runs.folder import Run
from analysis.runs.workspace import review_db_path, workspace_dir
from ui.safe_text import escape_text

RULE_KEY = "review_rule"
ADJUDICATOR_KEY = "review_adjudicator"
_FOLDER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@st.cache_resource(max_entries=4, show_spinner=False)
def _open_store(path: str) -> ReviewStore:
    return ReviewStore(path)


def review_store() -> ReviewStore:
    """The workspace's review store, opened once per database file and shared between sessions.

    Raises
    ------
    NegScopeError
        When the database cannot be opened.
    """
    return _open_store(str(review_db_path()))


def version(run: Run) -> int:
    """The cache key of ``run``'s decisions: rows in the log for its dataset (grows with every write)."""
    try:
        return review_store().count(dataset_keys(run))
    except Exception as exc:  # noqa: BLE001 - sqlite errors become one message
        raise NegScopeError(f"the review database cannot be read: {exc}") from exc


def rule() -> tuple[str, str | None]:
    """The adjudication rule (and adjudicator) the pages apply, from the session (default ``latest``).

    ``adjudicator`` without a name in ``st.session_state[ADJUDICATOR_KEY]`` falls back to ``latest``.
    """
    chosen = st.session_state.setdefault(RULE_KEY, "latest")
    if chosen not in RULES:
        chosen = st.session_state[RULE_KEY] = "latest"
    adjudicator = str(st.session_state.get(ADJUDICATOR_KEY) or "").strip() or None
    if chosen == "adjudicator" and adjudicator is None:
        return "latest", None
    return chosen, adjudicator


@st.cache_data(max_entries=32, show_spinner=False)
def _decisions(
    _run: Run, run_id: str, db: str, version_: int, kind: str | None, rule_: str, adjudicator: str | None
) -> pd.DataFrame:
    return run_decisions(_run, review_store(), kind=kind, rule=rule_, adjudicator=adjudicator)


def decisions(run: Run, *, kind: str | None = None) -> pd.DataFrame:
    """The run's current decisions under the session's rule (:func:`analysis.review.decisions.current_decisions`),
    cached until the next write."""
    rule_, adjudicator = rule()
    return _decisions(run, run.run_id, str(review_db_path()), version(run), kind, rule_, adjudicator)


def record(rows: list[Decision]) -> str | None:
    """Append decisions (all or none); returns None when saved, else the reason it failed."""
    if not rows:
        return None
    try:
        review_store().record_many(rows)
    except (NegScopeError, OSError) as exc:
        return str(exc)
    return None


def undo(run: Run, annotator: str, *, kinds: tuple[str, ...]) -> Decision | None:
    """Undo the annotator's latest decision of one of ``kinds`` (never one made on another page's kinds)."""
    store = review_store()
    hist = store.history(dataset_keys(run))
    mine = hist[(hist["annotator"] == annotator) & hist["kind"].isin(list(kinds))]
    if mine.empty:
        return None
    return store.undo(dataset_keys(run), annotator=annotator, kind=str(mine.iloc[-1]["kind"]))


def _fresh_corrected(run: Run, rule_: str, adjudicator: str | None, options: dict[str, bool]) -> CorrectedDataset:
    """The corrected dataset built from the decision log as it is now (no cache, no session state)."""
    store = review_store()
    chosen = run_decisions(run, store, rule=rule_, adjudicator=adjudicator)
    return build_corrected(run, chosen, history=store.history(dataset_keys(run)), **options)


@st.cache_resource(max_entries=8, show_spinner=False)
def _corrected(
    _run: Run, run_id: str, db: str, version_: int, rule_: str, adjudicator: str | None, options: tuple
) -> CorrectedDataset:
    return _fresh_corrected(_run, rule_, adjudicator, dict(options))


def corrected(run: Run, **options: bool) -> CorrectedDataset:
    """The corrected dataset of the run under the session's rule (cached until the next write)."""
    rule_, adjudicator = rule()
    return _corrected(
        run, run.run_id, str(review_db_path()), version(run), rule_, adjudicator, tuple(sorted(options.items()))
    )


def zip_bytes(fixed: CorrectedDataset, *, style: str) -> bytes:
    """The export folder (without images) as zip bytes, built by the same writer."""
    with tempfile.TemporaryDirectory() as tmp:
        result = write_export(fixed, Path(tmp) / "export", formats=FORMATS, style=style, copy_images=False)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for rel in result.files:
                zf.write(result.path / rel, rel.as_posix())
    return buf.getvalue()


def exports_dir() -> Path:
    """Where the pages write exports: ``<workspace>/exports/``."""
    return workspace_dir() / "exports"


def export_panel(run: Run, *, prefix: str) -> None:
    """The export of the corrected dataset: options, each effect with its count, write / download buttons.

    The counts are those of the files (one builder, :func:`analysis.review.corrected.build_corrected`);
    the same panel on every page gives byte-identical files for the same decisions and options.

    Parameters
    ----------
    run : Run
    prefix : str
        The page's widget-key prefix (``fn``, ``ln``).
    """
    st.subheader("Export the corrected dataset")
    c = [*st.columns(2), *st.columns(2)]  # two rows, so no label is cut off
    style = c[0].radio("Layout", list(ST_STYLES), key=f"{prefix}_export_style", horizontal=True)
    extra = c[1].checkbox(
        "Listed false negatives as extra positive pairs", value=True, key=f"{prefix}_export_extra_pos"
    )
    dups = c[2].checkbox("Drop duplicate copies", value=True, key=f"{prefix}_export_drop_dups")
    rule_, adjudicator = rule()
    c[3].text(f"Adjudication rule: {rule_}" + (f" ({adjudicator})" if adjudicator else ""))
    options = {"extra_positive_pairs": bool(extra), "drop_duplicates": bool(dups)}
    try:
        fixed = corrected(run, **options)
    except (NegScopeError, OSError) as exc:
        st.error(f"The corrected dataset cannot be built: {escape_text(exc)}")
        return
    left, right = st.columns([3, 2])
    with left:
        for line in describe_effects(fixed.counts):
            st.text(line)
    with right:
        default = f"{run.run_id}-corrected"
        st.session_state.setdefault(f"{prefix}_export_name", default)
        name = st.text_input(
            "Export folder (in the workspace's exports/)", key=f"{prefix}_export_name", max_chars=100
        ).strip()
        if st.button("Write the export", key=f"{prefix}_export_write", type="primary"):
            if not _FOLDER_NAME.match(name):
                st.error("Use a folder name of letters, digits, '.', '_' or '-' (no slashes).")
            else:
                try:
                    result = write_export(fixed, exports_dir() / name, formats=FORMATS, style=style)
                except (NegScopeError, OSError) as exc:
                    st.error(f"Nothing was written: {escape_text(exc)}")
                else:
                    st.success("Written:")
                    st.code(str(result.path), language=None)
        st.download_button(
            "Download (zip, without images)",
            # Built only when clicked, from the log as it is then (decisions made in the queue's fragment
            # since this panel was drawn are included).
            lambda: zip_bytes(_fresh_corrected(run, rule_, adjudicator, options), style=style),
            file_name=f"{run.run_id}-corrected.zip",
            mime="application/zip",
            on_click="ignore",
            key=f"{prefix}_export_download",
        )
    st.caption(
        "pairs.csv keeps the image paths the dataset wrote; the written folder holds the images beside it. "
        "exclusions.jsonl lists, per anchor, the items a training loop should mask from its in-batch negatives. "
        "The same export from the command line: python -m analysis export RUN --out DIR"
    )


__all__ = [
    "ADJUDICATOR_KEY",
    "RULE_KEY",
    "corrected",
    "decisions",
    "export_panel",
    "exports_dir",
    "record",
    "review_store",
    "rule",
    "undo",
    "version",
    "zip_bytes",
]
