"""The 2-D map figure: pool points coloured by score or group (WebGL), the target examples as stars on top."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from gist_core.viewer.figures.palette import MARKS, PAPER, SCALES, group_color

TARGET_TRACE = "target examples"


def pool_map(pts: pd.DataFrame, targets: pd.DataFrame, color_by: str, method: str) -> go.Figure:
    """`pts`: gist_core.viewer.pool_map.map_frame (row, x, y, id, score, ..., color); `targets`: MapData.targets.

    Pool points carry customdata (row, score), so a lasso or click maps back to pool rows
    (brushing.rows_in_selection); target stars carry negative rows (-1 - j) and are never taken for pool rows."""
    hover = "%{text}<br>score %{customdata[1]:.3f}<extra></extra>"
    text = (pts["id"] + " · " + pts["skill"].astype(str)).to_numpy() if "skill" in pts else pts["id"].to_numpy()
    pos = np.arange(len(pts))
    fig = go.Figure()
    if color_by == "score":
        fig.add_trace(go.Scattergl(x=pts["x"], y=pts["y"], mode="markers", name="pool", text=text, hovertemplate=hover,
                                   customdata=pts[["row", "score"]].to_numpy(),
                                   marker=dict(size=4, color=pts["score"], colorscale=SCALES["score"], showscale=True,
                                               colorbar=dict(title="score", len=0.8))))
    else:
        for g, idx in pd.Series(pos).groupby(pts["color"].to_numpy(), sort=True):
            part = pts.iloc[idx.to_numpy()]
            fig.add_trace(go.Scattergl(x=part["x"], y=part["y"], mode="markers", name=str(g), hovertemplate=hover,
                                       text=text[idx.to_numpy()], customdata=part[["row", "score"]].to_numpy(),
                                       marker=dict(size=4, opacity=0.7, color=group_color(color_by, str(g)))))
    fig.add_trace(go.Scattergl(x=targets["x"], y=targets["y"], mode="markers", name=TARGET_TRACE,
                               text=(targets["id"] + " · " + targets["subtask"].astype(str)).to_numpy(),
                               customdata=[[-1 - j, 1.0] for j in range(len(targets))],
                               hovertemplate="%{text}<extra>target</extra>",
                               marker=dict(symbol="star", size=13, color=MARKS["target"], line=dict(color=PAPER, width=1))))
    fig.update_layout(height=600, dragmode="lasso", margin=dict(t=30, b=90),
                      legend=dict(itemsizing="constant", orientation="h", y=-0.15),
                      xaxis_title=f"{method.upper()} 1", yaxis_title=f"{method.upper()} 2")
    return fig
