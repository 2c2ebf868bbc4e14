"""The map at 100,000 pool rows: drawn in full, a light figure, and a box or lasso maps back to exactly the pool rows
whose drawn points lie inside it (checked against the figure's own coordinates, by a different geometry)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import plotly.io as pio
import pytest
from fake_run import make_fake_run, plotly_array

from gist_core.viewer import brushing, pool_map, rescore
from gist_core.viewer.figures import pool_map as pool_map_figures

N = 100_000


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    return make_fake_run(tmp_path_factory.mktemp("runs") / "big", n_pool=N, n_val=20, r=8)


@pytest.fixture(scope="module")
def drawn(big):
    """The skill-coloured map at r = 8 and what its figure JSON (what the browser gets) draws: row -> (x, y)."""
    rs = rescore.rescored_frame(big, 8, "global", 0.05)
    md = pool_map.map_coords(big, 8, "pca")
    pts = pool_map.map_frame(md, rs.frame, "skill", rs.subtasks)
    spec = json.loads(pio.to_json(pool_map_figures.pool_map(pts, md.targets, "skill", "pca"), validate=False))
    pool = [t for t in spec["data"] if t["name"] != pool_map_figures.TARGET_TRACE]
    rows = np.concatenate([plotly_array(t["customdata"])[:, 0] for t in pool]).astype(np.int64)
    xy = np.column_stack([np.concatenate([plotly_array(t[a]) for t in pool]) for a in ("x", "y")])
    return md, pts, rows, xy, spec


def test_a_100k_pool_is_drawn_in_full_with_float32_coordinates(big, drawn):
    md, pts, rows, xy, spec = drawn
    assert pool_map.MAP_MAX_POINTS >= N and len(md.pool) == N
    assert md.pool["row"].tolist() == list(range(N)) and (md.pool[["x", "y"]].dtypes == np.float32).all()
    assert sorted(rows.tolist()) == list(range(N))  # every pool row drawn once
    order = np.argsort(rows)
    np.testing.assert_array_equal(xy[order], md.pool[["x", "y"]].to_numpy())  # drawn where the view says, to the bit


def test_pca_at_100k_matches_the_covariance_eigenvectors(big, drawn):
    md = drawn[0]
    _, P, _ = pool_map._map_inputs(big, 8, N, 0)
    C = np.cov(P, rowvar=False)
    w, Q = np.linalg.eigh(C)
    for axis, col in ((0, "x"), (1, "y")):  # the top two eigenvectors, up to sign
        naive = (P - P.mean(0)) @ Q[:, -1 - axis]
        assert abs(np.corrcoef(naive, md.pool[col].to_numpy(np.float64))[0, 1]) > 0.9999


def test_the_figure_json_stays_light_at_100k(drawn):
    """Coordinates and customdata as float32 typed arrays, one short string per point (the id), no per-point group."""
    spec = drawn[4]
    pool = [t for t in spec["data"] if t["name"] != pool_map_figures.TARGET_TRACE]
    assert all(t["x"]["dtype"] == t["y"]["dtype"] == t["customdata"]["dtype"] == "f4" for t in pool)
    assert sum(len(t["text"]) for t in pool) == N and all(t["text"][0].startswith("pool-") for t in pool)
    assert {t["marker"]["size"] for t in pool} == {pool_map_figures.marker_size(N)} == {2.0}  # smaller when dense
    assert len(json.dumps(spec)) < 5_000_000  # 8.5 MB before the float32 / id-only hover (docs/benchmarks/map.md)


def _inside_convex(xy: np.ndarray, px: list[float], py: list[float]) -> np.ndarray:
    """Inside a convex polygon: on the same side of every edge (cross products), not the crossing count."""
    side = []
    for i in range(len(px)):
        (x1, y1), (x2, y2) = (px[i], py[i]), (px[(i + 1) % len(px)], py[(i + 1) % len(px)])
        side.append((x2 - x1) * (xy[:, 1] - y1) - (y2 - y1) * (xy[:, 0] - x1))
    side = np.array(side)
    return (side > 0).all(0) | (side < 0).all(0)


def test_box_and_lasso_at_100k_pick_exactly_the_drawn_points_inside(drawn):
    _, pts, rows, xy, _ = drawn
    x, y = xy[:, 0].astype(np.float64), xy[:, 1].astype(np.float64)
    qx, qy = np.quantile(x, [0.2, 0.6]), np.quantile(y, [0.3, 0.7])
    box = {"x": [float(qx[1]), float(qx[0])], "y": [float(qy[0]), float(qy[1])]}  # corners in either order
    want_box = set(rows[(x >= qx[0]) & (x <= qx[1]) & (y >= qy[0]) & (y <= qy[1])].tolist())
    assert 5_000 < len(want_box) < N // 2
    assert brushing.rows_in_selection(pts, {"box": [box]}) == sorted(want_box)

    cx, cy, rad = float(np.median(x)), float(np.median(y)), float(np.std(x))
    ang = np.linspace(0, 2 * np.pi, 9)[:-1]  # a convex octagon around the middle of the map
    px, py = (cx + rad * np.cos(ang)).tolist(), (cy + 0.8 * rad * np.sin(ang)).tolist()
    want_lasso = set(rows[_inside_convex(xy.astype(np.float64), px, py)].tolist())
    assert 5_000 < len(want_lasso) < N
    assert brushing.rows_in_selection(pts, {"lasso": [{"x": px, "y": py}]}) == sorted(want_lasso)

    # an L-shaped (concave) lasso is the union of its two boxes
    x0, x1, x2 = (float(v) for v in np.quantile(x, [0.1, 0.4, 0.7]))
    y0, y1, y2 = (float(v) for v in np.quantile(y, [0.1, 0.4, 0.7]))
    lx, ly = [x0, x2, x2, x1, x1, x0], [y0, y0, y1, y1, y2, y2]
    in_l = ((x > x0) & (x < x2) & (y > y0) & (y < y1)) | ((x > x0) & (x < x1) & (y > y0) & (y < y2))
    got = set(brushing.rows_in_selection(pts, {"lasso": [{"x": lx, "y": ly}]}))
    assert got == set(rows[in_l].tolist())

    # clicked points add their rows; a clicked target star (negative row) is never a pool row
    clicks = {"points": [{"customdata": [float(N - 1), 0.5]}, {"customdata": [-1.0, 1.0]}], "box": [box]}
    assert brushing.rows_in_selection(pts, clicks) == sorted(want_box | {N - 1})


def test_a_pool_over_the_cap_is_sampled_unless_all_are_asked_for(big):
    sampled = pool_map.map_coords(big, 4, "pca", max_points=30_000)
    assert len(sampled.pool) == 30_000 and sampled.pool["row"].is_monotonic_increasing
    assert sampled.pool["row"].tolist() == pool_map.map_sample(N, 30_000).tolist()
    every = pool_map.map_coords(big, 4, "pca", max_points=pool_map.pool_size(big))
    assert len(every.pool) == N and pool_map.pool_size(big) == N


def test_compact_customdata_keeps_every_row_exact():
    rows = np.array([0, 7, 2**24 - 1])
    cd = pool_map_figures.compact_customdata(rows, np.array([0.1, -0.5, 0.9]))
    assert cd.dtype == np.float32 and cd[:, 0].astype(np.int64).tolist() == rows.tolist()
    big_rows = np.array([0, 2**24 + 1])  # float32 would round this row to 2**24
    cd = pool_map_figures.compact_customdata(big_rows, np.array([0.1, 0.2]))
    assert cd.dtype == np.float64 and cd[:, 0].astype(np.int64).tolist() == big_rows.tolist()


def test_umap_estimate_is_said_before_a_fit(big):
    assert pool_map.umap_fit_points(big) == N + 20
    assert pool_map.umap_fit_points(big, 30_000) == 30_000 + 20
    est = [pool_map.umap_estimate_s(n) for n in (1_000, 10_000, 100_000)]
    assert est == sorted(est) and est[0] > 0
    assert pool_map.umap_estimate_s(10_000) > pool_map.umap_estimate_s(10_000, first_in_process=False)
    assert [pool_map.rough_duration(s) for s in (3, 42, 200, 7200)] == ["about 5 s", "about 40 s", "about 3 min",
                                                                          "about 2.0 h"]
