"""Spectrum figures: singular values and explained variance per checkpoint, the rank advisor, r95/r99 per epoch."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from gist_core.viewer.figures.palette import MARKS, translucent
from gist_core.viewer.spectrum import Spectrum, main_spectrum

_MARGIN = dict(t=50, b=40)


def singular_values(specs: list[Spectrum], rank: int, gist_epoch: int) -> go.Figure:
    """σ per direction, one line per checkpoint (log axis), GIST's checkpoint named, the rank r marked."""
    fig = go.Figure()
    for sp in specs:
        fig.add_trace(go.Scatter(x=list(range(1, len(sp.sigma) + 1)), y=sp.sigma, mode="lines+markers",
                                 name=f"ckpt-{sp.epoch}" + (" (GIST)" if sp.epoch == gist_epoch else "")))
    fig.add_vline(x=rank, line_dash="dot", annotation_text=f"r = {rank}")
    fig.update_layout(title="Singular values per checkpoint", xaxis_title="direction", yaxis_title="σ (log)",
                      yaxis_type="log", yaxis_tickformat=".2~g", height=380, margin=_MARGIN)
    return fig


def explained_variance(specs: list[Spectrum], rank: int, tau: float, gist_epoch: int) -> go.Figure:
    """Cumulative explained variance per checkpoint, with τ, GIST's checkpoint's r95 / r99 and the rank r."""
    fig = go.Figure()
    for sp in specs:
        fig.add_trace(go.Scatter(x=list(range(1, len(sp.explained) + 1)), y=sp.explained, mode="lines+markers",
                                 name=f"ckpt-{sp.epoch}"))
    fig.add_hline(y=tau, line_dash="dash", annotation_text=f"τ = {tau:g}")
    main = main_spectrum(specs, gist_epoch)
    if main is not None:
        fig.add_vline(x=main.r95, line_color=MARKS["r95"], line_dash="dash", annotation_text=f"r95 = {main.r95}")
        fig.add_vline(x=main.r99, line_color=MARKS["r99"], line_dash="dash", annotation_text=f"r99 = {main.r99}",
                      annotation_position="bottom right")
    fig.add_vline(x=rank, line_dash="dot")
    fig.update_layout(title="Cumulative explained variance", xaxis_title="rank r", yaxis_title="Σσ²(≤ r) / Σσ²",
                      yaxis_range=[0, 1.02], height=380, margin=_MARGIN)
    return fig


def advisor_chart(adv, rank: int, r95: int | None = None) -> go.Figure:
    """The rank advisor's held-out percentile per rank with a ±1 s.e. band, its suggestion, r95 and the rank r.

    `adv`: what gist_core.viewer.spectrum.advisor_curve returns (ranks, curve, standard_error, suggested)."""
    ranks, curve, se = np.asarray(adv.ranks), np.asarray(adv.curve), np.asarray(adv.standard_error)
    fig = go.Figure([
        go.Scatter(x=np.r_[ranks, ranks[::-1]], y=np.r_[curve + se, (curve - se)[::-1]], fill="toself",
                   line=dict(width=0), fillcolor=translucent(MARKS["curve"], 0.15), hoverinfo="skip", name="± 1 s.e."),
        go.Scatter(x=ranks, y=curve, mode="lines+markers", name="held-out percentile", line_color=MARKS["curve"])])
    fig.add_vline(x=adv.suggested, line_color=MARKS["suggested"], annotation_text=f"advisor r = {adv.suggested}")
    if r95 is not None:
        fig.add_vline(x=r95, line_color=MARKS["r95"], line_dash="dash", annotation_text=f"r95 = {r95}",
                      annotation_position="bottom right")
    fig.add_vline(x=rank, line_dash="dot")
    fig.update_layout(title="Held-out target example's percentile in the pool, per rank", xaxis_title="rank r",
                      yaxis_title="share of the pool it outscores", yaxis_range=[0, 1.02], height=340, margin=_MARGIN)
    return fig


def intrinsic_dimension(dims: pd.DataFrame) -> go.Figure:
    """r95 and r99 per warm-up epoch (`dims`: gist_core.viewer.curvature.spectrum_table)."""
    fig = go.Figure([go.Scatter(x=dims["epoch"], y=dims[col], mode="lines+markers", name=col) for col in ("r95", "r99")])
    fig.update_layout(title="r95 and r99 per warm-up epoch (directions reaching 95 % / 99 % of Σσ²)",
                      xaxis_title="warm-up epoch", yaxis_title="rank", height=300, margin=_MARGIN,
                      xaxis=dict(tickmode="array", tickvals=dims["epoch"].tolist()), yaxis_rangemode="tozero")
    return fig
