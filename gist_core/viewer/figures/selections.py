"""Side-by-side figures: the overlap as one split bar, counts per group, the Jaccard across ranks, the map in two
colours (A blue, B orange, both purple, neither small and grey)."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from gist_core.viewer.figures.palette import BLUE, GREY, INK, MARKS, ORANGE, PAPER, PURPLE
from gist_core.viewer.selections import NEITHER, SIDES

SIDE_COLORS = {"only A": BLUE, "both": PURPLE, "only B": ORANGE, NEITHER: GREY}
_MARGIN = dict(t=50, b=40)


def overlap_bar(ov: dict) -> go.Figure:
    """One horizontal bar split into only A | both | only B (selections.overlap): a Venn diagram drawn flat."""
    fig = go.Figure([go.Bar(y=["selected"], x=[ov[side]], name=side, orientation="h", marker_color=SIDE_COLORS[side],
                            text=[f"{side}: {ov[side]:,}"], textposition="inside", insidetextanchor="middle",
                            hovertemplate=f"{side}: %{{x:,}}<extra></extra>") for side in SIDES])
    fig.update_layout(barmode="stack", height=130, margin=dict(t=10, b=10, l=10, r=10), showlegend=False,
                      xaxis=dict(title="rows", showgrid=False), yaxis=dict(visible=False))
    return fig


def group_bars(counts: pd.DataFrame, by: str) -> go.Figure:
    """Grouped bars per group of `by`: rows A selects, B selects, both select (selections.group_counts)."""
    colors = {"A": BLUE, "B": ORANGE, "both": PURPLE}
    fig = go.Figure([go.Bar(x=counts[by].astype(str), y=counts[col], name=col,
                            marker_color=colors[col], hovertemplate=f"%{{x}}: %{{y:,}} in {col}<extra></extra>")
                     for col in ("A", "B", "both")])
    fig.update_layout(title=f"Selected rows per {by}", barmode="group", height=360, margin=_MARGIN,
                      yaxis_title="rows", legend=dict(orientation="h", y=1.12, x=1, xanchor="right"))
    return fig


def rank_curve(curve: pd.DataFrame, rank_a: int | None = None, rank_b: int | None = None,
               reference: str = "B") -> go.Figure:
    """Jaccard of A's settings at every rank with the reference selection, and with the previous rank
    (selections.rank_curve); A's and B's ranks marked."""
    fig = go.Figure([go.Scatter(x=curve["rank"], y=curve["jaccard"], mode="lines+markers", name=f"with {reference}",
                                line=dict(color=MARKS["curve"])),
                     go.Scatter(x=curve["rank"], y=curve["previous rank"], mode="lines+markers",
                                name="with the previous rank", line=dict(color=GREY, dash="dot"))])
    for r, name, color in ((rank_a, "A", BLUE), (rank_b, "B", ORANGE)):
        if r is not None:
            fig.add_vline(x=r, line_color=color, line_dash="dash", annotation_text=f"{name}: r={r}",
                          annotation_position="top right" if name == "A" else "top left")
    fig.update_layout(title="Jaccard across ranks (A's rule and budget)", height=340, margin=_MARGIN,
                      xaxis_title="rank r", yaxis=dict(title="Jaccard", range=[0, 1.05]),
                      legend=dict(orientation="h", y=-0.25))
    return fig


def side_map(pts: pd.DataFrame, targets: pd.DataFrame, method: str) -> go.Figure:
    """The pool map of run A (pool_map.map_frame with 'color' = the side) with rows outside both selections small
    and grey under the coloured ones, the target examples as stars on top."""
    fig = go.Figure()
    for side in (NEITHER, *SIDES):
        part = pts[pts["color"] == side]
        small = side == NEITHER
        fig.add_trace(go.Scattergl(x=part["x"], y=part["y"], mode="markers", name=f"{side} ({len(part):,})",
                                   text=part["id"], customdata=part[["row", "score"]].to_numpy(),
                                   hovertemplate=f"%{{text}} · {side}<br>score A %{{customdata[1]:.3f}}<extra></extra>",
                                   marker=dict(size=3 if small else 6, opacity=0.35 if small else 0.9,
                                               color=SIDE_COLORS[side])))
    fig.add_trace(go.Scattergl(x=targets["x"], y=targets["y"], mode="markers", name="target examples",
                               text=targets["id"], hovertemplate="%{text}<extra>target</extra>",
                               marker=dict(symbol="star", size=12, color=INK, line=dict(color=PAPER, width=1))))
    fig.update_layout(height=560, margin=dict(t=30, b=90), legend=dict(itemsizing="constant", orientation="h", y=-0.15),
                      xaxis_title=f"{method.upper()} 1", yaxis_title=f"{method.upper()} 2")
    return fig
