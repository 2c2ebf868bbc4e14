"""Curvature figures: a matrix heatmap with its A/B blocks, the diagonals against Adam's, the numbers per epoch."""
from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go

from gist_core.viewer.curvature import DisplayMatrix, log_color
from gist_core.viewer.figures.palette import INK, MARKS, PAPER, SCALES

TREND_LINES = {"offdiag_hessian": "off-diagonal ratio · Hessian",
               "offdiag_gauss_newton": "off-diagonal ratio · Gauss–Newton",
               "offdiag_fisher": "off-diagonal ratio · empirical Fisher", "overlap_fisher_hessian": "F̂/H overlap"}


def curvature_heatmap(dm: DisplayMatrix, label: str, epoch: int) -> go.Figure:
    """|M| on a log colour scale (dm.kind 'abs') or its correlation in [-1, 1] ('corr'), in coordinate units,
    with the A/B boundary lines and the four blocks named (`dm`: gist_core.viewer.curvature.display_matrix)."""
    x = dm.edges - 0.5  # cell edges (len k + 1): coordinate i spans [i - 0.5, i + 0.5)
    if dm.kind == "abs":
        lz, lo, hi = log_color(dm.z)
        ticks = list(range(math.ceil(lo), math.floor(hi) + 1))
        trace = go.Heatmap(z=lz, x=x, y=x, zmin=lo, zmax=hi, colorscale=SCALES["magnitude"], customdata=dm.z,
                           colorbar=dict(title="|M|", tickvals=ticks, ticktext=[f"1e{t}" for t in ticks]),
                           hovertemplate="row %{y:.0f}, col %{x:.0f}: |M| = %{customdata:.3g}<extra></extra>")
        line = PAPER
    else:
        trace = go.Heatmap(z=dm.z, x=x, y=x, zmin=-1, zmax=1, zmid=0, colorscale=SCALES["diverging"],
                           colorbar=dict(title="corr"),
                           hovertemplate="row %{y:.0f}, col %{x:.0f}: %{z:.3f}<extra></extra>")
        line = INK
    fig = go.Figure(trace)
    n_a, n_b = dm.n_a, dm.P - dm.n_a
    axis_ticks = dict(tickvals=[], ticktext=[])
    if n_a and n_b:
        b = n_a - 0.5
        fig.add_shape(type="line", x0=b, x1=b, y0=-0.5, y1=dm.P - 0.5, line=dict(color=line, width=1.5))
        fig.add_shape(type="line", x0=-0.5, x1=dm.P - 0.5, y0=b, y1=b, line=dict(color=line, width=1.5))
        centres = {"A": n_a / 2 - 0.5, "B": n_a + n_b / 2 - 0.5}
        axis_ticks = dict(tickvals=list(centres.values()), ticktext=[f"A ({n_a})", f"B ({n_b})"])
        for ra, ya in centres.items():
            for cb, xb in centres.items():
                fig.add_annotation(x=xb, y=ya, text=f"{ra}–{cb}", showarrow=False, font=dict(color=line, size=13),
                                   opacity=0.8)
    cells = f" · {len(dm.z)}×{len(dm.z)} cells (cell = mean over ≈{dm.P / len(dm.z):.1f}² coordinates)" \
        if dm.downsampled else ""
    fig.update_layout(title=f"{label}, epoch {epoch}: {'|M|, log colour' if dm.kind == 'abs' else 'correlation'}{cells}",
                      height=600, margin=dict(t=60, b=40, l=60, r=20),
                      xaxis=dict(**axis_ticks, constrain="domain"),
                      yaxis=dict(**axis_ticks, autorange="reversed", scaleanchor="x", constrain="domain"))
    return fig


def diagonals(diag: pd.DataFrame) -> go.Figure:
    """|diag(H)| per coordinate, one trace per block, and Adam's c·√v at its best scale (log axis);
    `diag`: gist_core.viewer.curvature.diagonal_frame."""
    fig = go.Figure()
    for blk_name, g in diag.groupby("block", sort=False):
        fig.add_trace(go.Scatter(x=g["coord"], y=g["diag_H"].abs(), mode="markers", marker=dict(size=4),
                                 name=f"|diag(H)|, {blk_name}", hovertemplate="coord %{x}: %{y:.3g}<extra></extra>"))
    fig.add_trace(go.Scatter(x=diag["coord"], y=diag["adam_scaled"], mode="lines",
                             line=dict(color=MARKS["adam"], width=1), name="c·√v (Adam, best scale)",
                             hovertemplate="coord %{x}: %{y:.3g}<extra></extra>"))
    n_a = int((diag["block"] == "A").sum())
    if 0 < n_a < len(diag):
        fig.add_vline(x=n_a - 0.5, line_dash="dot", annotation_text="A | B")
    fig.update_layout(title="Diagonals: the best diagonal vs Adam's", xaxis_title="coordinate", yaxis_type="log",
                      yaxis_tickformat=".1~e", height=420, margin=dict(t=50, b=40), legend=dict(orientation="h", y=-0.2))
    return fig


def curvature_trend(table: pd.DataFrame) -> go.Figure:
    """Off-diagonal ratios and the F̂/H overlap per warm-up epoch, against the overlap of random subspaces
    (`table`: gist_core.viewer.curvature.geometry_table)."""
    fig = go.Figure([go.Scatter(x=table["epoch"], y=table[col], mode="lines+markers", name=name)
                     for col, name in TREND_LINES.items()])
    fig.add_trace(go.Scatter(x=table["epoch"], y=table["overlap_random"], mode="lines",
                             line=dict(dash="dash", color=MARKS["random_reference"]),
                             name="overlap of random subspaces (r/P)"))
    fig.update_layout(title="Off-diagonal ratio and F̂/H overlap per epoch", xaxis_title="warm-up epoch",
                      xaxis=dict(tickmode="array", tickvals=table["epoch"].tolist()), yaxis_range=[0, 1.02], height=380,
                      margin=dict(t=50, b=40))
    return fig
