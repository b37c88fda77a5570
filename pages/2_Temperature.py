"""Temperature and loss explorer: InfoNCE against tau, which negatives take the gradient, alignment/uniformity."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from analysis.errors import NegScopeError
from analysis.metrics.geometry import GeometryReport, geometry_report, random_reference
from analysis.metrics.modality_gap import closing_lambda, modality_groups, shift_embeddings
from analysis.metrics.teaching import random_angles, toy_state, toy_tau_curve
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
from ui.render import show_item
from ui.state import require_run

st.set_page_config(page_title="Temperature · NegScope", page_icon="🌡️", layout="wide")

GRID = tau_grid(0.005, 1.0, 64)
TOY_TAUS = tuple(float(t) for t in np.round(np.geomspace(0.01, 5.0, 41), 4))
DIRECTION_NAMES = {
    "forward": "anchor → candidates",
    "reverse": "positive → anchors",
    "symmetric": "symmetric (mean)",
}

for key, value in {
    "temp_direction": "forward",
    "temp_pair_rank": 1,
    "temp_pair_id": "",
    "temp_tau_plus": 0.1,
    "temp_beta": 1.0,
    "temp_toy_mode": "Random",
    "temp_toy_n": 4,
    "temp_toy_seed": 0,
    "temp_toy_tau": min(TOY_TAUS, key=lambda t: abs(np.log(t / 0.1))),
    "temp_toy_arrows": "Forces on the anchor",
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
    return false_negative_table(_run)


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
        lam = closing_lambda(_run.embeddings, groups, gap)
        closed = geometry_report(_run, embeddings=shift_embeddings(_run.embeddings, groups, gap, lam))
    return geometry_report(_run), random_reference(_run.dim), closed


@st.cache_data(max_entries=32, show_spinner=False)
def cached_toy(anchor: float, positive: float, negatives: tuple[float, ...], tau: float):
    """The unit-circle toy at one tau and its weights against tau."""
    return toy_state(anchor, positive, list(negatives), tau), toy_tau_curve(
        anchor, positive, list(negatives), np.array(TOY_TAUS)
    )


# ------------------------------------------------------------------------------------------------ explanation


def explain() -> None:
    """What am I looking at."""
    st.title("Temperature and loss")
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
        "A small $\\tau$ makes the loss **hardness-aware** (Wang & Liu 2021): almost all of the gradient goes to "
        "the hardest negatives, which helps until those are really positives (false negatives). A large "
        "$\\tau$ spreads the gradient evenly over all negatives."
    )


def show_direction_note(run: Run) -> None:
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

TAU_TICKS = [0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0]


def log_tau_axis(fig: go.Figure, **kwargs) -> None:
    """A log-scale tau axis with readable ticks (0.01, 0.02, 0.05, ...)."""
    fig.update_xaxes(type="log", tickvals=TAU_TICKS, ticktext=[f"{t:g}" for t in TAU_TICKS], **kwargs)


def tau_options(learned: float) -> list[float]:
    values = {float(f"{t:.4g}") for t in GRID}
    values.add(float(f"{learned:.4g}"))
    return sorted(values)


def loss_curve(sweep: pd.DataFrame, learned: float, has_learned: bool, tau: float) -> go.Figure:
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("Mean InfoNCE loss", "Where the repulsive gradient goes"),
        horizontal_spacing=0.1,
    )
    colors = {"forward": "#1f77b4", "reverse": "#ff7f0e", "symmetric": "#2ca02c"}
    for direction, part in sweep.groupby("direction", sort=False):
        fig.add_trace(
            go.Scatter(
                x=part["tau"],
                y=part["loss"],
                mode="lines",
                name=f"loss, {DIRECTION_NAMES[direction]}",
                line={"color": colors[direction]},
                hovertemplate="τ=%{x:.4g}<br>loss=%{y:.4f}<extra></extra>",
            ),
            row=1,
            col=1,
        )
    fwd = sweep[sweep["direction"] == "forward"]
    for col, name, dash in (
        ("top1_weight", "share on the hardest negative", "solid"),
        ("top5_weight", "share on the 5 hardest", "dash"),
        ("false_negative_weight", "share on false negatives", "dot"),
    ):
        if fwd[col].notna().any():
            fig.add_trace(
                go.Scatter(
                    x=fwd["tau"],
                    y=fwd[col],
                    mode="lines",
                    name=name,
                    line={"dash": dash, "color": "#d62728" if col == "false_negative_weight" else "#9467bd"},
                    hovertemplate="τ=%{x:.4g}<br>%{y:.3f}<extra></extra>",
                ),
                row=1,
                col=2,
            )
    for col in (1, 2):
        if has_learned:
            fig.add_vline(x=learned, line_dash="dash", line_color="black", row=1, col=col)
        fig.add_vline(x=tau, line_dash="dot", line_color="#7f7f7f", row=1, col=col)
    if has_learned:
        fig.add_annotation(
            x=np.log10(learned),
            y=0.0,
            xref="x",
            yref="paper",
            text=f" learned τ = {learned:.4g}",
            showarrow=False,
            xanchor="left",
            yanchor="bottom",
            font={"size": 11},
        )
    log_tau_axis(fig, title_text="temperature τ (log scale)")
    fig.update_yaxes(title_text="loss", row=1, col=1)
    fig.update_yaxes(title_text="mean share of the repulsive gradient", range=[0, 1.02], row=1, col=2)
    fig.update_layout(height=420, legend={"orientation": "h", "y": -0.25}, margin={"t": 50})
    return fig


def effective_curve(sweep: pd.DataFrame, tau: float, mean_k: float) -> go.Figure:
    fwd = sweep[sweep["direction"] == "forward"]
    fig = go.Figure(
        go.Scatter(
            x=fwd["tau"],
            y=fwd["effective_negatives"],
            mode="lines",
            name="effective negatives",
            hovertemplate="τ=%{x:.4g}<br>N_eff=%{y:.2f}<extra></extra>",
        )
    )
    fig.add_hline(y=mean_k, line_dash="dash", annotation_text=f"mean K = {mean_k:.1f}", line_color="gray")
    fig.add_vline(x=tau, line_dash="dot", line_color="#7f7f7f")
    log_tau_axis(fig, title_text="temperature τ (log scale)")
    fig.update_yaxes(title_text="effective negatives (mean)", rangemode="tozero")
    fig.update_layout(height=320, margin={"t": 30}, title="Effective number of negatives against τ")
    return fig


def section_curve(run: Run, sweep: pd.DataFrame, learned: float, has_learned: bool, tau: float) -> None:
    st.subheader("Loss against the temperature")
    show_direction_note(run)
    if not has_learned:
        st.info(f"This checkpoint records no learned temperature; τ = {learned} (CLIP's initial value) is used.")
    st.plotly_chart(loss_curve(sweep, learned, has_learned, tau), width="stretch")
    mean_k = float(cached_inputs_for(run, "forward").n_negatives.mean())
    st.plotly_chart(effective_curve(sweep, tau, mean_k), width="stretch")


def cached_inputs_for(run: Run, direction: str) -> LossInputs:
    return cached_inputs(run, run.run_id, _review_key(), direction)


def section_weights(run: Run, direction: str, tau: float, fn_table: pd.DataFrame) -> None:
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
    ranks = weight_by_rank(stats).head(32)
    fig = go.Figure(
        go.Bar(
            x=ranks["rank"],
            y=ranks["mean_weight"],
            name="mean share",
            hovertemplate="rank %{x}<br>mean share %{y:.3f}<extra></extra>",
        )
    )
    fig.add_trace(go.Scatter(x=ranks["rank"], y=ranks["cumulative"], mode="lines+markers", name="cumulative"))
    fig.update_layout(
        title="Share of the repulsive gradient by hardness rank",
        xaxis_title="negative's rank by similarity (1 = hardest)",
        yaxis_title="share",
        yaxis_range=[0, 1.02],
        height=360,
        legend={"orientation": "h", "y": -0.3},
    )
    left.plotly_chart(fig, width="stretch")
    w = stats.weights[~np.isnan(stats.weights)]
    hist = go.Figure(go.Histogram(x=np.log10(np.clip(w, 1e-8, 1.0)), nbinsx=50))
    hist.update_layout(
        title="Distribution of the per-negative shares (all pairs)",
        xaxis_title="log₁₀ share of the repulsive gradient",
        yaxis_title="negatives",
        height=360,
    )
    right.plotly_chart(hist, width="stretch")
    section_pair(run, inputs, stats, table)


def section_pair(run: Run, inputs: LossInputs, stats: PairStats, table: pd.DataFrame) -> None:
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
            st.warning(f"No pair has id {typed!r}; showing rank {rank}.")
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
    colors = np.where(negs["false_negative"], "#d62728", "#1f77b4")
    bar = go.Figure(
        go.Bar(
            x=np.arange(1, len(negs) + 1),
            y=negs["weight"],
            marker_color=colors,
            customdata=np.stack([negs["item_id"], negs["sim"]], axis=1),
            hovertemplate="item %{customdata[0]}<br>sim %{customdata[1]:.3f}<br>share %{y:.3f}<extra></extra>",
        )
    )
    bar.update_layout(
        title="This pair's negatives by share of the repulsive gradient (red: known or decided false negative)",
        xaxis_title="negative (heaviest first)",
        yaxis_title="share",
        height=300,
    )
    st.plotly_chart(bar, width="stretch")
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


def section_variants(run: Run, direction: str, tau: float) -> None:
    st.subheader("Loss variants on the same data")
    st.markdown(
        "**Debiased** contrastive loss (Chuang et al. 2020) corrects the negatives' sum for the chance $\\tau^+$ "
        "that a random negative shares the anchor's class; **hardness-weighted** negatives (Robinson et al. 2021) "
        "re-weight each negative by $e^{\\beta s_j/\\tau}$; with both you get their HCL loss. **False negatives "
        "removed** drops known or decided false negatives from the denominator."
    )
    st.latex(
        r"N_g = \max\!\Big(\frac{\sum_j \omega_j e^{s_j/\tau} - \tau^{+} N e^{s_+/\tau}}{1-\tau^{+}},"
        r"\; N e^{-1/\tau}\Big),\quad \omega_j = \frac{N e^{\beta s_j/\tau}}{\sum_k e^{\beta s_k/\tau}},\quad"
        r"\mathcal{L} = -\log\frac{e^{s_+/\tau}}{e^{s_+/\tau} + N_g}"
    )
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
    fig = go.Figure()
    for variant, part in table.groupby("variant", sort=False):
        fig.add_trace(go.Scatter(x=part["tau"], y=part["loss"], mode="lines+markers", name=VARIANT_LABELS[variant]))
    fig.add_vline(x=tau, line_dash="dot", line_color="#7f7f7f")
    log_tau_axis(fig, title_text="temperature τ (log scale)")
    fig.update_yaxes(title_text="mean loss")
    fig.update_layout(height=380, legend={"orientation": "h", "y": -0.3})
    st.plotly_chart(fig, width="stretch")
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
    st.subheader("Alignment and uniformity (Wang & Isola 2020)")
    st.latex(
        r"\mathcal{L}_\text{align} = \mathbb{E}_{(x,y)\,\text{pos}} \lVert f(x)-f(y)\rVert^2,\qquad"
        r"\mathcal{L}_\text{uniform} = \log \mathbb{E}_{x,y} e^{-2\lVert f(x)-f(y)\rVert^2},\qquad "
        r"T = \mathbb{E}_{\text{same label}}\, f(x)^\top f(y)"
    )
    st.markdown(
        "Lower is better on both axes: positives close together (alignment) while all embeddings spread over the "
        "sphere (uniformity). Random embeddings sit at alignment 2; collapsed ones at uniformity 0. "
        "Tolerance (Wang & Liu 2021) is how close the model keeps items of the same class. For two modalities, "
        "the orange point is this checkpoint with its modality gap closed (see the Modality gap page)."
    )
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
    fig = go.Figure()
    for name, color, size, where in (
        ("this checkpoint", "#d62728", 16, "bottom center"),
        (f"random unit vectors (D = {run.dim})", "#7f7f7f", 11, "top right"),
        ("everything collapsed", "#1f77b4", 11, "top left"),
        ("modality gap closed", "#ff7f0e", 11, "top center"),
    ):
        part = points[points["point"] == name]
        fig.add_trace(
            go.Scatter(
                x=part["uniformity"],
                y=part["alignment"],
                mode="markers+text",
                text=part["point"],
                textposition=where,
                marker={"size": size, "color": color},
                name=name,
                hovertemplate="uniformity %{x:.3f}<br>alignment %{y:.3f}<extra></extra>",
            )
        )
    fig.update_layout(
        title="The alignment/uniformity plane (lower-left is better)",
        xaxis_range=[min(-4.2, float(points["uniformity"].min()) - 0.3), 0.4],
        yaxis_range=[-0.2, max(2.3, float(points["alignment"].max()) + 0.3)],
        xaxis_title="uniformity (log E exp(−2‖x−y‖²))",
        yaxis_title="alignment (E‖x−y‖², positive pairs)",
        height=440,
        showlegend=False,
    )
    st.plotly_chart(fig, width="stretch")


def _toy_layout() -> tuple[float, float, list[float]]:
    c1, c2, c3 = st.columns(3)
    mode = c1.radio("Points", ["Random", "Place by angles"], key="temp_toy_mode", horizontal=True)
    n = int(c2.slider("Negatives", 1, 8, key="temp_toy_n"))
    seed = int(c3.number_input("Random seed", min_value=0, max_value=10_000, step=1, key="temp_toy_seed"))
    anchor, positive, negatives = random_angles(n, seed=seed)
    if mode == "Random":
        return anchor, positive, negatives
    st.caption("Angles in degrees on the unit circle (0 = right, 90 = up).")
    cols = st.columns(min(n + 2, 5))
    defaults = [("temp_toy_anchor", anchor), ("temp_toy_positive", positive)] + [
        (f"temp_toy_neg_{i}", negatives[i]) for i in range(n)
    ]
    labels = ["anchor", "positive"] + [f"negative {i + 1}" for i in range(n)]
    values = []
    for i, ((key, default), label) in enumerate(zip(defaults, labels, strict=True)):
        st.session_state.setdefault(key, float(default))
        values.append(float(cols[i % len(cols)].number_input(label, -360.0, 720.0, step=5.0, key=key)))
    return values[0], values[1], values[2:]


def toy_figure(table: pd.DataFrame, arrows: str) -> go.Figure:
    theta = np.linspace(0, 2 * np.pi, 361)
    fig = go.Figure(
        go.Scatter(
            x=np.cos(theta),
            y=np.sin(theta),
            mode="lines",
            line={"color": "#cccccc"},
            hoverinfo="skip",
            showlegend=False,
        )
    )
    colors = {"anchor": "#2ca02c", "positive": "#1f77b4", "negative": "#d62728"}
    for role, part in table.groupby("role", sort=False):
        fig.add_trace(
            go.Scatter(
                x=part["x"],
                y=part["y"],
                mode="markers",
                marker={"size": 14, "color": colors[role], "line": {"color": "white", "width": 1}},
                name=role,
                text=part["name"],
                customdata=np.stack([part["angle_deg"], part["sim"], part["p"], part["weight"]], axis=1),
                hovertemplate="%{text}<br>angle %{customdata[0]:.1f}°<br>sim %{customdata[1]:.3f}"
                "<br>softmax p %{customdata[2]:.3g}<br>share of push %{customdata[3]:.3g}<extra></extra>",
            )
        )
    # labels outside the circle, along each point's angle, so that close points stay readable
    rad = np.deg2rad(table["angle_deg"].to_numpy(dtype=float))
    short = [
        name if role != "negative" else f"n{name.split()[-1]} · {w:.2f}"
        for name, role, w in zip(table["name"], table["role"], table["weight"], strict=True)
    ]
    fig.add_trace(
        go.Scatter(
            x=1.28 * np.cos(rad),
            y=1.28 * np.sin(rad),
            mode="text",
            text=short,
            hoverinfo="skip",
            showlegend=False,
            textfont={"size": 12},
        )
    )
    if arrows == "Forces on the anchor":
        anchor = table.iloc[0]
        vecs = table.iloc[1:][["force_x", "force_y"]].to_numpy()
        starts = np.repeat(anchor[["x", "y"]].to_numpy(dtype=float)[None], len(vecs), axis=0)
        roles = table.iloc[1:]["role"].tolist()
        vecs = np.vstack([vecs, table.iloc[[0]][["force_x", "force_y"]].to_numpy()])
        starts = np.vstack([starts, anchor[["x", "y"]].to_numpy(dtype=float)[None]])
        roles.append("anchor")
    else:
        vecs = table[["step_x", "step_y"]].to_numpy()
        starts = table[["x", "y"]].to_numpy()
        roles = table["role"].tolist()
    scale = 0.7 / max(float(np.linalg.norm(vecs, axis=1).max()), 1e-12)
    for (x0, y0), (dx, dy), role in zip(starts, vecs, roles, strict=True):
        if np.hypot(dx, dy) * scale < 1e-3:
            continue
        fig.add_annotation(
            x=x0 + dx * scale,
            y=y0 + dy * scale,
            ax=x0,
            ay=y0,
            xref="x",
            yref="y",
            axref="x",
            ayref="y",
            showarrow=True,
            arrowhead=3,
            arrowwidth=3.5 if role == "anchor" else 2,
            arrowcolor=colors[role],
            text="",
        )
    fig.update_xaxes(range=[-1.6, 1.6], zeroline=False, showgrid=False, visible=False)
    fig.update_yaxes(range=[-1.6, 1.6], zeroline=False, showgrid=False, visible=False, scaleanchor="x", scaleratio=1)
    fig.update_layout(height=520, margin={"l": 0, "r": 0, "t": 10, "b": 0}, legend={"orientation": "h", "y": -0.02})
    return fig


def section_teaching() -> None:
    st.subheader("Teaching mode: InfoNCE on the unit circle")
    st.markdown(
        "No model needed: an **anchor**, its **positive** and a few **negatives** are points on a circle, the "
        "similarity is the cosine of the angle between them. Move the temperature and watch the negatives' shares "
        "of the gradient: at small τ the closest negative takes almost all of it."
    )
    st.latex(
        r"-\frac{\partial \mathcal{L}}{\partial a} = \underbrace{\frac{1-p_+}{\tau}\, c_+}_{\text{pull}}"
        r"\;-\; \sum_j \underbrace{\frac{p_j}{\tau}\, c_j}_{\text{push}}"
    )
    anchor, positive, negatives = _toy_layout()
    c1, c2 = st.columns(2)
    tau = float(c1.select_slider("Toy temperature τ", options=TOY_TAUS, key="temp_toy_tau", format_func=str))
    arrows = c2.radio(
        "Arrows show",
        ["Forces on the anchor", "Gradient step of every point"],
        key="temp_toy_arrows",
        horizontal=True,
        help="Forces: the positive's pull and each negative's push on the anchor (thick: their sum). Steps: "
        "−∂L/∂x of every point, projected onto the circle.",
    )
    try:
        res, curve = cached_toy(anchor, positive, tuple(negatives), tau)
    except NegScopeError as exc:
        st.error(str(exc))
        return
    left, right = st.columns([3, 2])
    left.plotly_chart(toy_figure(res.table, arrows), width="stretch")
    with right:
        m1, m2 = st.columns(2)
        m1.metric("Toy loss", f"{res.loss:.3f}")
        m2.metric("Toy effective negatives", f"{res.effective_negatives:.2f} of {len(negatives)}")
        neg = res.table[res.table["role"] == "negative"]
        fig = go.Figure(go.Bar(x=neg["name"], y=neg["weight"], marker_color="#d62728"))
        fig.update_layout(
            title="Share of the repulsive gradient", yaxis_range=[0, 1.02], height=260, margin={"t": 40, "b": 10}
        )
        st.plotly_chart(fig, width="stretch")
        fig = go.Figure()
        for name in [c for c in curve.columns if c.startswith("negative")]:
            fig.add_trace(go.Scatter(x=curve["tau"], y=curve[name], mode="lines", name=name))
        fig.add_vline(x=tau, line_dash="dot")
        log_tau_axis(fig, title_text="τ (log scale)")
        fig.update_layout(
            title="Shares against τ", yaxis_range=[0, 1.02], height=280, margin={"t": 40}, showlegend=False
        )
        st.plotly_chart(fig, width="stretch")
    shown = res.table[["name", "angle_deg", "sim", "p", "weight"]].rename(
        columns={"angle_deg": "angle (°)", "p": "softmax p", "weight": "share of push"}
    )
    st.dataframe(shown, hide_index=True, width="stretch")


# ------------------------------------------------------------------------------------------------ page


def main() -> None:
    explain()
    run = require_run()
    learned, has_learned = learned_or_default_tau(run)
    options = tau_options(learned)
    snapped = min(options, key=lambda t: abs(np.log(t) - np.log(learned)))
    if st.session_state.get("temp_tau") not in options:
        st.session_state["temp_tau"] = snapped
    two = has_two_modalities(run)
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
    if two:
        direction = c2.radio(
            "Query side",
            ["forward", "reverse"],
            key="temp_direction",
            format_func=lambda d: DIRECTION_NAMES[d],
            horizontal=True,
        )
    else:
        direction = "forward"
    try:
        with st.spinner("Computing the loss for 64 temperatures…"):
            fn_table = cached_fn_table(run, run.run_id, _review_key())
            sweep = cached_sweep(run, run.run_id, _review_key(), tuple(float(t) for t in GRID))
    except NegScopeError as exc:
        st.error(f"The temperature sweep failed: {exc}")
        st.stop()
    if sweep["n_pairs"].max() == 0:
        st.warning("No pair of this run has a negative candidate: InfoNCE is not defined. Add negatives to the data.")
        st.stop()
    tabs = st.tabs(["Loss vs τ", "Gradient at τ", "Loss variants", "Alignment & uniformity", "Teaching mode"])
    with tabs[0]:
        section_curve(run, sweep, learned, has_learned, tau)
    with tabs[1]:
        section_weights(run, direction, tau, fn_table)
    with tabs[2]:
        section_variants(run, direction, tau)
    with tabs[3]:
        section_geometry(run)
    with tabs[4]:
        section_teaching()


main()
