"""Several annotators on one server: queue shares, keyboard help, feedback, agreement, conflicts, the rule.

The review pages call these; every number comes from :mod:`analysis.review.agreement`,
:mod:`analysis.review.assignment` and :mod:`analysis.review.decisions`. Decisions (adjudications included)
are appended through :func:`ui.review.record`, never edited.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st

from analysis.errors import NegScopeError
from analysis.review.agreement import agreement_summary, conflicts, pairwise_kappa
from analysis.review.assignment import share_mask
from analysis.review.decisions import RULES, annotator_decisions, dataset_keys, run_decisions
from analysis.review.store import Decision
from analysis.runs.folder import Run
from analysis.runs.workspace import review_db_path
from ui import review
from ui.safe_text import escape_text

TEAM_KEY = "negscope_team"
OVERLAP_KEY = "negscope_team_overlap"
MINE_KEY = "negscope_team_mine_only"
RULE_WIDGET = "review_rule_input"
ADJUDICATOR_WIDGET = "review_adjudicator_input"
MESSAGE_KEY = "negscope_review_message"
RULE_NAMES = {
    "latest": "Latest decision wins",
    "majority": "Majority of annotators",
    "adjudicator": "Adjudicator wins",
    "unanimous": "Unanimous only",
}
SUMMARY_NAMES = {
    "decided": "items decided", "shared": "items decided by 2+", "disputed": "disputed items",
    "alpha": "Krippendorff's alpha",
}  # fmt: skip
KAPPA_NAMES = {"items": "items both decided", "agreed": "same decision", "kappa": "Cohen's kappa"}
CONFLICTS_SHOWN = 200
ICONS = {"saved": "✅", "undone": "↩️", "refused": "⛔"}


@dataclass(frozen=True)
class Team:
    """Who shares the queue, and the share reviewed twice."""

    names: tuple[str, ...]
    overlap: float
    mine_only: bool


# --- feedback --------------------------------------------------------------------------------------------


def say(outcome: str, text: str) -> None:
    """Queue a feedback message (``saved`` / ``undone`` / ``refused``) shown by :func:`show_feedback`.

    Call it from a button callback; the next (fragment) run shows it as a toast and beside the buttons.
    """
    st.session_state[MESSAGE_KEY] = (outcome, text)


def show_feedback() -> None:
    """The last outcome as a toast and as a line of text where it is called (beside the buttons)."""
    message = st.session_state.pop(MESSAGE_KEY, None)
    if not message:
        return
    outcome, text = message
    text = escape_text(text)  # the message can quote labels, names and error text
    st.toast(text, icon=ICONS.get(outcome, "ℹ️"))
    (st.error if outcome == "refused" else st.success)(text, icon=ICONS.get(outcome))


def keyboard_help(keys: Sequence[tuple[str, str]]) -> None:
    """List the page's keyboard shortcuts, e.g. ``[("F", "false negative"), ...]``."""
    st.caption("Keyboard: " + " · ".join(f"{key} {what}" for key, what in keys))


def needs_name(annotator: str) -> bool:
    """Say beside the decision buttons that a name is needed; True when it is missing."""
    if annotator:
        return False
    st.warning("Enter your name under 'Annotator name' in the sidebar to record decisions.", icon="✍️")
    return True


def record_one(rows: list[Decision], annotator: str, *, what: str) -> bool:
    """Record decisions signed by ``annotator`` and queue the feedback; False when refused or failed."""
    if not annotator:
        say("refused", "Not saved. Enter your name in the sidebar first: decisions are signed.")
        return False
    failure = review.record(rows)
    if failure is not None:
        say("refused", f"Not saved: {failure}")
        return False
    say("saved", f"Saved: {what}")
    return True


# --- the team and its shares -----------------------------------------------------------------------------


def _names(text: str) -> tuple[str, ...]:
    return tuple(sorted({n.strip() for n in str(text).replace(";", ",").split(",") if n.strip()}))


def team_settings(annotator: str) -> Team:
    """Sidebar settings for sharing the queue; returns the team (empty names: no sharing)."""
    st.session_state.setdefault(TEAM_KEY, "")
    st.session_state.setdefault(OVERLAP_KEY, 0.2)
    st.session_state.setdefault(MINE_KEY, True)
    with st.sidebar.expander("Share the queue", expanded=bool(st.session_state[TEAM_KEY])):
        st.text_input(
            "Annotators (comma-separated)",
            key=TEAM_KEY,
            help="Everyone types the same list: each gets a fixed share of the queue, chosen by content hash.",
        )
        st.slider(
            "Share reviewed by two annotators", 0.0, 1.0, step=0.05, key=OVERLAP_KEY,
            help="These keys go to two annotators, so their agreement can be measured.",
        )  # fmt: skip
        st.toggle("Show only my share", key=MINE_KEY)
        names = _names(st.session_state[TEAM_KEY])
        if names and annotator and annotator not in names:
            st.caption("Your name is not in the list: you see the whole queue.")
    return Team(names=names, overlap=float(st.session_state[OVERLAP_KEY]), mine_only=bool(st.session_state[MINE_KEY]))


