"""Proxy figures (Iprox): agreement and cost against ρ, agreement per model, the ranks per layer, the stage-2 curve."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from gist_core.viewer.figures.palette import BROWN, FAMILY_COLORS, NEUTRAL, SCALES, SLATE


def rho_sweep(frame: pd.DataFrame) -> go.Figure:
    """Left: agreement with the target (Spearman solid, top-5% overlap dashed) per method against ρ; right: the
    cost (parameter share, gradient-time share of the target's) against ρ. ρ = 0 is the target itself."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Agreement with the target", "Cost, share of the target's"))
    for method, part in frame.groupby("method", sort=False):
        color = FAMILY_COLORS.get(method, NEUTRAL)
        fig.add_trace(go.Scatter(x=part["ρ"], y=part["Spearman"], mode="lines+markers", name=f"{method} Spearman",
                                 line=dict(color=color)), 1, 1)
        fig.add_trace(go.Scatter(x=part["ρ"], y=part["top-5% overlap"], mode="lines+markers",
                                 name=f"{method} top-5% overlap", line=dict(color=color, dash="dash")), 1, 1)
    cost = frame.drop_duplicates("ρ")
    fig.add_trace(go.Scatter(x=cost["ρ"], y=cost["params share"], mode="lines+markers", name="parameters",
                             line=dict(color=SLATE)), 1, 2)
    fig.add_trace(go.Scatter(x=cost["ρ"], y=cost["grad time share"], mode="lines+markers",
                             name="gradient time per example", line=dict(color=BROWN, dash="dot")), 1, 2)
    fig.update_xaxes(title_text="ρ (share of each compressed layer's parameters removed; 0 = the target)")
    fig.update_yaxes(range=[0, 1.05], row=1, col=1)
    fig.update_yaxes(rangemode="tozero", row=1, col=2)
    fig.update_layout(title="ρ sweep: IPSVD + alignment proxies", height=460,
                      legend=dict(orientation="h", yanchor="top", y=-0.22, x=0))
    return fig


def agreement_bars(frame: pd.DataFrame, methods: list[str], metric: str = "Spearman") -> go.Figure:
    """One group of bars per model (target excluded): agreement of its scores with the target's, per method."""
    part = frame[frame["model"] != "target"]
    fig = go.Figure([go.Bar(x=part["model"], y=part[f"{m} {metric}"], name=m, marker_color=FAMILY_COLORS.get(m, NEUTRAL),
                            customdata=part["how"], hovertemplate="%{x} (%{customdata}): %{y:.3f}<extra>" + m + "</extra>")
                     for m in methods])
    fig.update_layout(barmode="group", title=f"{metric} with the target's scores, per proxy", yaxis_range=[0, 1.05],
                      yaxis_title=metric, height=380)
    return fig


def rank_heatmap(share: pd.DataFrame, ranks: pd.DataFrame, title: str) -> go.Figure:
    """Rows: the projection kinds; columns: transformer layers; colour: the share of the full rank kept (1 = dense);
    the rank itself as the cell's text and on hover."""
    fig = go.Figure(go.Heatmap(z=share.values, x=[str(c) for c in share.columns], y=list(share.index), zmin=0, zmax=1,
                               text=ranks.values, texttemplate="%{text}", colorscale=SCALES["share"],
                               colorbar=dict(title="rank / full"),
                               hovertemplate="layer %{x} · %{y}: rank %{text} (%{z:.0%} of full)<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="transformer layer", yaxis_autorange="reversed",
                      height=max(260, 36 * len(share) + 150),
                      margin=dict(l=90, r=20, t=50, b=50))
    return fig


def stage2_curve(frame: pd.DataFrame, smooth: int = 8) -> go.Figure:
    """Stage-2 loss per step, rolling mean: the alignment term 0.5·(1 − cos), the KL anchor, their weighted sum."""
    sm = frame.set_index("step").rolling(smooth, min_periods=1).mean()
    cols = ["alignment", "loss"] + (["KL"] if sm["KL"].abs().sum() > 0 else [])
    fig = go.Figure([go.Scatter(x=sm.index, y=sm[c], mode="lines", name=c) for c in cols])
    fig.update_layout(title=f"Stage-2 loss per step (rolling mean of {smooth})", xaxis_title="step", yaxis_title="loss",
                      height=360)
    return fig
