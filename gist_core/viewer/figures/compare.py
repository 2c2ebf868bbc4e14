"""Compare figures: one bar per method coloured by family, wall time per stage, agreement and per-subtask heatmaps."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from gist_core.viewer.compare import zoom_range
from gist_core.viewer.figures.palette import SCALES, family_color

_MARGIN = dict(t=50, b=40)


def metric_bars(table: pd.DataFrame, col: str, title: str, refs: dict[str, float] | None = None,
                zoom: bool = False) -> go.Figure:
    """One bar per method row of `table` (compare.compare_table) with a value in `col`, ± its `{col}_std`,
    coloured by method family; `refs` ({label: value}) as dashed reference lines. zoom: the y-axis is fitted
    to the values (mean losses of a few LoRA runs differ in the 3rd decimal) and the title says so."""
    refs = refs or {}
    d = table.dropna(subset=[col])
    std = d[f"{col}_std"].fillna(0) if f"{col}_std" in d else pd.Series(0.0, index=d.index)
    fig = go.Figure(go.Bar(x=d["method"], y=d[col], marker_color=[family_color(m) for m in d["method"]],
                           customdata=d[["label"]].to_numpy() if "label" in d else None,
                           error_y=dict(type="data", array=std.to_numpy()),
                           hovertemplate="%{customdata[0]}: %{y:.4f}<extra></extra>"))
    for i, (name, y) in enumerate(refs.items()):
        fig.add_hline(y=y, line_dash="dash" if i == 0 else "dot", annotation_text=name,
                      annotation_position="top left" if i == 0 else "bottom right")
    yr = zoom_range([*(d[col] - std), *(d[col] + std), *refs.values()]) if zoom else None
    zoomed = yr is not None and yr[0] > 0  # say "zoomed" only when the axis really does not start at 0
    fig.update_layout(title=title + (" (axis zoomed, not from 0)" if zoomed else ""), yaxis_range=yr, height=360,
                      margin=_MARGIN, showlegend=False)
    return fig


def cost_bars(cost: pd.DataFrame, methods: list[str], log_x: bool = False) -> go.Figure:
    """Horizontal stacked bars of each method's wall time per stage (`cost`: compare.cost_frame), methods top to
    bottom in `methods`' order; a log axis drops the zero-second stages (a log axis cannot draw them)."""
    part = cost[cost["seconds"] > 0] if log_x else cost
    fig = go.Figure([go.Bar(y=g["method"], x=g["seconds"], name=stage, orientation="h")
                     for stage, g in part.groupby("stage", sort=False)])
    fig.update_layout(title="Wall time per stage (seconds, this machine)", barmode="stack", xaxis_title="seconds",
                      xaxis_type="log" if log_x else "linear", height=60 + 32 * len(methods), margin=_MARGIN,
                      yaxis=dict(categoryorder="array", categoryarray=list(methods)[::-1]))
    return fig


def agreement_heatmap(m: pd.DataFrame, title: str, zmin: float, zmax: float) -> go.Figure:
    """A method x method matrix (compare.matrix_frame) with its values written in: a share in [0, 1] (overlap)
    on the sequential scale, anything reaching below 0 (rank correlation) on the diverging one."""
    scale = SCALES["share"] if zmin >= 0 else SCALES["diverging"]
    fig = go.Figure(go.Heatmap(z=m.to_numpy(), x=list(m.columns), y=list(m.index), zmin=zmin, zmax=zmax,
                               colorscale=scale, texttemplate="%{z:.2f}", hoverongaps=False))
    fig.update_layout(title=title, height=120 + 30 * len(m), margin=_MARGIN, yaxis_autorange="reversed")
    return fig


def per_subtask_heatmap(sub: pd.DataFrame, metric: str) -> go.Figure:
    """method x subtask test `metric` ('loss' or 'exact_match'; either way the brighter cell is the better one),
    the base model last (`sub`: compare.per_subtask_frame)."""
    fig = go.Figure(go.Heatmap(z=sub.to_numpy(), x=list(sub.columns), y=list(sub.index), texttemplate="%{z:.3f}",
                               colorscale=SCALES["loss" if metric == "loss" else "exact_match"], hoverongaps=False))
    fig.update_layout(title=f"Test {metric.replace('_', ' ')} per subtask (mean over seeds; last row: base model)",
                      height=120 + 30 * len(sub), margin=_MARGIN, yaxis_autorange="reversed")
    return fig
