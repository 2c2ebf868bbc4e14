"""Score histograms and brushing: counts per group, and the pool rows a box, lasso or click picks on a chart."""
from __future__ import annotations

import numpy as np
import pandas as pd

from gist_core.data.truth import has_ground_truth, relevant_mask
from gist_core.viewer.labels import group_column


def histogram_counts(frame: pd.DataFrame, by: str, subtasks: list[str], bins: int = 60) -> pd.DataFrame:
    """Score counts per group on shared bin edges: (group, left, right, mid, count); light to plot."""
    score = frame["score"].to_numpy(dtype=np.float64)
    lo, hi = float(score.min()), float(score.max())
    edges = np.linspace(lo, hi if hi > lo else lo + 1e-6, bins + 1)
    groups = group_column(frame, by, subtasks).to_numpy()
    out = []
    for g in pd.unique(groups):
        counts, _ = np.histogram(score[groups == g], edges)
        out.append(pd.DataFrame({"group": g, "left": edges[:-1], "right": edges[1:],
                                 "mid": (edges[:-1] + edges[1:]) / 2, "count": counts}))
    return pd.concat(out, ignore_index=True)


def score_range_from_selection(selection: dict | None) -> tuple[float, float] | None:
    """Score interval brushed on a histogram: the box's x-range, the lasso's x-extent, or the picked bars."""
    if not selection:
        return None
    for shape in list(selection.get("box") or []) + list(selection.get("lasso") or []):
        xs = [float(x) for x in shape.get("x", []) if x is not None]
        if xs:
            return min(xs), max(xs)
    bars = [p.get("customdata") for p in selection.get("points") or [] if p.get("customdata") is not None]
    bars = [b for b in bars if isinstance(b, (list, tuple)) and len(b) >= 2]
    if bars:
        return min(float(b[0]) for b in bars), max(float(b[1]) for b in bars)
    return None


def rows_from_points(points: list[dict] | None) -> list[int]:
    """Pool rows of selected scatter points (customdata[0] = row; target markers carry negatives)."""
    rows = []
    for p in points or []:
        cd = p.get("customdata")
        v = cd[0] if isinstance(cd, (list, tuple)) and cd else cd
        if isinstance(v, (int, float)) and v >= 0:
            rows.append(int(v))
    return sorted(set(rows))


def points_in_polygon(x: np.ndarray, y: np.ndarray, px: list[float], py: list[float]) -> np.ndarray:
    """Even-odd rule, vectorised over the points (one pass per polygon edge)."""
    inside = np.zeros(len(x), dtype=bool)
    n = len(px)
    for i in range(n):
        x1, y1, x2, y2 = px[i], py[i], px[(i + 1) % n], py[(i + 1) % n]
        if y1 == y2:
            continue
        crosses = (y1 > y) != (y2 > y)
        x_at = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
        inside ^= crosses & (x < x_at)
    return inside


def rows_in_selection(pts: pd.DataFrame, selection: dict | None) -> list[int]:
    """Pool rows picked on the map: clicked points plus every drawn point inside a box or lasso.

    The shapes come back from the browser even when the points do not (WebGL traces, many
    points), so the geometry here is what makes lasso/box selection reliable."""
    if not selection:
        return []
    rows = set(rows_from_points(selection.get("points")))
    x, y = pts["x"].to_numpy(), pts["y"].to_numpy()
    mask = np.zeros(len(pts), dtype=bool)
    for b in selection.get("box") or []:
        if len(b.get("x", [])) >= 2 and len(b.get("y", [])) >= 2:
            (x0, x1), (y0, y1) = sorted(b["x"][:2]), sorted(b["y"][:2])
            mask |= (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
    for lasso in selection.get("lasso") or []:
        if len(lasso.get("x", [])) >= 3:
            mask |= points_in_polygon(x, y, [float(v) for v in lasso["x"]], [float(v) for v in lasso["y"]])
    rows.update(pts["row"].to_numpy()[mask].tolist())
    return sorted(rows)


def selection_shape(selection: dict | None) -> str | None:
    """How the rows were picked on a chart, for the edit's record: "box", "lasso", "box + lasso" or "points"
    (clicks only); None when nothing is."""
    if not selection:
        return None
    shapes = [s for s in ("box", "lasso") if selection.get(s)]
    if shapes:
        return " + ".join(shapes)
    return "points" if selection.get("points") else None


def in_score_range(frame: pd.DataFrame, lo: float, hi: float) -> pd.DataFrame:
    s = frame["score"]
    return frame[(s >= lo) & (s <= hi)]


def brush_summary(rows: pd.DataFrame, subtasks: list[str]) -> dict:
    out = {"n": len(rows), "n_selected": int(rows["selected"].sum()) if len(rows) else 0}
    if len(rows) and has_ground_truth(rows):
        out["precision"] = float(relevant_mask(rows, subtasks).mean())
    return out


# ----------------------------------------------------------------------------- examples table
