"""Modality gap: how far apart the two sides' embeddings sit, and what closing the gap would change."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import streamlit as st

from analysis.errors import NegScopeError
from analysis.metrics.modality_gap import (
    GapMetrics,
    GapPCA,
    Groups,
    closing_lambda,
    gap_metrics,
    gap_pca,
    modality_groups,
    project_out_comparison,
    shift_row,
)
from analysis.metrics.temperature import learned_or_default_tau
from analysis.runs.folder import Run
from ui.gap_plots import pca_figure, project_out_figure, shift_figure
from ui.safe_text import escape_text
from ui.state import require_run

st.set_page_config(page_title="Modality gap · NegScope", page_icon="🧲", layout="wide")

MAX_SHIFT_PAIRS = 5_000
MAX_CLOSING_ITEMS = 40_000  # the closing lambda is searched on a seeded sample of this many items at most
MAX_HIST_VALUES = 50_000  # per histogram group: a fixed random sample above this keeps the figure small

for key, value in {
    "gap_dims": "2-D",
    "gap_pairs": 40,
    "gap_range": (-1.0, 2.0),
    "gap_steps": 13,
    "gap_project": True,
}.items():
    st.session_state.setdefault(key, value)


# ------------------------------------------------------------------------------------------------ cached wrappers


@st.cache_data(max_entries=8, show_spinner=False)
def cached_metrics(_run: Run, run_id: str) -> tuple[Groups, GapMetrics]:
    """The two groups and the gap metrics (separability is a cross-validated fit)."""
    groups = modality_groups(_run)
    return groups, gap_metrics(_run.embeddings, groups)


@st.cache_data(max_entries=8, show_spinner=False)
def cached_closing(_run: Run, run_id: str) -> float:
    """The lambda that closes the gap after re-normalisation."""
    groups, metrics = cached_metrics(_run, run_id)
    return closing_lambda(_run.embeddings, groups, metrics.gap_vector, max_items=MAX_CLOSING_ITEMS)


@st.cache_data(max_entries=256, show_spinner=False)
def cached_shift_point(_run: Run, run_id: str, lam: float, tau: float) -> dict[str, float]:
    """Recall@1, loss and centroid distance after shifting by ``lam`` (the page loops to show progress)."""
    groups, metrics = cached_metrics(_run, run_id)
    return {"lambda": lam, **shift_row(_run, groups, metrics.gap_vector, lam, tau=tau)}


@st.cache_resource(max_entries=4, show_spinner=False)
def pair_sample(_run: Run, run_id: str) -> Run:
    """The run with a seeded random ``MAX_SHIFT_PAIRS`` of its pairs (and their negatives); itself when smaller.

    The shift experiment and the project-out comparison search every anchor against the positive side once per
    lambda; on a large run they use this sample (the page says so). Items and embeddings are the run's own.
    """
    if len(_run.pairs) <= MAX_SHIFT_PAIRS:
        return _run
    rows = np.sort(np.random.default_rng(0).choice(len(_run.pairs), size=MAX_SHIFT_PAIRS, replace=False))
    pairs = _run.pairs.iloc[rows].reset_index(drop=True)
    negatives = _run.negatives[_run.negatives["pair_id"].isin(set(pairs["pair_id"]))].reset_index(drop=True)
    return dataclasses.replace(_run, pairs=pairs, negatives=negatives, _cache={})


def sample_note(run: Run) -> None:
    """Say when the experiments below run on a sample of the pairs."""
    if len(run.pairs) > MAX_SHIFT_PAIRS:
        st.caption(
            f"On a seeded random {MAX_SHIFT_PAIRS:,} of the {len(run.pairs):,} pairs (their positives and listed "
            "negatives are the search gallery), so that every λ takes seconds, not minutes."
        )


@st.cache_data(max_entries=8, show_spinner=False)
def cached_pca(_run: Run, run_id: str, n_pairs: int) -> GapPCA:
    """PCA of a balanced sample of both groups with ``n_pairs`` pairs to join."""
    groups, _ = cached_metrics(_run, run_id)
    return gap_pca(_run, groups=groups, n_pairs=n_pairs)


@st.cache_data(max_entries=8, show_spinner=False)
def cached_project_out(_run: Run, run_id: str, tau: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score distributions and summary before and after projecting out the gap direction."""
    groups, _ = cached_metrics(_run, run_id)
    return project_out_comparison(_run, tau=tau, groups=groups)


