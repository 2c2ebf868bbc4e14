"""Score figures: histograms by group, per-subtask cosines, column distributions, who a rule selects per rank."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from gist_core.viewer.figures.palette import MARKS, group_color

_MARGIN = dict(t=50, b=40)


def score_histogram(h: pd.DataFrame, by: str, threshold: float, k: int, title: str, log_y: bool = False) -> go.Figure:
    """Stacked score histogram, one bar trace per group (`h`: gist_core.viewer.brushing.histogram_counts).

    Each bar carries its bin edges as customdata (what brushing.score_range_from_selection reads back);
    ground-truth and selection groups take the palette's colours; the global top-k threshold is marked."""
    fig = go.Figure()
    for g, part in h.groupby("group", sort=True):
        fig.add_trace(go.Bar(x=part["mid"], y=part["count"], width=(part["right"] - part["left"]).to_numpy(),
                             name=str(g), customdata=part[["left", "right"]].to_numpy(),
                             marker_color=group_color(by, str(g)),
                             hovertemplate="score %{customdata[0]:.3f}..%{customdata[1]:.3f}: %{y}"
                                           "<extra>%{fullData.name}</extra>"))
    fig.add_vline(x=threshold, line_dash="dash", line_color=MARKS["threshold"], annotation_text=f"top-{k} threshold",
                  annotation_position="top left")
    fig.update_layout(title=title, barmode="stack", xaxis_title="score (cosine)", yaxis_title="examples",
                      yaxis_type="log" if log_y else "linear", dragmode="select", height=380,
                      xaxis_range=[float(h["left"].min()), float(h["right"].max())],
                      margin=_MARGIN, legend=dict(font=dict(size=10)))
    return fig


def subtask_cosine_bars(bd: pd.DataFrame, selected_label: str) -> go.Figure:
    """Mean cosine with each subtask's direction, pool vs selection (`bd`: breakdowns.subtask_breakdown)."""
    fig = go.Figure([go.Bar(x=bd["subtask"], y=bd["mean cosine (pool)"], name="pool"),
                     go.Bar(x=bd["subtask"], y=bd["mean cosine (selected)"], name=selected_label)])
    fig.update_layout(title="Mean cosine with each subtask's direction", barmode="group", yaxis_title="cosine",
                      height=320, margin=_MARGIN)
    return fig


def column_violins(dist: pd.DataFrame, title: str, scale: str) -> go.Figure:
    """One violin per subtask column over the pool (`dist`: breakdowns.column_distributions), in subtask order."""
    fig = go.Figure([go.Violin(y=part["value"], name=name, box_visible=True, meanline_visible=False, points=False,
                               spanmode="hard") for name, part in dist.groupby("subtask", sort=False)])
    fig.update_layout(title=title, yaxis_title=scale, height=360, showlegend=False, margin=_MARGIN)
    return fig


def winners_by_rank_bars(wr: pd.DataFrame, rank: int, ranks: list[int], title: str) -> go.Figure:
    """Stacked bars of a rule's selection per rank by group (`wr`: breakdowns.winners_by_rank); target subtasks
    first and named '(target)', the other groups hatched; the page's own rank marked."""
    def order(kv):
        return not kv[1]["target subtask"].iloc[0], kv[0]
    traces = []
    for g, part in sorted(wr.groupby("group"), key=order):
        target = bool(part["target subtask"].iloc[0])
        traces.append(go.Bar(x=part["rank"], y=part["count"], name=f"{g} (target)" if target else str(g),
                             marker_pattern_shape="" if target else "/"))
    fig = go.Figure(traces)
    fig.add_vline(x=rank, line_dash="dot", annotation_text=f"r = {rank}")
    fig.update_layout(barmode="stack", title=title, xaxis_title="rank r", yaxis_title="selected", height=340,
                      margin=_MARGIN, xaxis=dict(tickmode="array", tickvals=list(ranks)), legend=dict(font=dict(size=10)))
    return fig


def example_cosines(cosines: pd.DataFrame) -> go.Figure:
    """One example's cosine with each target subtask's direction (`cosines`: examples.example_detail's)."""
    fig = go.Figure(go.Bar(x=cosines["subtask"], y=cosines["cosine"]))
    fig.update_layout(title="Cosine with each target subtask's direction", yaxis_range=[-1, 1], height=300,
                      margin=_MARGIN)
    return fig
