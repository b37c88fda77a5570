"""Temperature and loss explorer: InfoNCE against tau, which negatives take the gradient, alignment/uniformity.

Only the chosen view computes: the view selector replaces tabs (tabs run every section on every rerun);
the pair view and the loss variants are fragments, so their controls rerun only themselves.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st
from streamlit.errors import StreamlitAPIException

from analysis.errors import NegScopeError
from analysis.metrics.geometry import GeometryReport, geometry_report, random_reference
from analysis.metrics.modality_gap import closing_lambda, modality_groups, shift_embeddings
from analysis.metrics.temperature import (
    VARIANT_LABELS,
    LossInputs,
    PairStats,
    direction_sweep,
    false_negative_table,
    has_two_modalities,
    learned_or_default_tau,
    loss_inputs,
    negatives_of_pair,
    pair_stats,
    pair_table,
    tau_grid,
    variant_losses,
    weight_by_rank,
)
from analysis.runs.folder import Run
from analysis.runs.workspace import review_db_path
from ui import review
from ui.render import show_item
from ui.safe_text import escape_text
from ui.state import require_run
from ui.temperature_plots import (
    DIRECTION_NAMES,
    effective_curve,
    geometry_figure,
    loss_curve,
    pair_negatives_figure,
    rank_share_figure,
    share_histogram,
    variants_figure,
)

st.set_page_config(page_title="Temperature · NegScope", page_icon="🌡️", layout="wide")

GRID = tau_grid(0.005, 1.0, 64)
VIEWS = ("Loss vs τ", "Gradient at τ", "Loss variants", "Alignment & uniformity")
TEACHING_PAGE = "pages/7_Teaching.py"
MAX_HIST_VALUES = 200_000

for key, value in {
    "temp_view": VIEWS[0],
    "temp_direction": "forward",
    "temp_pair_rank": 1,
    "temp_pair_id": "",
    "temp_tau_plus": 0.1,
    "temp_beta": 1.0,
}.items():
    st.session_state.setdefault(key, value)


# ------------------------------------------------------------------------------------------------ cached wrappers


def _review_key() -> tuple[float, float]:
    """Changes whenever a review decision is written (the database or its WAL file)."""
    path = review_db_path()
    stamps = []
    for p in (path, path.with_name(path.name + "-wal")):
        try:
            stamps.append(p.stat().st_mtime_ns)
        except OSError:
            stamps.append(0)
    return tuple(stamps)


@st.cache_data(max_entries=8, show_spinner=False)
def cached_fn_table(_run: Run, run_id: str, review_key: tuple) -> pd.DataFrame:
    """Known (sample truth) and decided (review) false negatives, keyed by run and review-database state."""
    return false_negative_table(_run, decisions=review.decisions(_run))


@st.cache_data(max_entries=8, show_spinner=False)
def cached_sweep(_run: Run, run_id: str, review_key: tuple, taus: tuple[float, ...]) -> pd.DataFrame:
    """Loss and gradient statistics against tau for every direction."""
    return direction_sweep(_run, list(taus), fn_table=cached_fn_table(_run, run_id, review_key))


@st.cache_resource(max_entries=8, show_spinner=False)
def cached_inputs(_run: Run, run_id: str, review_key: tuple, direction: str) -> LossInputs:
    """Similarities of each query to its candidates for one direction."""
    return loss_inputs(_run, direction, fn_table=cached_fn_table(_run, run_id, review_key))


@st.cache_resource(max_entries=16, show_spinner=False)
def cached_pair_stats(
    _run: Run, run_id: str, review_key: tuple, direction: str, tau: float
) -> tuple[PairStats, pd.DataFrame]:
    """Per-pair statistics at one tau and the pair table sorted by loss."""
    inputs = cached_inputs(_run, run_id, review_key, direction)
    stats = pair_stats(inputs.pos_sim, inputs.neg_sim, tau, false_negative=inputs.false_negative)
    return stats, pair_table(inputs, stats)


@st.cache_data(max_entries=256, show_spinner=False)
def cached_variants_at(
    _run: Run, run_id: str, review_key: tuple, direction: str, tau: float, tau_plus: float, beta: float
) -> dict[str, float]:
    """Mean loss of every variant at one tau (the page loops over taus to show progress)."""
    inputs = cached_inputs(_run, run_id, review_key, direction)
    losses = variant_losses(
        inputs.pos_sim, inputs.neg_sim, tau, false_negative=inputs.false_negative, tau_plus=tau_plus, beta=beta
    )
    return {v: float(np.nanmean(x)) if np.any(~np.isnan(x)) else float("nan") for v, x in losses.items()}


@st.cache_data(max_entries=8, show_spinner=False)
def cached_geometry(_run: Run, run_id: str) -> tuple[GeometryReport, tuple[float, float], GeometryReport | None]:
    """Alignment, uniformity and tolerance of the run, the random-embedding reference point, and (two
    modalities) the same run with its modality gap closed (the shift of the Modality gap page)."""
    closed = None
    if has_two_modalities(_run):
        groups = modality_groups(_run)
        unit = _run.embeddings.astype(np.float64)
        gap = unit[groups.a_ids].mean(axis=0) - unit[groups.b_ids].mean(axis=0)
        lam = closing_lambda(_run.embeddings, groups, gap, max_items=40_000)  # a seeded sample on large runs
        closed = geometry_report(_run, embeddings=shift_embeddings(_run.embeddings, groups, gap, lam))
    return geometry_report(_run), random_reference(_run.dim), closed


# ------------------------------------------------------------------------------------------------ explanation


def explain() -> None:
    """The theory and formulas, folded under the title."""
    with st.expander("How this is computed", expanded=False):
        st.markdown(
            "For every pair the candidates are its **positive** and its **listed negatives** (given, in-batch and "
            "mined). The logits are the similarities divided by the temperature $\\tau$, and InfoNCE is the "
            "cross-entropy of picking the positive:"
        )
        st.latex(
            r"\mathcal{L}_i = -\log \frac{e^{s_{+}/\tau}}{e^{s_{+}/\tau} + \sum_{j} e^{s_j/\tau}},"
            r"\qquad p_k = \operatorname{softmax}_k\!\left(\frac{s}{\tau}\right)"
        )
        st.markdown(
            "Its gradient shows who does the work: the positive is pulled with strength $1-p_+$, each negative "
            "pushes with $p_j$, so negative $j$'s **share of the repulsive gradient** is a softmax over the "
            "negatives alone. Its entropy gives the **effective number of negatives**:"
        )
        st.latex(
            r"\frac{\partial \mathcal{L}_i}{\partial s_{+}} = -\frac{1-p_{+}}{\tau},\quad"
            r"\frac{\partial \mathcal{L}_i}{\partial s_{j}} = \frac{p_{j}}{\tau},\quad "
            r"w_j = \frac{p_j}{1-p_+} = \frac{e^{s_j/\tau}}{\sum_{k} e^{s_k/\tau}},\quad "
            r"N_\text{eff} = \exp\Big(-\sum_j w_j \log w_j\Big)"
        )
        st.markdown(
            "A small $\\tau$ makes the loss **hardness-aware** (Wang & Liu 2021): almost all of the gradient goes "
            "to the hardest negatives, which helps until those are really positives (false negatives). A large "
            "$\\tau$ spreads the gradient evenly over all negatives."
        )
        st.markdown(
            "**Loss variants.** **Debiased** contrastive loss (Chuang et al. 2020) corrects the negatives' sum for "
            "the chance $\\tau^+$ that a random negative shares the anchor's class; **hardness-weighted** negatives "
            "(Robinson et al. 2021) re-weight each negative by $e^{\\beta s_j/\\tau}$; with both you get their HCL "
            "loss. **False negatives removed** drops known or decided false negatives from the denominator."
        )
        st.latex(
            r"N_g = \max\!\Big(\frac{\sum_j \omega_j e^{s_j/\tau} - \tau^{+} N e^{s_+/\tau}}{1-\tau^{+}},"
            r"\; N e^{-1/\tau}\Big),\quad \omega_j = \frac{N e^{\beta s_j/\tau}}{\sum_k e^{\beta s_k/\tau}},\quad"
            r"\mathcal{L} = -\log\frac{e^{s_+/\tau}}{e^{s_+/\tau} + N_g}"
        )
        st.markdown(
            "**Alignment and uniformity** (Wang & Isola 2020); lower is better on both: positives close together "
            "(alignment) while all embeddings spread over the sphere (uniformity). Random embeddings sit at "
            "alignment 2; collapsed ones at uniformity 0. Tolerance (Wang & Liu 2021) is how close the model "
            "keeps items of the same class. For two modalities, the orange point is this checkpoint with its "
            "modality gap closed (see the Modality gap page)."
        )
        st.latex(
            r"\mathcal{L}_\text{align} = \mathbb{E}_{(x,y)\,\text{pos}} \lVert f(x)-f(y)\rVert^2,\qquad"
            r"\mathcal{L}_\text{uniform} = \log \mathbb{E}_{x,y} e^{-2\lVert f(x)-f(y)\rVert^2},\qquad "
            r"T = \mathbb{E}_{\text{same label}}\, f(x)^\top f(y)"
        )
        st.markdown("The unit-circle toy of the teaching mode is now its own page, **Teaching**, with its own τ.")


def show_direction_note(run: Run) -> None:
    """What the query sides mean."""
    if has_two_modalities(run):
        st.caption(
            "Two modalities: **anchor → candidates** lets each anchor pick its positive among the listed "
            "negatives; **positive → anchors** lets the positive pick its anchor among the anchors that stand for "
            "those negatives (the anchor of the pair whose positive is the listed negative; for a negative that is "
            "no pair's positive, the anchor of the next pair in dataset order, the in-batch convention); "
            "**symmetric** is their mean, the CLIP objective."
        )
    else:
        st.caption("One modality on both sides: only the anchor → candidates direction is shown.")


# ------------------------------------------------------------------------------------------------ sections


def tau_options(learned: float) -> list[float]:
    """The tau slider's stops: the log grid and the learned tau."""
    values = {float(f"{t:.4g}") for t in GRID}
    values.add(float(f"{learned:.4g}"))
    return sorted(values)