# ------------------------------------------------------------------------------------------------ explanation


def explain() -> None:
    """The theory and formulas, folded under the title (kept complete)."""
    with st.expander("How this is computed", expanded=False):
        st.markdown(
            "Contrastive models trained on two modalities put image and text embeddings in two separate cones "
            "(Liang et al. 2022, *Mind the Gap*). The **gap vector** joins the two centroids of the L2-normalised "
            "embeddings:"
        )
        st.latex(
            r"g = \frac{1}{|I|}\sum_{i \in I} x_i - \frac{1}{|T|}\sum_{t \in T} x_t,\qquad"
            r"\text{centroid distance} = \lVert g \rVert,\qquad"
            r"\text{cone width} = \operatorname*{mean}_{i \ne j} x_i^\top x_j"
        )
        st.markdown(
            "**Separability** is the cross-validated accuracy of a logistic regression that guesses the group from the "
            "embedding (balanced groups, so 0.5 = no gap). The **shift experiment** moves both groups towards each other "
            "and re-normalises, to see what the gap costs in retrieval and loss:"
        )
        st.latex(
            r"x_i' = \frac{x_i - \tfrac{\lambda}{2} g}{\lVert x_i - \tfrac{\lambda}{2} g \rVert}\ (i \in I),\qquad "
            r"x_t' = \frac{x_t + \tfrac{\lambda}{2} g}{\lVert x_t + \tfrac{\lambda}{2} g \rVert}\ (t \in T)"
        )
        st.markdown(
            "$\\lambda = 0$ is the checkpoint, $\\lambda \\approx 1$ closes the gap, $\\lambda < 0$ widens it. "
            "**Projecting out** the gap direction $u = g / \\lVert g \\rVert$ instead removes it from every embedding: "
            "$x' \\propto x - (x^\\top u)\\, u$."
        )


# ------------------------------------------------------------------------------------------------ sections


def section_metrics(groups: Groups, metrics: GapMetrics) -> None:
    a, b = groups.names
    cols = st.columns(6)
    cols[0].metric("Centroid distance", f"{metrics.centroid_distance:.3f}", help="‖g‖: 0 = no gap; at most 2")
    cols[1].metric("Centroid cosine", f"{metrics.centroid_cosine:.3f}")
    cols[2].metric(f"Cone width: {a}", f"{metrics.mean_cosine[a]:.3f}", help="mean cosine between distinct items")
    cols[3].metric(f"Cone width: {b}", f"{metrics.mean_cosine[b]:.3f}", help="mean cosine between distinct items")
    cols[4].metric(
        "Gap-axis variance",
        f"{metrics.gap_variance_share:.1%}",
        help="share of the pooled embeddings' total variance that lies along the gap direction",
    )
    if np.isnan(metrics.separability):
        cols[5].metric("Separability", "—")
    else:
        cols[5].metric(
            "Separability",
            f"{metrics.separability:.3f}",
            help=f"5-fold accuracy ± {metrics.separability_std:.3f}; 0.5 = chance",
        )
    st.caption(f"{a}: {metrics.n_a:,} items · {b}: {metrics.n_b:,} items")
    for message in metrics.messages:
        st.warning(message)


@st.fragment
def section_pca(run: Run, groups: Groups) -> None:
    st.subheader("The two groups in PCA space")
    c1, c2 = st.columns(2)
    dims = c1.radio("View", ["2-D", "3-D"], key="gap_dims", horizontal=True)
    n_pairs = int(c2.slider("Pairs joined by a line", 0, 200, step=10, key="gap_pairs"))
    with st.spinner("Projecting…"):
        try:
            pca = cached_pca(run, run.run_id, n_pairs)
        except NegScopeError as exc:
            st.error(escape_text(exc))
            return
    st.plotly_chart(pca_figure(pca, groups, run, dims == "3-D"), width="stretch", key="gap_fig_pca")
    st.caption(
        f"PCA fit on a balanced sample of both groups ({len(pca.points):,} points); grey lines join an anchor to its "
        "positive; the black line joins the two centroids (the gap vector)."
    )


