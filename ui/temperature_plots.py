"""Plotly figures of the temperature page: loss and gradient shares against tau, one pair, variants, geometry.

Legends sit beside or below their plot with room for the axis titles; tau axes are logarithmic with
readable ticks.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analysis.metrics.temperature import VARIANT_LABELS
from ui.teaching_plots import log_tau_axis

DIRECTION_NAMES = {
    "forward": "anchor → candidates",
    "reverse": "positive → anchors",
    "symmetric": "symmetric (mean)",
}


def loss_curve(sweep: pd.DataFrame, learned: float, has_learned: bool, tau: float) -> go.Figure:
    """Mean loss against tau per direction (left) and where the repulsive gradient goes (right)."""
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
    fig.update_layout(
        height=460,
        legend={"orientation": "h", "x": 0, "y": -0.22, "yanchor": "top"},
        margin={"t": 50, "b": 10},
    )
    return fig


def effective_curve(sweep: pd.DataFrame, tau: float, mean_k: float) -> go.Figure:
    """The mean effective number of negatives against tau, the mean K dashed."""
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


def rank_share_figure(ranks: pd.DataFrame) -> go.Figure:
    """Mean share of the repulsive gradient by hardness rank, and its cumulative sum.

    Parameters
    ----------
    ranks : pandas.DataFrame
        ``analysis.metrics.temperature.weight_by_rank``'s table: ``rank``, ``mean_weight``, ``cumulative``.
    """
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
        height=380,
        legend={"orientation": "h", "x": 1, "xanchor": "right", "y": 1.0, "yanchor": "bottom"},
        margin={"t": 70},
    )
    return fig


def share_histogram(weights: np.ndarray) -> go.Figure:
    """Histogram of log10 of every negative's share (all pairs)."""
    fig = go.Figure(go.Histogram(x=np.log10(np.clip(weights, 1e-8, 1.0)), nbinsx=50, name="negatives"))
    fig.update_layout(
        title="Distribution of the per-negative shares (all pairs)",
        xaxis_title="log₁₀ share of the repulsive gradient",
        yaxis_title="negatives",
        height=380,
        margin={"t": 70},
    )
    return fig


def pair_negatives_figure(negs: pd.DataFrame) -> go.Figure:
    """One pair's negatives by share of the repulsive gradient, false negatives in red."""
    colors = np.where(negs["false_negative"], "#d62728", "#1f77b4")
    fig = go.Figure(
        go.Bar(
            x=np.arange(1, len(negs) + 1),
            y=negs["weight"],
            marker_color=colors,
            customdata=np.stack([negs["item_id"], negs["sim"]], axis=1),
            hovertemplate="item %{customdata[0]}<br>sim %{customdata[1]:.3f}<br>share %{y:.3f}<extra></extra>",
        )
    )
    fig.update_layout(
        title="This pair's negatives by share of the repulsive gradient (red: known or decided false negative)",
        xaxis_title="negative (heaviest first)",
        yaxis_title="share",
        height=300,
    )
    return fig


def variants_figure(table: pd.DataFrame, tau: float) -> go.Figure:
    """Mean loss of every variant against tau; the legend on the right, clear of the axis title.

    Parameters
    ----------
    table : pandas.DataFrame
        Columns ``tau``, ``variant`` (a key of ``VARIANT_LABELS``), ``loss``.
    tau : float
        The chosen temperature (dotted).
    """
    fig = go.Figure()
    for variant, part in table.groupby("variant", sort=False):
        fig.add_trace(go.Scatter(x=part["tau"], y=part["loss"], mode="lines+markers", name=VARIANT_LABELS[variant]))
    fig.add_vline(x=tau, line_dash="dot", line_color="#7f7f7f")
    log_tau_axis(fig, title_text="temperature τ (log scale)")
    fig.update_yaxes(title_text="mean loss")
    fig.update_layout(
        height=400,
        legend={"orientation": "v", "x": 1.02, "xanchor": "left", "y": 1.0, "title": {"text": "variant"}},
        margin={"t": 30, "r": 10},
    )
    return fig


def geometry_figure(points: pd.DataFrame, dim: int) -> go.Figure:
    """The alignment/uniformity plane: this checkpoint, random vectors, collapse, and the gap closed.

    Parameters
    ----------
    points : pandas.DataFrame
        Columns ``point`` (name), ``uniformity``, ``alignment``; one row per point shown.
    dim : int
        D, named in the random reference's label.
    """
    fig = go.Figure()
    for name, color, size, where in (
        ("this checkpoint", "#d62728", 16, "bottom center"),
        (f"random unit vectors (D = {dim})", "#7f7f7f", 11, "top right"),
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
    return fig