def cached_inputs_for(run: Run, direction: str) -> LossInputs:
    """The loss inputs of one direction (cached per run and review state)."""
    return cached_inputs(run, run.run_id, _review_key(), direction)


def section_curve(run: Run, sweep: pd.DataFrame, learned: float, has_learned: bool, tau: float) -> None:
    """The loss and the gradient's shares against tau, and the effective number of negatives."""
    st.subheader("Loss against the temperature")
    show_direction_note(run)
    if not has_learned:
        st.info(f"This checkpoint records no learned temperature; τ = {learned} (CLIP's initial value) is used.")
    st.plotly_chart(loss_curve(sweep, learned, has_learned, tau), width="stretch", key="temp_fig_loss")
    mean_k = float(cached_inputs_for(run, "forward").n_negatives.mean())
    st.plotly_chart(effective_curve(sweep, tau, mean_k), width="stretch", key="temp_fig_effective")


def section_weights(run: Run, direction: str, tau: float, fn_table: pd.DataFrame) -> None:
    """Metrics of the gradient at tau, its share by hardness rank, and one pair."""
    st.subheader(f"The gradient at τ = {tau:.4g}")
    inputs = cached_inputs_for(run, direction)
    stats, table = cached_pair_stats(run, run.run_id, _review_key(), direction, tau)
    used = ~np.isnan(stats.effective_negatives)
    if not used.any():
        st.warning("No pair has a negative candidate in this direction: there is no gradient to show.")
        return
    cols = st.columns(6)
    cols[0].metric("Mean loss", f"{stats.loss[used].mean():.3f}")
    cols[1].metric("Positive's pull 1 − p₊", f"{(1 - stats.p_pos[used]).mean():.3f}")
    cols[2].metric(
        "Effective negatives",
        f"{stats.effective_negatives[used].mean():.2f}",
        help=f"out of {inputs.n_negatives[used].mean():.1f} negatives per pair on average",
    )
    cols[3].metric("Hardest's share", f"{np.nanmean(stats.top1_weight):.1%}", help="share of the hardest negative")
    cols[4].metric("Top-5 share", f"{np.nanmean(stats.top5_weight):.1%}", help="share of the 5 hardest negatives")
    if inputs.false_negative.any():
        cols[5].metric(
            "False-negative share",
            f"{np.nanmean(stats.false_negative_weight):.1%}",
            help=f"{int(inputs.false_negative.sum())} candidates are known or decided false negatives",
        )
    else:
        cols[5].metric("False-negative share", "—", help="no known or decided false negatives in this run")
    if not fn_table.empty:
        counts = fn_table["source"].value_counts()
        st.caption(
            "False negatives: "
            + ", ".join(
                f"{int(n)} from {'the sample truth' if s == 'truth' else 'review decisions'}" for s, n in counts.items()
            )
        )

    left, right = st.columns(2)
    left.plotly_chart(rank_share_figure(weight_by_rank(stats).head(32)), width="stretch", key="temp_fig_ranks")
    w = stats.weights[~np.isnan(stats.weights)]
    if len(w) > MAX_HIST_VALUES:  # a histogram of a fixed random sample keeps the figure small
        w = np.random.default_rng(0).choice(w, size=MAX_HIST_VALUES, replace=False)
        right.caption(f"Histogram of a random {MAX_HIST_VALUES:,} of the shares.")
    right.plotly_chart(share_histogram(w), width="stretch", key="temp_fig_shares")
    section_pair(run, direction, tau)