@st.fragment
def section_shift(run: Run, tau: float, tau_learned: bool) -> None:
    st.subheader("Closing the gap: the shift experiment")
    c1, c2 = st.columns([2, 1])
    lo, hi = c1.slider("λ range", -2.0, 3.0, step=0.25, key="gap_range")
    steps = int(c2.slider("Steps", 3, 25, key="gap_steps"))
    with st.spinner("Finding the λ that closes the gap…"):
        closing = cached_closing(run, run.run_id)
    sample = pair_sample(run, run.run_id)
    sample_note(run)
    lambdas = sorted({*(float(x) for x in np.round(np.linspace(lo, hi, steps), 4)), 0.0, round(closing, 4)})
    rows = []
    bar = st.progress(0.0, text="Shifting the embeddings…")
    for i, lam in enumerate(lambdas):
        rows.append(cached_shift_point(sample, run.run_id, lam, tau))
        bar.progress((i + 1) / len(lambdas), text=f"Shifting the embeddings… λ = {lam:+.2f}")
    bar.empty()
    table = pd.DataFrame(rows)
    table.insert(1, "closes_gap", table["lambda"] == round(closing, 4))
    st.plotly_chart(shift_figure(table, closing, tau), width="stretch", key="gap_fig_shift")
    st.caption(
        f"Dashed: the checkpoint (λ = 0). Dotted green: λ = {closing:.3f} closes the gap after re-normalisation. "
        f"Recall@1: each anchor searches every positive-side item (positives and listed negatives). "
        f"τ = {tau:.4g} ({'the checkpoint’s learned temperature' if tau_learned else 'no learned τ: CLIP’s 0.07'})."
    )
    at0 = table[table["lambda"] == 0.0].iloc[0]
    atc = table.iloc[(table["lambda"] - round(closing, 4)).abs().argmin()]
    cols = st.columns(3)
    cols[0].metric(
        "Recall@1 with the gap closed",
        f"{atc['recall_at_1']:.3f}",
        delta=f"{atc['recall_at_1'] - at0['recall_at_1']:+.3f}",
    )
    cols[1].metric(
        "Loss with the gap closed",
        f"{atc['loss']:.3f}",
        delta=f"{atc['loss'] - at0['loss']:+.3f}",
        delta_color="inverse",
    )
    cols[2].metric("Centroid distance with the gap closed", f"{atc['centroid_distance']:.4f}")
    st.dataframe(table, hide_index=True, width="stretch")


@st.fragment
def section_project(run: Run, tau: float) -> None:
    st.subheader("Project out the gap direction")
    if not st.toggle("Compare the score distributions with the gap direction projected out", key="gap_project"):
        return
    with st.spinner("Recomputing the scores…"):
        try:
            scores, summary = cached_project_out(pair_sample(run, run.run_id), run.run_id, tau)
        except NegScopeError as exc:
            st.error(escape_text(exc))
            return
    sample_note(run)
    if len(scores) > 4 * MAX_HIST_VALUES:
        scores = scores.groupby(["embedding", "kind"], group_keys=False).apply(
            lambda g: g.sample(n=min(len(g), MAX_HIST_VALUES), random_state=0)
        )
        st.caption(f"Histograms of a random {MAX_HIST_VALUES:,} similarities per group (the table uses all).")
    st.plotly_chart(project_out_figure(scores), width="stretch", key="gap_fig_project")
    shown = summary.rename(
        columns={
            "recall_at_1": "Recall@1",
            "loss": f"loss (τ = {tau:.3g})",
            "candidate_accuracy": "positive beats all negatives",
            "mean_pos_sim": "mean positive sim",
            "mean_neg_sim": "mean negative sim",
            "centroid_distance": "centroid distance",
        }
    )
    st.dataframe(shown, hide_index=True, width="stretch")


# ------------------------------------------------------------------------------------------------ page


def main() -> None:
    """Title, the folded explanation, then the numbers and plots; each control group is a fragment."""
    st.title("Modality gap")
    explain()
    run = require_run()
    tau, tau_learned = learned_or_default_tau(run)
    try:
        with st.spinner("Measuring the gap (a cross-validated classifier)…"):
            groups, metrics = cached_metrics(run, run.run_id)
    except NegScopeError as exc:
        st.error(f"The modality gap cannot be measured: {escape_text(exc)}")
        st.stop()
    if groups.one_modality:
        st.info(groups.note)
    else:
        st.caption(groups.note)
    section_metrics(groups, metrics)
    section_pca(run, groups)
    section_shift(run, tau, tau_learned)
    section_project(run, tau)


main()
