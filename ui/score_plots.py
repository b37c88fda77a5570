"""Plotly figures of the score distributions page (pre-binned, so large runs send small figures).

Every figure has a title, labelled axes and a legend; overlaid histograms are semi-transparent and share
their bin edges so the bars line up.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

POSITIVE_COLOR = "#2ca02c"
SOURCE_COLORS = {"given": "#d62728", "in_batch": "#1f77b4", "mined": "#ff7f0e"}
NEUTRAL_COLOR = "#7f7f7f"


def bin_edges(values: Sequence[np.ndarray], *, bins: int) -> np.ndarray:
    """(bins + 1,) shared edges spanning every finite value of every array (a unit range when empty)."""
    finite = [v[np.isfinite(v)] for v in (np.asarray(x, dtype=np.float64) for x in values)]
    finite = [v for v in finite if len(v)]
    lo = min((float(v.min()) for v in finite), default=0.0)
    hi = max((float(v.max()) for v in finite), default=1.0)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    pad = (hi - lo) * 1e-6
    return np.linspace(lo - pad, hi + pad, int(bins) + 1)


def hist_trace(
    values: np.ndarray,
    edges: np.ndarray,
    *,
    name: str,
    color: str,
    density: bool,
    opacity: float = 0.55,
) -> go.Bar:
    """One pre-binned histogram as a bar trace; hover shows the bin and its count."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    counts, _ = np.histogram(values, bins=edges)
    width = np.diff(edges)
    y = counts / max(len(values), 1) / width if density else counts
    return go.Bar(
        x=edges[:-1] + width / 2,
        y=y,
        width=width,
        name=f"{name} (n={len(values):,})",
        marker={"color": color, "line": {"width": 0}},
        opacity=opacity,
        customdata=np.stack([edges[:-1], edges[1:], counts], axis=1),
        hovertemplate="%{customdata[0]:.3f} to %{customdata[1]:.3f}<br>count %{customdata[2]:,}<br>"
        + ("density %{y:.3f}" if density else "")
        + f"<extra>{name}</extra>",
    )


def _layout(fig: go.Figure, *, title: str, xaxis: str, yaxis: str, legend_title: str = "") -> go.Figure:
    fig.update_layout(
        title={"text": title},
        xaxis_title=xaxis,
        yaxis_title=yaxis,
        barmode="overlay",
        bargap=0,
        legend={"title": {"text": legend_title}, "orientation": "h", "yanchor": "bottom", "y": 1.0, "x": 0},
        margin={"t": 90, "l": 60, "r": 20, "b": 50},
        height=380,
    )
    return fig


def similarity_figure(
    pos_sim: np.ndarray,
    neg_sim_by_source: dict[str, np.ndarray],
    *,
    bins: int = 60,
    density: bool = True,
) -> go.Figure:
    """Overlaid histograms of ``pos_sim`` and of ``neg_sim`` for each negative source."""
    edges = bin_edges([pos_sim, *neg_sim_by_source.values()], bins=bins)
    fig = go.Figure([hist_trace(pos_sim, edges, name="positives", color=POSITIVE_COLOR, density=density)])
    for source, values in neg_sim_by_source.items():
        color = SOURCE_COLORS.get(source, NEUTRAL_COLOR)
        fig.add_trace(hist_trace(values, edges, name=f"negatives · {source}", color=color, density=density))
    return _layout(
        fig,
        title="Cosine similarity to the anchor: positives vs listed negatives",
        xaxis="cosine similarity to the anchor",
        yaxis="density" if density else "count",
        legend_title="pairs",
    )


def hardest_figure(pos_sim: np.ndarray, hardest_neg: np.ndarray, *, bins: int = 60, density: bool = True) -> go.Figure:
    """Each pair's positive against its hardest listed negative."""
    edges = bin_edges([pos_sim, hardest_neg], bins=bins)
    fig = go.Figure(
        [
            hist_trace(pos_sim, edges, name="positive", color=POSITIVE_COLOR, density=density),
            hist_trace(hardest_neg, edges, name="hardest negative", color=SOURCE_COLORS["given"], density=density),
        ]
    )
    return _layout(
        fig,
        title="Per pair: the positive vs the hardest listed negative",
        xaxis="cosine similarity to the anchor",
        yaxis="density" if density else "count",
    )