@st.fragment
def section_pair(run: Run, direction: str, tau: float) -> None:
    """One pair's negatives by share of the gradient (its own fragment: picking a pair reruns only this)."""
    inputs = cached_inputs_for(run, direction)
    stats, table = cached_pair_stats(run, run.run_id, _review_key(), direction, tau)
    st.markdown("#### One pair: which negatives take the gradient")
    st.caption("Pairs are ranked by their loss at this τ (1 = highest loss). Or type a pair id.")
    c1, c2 = st.columns([1, 1])
    rank = int(
        c1.number_input("Pair rank by loss", min_value=1, max_value=max(len(table), 1), step=1, key="temp_pair_rank")
    )
    typed = c2.text_input("…or pair id", key="temp_pair_id").strip()
    row_in_table = rank - 1
    if typed:
        matches = np.flatnonzero(table["pair_id"].astype(str).to_numpy() == typed)
        if len(matches):
            row_in_table = int(matches[0])
        else:
            st.warning(f"No pair has id {escape_text(repr(typed))}; showing rank {rank}.")
    row = int(table["row"].iloc[row_in_table])
    pair_id = inputs.pair_ids[row]
    st.markdown(
        f"Pair **{pair_id}** · rank {row_in_table + 1} by loss · loss {stats.loss[row]:.3f} · "
        f"p₊ {stats.p_pos[row]:.3f} · effective negatives {stats.effective_negatives[row]:.2f} "
        f"of {int(inputs.n_negatives[row])}"
    )
    negs = negatives_of_pair(inputs, stats, row)
    q, p = st.columns(2)
    with q:
        show_item(run, int(inputs.query_ids[row]), caption="query", width=140)
    with p:
        show_item(
            run,
            int(inputs.positive_ids[row]),
            caption=f"positive · sim {inputs.pos_sim[row]:.3f} · pulled with 1 − p₊ = {1 - stats.p_pos[row]:.3f}",
            width=140,
        )
    if negs.empty:
        st.info("This pair has no negative candidates.")
        return
    st.plotly_chart(pair_negatives_figure(negs), width="stretch", key="temp_fig_pair")
    top = negs.head(8)
    cols = st.columns(min(4, len(top)))
    for i, rec_neg in enumerate(top.itertuples()):
        with cols[i % len(cols)]:
            flag = " · FALSE NEGATIVE" if rec_neg.false_negative else ""
            show_item(
                run,
                int(rec_neg.item_id),
                caption=f"share {rec_neg.weight:.3f} · sim {rec_neg.sim:.3f}{flag}",
                width=120,
            )


