"""Clusters figures: cluster × skill composition, the silhouette curve that picked k, the agreement bars."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from gist_core.viewer.figures.palette import SCALES


def _share_heatmap(frame: pd.DataFrame, title: str, hover: str, margin: dict, min_height: int, pad: int) -> go.Figure:
    """Counts as a heatmap of each row's shares (the counts on hover)."""
    share = frame.div(frame.sum(axis=1).where(lambda s: s > 0, 1), axis=0)
    fig = go.Figure(go.Heatmap(z=share.values, x=list(frame.columns), y=list(frame.index), customdata=frame.values,
                               colorscale=SCALES["share"], zmin=0, zmax=1, colorbar=dict(title="share"),
                               hovertemplate=hover))
    fig.update_layout(title=title, height=max(min_height, 22 * len(frame) + pad), xaxis_tickangle=-45,
                      yaxis=dict(autorange="reversed"), margin=margin)
    return fig


def composition_heatmap(frame: pd.DataFrame, title: str) -> go.Figure:
    """Counts per cluster (rows) and ground-truth skill (columns), each row as a share of its cluster."""
    return _share_heatmap(frame, title, "%{y} · %{x}: %{customdata} examples (%{z:.0%})<extra></extra>",
                          dict(l=60, r=20, t=50, b=120), 320, 160)


def k_curve(curve: list[dict], chosen: int) -> go.Figure:
    fig = go.Figure(go.Scatter(x=[c["k"] for c in curve], y=[c["silhouette"] for c in curve], mode="lines+markers",
                               name="silhouette"))
    fig.add_vline(x=chosen, line_dash="dash", annotation_text=f"k = {chosen}")
    fig.update_layout(title="Number of clusters: silhouette of the gradient-sketch clustering", xaxis_title="k",
                      yaxis_title="silhouette (cosine)", height=320)
    return fig


def agreement_bars(table: pd.DataFrame) -> go.Figure:
    fig = go.Figure([go.Bar(name=m, x=table["method"], y=table[m]) for m in ("ARI", "NMI", "purity")])
    fig.update_layout(barmode="group", title="Agreement with the ground-truth skills", height=360, yaxis_range=[0, 1])
    return fig


def cluster_scatter(pts: pd.DataFrame, title: str) -> go.Figure:
    """The clustered rows on 2 principal axes of the gradient sketch, one colour per cluster, skill on hover."""
    fig = go.Figure()
    for c in sorted(pts["cluster"].unique()):
        p = pts[pts["cluster"] == c]
        hover = p["skill"] if "skill" in p else None
        fig.add_trace(go.Scattergl(x=p["x"], y=p["y"], mode="markers", name=f"c{c}", marker=dict(size=5, opacity=0.7),
                                   text=hover, hovertemplate=f"c{c}" + " · %{text}<extra></extra>"))
    fig.update_layout(title=title, height=480, xaxis_title="PC 1", yaxis_title="PC 2", legend_title="cluster")
    return fig


def confusion_heatmap(frame: pd.DataFrame, title: str) -> go.Figure:
    """Rows: the query's true skill; columns: the routed cluster (its majority skill); each row as a share."""
    return _share_heatmap(frame, title, "%{y} → %{x}: %{customdata} queries (%{z:.0%})<extra></extra>",
                          dict(l=110, r=20, t=50, b=160), 360, 180)


def per_group_bars(frame: pd.DataFrame, metric: str) -> go.Figure:
    """Per test group (SET/skill), one bar per inference rule."""
    fig = go.Figure([go.Bar(name=rule, x=list(frame.index), y=frame[rule]) for rule in frame.columns])
    fig.update_layout(barmode="group", title=f"Per-skill {metric} of each inference rule (mean over seeds)",
                      height=440, xaxis_tickangle=-45, yaxis_title=metric, margin=dict(b=140),
                      legend=dict(orientation="h", y=1.12))
    return fig