def my_share(keys: Sequence[str], annotator: str, team: Team) -> np.ndarray:
    """Mask of the keys that are ``annotator``'s to review; all True without a team or outside it.

    Returns
    -------
    numpy.ndarray
        Shape (N,), bool.
    """
    if not team.names or not team.mine_only or annotator not in team.names:
        return np.ones(len(keys), dtype=bool)
    return _cached_share(tuple(keys), annotator, team.names, team.overlap)


@st.cache_data(max_entries=16, show_spinner=False)
def _cached_share(keys: tuple[str, ...], annotator: str, names: tuple[str, ...], overlap: float) -> np.ndarray:
    return share_mask(list(keys), annotator, names, overlap=overlap)


# --- agreement, conflicts, rule --------------------------------------------------------------------------


@st.cache_data(max_entries=16, show_spinner=False)
def _states(_run: Run, run_id: str, db: str, version: int) -> pd.DataFrame:
    return annotator_decisions(review.review_store(), dataset_keys(_run))


def annotator_states(run: Run) -> pd.DataFrame:
    """Each annotator's current decision per key for ``run`` (cached until the next write)."""
    return _states(run, run.run_id, str(review_db_path()), review.version(run))


def my_decisions(run: Run, annotator: str, *, kind: str) -> pd.DataFrame:
    """``annotator``'s own current decisions of ``kind`` (the columns of ``annotator_decisions``)."""
    states = annotator_states(run)
    return states[(states["kind"] == kind) & (states["annotator"] == annotator)].reset_index(drop=True)


def agreement_panel(run: Run, *, kinds: Sequence[str], prefix: str) -> None:
    """Agreement between annotators on ``kinds``: Krippendorff's alpha per kind, Cohen's kappa per pair."""
    st.subheader("Agreement between annotators")
    st.markdown(
        "Computed on each annotator's current decision. Cohen's kappa compares two annotators on the items both "
        "decided; Krippendorff's alpha (nominal) covers everyone at once and skips items only one person decided."
    )
    st.latex(r"\kappa = \frac{p_o - p_e}{1 - p_e}, \qquad \alpha = 1 - \frac{D_o}{D_e}")
    try:
        states = annotator_states(run)
    except NegScopeError as exc:
        st.error(escape_text(exc))
        return
    states = states[states["kind"].isin(list(kinds))]
    if states["annotator"].nunique() < 2:
        st.info("Agreement needs decisions from two annotators or more on the same items.")
        return
    summary = agreement_summary(states)
    st.table(summary.assign(alpha=[_number(a) for a in summary["alpha"]]).rename(columns=SUMMARY_NAMES), hide_index=True)
    kappa = pd.concat([pairwise_kappa(states, kind=k) for k in kinds], ignore_index=True)
    st.table(kappa.assign(kappa=[_number(k) for k in kappa["kappa"]]).rename(columns=KAPPA_NAMES), hide_index=True)
    st.caption("undefined: the ratings compared use a single value throughout (no variation to agree on).")


def _number(value: float) -> str:
    """An agreement figure as shown: four decimals, or 'undefined' for NaN."""
    return "undefined" if pd.isna(value) else f"{float(value):.4f}"


def conflicts_view(
    run: Run,
    *,
    kinds: Sequence[str],
    annotator: str,
    prefix: str,
    describe: Callable[[pd.Series], str],
) -> None:
    """The disputed items and an adjudicator's settling decision (appended to the log, signed by them).

    Parameters
    ----------
    describe : callable
        ``describe(row)`` -> plain text naming a conflict row's items (``kind``, ``anchor_key``,
        ``candidate_key``) for the list.
    """
    st.subheader("Conflicts")
    try:
        disputed = conflicts(annotator_states(run))
    except NegScopeError as exc:
        st.error(escape_text(exc))
        return
    disputed = disputed[disputed["kind"].isin(list(kinds))].reset_index(drop=True)
    if disputed.empty:
        st.info("No conflicts: every item decided by two annotators or more has one decision.")
        return
    shown = disputed.assign(items=[describe(r) for _, r in disputed.iterrows()])
    st.table(shown[["kind", "items", "decisions", "n_annotators"]].head(CONFLICTS_SHOWN), hide_index=True)
    more = f" (the first {CONFLICTS_SHOWN:,} listed)" if len(disputed) > CONFLICTS_SHOWN else ""
    st.caption(f"{len(disputed):,} disputed items{more}.")
    pick = st.selectbox(
        "Settle", list(range(len(shown))), format_func=lambda i: f"{shown['kind'][i]} · {shown['items'][i]}",
        key=f"{prefix}_conflict_pick",
    )  # fmt: skip
    row = shown.iloc[int(pick)]
    st.text(f"Decisions: {row['decisions']}")
    if needs_name(annotator):
        return
    options = sorted({part.split(": ", 1)[1] for part in str(row["decisions"]).split("; ")})
    cols = st.columns(len(options) + 1)
    for i, (col, option) in enumerate(zip(cols, options, strict=False)):
        decision, _, label = option.partition(":")
        col.button(
            f"Settle as {option.replace('_', ' ')}",
            key=f"{prefix}_settle_{i}",
            on_click=_settle,
            args=(run.content_hash, str(row["kind"]), str(row["anchor_key"]), str(row["candidate_key"]), decision,
                  label or None, annotator),
        )  # fmt: skip
    st.caption(
        f"Your decision is added to the log signed '{escape_text(annotator)}'. It settles the export under the rule "
        "'Adjudicator wins' with you as the adjudicator (and counts as one more vote under the others)."
    )