@st.fragment
def section_variants(run: Run, direction: str, tau: float) -> None:
    """Debiased, hardness-weighted, HCL and false-negatives-removed losses against tau (its own fragment)."""
    st.subheader("Loss variants on the same data")
    c1, c2 = st.columns(2)
    tau_plus = c1.slider("Class prior τ⁺ (debiased, HCL)", 0.0, 0.5, step=0.01, key="temp_tau_plus")
    beta = c2.slider("Hardness β (hardness-weighted, HCL)", 0.0, 5.0, step=0.1, key="temp_beta")
    taus = [float(t) for t in tau_grid(0.01, 1.0, 16)]
    if tau not in taus:
        taus = sorted([*taus, tau])
    rows = []
    bar = st.progress(0.0, text="Computing the variants…")
    for i, t in enumerate(taus):
        means = cached_variants_at(run, run.run_id, _review_key(), direction, t, float(tau_plus), float(beta))
        rows += [(t, v, loss) for v, loss in means.items()]
        bar.progress((i + 1) / len(taus), text="Computing the variants…")
    bar.empty()
    table = pd.DataFrame(rows, columns=["tau", "variant", "loss"])
    st.plotly_chart(variants_figure(table, tau), width="stretch", key="temp_fig_variants")
    at_tau = table[table["tau"] == tau]
    shown = pd.DataFrame(
        {
            "variant": [VARIANT_LABELS[v] for v in at_tau["variant"]],
            f"mean loss at τ = {tau:.4g}": at_tau["loss"].to_numpy(),
        }
    )
    st.dataframe(shown, hide_index=True, width="stretch")
    inputs = cached_inputs_for(run, direction)
    if not inputs.false_negative.any():
        st.caption("No known or decided false negatives: 'false negatives removed' equals InfoNCE.")


