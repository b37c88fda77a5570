"""Plotly figures of the Compare page: run-vs-run scatters (WebGL) and metric trajectories along training.

Every figure has a title, labelled axes and a legend. Scatter points carry the reference pair row as
``customdata`` so a click is read back by id, never by point index. Run labels, ids and texts go into
hover text through plotly's own escaping of ``customdata`` values only (never into HTML templates).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ui.safe_text import escape_text

WORSE_COLOR = "#d62728"
BETTER_COLOR = "#2ca02c"
SAME_COLOR = "#7f7f7f"
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")
MAX_POINTS = 30_000

#: (panel title, y-axis title, [(metric key, legend name)]) of the trajectory grid.
TRAJECTORY_PANELS: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...] = (
    (
        "Retrieval, anchor → positive",
        "value",
        (("recall_at_1", "recall@1"), ("recall_at_5", "recall@5"), ("recall_at_10", "recall@10"),
         ("mrr_at_10", "MRR@10")),
    ),
    (
        "Retrieval, positive → anchor",
        "value",
        (("reverse_recall_at_1", "recall@1"), ("reverse_recall_at_5", "recall@5"),
         ("reverse_recall_at_10", "recall@10"), ("reverse_mrr_at_10", "MRR@10")),
    ),
    ("Positives vs negatives", "value", (("auroc", "AUROC"), ("frac_hardest_neg_above_pos", "hardest neg > pos"))),
    ("InfoNCE loss", "mean loss", (("loss_own_tau", "at own τ"), ("loss_common_tau", "at common τ"))),
    ("Learned temperature", "τ", (("tau", "τ"),)),
    ("Modality gap", "value", (("gap", "centroid distance"), ("gap_variance_share", "variance share along gap"))),
    ("Alignment (lower = positives closer)", "alignment", (("alignment", "alignment"),)),
    ("Uniformity (lower = more spread)", "uniformity", (("uniformity", "uniformity"),)),
    ("Detector flags", "flagged", (("fn_flagged", "false negatives"), ("label_noise_flagged", "label noise"))),
)  # fmt: skip


def trajectory_figure(metrics: pd.DataFrame, *, title: str = "Metrics along the runs") -> go.Figure:
    """One small line chart per metric group, the runs in order on the x axis.

    Parameters
    ----------
    metrics : pandas.DataFrame
        One row per run (index: labels, in order) with the metric columns of
        :data:`analysis.compare.deltas.METRIC_KEYS`; panels whose metrics are all missing are left out.
    title : str
        Figure title.
    """
    panels = [
        p for p in TRAJECTORY_PANELS if any(pd.to_numeric(metrics[k], errors="coerce").notna().any() for k, _ in p[2])
    ]
    cols = 3
    rows = max(1, -(-len(panels) // cols))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[p[0] for p in panels], vertical_spacing=0.12)
    x = [escape_text(str(v), plot=True) for v in metrics.index]
    for i, (_, y_title, series) in enumerate(panels):
        r, c = i // cols + 1, i % cols + 1
        for j, (key, name) in enumerate(series):
            y = pd.to_numeric(metrics[key], errors="coerce").to_numpy(dtype=np.float64)
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=y,
                    mode="lines+markers",
                    name=name,
                    legendgroup=f"p{i}",
                    legendgrouptitle_text=panels[i][0] if j == 0 else None,
                    line={"color": PALETTE[j % len(PALETTE)]},
                    hovertemplate=f"{name}: %{{y:.4f}}<extra>%{{x}}</extra>",
                ),
                row=r,
                col=c,
            )
        fig.update_yaxes(title_text=y_title, row=r, col=c)
        fig.update_xaxes(title_text="run", type="category", row=r, col=c)
    fig.update_layout(title=title, height=300 * rows, legend={"groupclick": "toggleitem"}, margin={"t": 80})
    return fig


def sample_rows(n: int, *, max_points: int = MAX_POINTS, seed: int = 0) -> np.ndarray:
    """Rows to draw: all of them up to ``max_points``, else a seeded random subset (sorted)."""
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


def pair_scatter(
    before: np.ndarray,
    after: np.ndarray,
    rows: np.ndarray,
    pair_ids: Sequence[object],
    *,
    metric: str,
    labels: tuple[str, str],
    selected: int | None = None,
) -> go.Figure:
    """WebGL scatter of one per-pair metric in run A (x) against run B (y), with the diagonal.

    Points below the diagonal got worse (red), above it better (green). ``customdata`` holds the reference
    pair row and the pair id, read back by the page on a click.

    Parameters
    ----------
    before, after : numpy.ndarray
        (P,) the metric in run A and run B, reference pair order.
    rows : numpy.ndarray
        Which pair rows to draw (see :func:`sample_rows`).
    pair_ids : sequence
        (P,) pair ids (hover text).
    metric : str
        Axis name (``pos_sim`` or ``margin``).
    labels : (str, str)
        The two run labels.
    selected : int, optional
        A pair row to ring.
    """
    a, b = (escape_text(str(v), plot=True) for v in labels)
    x = np.asarray(before, dtype=np.float64)[rows]
    y = np.asarray(after, dtype=np.float64)[rows]
    ok = np.isfinite(x) & np.isfinite(y)
    rows, x, y = rows[ok], x[ok], y[ok]
    ids = np.asarray([escape_text(str(v), plot=True) for v in np.asarray(pair_ids, dtype=object)[rows]], dtype=object)
    fig = go.Figure()
    for name, mask, color in (
        (f"worse in {b}", y < x, WORSE_COLOR),
        (f"better in {b}", y > x, BETTER_COLOR),
        ("unchanged", y == x, SAME_COLOR),
    ):
        if not mask.any():
            continue
        fig.add_trace(
            go.Scattergl(
                x=x[mask],
                y=y[mask],
                mode="markers",
                name=f"{name} ({int(mask.sum()):,})",
                marker={"size": 5, "color": color, "opacity": 0.6},
                customdata=np.stack([rows[mask], ids[mask]], axis=1),
                hovertemplate=(
                    "pair %{customdata[1]}<br>" + f"{metric} A %{{x:.3f}}<br>{metric} B %{{y:.3f}}<extra></extra>"
                ),
            )
        )
    if len(x):
        lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
        fig.add_trace(
            go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="no change", line={"color": "black", "dash": "dot"})
        )
    if selected is not None and selected in set(rows.tolist()):
        k = int(np.flatnonzero(rows == selected)[0])
        fig.add_trace(
            go.Scatter(
                x=[x[k]],
                y=[y[k]],
                mode="markers",
                name="selected pair",
                marker={"size": 16, "color": "rgba(0,0,0,0)", "line": {"color": "black", "width": 2}},
                hoverinfo="skip",
            )
        )
    fig.update_layout(
        title=f"{metric} per pair: run {a} (x) against run {b} (y)",
        xaxis_title=f"{metric} in {a}",
        yaxis_title=f"{metric} in {b}",
        height=520,
        clickmode="event+select",
        dragmode="select",
    )
    return fig


def delta_histogram(
    values: np.ndarray, *, name: str, title: str, higher_is_better: bool = True, bins: int = 60
) -> go.Figure:
    """Histogram of per-pair (or per-negative) changes, the zero line marked, bars coloured better / worse."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    fig = go.Figure()
    if len(v):
        counts, edges = np.histogram(v, bins=bins)
        centres = (edges[:-1] + edges[1:]) / 2
        colors = [BETTER_COLOR if (c > 0) == higher_is_better else WORSE_COLOR for c in centres]
        fig.add_trace(
            go.Bar(
                x=centres,
                y=counts,
                width=np.diff(edges),
                marker={"color": colors},
                name=name,
                hovertemplate="%{x:.3f}: %{y} <extra></extra>",
            )
        )
    fig.add_vline(x=0.0, line={"color": "black", "dash": "dot"})
    fig.update_layout(
        title=escape_text(title, plot=True), xaxis_title=escape_text(name, plot=True), yaxis_title="count", height=320, showlegend=False
    )
    return fig