def _settle(dataset_hash: str, kind: str, anchor: str, candidate: str, decision: str, label: str | None,
            annotator: str) -> None:  # fmt: skip
    row = Decision(dataset_hash, kind, anchor, candidate, decision, annotator, label=label, note="adjudication")
    record_one([row], annotator, what=f"settled as {decision.replace('_', ' ')}")


def _rule_changed() -> None:
    st.session_state[review.RULE_KEY] = st.session_state[RULE_WIDGET]


def _adjudicator_changed() -> None:
    st.session_state[review.ADJUDICATOR_KEY] = str(st.session_state[ADJUDICATOR_WIDGET]).strip()


def rule_panel(run: Run, *, kinds: Sequence[str], prefix: str, annotator: str) -> None:
    """Choose the adjudication rule every export applies, and see what it decides (counts per decision)."""
    chosen = st.session_state.get(review.RULE_KEY, "latest")
    if chosen not in RULES:
        chosen = "latest"
    st.session_state[review.RULE_KEY] = chosen
    st.session_state[RULE_WIDGET] = chosen
    st.session_state.setdefault(review.ADJUDICATOR_KEY, "")
    st.session_state[ADJUDICATOR_WIDGET] = st.session_state[review.ADJUDICATOR_KEY]
    c = st.columns([2, 2, 3])
    c[0].selectbox(
        "Adjudication rule for the export", list(RULES), format_func=RULE_NAMES.get, key=RULE_WIDGET,
        on_change=_rule_changed, help="Which decision counts where annotators disagree.",
    )  # fmt: skip
    if chosen == "adjudicator":
        c[1].text_input("Adjudicator", key=ADJUDICATOR_WIDGET, on_change=_adjudicator_changed,
                        placeholder=annotator or "a name")  # fmt: skip
    rule_, adjudicator = review.rule()
    if chosen == "adjudicator" and adjudicator is None:
        c[1].caption("No adjudicator named: the latest decision wins.")
    try:
        counts = rule_counts(run, rule_, adjudicator, kinds=kinds)
    except NegScopeError as exc:
        st.error(escape_text(exc))
        return
    c[2].dataframe(counts, hide_index=True, width="stretch", key=f"{prefix}_rule_counts")


@st.cache_data(max_entries=16, show_spinner=False)
def _rule_counts(_run: Run, run_id: str, db: str, version: int, rule_: str, adjudicator: str | None,
                 kinds: tuple[str, ...]) -> pd.DataFrame:  # fmt: skip
    chosen = run_decisions(_run, review.review_store(), rule=rule_, adjudicator=adjudicator)
    chosen = chosen[chosen["kind"].isin(list(kinds))]
    table = chosen.groupby(["kind", "decision"]).size().rename("items").reset_index()
    return table.sort_values(["kind", "decision"], kind="stable").reset_index(drop=True)


def rule_counts(run: Run, rule_: str, adjudicator: str | None, *, kinds: Sequence[str]) -> pd.DataFrame:
    """Items per (kind, decision) under a rule: what the export applies (cached until the next write)."""
    return _rule_counts(run, run.run_id, str(review_db_path()), review.version(run), rule_, adjudicator,
                        tuple(kinds))  # fmt: skip


# --- what the rest of the page has seen ------------------------------------------------------------------


def mark_full_run(run: Run, *, prefix: str) -> None:
    """Remember the decision-log version the whole page was drawn with (call it outside the queue fragment)."""
    try:
        st.session_state[f"{prefix}_page_version"] = review.version(run)
    except NegScopeError:
        st.session_state.pop(f"{prefix}_page_version", None)


def stale_note(run: Run, *, prefix: str) -> None:
    """Inside the queue fragment: when decisions were written since the page was drawn (this annotator's or
    anyone's), say that the agreement, the counts and the export below predate them, with a refresh button."""
    seen = st.session_state.get(f"{prefix}_page_version")
    try:
        now = review.version(run)
    except NegScopeError:
        return
    if seen is None or now <= seen:
        return
    cols = st.columns([4, 1])
    cols[0].caption(
        f"{now - seen:,} decisions were recorded since this page was drawn: the agreement and the counts shown "
        "below do not include them yet (a written or downloaded export does)."
    )
    if cols[1].button("Refresh them", key=f"{prefix}_refresh_page"):
        st.rerun()
