"""Plotly figures of the teaching page: InfoNCE on the unit circle, and each negative's share against tau.

Labels sit outside the circle along each point's angle and are spread apart when points are close, so
that no two labels overlap; every figure has a legend.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

ROLE_COLORS = {"anchor": "#2ca02c", "positive": "#1f77b4", "negative": "#d62728"}
TAU_TICKS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
#: Distinct colours for the negatives' curves (red shades would all look alike).
NEGATIVE_COLORS = ("#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#ff7f0e")
LABEL_RADIUS = 1.3
MIN_LABEL_GAP_DEG = 16.0


def log_tau_axis(fig: go.Figure, **kwargs: object) -> None:
    """A log-scale tau axis with readable ticks (0.01, 0.02, 0.05, ...)."""
    fig.update_xaxes(type="log", tickvals=list(TAU_TICKS), ticktext=[f"{t:g}" for t in TAU_TICKS], **kwargs)


def share_text(share: float) -> str:
    """A share for a label: a percentage from 1 %, scientific notation below (never a row of zeros)."""
    if not np.isfinite(share):
        return "–"
    return f"{share:.0%}" if share >= 0.01 else f"{share:.1e}"


def spread_angles(angles_deg: np.ndarray, *, min_gap: float = MIN_LABEL_GAP_DEG) -> np.ndarray:
    """Label angles close to ``angles_deg`` but at least ``min_gap`` degrees apart around the circle.

    Parameters
    ----------
    angles_deg : numpy.ndarray
        (n,) point angles in degrees (any range).
    min_gap : float
        Smallest angular distance between two labels (capped at 360 / n).

    Returns
    -------
    numpy.ndarray
        (n,) label angles in degrees, in the input order.
    """
    a = np.mod(np.asarray(angles_deg, dtype=np.float64), 360.0)
    n = len(a)
    if n < 2:
        return a
    gap = min(float(min_gap), 360.0 / n)
    order = np.argsort(a, kind="stable")
    # open the circle at the widest empty arc so that a cluster is never split across the cut
    sorted_a = a[order]
    gaps = np.diff(np.concatenate([sorted_a, [sorted_a[0] + 360.0]]))
    cut = (int(np.argmax(gaps)) + 1) % n
    order = np.roll(order, -cut)
    line = a[order].copy()
    line[line < line[0]] += 360.0
    out = line.copy()
    for _ in range(200):  # pairwise pushes until every neighbour is ``gap`` apart (converges in a few passes)
        moved = False
        for i in range(1, n):
            short = gap - (out[i] - out[i - 1])
            if short > 1e-9:
                out[i - 1] -= short / 2
                out[i] += short / 2
                moved = True
        if not moved:
            break
    result = np.empty(n)
    result[order] = out
    return np.mod(result, 360.0)


def toy_figure(table: pd.DataFrame, arrows: str) -> go.Figure:
    """The anchor, the positive and the negatives on the unit circle, with forces or gradient steps.

    Parameters
    ----------
    table : pandas.DataFrame
        The toy's table (``analysis.metrics.teaching.ToyResult.table``): one row per point.
    arrows : str
        "Forces on the anchor" or "Gradient step of every point".

    Returns
    -------
    plotly.graph_objects.Figure
    """
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
    for role, part in table.groupby("role", sort=False):
        fig.add_trace(
            go.Scatter(
                x=part["x"],
                y=part["y"],
                mode="markers",
                marker={"size": 14, "color": ROLE_COLORS[role], "line": {"color": "white", "width": 1}},
                name=role,
                text=part["name"],
                customdata=np.stack([part["angle_deg"], part["sim"], part["p"], part["weight"]], axis=1),
                hovertemplate="%{text}<br>angle %{customdata[0]:.1f}°<br>sim %{customdata[1]:.3f}"
                "<br>softmax p %{customdata[2]:.3e}<br>share of push %{customdata[3]:.3e}<extra></extra>",
            )
        )
    label_deg = spread_angles(table["angle_deg"].to_numpy(dtype=float))
    rad = np.deg2rad(label_deg)
    short = [
        {"anchor": "anchor", "positive": "positive"}.get(role, f"n{name.split()[-1]} {share_text(w)}")
        for name, role, w in zip(table["name"], table["role"], table["weight"], strict=True)
    ]
    # a thin leader from each point to its label when the label had to move
    for (x, y), (lx, ly) in zip(
        table[["x", "y"]].to_numpy(dtype=float),
        np.column_stack([np.cos(rad), np.sin(rad)]) * (LABEL_RADIUS - 0.12),
        strict=True,
    ):
        fig.add_shape(type="line", x0=x, y0=y, x1=lx, y1=ly, line={"color": "#bbbbbb", "width": 1})
    fig.add_trace(
        go.Scatter(
            x=LABEL_RADIUS * np.cos(rad),
            y=LABEL_RADIUS * np.sin(rad),
            mode="text",
            text=short,
            hoverinfo="skip",
            showlegend=False,
            textfont={"size": 13},
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
            arrowcolor=ROLE_COLORS[role],
            text="",
        )
    fig.update_xaxes(range=[-1.65, 1.65], zeroline=False, showgrid=False, visible=False)
    fig.update_yaxes(range=[-1.65, 1.65], zeroline=False, showgrid=False, visible=False, scaleanchor="x", scaleratio=1)
    fig.update_layout(
        height=540,
        margin={"l": 0, "r": 0, "t": 10, "b": 0},
        legend={"orientation": "h", "y": -0.02, "title": {"text": "points"}},
    )
    return fig


def shares_bar(table: pd.DataFrame) -> go.Figure:
    """Each negative's share of the repulsive gradient at the toy's tau (a bar per negative)."""
    neg = table[table["role"] == "negative"]
    fig = go.Figure(
        go.Bar(
            x=neg["name"],
            y=neg["weight"],
            marker_color=[NEGATIVE_COLORS[i % len(NEGATIVE_COLORS)] for i in range(len(neg))],
            name="share of the push",
            text=[f"{w:.1%}" for w in neg["weight"]],
            textposition="outside",
            cliponaxis=False,
            hovertemplate="%{x}<br>share %{y:.3e}<extra></extra>",
        )
    )
    fig.update_layout(
        title="Share of the repulsive gradient",
        yaxis={"range": [0, 1.12], "title": {"text": "share", "standoff": 4}, "tickformat": ".0%"},
        xaxis={"title": {"text": "negative"}},
        height=300,
        margin={"t": 40, "b": 10},
        showlegend=False,
    )
    return fig


def shares_curve(curve: pd.DataFrame, tau: float) -> go.Figure:
    """Each negative's share against tau (log axis), the chosen tau dotted; one coloured curve per negative.

    Parameters
    ----------
    curve : pandas.DataFrame
        ``analysis.metrics.teaching.toy_tau_curve``'s table: ``tau`` and one ``negative i`` column per negative.
    tau : float
        The chosen temperature (a dotted line).
    """
    fig = go.Figure()
    names = [c for c in curve.columns if c.startswith("negative")]
    for i, name in enumerate(names):
        fig.add_trace(
            go.Scatter(
                x=curve["tau"],
                y=curve[name],
                mode="lines",
                name=name,
                line={"color": NEGATIVE_COLORS[i % len(NEGATIVE_COLORS)], "width": 2},
                hovertemplate="τ=%{x:.3g}<br>share %{y:.3e}<extra>" + name + "</extra>",
            )
        )
    fig.add_vline(x=tau, line_dash="dot", line_color="#555555")
    log_tau_axis(fig, title_text="τ (log scale)")
    fig.update_layout(
        title="Shares against τ",
        yaxis={"range": [0, 1.02], "title": {"text": "share of the push"}, "tickformat": ".0%"},
        height=360,
        margin={"t": 40, "r": 10},
        legend={"orientation": "v", "x": 1.02, "y": 1.0, "title": {"text": "negatives"}},
        showlegend=True,
    )
    return fig
