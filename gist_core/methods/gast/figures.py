"""Layers figures (GAST): the layer × example selection-frequency heatmap, per-layer cosine histograms, loss curves."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from gist_core.viewer.figures.palette import SCALES


def frequency_heatmap(frame: pd.DataFrame, title: str) -> go.Figure:
    """Rows: layers; columns: training examples (their skill on hover); colour: share of batches selected."""
    skills = [f"{s} · {k} · #{i}" for s, k, i in frame.columns]
    fig = go.Figure(go.Heatmap(z=frame.values, y=list(frame.index), x=list(range(frame.shape[1])),
                               customdata=[skills] * len(frame), colorscale=SCALES["share"], zmin=0, zmax=1,
                               colorbar=dict(title="selected"),
                               hovertemplate="%{y} · %{customdata}: %{z:.0%} of its batches<extra></extra>"))
    fig.update_layout(title=title, height=max(260, 40 * len(frame) + 140), xaxis_title="training example (sorted)",
                      margin=dict(l=80, r=20, t=50, b=50))
    return fig


def skill_heatmap(frame: pd.DataFrame, title: str) -> go.Figure:
    fig = go.Figure(go.Heatmap(z=frame.values, y=list(frame.index), x=list(frame.columns), colorscale=SCALES["share"],
                               colorbar=dict(title="selected"),
                               hovertemplate="%{y} · %{x}: %{z:.1%}<extra></extra>"))
    fig.update_layout(title=title, height=max(260, 40 * len(frame) + 160), xaxis_tickangle=-45,
                      margin=dict(l=80, r=20, t=50, b=120))
    return fig


def cosine_histograms(frame: pd.DataFrame) -> go.Figure:
    fig = go.Figure([go.Histogram(x=frame.loc[frame["layer"] == layer, "cosine"], name=layer, opacity=0.6, nbinsx=60)
                     for layer in dict.fromkeys(frame["layer"])])
    fig.update_layout(barmode="overlay", title="Per-layer cosine of batch examples' gradients to the support gradient",
                      xaxis_title="cos(g_i,ℓ, ĝ_ℓ)", yaxis_title="examples × steps", height=380)
    return fig


def loss_curves(frame: pd.DataFrame, smooth: int = 10) -> go.Figure:
    sm = frame.rolling(smooth, min_periods=1).mean()
    fig = go.Figure([go.Scatter(x=sm.index, y=sm[c], mode="lines", name=c) for c in sm.columns])
    fig.update_layout(title=f"Training loss per step (rolling mean of {smooth}; seed 0)", xaxis_title="step",
                      yaxis_title="batch mean loss", height=380)
    return fig