def margin_figure(margin: np.ndarray, *, bins: int = 60) -> go.Figure:
    """Histogram of ``margin = pos_sim - hardest_neg`` with the zero line (left of it: a negative wins)."""
    margin = np.asarray(margin, dtype=np.float64)
    finite = margin[np.isfinite(margin)]
    edges = bin_edges([finite, np.array([0.0])], bins=bins)
    below = edges[:-1] < 0
    counts, _ = np.histogram(finite, bins=edges)
    width = np.diff(edges)
    fig = go.Figure()
    for mask, name, color in (
        (below, "margin < 0 (a negative beats the positive)", SOURCE_COLORS["given"]),
        (~below, "margin ≥ 0", POSITIVE_COLOR),
    ):
        fig.add_trace(
            go.Bar(
                x=(edges[:-1] + width / 2)[mask],
                y=counts[mask],
                width=width[mask],
                name=name,
                marker={"color": color, "line": {"width": 0}},
                opacity=0.75,
                hovertemplate="margin ≈ %{x:.3f}<br>%{y:,} pairs<extra></extra>",
            )
        )
    fig.add_vline(x=0.0, line={"color": "black", "dash": "dash", "width": 1})
    share = float(np.mean(finite < 0)) if len(finite) else 0.0
    return _layout(
        fig,
        title=f"Margin = pos_sim − hardest_neg ({share:.1%} of pairs below 0)",
        xaxis="margin",
        yaxis="pairs",
    )


def recall_figure(curves: dict[str, np.ndarray]) -> go.Figure:
    """recall@k for k = 1 .. len(curve), one line per direction."""
    fig = go.Figure()
    colors = ["#1f77b4", "#ff7f0e"]
    for i, (name, curve) in enumerate(curves.items()):
        k = np.arange(1, len(curve) + 1)
        fig.add_trace(
            go.Scatter(
                x=k,
                y=curve,
                mode="lines+markers",
                name=name,
                line={"color": colors[i % 2]},
                marker={"size": 4},
                hovertemplate="k=%{x}: recall %{y:.3f}<extra>" + name + "</extra>",
            )
        )
    fig.update_layout(
        title={"text": "Retrieval: recall@k over all items of the target's modality"},
        xaxis_title="k (cut-off rank)",
        yaxis_title="recall@k",
        yaxis_range=[0, 1.02],
        legend={"title": {"text": "direction"}, "orientation": "h", "yanchor": "bottom", "y": 1.0, "x": 0},
        margin={"t": 90, "l": 60, "r": 20, "b": 50},
        height=340,
    )
    return fig


def filter_figure(
    pos_sim: np.ndarray,
    neg_before: np.ndarray,
    neg_after: np.ndarray,
    *,
    bins: int = 60,
    max_score: float | None = None,
) -> go.Figure:
    """Listed negatives before and after the mining filter (counts), with the positives for reference."""
    edges = bin_edges([pos_sim, neg_before], bins=bins)
    fig = go.Figure(
        [
            hist_trace(neg_before, edges, name="negatives before", color=NEUTRAL_COLOR, density=False, opacity=0.45),
            hist_trace(neg_after, edges, name="negatives kept", color=SOURCE_COLORS["in_batch"], density=False),
            hist_trace(pos_sim, edges, name="positives", color=POSITIVE_COLOR, density=False, opacity=0.35),
        ]
    )
    if max_score is not None:
        fig.add_vline(x=max_score, line={"color": "black", "dash": "dot", "width": 1})
    return _layout(
        fig,
        title="Mining filter: listed negatives before and after",
        xaxis="cosine similarity to the anchor",
        yaxis="count",
    )
