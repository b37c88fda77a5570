"""False Negatives page: the weight preset, learning the evidence weights from the reviewers' decisions, and the
displayed score with resolution at the top of the queue.

Reads inputs and renders; the fitting and re-ranking are :mod:`analysis.detectors.fn_learning`.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from analysis.detectors.false_negatives import WEIGHT_PRESETS, Weights, score_labels
from analysis.detectors.fn_learning import MIN_PER_CLASS, fit_weights, rerank
from analysis.errors import NegScopeError
from ui.safe_text import escape_text

PRESET_NAMES = {
    "paraphrase": "Paraphrases (valid matches look like the positive)",
    "one_to_many": "One-to-many (several different valid matches per anchor)",
}
ORDER_NAMES = {
    "score": "Learned score (most likely first)",
    "uncertainty": "Uncertainty sampling (most informative first)",
}


def weight_preset() -> Weights:
    """A selectbox (in the current container) for the evidence weights preset; returns the chosen weights."""
    name = st.selectbox(
        "Kind of data",
        list(WEIGHT_PRESETS),
        format_func=PRESET_NAMES.get,
        key="fn_preset",
        help="Paraphrase data: a false negative resembles the given positive (duplicate captions). One-to-many "
        "data: an anchor has several valid matches about different things (word senses, relevant passages); "
        "the score then weighs how unusually close the candidate is to this anchor and whether another anchor "
        "already has it as its match. See docs/false_negatives.md.",
    )
    return WEIGHT_PRESETS[name]


def learning_panel(table: pd.DataFrame) -> pd.DataFrame:
    """The "Learn from decisions" panel: when switched on and enough candidates are decided, shows the fitted
    weights and the cross-validated precision and returns ``table`` re-ranked (undecided first); otherwise
    returns ``table`` unchanged. ``table`` needs a ``decision`` column."""
    n_fn = int((table["decision"] == "false_negative").sum())
    n_neg = int((table["decision"] == "negative").sum())
    on = st.toggle(
        "Re-rank the queue with weights learned from the decisions",
        key="fn_learn",
        help=f"Needs at least {MIN_PER_CLASS} decided false negatives and {MIN_PER_CLASS} negatives "
        f"(now {n_fn} and {n_neg}).",
    )
    if not on:
        return table
    order = st.radio(
        "Queue order", list(ORDER_NAMES), format_func=ORDER_NAMES.get, key="fn_learn_order", horizontal=True
    )
    try:
        learned = fit_weights(table)
    except NegScopeError as exc:
        st.info(escape_text(exc))
        return table
    cols = st.columns(4)
    cols[0].metric("Decided (used)", f"{learned.n_decided:,}")
    cols[1].metric("Cross-validated precision", f"{learned.cv_precision:.2f}", help="Out-of-fold, at p >= 0.5")
    cols[2].metric("Cross-validated recall", f"{learned.cv_recall:.2f}")
    cols[3].metric("Cross-validated AUPRC", f"{learned.cv_auprc:.2f}")
    st.caption(
        f"Log-odds weights: the preset's, the change learned from the decisions ({learned.folds}-fold "
        "cross-validated logistic regression around the preset's log-odds), and their sum"
    )
    st.dataframe(
        learned.weight_table(),
        hide_index=True,
        column_config={
            name: st.column_config.NumberColumn(name, format="%.3f") for name in ("preset", "change", "learned")
        },
    )
    return rerank(table, learned, order=order)


def with_score_labels(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with a ``log_odds`` text column (:func:`score_labels`) that keeps resolution at the top."""
    return table.assign(log_odds=score_labels(table["logit"].to_numpy()))
