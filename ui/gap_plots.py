"""Plotly figures of the modality-gap page: the groups in PCA space, the shift experiment, projecting out.

User text goes into plotly's hover, which understands a few HTML tags: it is escaped.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analysis.metrics.modality_gap import GapPCA, Groups
from analysis.runs.folder import Run
from ui.safe_text import escape_text

COLORS = ("#1f77b4", "#ff7f0e")


def pca_figure(pca: GapPCA, groups: Groups, run: Run, three_d: bool) -> go.Figure:
    """Both groups in PCA space, pairs joined by grey lines, the centroids as big outlined diamonds on top.

    Parameters
    ----------
    pca : GapPCA
        ``analysis.metrics.modality_gap.gap_pca``'s result (points, pairs, centroids, explained variance).
    groups : Groups
        The two groups (their names label the traces).
    run : Run
        The run (hover texts).
    three_d : bool
        A 3-D scatter instead of 2-D.
    """
    fig = go.Figure()
    pts = pca.points.set_index("item_id")
    if len(pca.pairs):
        a = pts.loc[pca.pairs["anchor_id"].to_numpy()]
        p = pts.loc[pca.pairs["positive_id"].to_numpy()]
        xs, ys, zs = [], [], []
        for i in range(len(a)):
            xs += [a["pc1"].iloc[i], p["pc1"].iloc[i], None]
            ys += [a["pc2"].iloc[i], p["pc2"].iloc[i], None]
            zs += [a["pc3"].iloc[i], p["pc3"].iloc[i], None]
        line = {"color": "rgba(90,90,90,0.45)", "width": 1.5}
        if three_d:
            fig.add_trace(go.Scatter3d(x=xs, y=ys, z=zs, mode="lines", line=line, name="pairs", hoverinfo="skip"))
        else:
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=line, name="pairs", hoverinfo="skip"))
    for color, name in zip(COLORS, groups.names, strict=True):
        part = pca.points[pca.points["group"] == name]
        # user text goes into plotly's hover, which understands a few HTML tags: escape it
        text = [escape_text(str(run.items["content"].iloc[int(i)])[:80], plot=True) for i in part["item_id"]]
        custom = np.stack([part["item_id"].to_numpy()], axis=1)
        hover = "item %{customdata[0]}<br>%{text}<extra>" + name + "</extra>"
        if three_d:
            fig.add_trace(
                go.Scatter3d(
                    x=part["pc1"],
                    y=part["pc2"],
                    z=part["pc3"],
                    mode="markers",
                    name=name,
                    text=text,
                    customdata=custom,
                    hovertemplate=hover,
                    marker={"size": 2.5, "color": color, "opacity": 0.7},
                )
            )
        else:
            fig.add_trace(
                go.Scattergl(
                    x=part["pc1"],
                    y=part["pc2"],
                    mode="markers",
                    name=name,
                    text=text,
                    customdata=custom,
                    hovertemplate=hover,
                    marker={"size": 5, "color": color, "opacity": 0.6},
                )
            )
    c = pca.centroids
    if three_d:
        fig.add_trace(
            go.Scatter3d(
                x=c["pc1"],
                y=c["pc2"],
                z=c["pc3"],
                mode="markers+lines+text",
                text=c["group"],
                name="centroids (gap)",
                marker={"size": 12, "color": list(COLORS), "symbol": "diamond", "line": {"color": "black", "width": 3}},
                line={"color": "black", "width": 6},
                textfont={"size": 14, "color": "black"},
            )
        )
    else:
        fig.add_trace(
            go.Scatter(
                x=c["pc1"],
                y=c["pc2"],
                mode="markers+lines+text",
                text=[f"centroid: {g}" for g in c["group"]],
                textposition=["top left", "bottom right"][: len(c)],  # apart, also when the centroids are close
                name="centroids (gap)",
                marker={
                    "size": 24,
                    "color": list(COLORS),
                    "symbol": "diamond",
                    "line": {"color": "black", "width": 3},
                },
                line={"color": "black", "width": 4},
                textfont={"size": 15, "color": "black"},
                hovertemplate="%{text}<extra></extra>",
            )
        )
    ev = pca.explained
    if three_d:
        fig.update_layout(
            scene={
                "xaxis_title": f"PC1 ({ev[0]:.0%})",
                "yaxis_title": f"PC2 ({ev[1]:.0%})",
                "zaxis_title": f"PC3 ({ev[2]:.0%})",
            }
        )
    else:
        fig.update_xaxes(title_text=f"PC1 ({ev[0]:.0%} of variance)")
        fig.update_yaxes(title_text=f"PC2 ({ev[1]:.0%} of variance)", scaleanchor="x", scaleratio=1)
    fig.update_layout(height=620, legend={"orientation": "h", "y": -0.12}, margin={"t": 30})
    return fig


def shift_figure(table: pd.DataFrame, closing: float, tau: float) -> go.Figure:
    """Centroid distance, recall@1 and loss against lambda; the checkpoint dashed, the closing lambda dotted.

    Parameters
    ----------
    table : pandas.DataFrame
        One row per lambda: ``lambda``, ``centroid_distance``, ``recall_at_1``, ``loss``.
    closing : float
        The lambda that closes the gap.
    tau : float
        The temperature of the loss (in its subplot title).
    """
    fig = make_subplots(
        rows=1,
        cols=3,
        subplot_titles=("Centroid distance after the shift", "Recall@1", f"InfoNCE loss at τ = {tau:.3g}"),
    )
    for col, name in enumerate(("centroid_distance", "recall_at_1", "loss"), start=1):
        fig.add_trace(
            go.Scatter(
                x=table["lambda"],
                y=table[name],
                mode="lines+markers",
                name=name,
                showlegend=False,
                hovertemplate="λ=%{x:.3f}<br>%{y:.4f}<extra></extra>",
            ),
            row=1,
            col=col,
        )
        fig.add_vline(x=0.0, line_dash="dash", line_color="black", row=1, col=col)
        fig.add_vline(x=closing, line_dash="dot", line_color="#2ca02c", row=1, col=col)
        fig.update_xaxes(title_text="λ", row=1, col=col)
    fig.update_layout(height=380, margin={"t": 50})
    return fig


def project_out_figure(scores: pd.DataFrame) -> go.Figure:
    """Positive and negative similarities before and after projecting out the gap direction (densities).

    Parameters
    ----------
    scores : pandas.DataFrame
        Columns ``embedding`` ("original" or "gap projected out"), ``kind`` ("positive"/"negative"), ``sim``.
    """
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=("Original", "Gap direction projected out"), shared_xaxes=True, shared_yaxes=True
    )
    for col, name in enumerate(("original", "gap projected out"), start=1):
        for kind, color in (("positive", "#2ca02c"), ("negative", "#d62728")):
            vals = scores[(scores["embedding"] == name) & (scores["kind"] == kind)]["sim"]
            fig.add_trace(
                go.Histogram(
                    x=vals,
                    name=kind,
                    marker_color=color,
                    opacity=0.6,
                    histnorm="probability density",
                    nbinsx=60,
                    showlegend=col == 1,
                ),
                row=1,
                col=col,
            )
        fig.update_xaxes(title_text="cosine similarity", row=1, col=col)
    fig.update_layout(barmode="overlay", height=360, margin={"t": 50})
    return fig
