"""The 2-D map figure: pool points coloured by score or group (WebGL), the target examples as stars on top."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from gist_core.viewer.figures.palette import MARKS, PAPER, SCALES, group_color

TARGET_TRACE = "target examples"
FLOAT32_EXACT_INTS = 2 ** 24  # float32 holds every integer row number below this


def marker_size(n: int) -> float:
    """Smaller points as the pool grows, so 100,000 points overlap less (the last-drawn group hid the others)."""
    return 4.0 if n <= 20_000 else 3.0 if n <= 60_000 else 2.0


def compact_customdata(rows: np.ndarray, score: np.ndarray) -> np.ndarray:
    """(row, score) per point as float32 (half the bytes of float64) while every row number is exact in float32."""
    dtype = np.float32 if len(rows) == 0 or rows.max() < FLOAT32_EXACT_INTS else np.float64
    return np.column_stack([rows.astype(dtype), score.astype(dtype)])


def pool_map(pts: pd.DataFrame, targets: pd.DataFrame, color_by: str, method: str) -> go.Figure:
    """`pts`: gist_core.viewer.pool_map.map_frame (row, x, y, id, score, ..., color); `targets`: MapData.targets.

    Pool points carry customdata (row, score), so a lasso or click maps back to pool rows
    (brushing.rows_in_selection); target stars carry negative rows (-1 - j) and are never taken for pool rows.
    Built to stay light at 100,000 points: float32 coordinates and customdata (bytes in the figure JSON), the id as
    the only per-point string, a group as its trace's name rather than a string per point."""
    hover = "%{text}<br>score %{customdata[1]:.3f}<extra>%{fullData.name}</extra>"
    text = pts["id"].to_numpy()
    x, y = pts["x"].to_numpy(np.float32), pts["y"].to_numpy(np.float32)
    custom = compact_customdata(pts["row"].to_numpy(), pts["score"].to_numpy())
    size = marker_size(len(pts))
    fig = go.Figure()
    if color_by == "score":
        fig.add_trace(go.Scattergl(x=x, y=y, mode="markers", name="pool", text=text, customdata=custom,
                                   hovertemplate=hover.replace("%{fullData.name}", ""),
                                   marker=dict(size=size, color=custom[:, 1], colorscale=SCALES["score"], showscale=True,
                                               colorbar=dict(title="score", len=0.8))))
    else:
        for g, idx in pd.Series(np.arange(len(pts))).groupby(pts["color"].to_numpy(), sort=True):
            i = idx.to_numpy()
            fig.add_trace(go.Scattergl(x=x[i], y=y[i], mode="markers", name=str(g), hovertemplate=hover,
                                       text=text[i], customdata=custom[i],
                                       marker=dict(size=size, opacity=0.7, color=group_color(color_by, str(g)))))
    fig.add_trace(go.Scattergl(x=targets["x"], y=targets["y"], mode="markers", name=TARGET_TRACE,
                               text=(targets["id"] + " · " + targets["subtask"].astype(str)).to_numpy(),
                               customdata=[[-1 - j, 1.0] for j in range(len(targets))],
                               hovertemplate="%{text}<extra>target</extra>",
                               marker=dict(symbol="star", size=13, color=MARKS["target"], line=dict(color=PAPER, width=1))))
    fig.update_layout(height=600, dragmode="lasso", margin=dict(t=30, b=90),
                      legend=dict(itemsizing="constant", orientation="h", y=-0.15),
                      xaxis_title=f"{method.upper()} 1", yaxis_title=f"{method.upper()} 2")
    return fig