def section_geometry(run: Run) -> None:
    """Alignment, uniformity and tolerance, and the alignment/uniformity plane."""
    st.subheader("Alignment and uniformity (Wang & Isola 2020)")
    with st.spinner("Computing alignment and uniformity…"):
        report, (rand_align, rand_uni), closed = cached_geometry(run, run.run_id)
    for message in report.messages:
        st.warning(message)
    cols = st.columns(4)
    cols[0].metric("Alignment", "—" if np.isnan(report.alignment) else f"{report.alignment:.3f}")
    cols[1].metric("Uniformity", "—" if np.isnan(report.uniformity) else f"{report.uniformity:.3f}")
    cols[2].metric("Tolerance", "—" if np.isnan(report.tolerance) else f"{report.tolerance:.3f}")
    cols[3].metric("Items / pairs", f"{report.n_items:,} / {report.n_pairs:,}")
    if report.uniformity_by_group:
        st.caption(
            "Uniformity within each group: "
            + ", ".join(f"{k}: {v:.3f}" for k, v in report.uniformity_by_group.items() if np.isfinite(v))
        )
    points = pd.DataFrame(
        [
            ("this checkpoint", report.uniformity, report.alignment),
            (f"random unit vectors (D = {run.dim})", rand_uni, rand_align),
            ("everything collapsed", 0.0, 0.0),
            ("modality gap closed", closed.uniformity if closed else np.nan, closed.alignment if closed else np.nan),
        ],
        columns=["point", "uniformity", "alignment"],
    ).dropna()
    st.plotly_chart(geometry_figure(points, run.dim), width="stretch", key="temp_fig_geometry")
    st.caption(
        "Lower is better on both axes. Random embeddings sit at alignment 2; collapsed ones at uniformity 0. "
        "For two modalities, the orange point is this checkpoint with its modality gap closed."
    )


# ------------------------------------------------------------------------------------------------ page


def controls(run: Run) -> tuple[float, str, str]:
    """Temperature, query side and view."""
    learned, _ = learned_or_default_tau(run)
    options = tau_options(learned)
    snapped = min(options, key=lambda t: abs(np.log(t) - np.log(learned)))
    if st.session_state.get("temp_tau") not in options:
        st.session_state["temp_tau"] = snapped
    c1, c2 = st.columns([3, 2])
    tau = float(
        c1.select_slider(
            "Temperature τ",
            options=options,
            key="temp_tau",
            format_func=lambda t: f"{t:.4g}",
            help="Log-spaced. The learned τ of the checkpoint is one of the stops.",
        )
    )
    direction = "forward"
    if has_two_modalities(run):
        direction = c2.radio(
            "Query side",
            ["forward", "reverse"],
            key="temp_direction",
            format_func=lambda d: DIRECTION_NAMES[d],
            horizontal=True,
        )
    if st.session_state.get("temp_view") not in VIEWS:
        st.session_state["temp_view"] = VIEWS[0]
    view = st.segmented_control("View", VIEWS, key="temp_view", help="Only the chosen view is computed.")
    return tau, direction, view or VIEWS[0]


@st.fragment
def explorer(run: Run) -> None:
    """Controls and the chosen view (a fragment: the title and the explanation do not rerun)."""
    tau, direction, view = controls(run)
    learned, has_learned = learned_or_default_tau(run)
    try:
        with st.spinner("Computing the loss for 64 temperatures…"):
            fn_table = cached_fn_table(run, run.run_id, _review_key())
            sweep = cached_sweep(run, run.run_id, _review_key(), tuple(float(t) for t in GRID))
    except NegScopeError as exc:
        st.error(f"The temperature sweep failed: {escape_text(exc)}")
        return
    if sweep["n_pairs"].max() == 0:
        st.warning("No pair of this run has a negative candidate: InfoNCE is not defined. Add negatives to the data.")
        return
    if view == VIEWS[0]:
        section_curve(run, sweep, learned, has_learned, tau)
    elif view == VIEWS[1]:
        section_weights(run, direction, tau, fn_table)
    elif view == VIEWS[2]:
        section_variants(run, direction, tau)
    else:
        section_geometry(run)


def main() -> None:
    """Title, the folded explanation, then the data."""
    st.title("Temperature and loss")
    explain()
    run = require_run()
    explorer(run)
    try:
        st.page_link(TEACHING_PAGE, label="Teaching: InfoNCE on the unit circle, with its own τ", icon="🎓")
    except StreamlitAPIException:  # the page runs on its own (AppTest): no page registry
        st.caption("Teaching mode: the Teaching page.")


main()
