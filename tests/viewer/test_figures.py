"""The figure builders (gist_core.viewer.figures, methods/<name>/figures.py) on a synthetic run (tests/fake_run.py):
each builder's traces carry the viewer's numbers, and one palette colours the same group or method family alike
in every figure (no torch, no Streamlit)."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from fake_run import COMPARE_ROWS, SUBTASKS, make_fake_compare, make_fake_geometry, make_fake_run  # noqa: E402
from repo import ROOT  # noqa: E402

from gist_core.viewer import (
    breakdowns,  # noqa: E402
    brushing,  # noqa: E402
    compare,  # noqa: E402
    curvature,  # noqa: E402
    examples,  # noqa: E402
    labels,  # noqa: E402
    pool_map,  # noqa: E402
    rescore,  # noqa: E402
    spectrum,  # noqa: E402
)
from gist_core.viewer.figures import compare as compare_figures  # noqa: E402
from gist_core.viewer.figures import curvature as curvature_figures  # noqa: E402
from gist_core.viewer.figures import palette  # noqa: E402
from gist_core.viewer.figures import pool_map as pool_map_figures  # noqa: E402
from gist_core.viewer.figures import scores as scores_figures  # noqa: E402
from gist_core.viewer.figures import spectrum as spectrum_figures  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    d = make_fake_run(tmp_path_factory.mktemp("fig-runs") / "fake", n_pool=600, n_val=12, r=6)
    make_fake_compare(d)
    make_fake_geometry(d, P=40)
    return d


@pytest.fixture(scope="module")
def rs(run) -> rescore.Rescored:
    return rescore.rescored_frame(run, 4, "global", 0.05)


def _a(v) -> np.ndarray:
    return np.asarray(v, dtype=float)


def _vlines(fig: go.Figure) -> dict[float, object]:
    return {float(s.x0): s for s in fig.layout.shapes if s.x0 == s.x1 and s.xref == "x"}


# ----------------------------------------------------------------------------- spectrum
def test_singular_values_and_explained_variance(run):
    specs = spectrum.spectra(run)
    fig = spectrum_figures.singular_values(specs, rank=3, gist_epoch=1)
    assert [t.name for t in fig.data] == ["ckpt-1 (GIST)", "ckpt-2"]
    for t, sp in zip(fig.data, specs):
        np.testing.assert_allclose(_a(t.y), sp.sigma)
        assert list(t.x) == list(range(1, len(sp.sigma) + 1))
    assert fig.layout.yaxis.type == "log" and 3.0 in _vlines(fig)

    fig = spectrum_figures.explained_variance(specs, rank=3, tau=0.9, gist_epoch=2)
    for t, sp in zip(fig.data, specs):
        np.testing.assert_allclose(_a(t.y), sp.explained)
    main = specs[1]  # the GIST checkpoint's r95 / r99 are marked, in the palette's colours
    lines = _vlines(fig)
    assert lines[float(main.r95)].line.color == palette.MARKS["r95"]
    assert lines[float(main.r99)].line.color == palette.MARKS["r99"] and 3.0 in lines
    assert [float(s.y0) for s in fig.layout.shapes if s.y0 == s.y1] == [0.9]  # tau


def test_advisor_chart_band_and_line(run):
    adv = spectrum.advisor_curve(run)
    fig = spectrum_figures.advisor_chart(adv, rank=2, r95=3)
    band, line = fig.data
    assert line.name == "held-out percentile" and band.fill == "toself"
    np.testing.assert_allclose(_a(line.y), adv.curve)
    n = len(adv.ranks)
    np.testing.assert_allclose(_a(band.y)[:n], np.asarray(adv.curve) + np.asarray(adv.standard_error))
    np.testing.assert_allclose(_a(band.y)[n:], (np.asarray(adv.curve) - np.asarray(adv.standard_error))[::-1])
    lines = _vlines(fig)
    assert lines[float(adv.suggested)].line.color == palette.MARKS["suggested"] and {2.0, 3.0} <= set(lines)
    assert line.line.color == palette.MARKS["curve"]


def test_intrinsic_dimension_per_epoch(run):
    dims = curvature.spectrum_table(spectrum.spectra(run))
    fig = spectrum_figures.intrinsic_dimension(dims)
    assert [t.name for t in fig.data] == ["r95", "r99"]
    assert list(fig.data[0].x) == [1, 2] and list(fig.data[1].y) == dims["r99"].tolist()


# ----------------------------------------------------------------------------- scores
@pytest.mark.parametrize("by", ["source", "skill", "truth", "selected"])
def test_histogram_bars_sum_to_the_pool(rs, by):
    h = brushing.histogram_counts(rs.frame, by, rs.subtasks, bins=25)
    fig = scores_figures.score_histogram(h, by, rs.threshold, rs.k, "t", log_y=(by == "skill"))
    assert sum(_a(t.y).sum() for t in fig.data) == len(rs.frame) == 600
    assert [t.name for t in fig.data] == sorted(h["group"].unique())
    for t in fig.data:  # each bar carries its bin edges, what score_range_from_selection reads back
        cd = np.asarray(t.customdata)
        np.testing.assert_allclose(_a(t.x), cd.mean(1))
        np.testing.assert_allclose(_a(t.width), cd[:, 1] - cd[:, 0])
    assert _vlines(fig)[rs.threshold].line.color == palette.MARKS["threshold"]
    assert fig.layout.yaxis.type == ("log" if by == "skill" else "linear") and fig.layout.barmode == "stack"
    colors = {t.name: t.marker.color for t in fig.data}
    if by == "truth":
        assert colors == {g: palette.TRUTH_COLORS[g] for g in colors} and set(colors) <= set(labels.TRUTH_LABELS)
    elif by == "selected":
        assert colors == {"not selected": palette.GREY, "selected": palette.GREEN}
    else:  # no meaning of their own: the theme's colour cycle
        assert set(colors.values()) == {None}


def test_subtask_bars_violins_and_example_cosines(rs):
    bd = breakdowns.subtask_breakdown(rs)
    fig = scores_figures.subtask_cosine_bars(bd, "selected (global)")
    assert [t.name for t in fig.data] == ["pool", "selected (global)"] and list(fig.data[0].x) == SUBTASKS
    np.testing.assert_allclose(_a(fig.data[1].y), bd["mean cosine (selected)"])

    cols = breakdowns.gist_columns(rs)
    fig = scores_figures.column_violins(breakdowns.column_distributions(rs.subtasks, cols), "cols", "cosine")
    assert [t.name for t in fig.data] == rs.subtasks and all(t.type == "violin" for t in fig.data)
    for t, col in zip(fig.data, cols.T):
        np.testing.assert_allclose(_a(t.y), col)

    d = examples.example_detail(rs, int(rs.selection["row"].iloc[0]))
    fig = scores_figures.example_cosines(d["cosines"])
    assert list(fig.data[0].x) == rs.subtasks and max(_a(fig.data[0].y)) == pytest.approx(d["score"])
    assert list(fig.layout.yaxis.range) == [-1, 1]


def test_winners_by_rank_stack_to_the_budget(run, rs):
    ranks = [1, 3, 6]
    wr = breakdowns.winners_by_rank(run, ranks, "global", 0.05, "skill", top=5)
    fig = scores_figures.winners_by_rank_bars(wr, 3, ranks, "who")
    per_rank = {}
    for t in fig.data:
        for x, y in zip(t.x, t.y):
            per_rank[x] = per_rank.get(x, 0) + y
    assert per_rank == {r: rs.k for r in ranks}  # every rank's stack holds the whole selection
    targets = [t for t in fig.data if t.name.endswith("(target)")]
    assert fig.data[:len(targets)] == tuple(targets) and targets  # target subtasks first, not hatched
    assert all(t.marker.pattern.shape == "" for t in targets)
    assert all(t.marker.pattern.shape == "/" for t in fig.data[len(targets):])
    assert list(fig.layout.xaxis.tickvals) == ranks and 3.0 in _vlines(fig)


# ----------------------------------------------------------------------------- map
def test_map_puts_the_targets_in_their_own_trace(run, rs):
    md = pool_map.map_coords(run, 4, "pca", max_points=400)
    pts = pool_map.map_frame(md, rs.frame, "truth", rs.subtasks)
    fig = pool_map_figures.pool_map(pts, md.targets, "truth", "pca")
    star = fig.data[-1]
    assert star.name == pool_map_figures.TARGET_TRACE and star.marker.symbol == "star" and star.marker.color == palette.INK
    np.testing.assert_allclose(_a(star.x), md.targets["x"])
    np.testing.assert_allclose(_a(star.y), md.targets["y"])
    assert [c[0] for c in star.customdata] == [-1 - j for j in range(len(md.targets))]  # never taken for pool rows
    pool = fig.data[:-1]
    assert sum(len(t.x) for t in pool) == len(pts) == 400
    for t in pool:  # each point where map_frame put it, its row in customdata
        cd = np.asarray(t.customdata)
        want = pts.set_index("row").loc[cd[:, 0].astype(int)]
        np.testing.assert_allclose(_a(t.x), want["x"])
        np.testing.assert_allclose(_a(t.y), want["y"])
        np.testing.assert_allclose(cd[:, 1], want["score"], rtol=1e-6)  # float32 customdata
        assert set(want["color"]) == {t.name} and list(t.text) == want["id"].tolist()  # hover: the id, group = name
    # the same palette as the histogram's ground-truth groups
    counts = brushing.histogram_counts(rs.frame, "truth", rs.subtasks)
    hist = scores_figures.score_histogram(counts, "truth", rs.threshold, rs.k, "t")
    hist_colors = {t.name: t.marker.color for t in hist.data}
    assert {t.name: t.marker.color for t in pool} == {g: hist_colors[g] for g in (t.name for t in pool)}
    lasso = {"lasso": [{"x": [-9, 9, 9, -9], "y": [-9, -9, 9, 9]}]}
    assert brushing.rows_in_selection(pts, lasso) == sorted(pts["row"])  # the figure's rows are the view's rows

    by_score = pool_map_figures.pool_map(pool_map.map_frame(md, rs.frame, "score", rs.subtasks), md.targets, "score", "umap")
    assert [t.name for t in by_score.data] == ["pool", pool_map_figures.TARGET_TRACE]
    np.testing.assert_allclose(_a(by_score.data[0].marker.color), pts["score"], rtol=1e-6)
    assert by_score.layout.xaxis.title.text == "UMAP 1" and by_score.layout.dragmode == "lasso"


# ----------------------------------------------------------------------------- curvature
def test_curvature_heatmap_blocks_and_scales(run):
    mats = curvature.curvature_matrices(run, 1)
    dm = curvature.display_matrix(mats["hessian"], mats["n_a"], kind="abs")
    fig = curvature_figures.curvature_heatmap(dm, "Hessian", 1)
    lz, lo, hi = curvature.log_color(dm.z)
    np.testing.assert_allclose(_a(fig.data[0].z), lz)
    assert (fig.data[0].zmin, fig.data[0].zmax) == (lo, hi) and fig.data[0].colorscale is not None
    assert [s.x0 for s in fig.layout.shapes] == [19.5, -0.5] and fig.layout.shapes[0].line.color == palette.PAPER
    assert list(fig.layout.xaxis.ticktext) == ["A (20)", "B (20)"] and len(fig.layout.annotations) == 4
    corr = curvature_figures.curvature_heatmap(curvature.display_matrix(mats["fisher"], mats["n_a"], kind="corr"), "F", 2)
    assert (corr.data[0].zmin, corr.data[0].zmax) == (-1, 1) and corr.layout.shapes[0].line.color == palette.INK
    assert corr.layout.title.text == "F, epoch 2: correlation"
    small = curvature_figures.curvature_heatmap(curvature.display_matrix(mats["hessian"], mats["n_a"], max_side=10), "H", 1)
    assert np.asarray(small.data[0].z).shape == (10, 10) and "10×10 cells" in small.layout.title.text


def test_diagonals_and_trend(run):
    diag = curvature.diagonal_frame(curvature.curvature_matrices(run, 1))
    fig = curvature_figures.diagonals(diag)
    assert [t.name for t in fig.data] == ["|diag(H)|, A", "|diag(H)|, B", "c·√v (Adam, best scale)"]
    np.testing.assert_allclose(np.r_[_a(fig.data[0].y), _a(fig.data[1].y)], diag["diag_H"].abs())
    np.testing.assert_allclose(_a(fig.data[2].y), diag["adam_scaled"])
    assert 19.5 in _vlines(fig)  # the A | B boundary
    table = curvature.geometry_table(curvature.load_geometry(run))
    fig = curvature_figures.curvature_trend(table)
    assert len(fig.data) == 5 and fig.data[-1].line.color == palette.MARKS["random_reference"]
    np.testing.assert_allclose(_a(fig.data[0].y), table["offdiag_hessian"])
    assert list(fig.data[3].x) == [1, 2]


# ----------------------------------------------------------------------------- compare
@pytest.fixture(scope="module")
def rep(run) -> dict:
    return compare.load_compare(run)


def test_metric_bars_colour_methods_by_family_in_every_chart(rep):
    table = compare.compare_table(rep)
    loss = compare_figures.metric_bars(table, "test_loss", "loss", {"base": rep["base"]["test_loss"]}, zoom=True)
    prec = compare_figures.metric_bars(table, "precision", "precision", {"random": 0.1})
    for fig, col in ((loss, "test_loss"), (prec, "precision")):
        bar = fig.data[0]
        assert list(bar.x) == COMPARE_ROWS
        np.testing.assert_allclose(_a(bar.y), table[col])
        np.testing.assert_allclose(_a(bar.error_y.array), table[f"{col}_std"])
        colors = dict(zip(bar.x, bar.marker.color))
        assert colors["gist"] == colors["gist_subtask"] == palette.FAMILY_COLORS["gist"]
        assert colors["less"] == colors["less_subtask"] == palette.FAMILY_COLORS["less"]
        assert colors["oracle"] == palette.FAMILY_COLORS["oracle"] and len({colors[m] for m in ("gist", "less",
                                                                                               "random")}) == 3
    assert dict(zip(loss.data[0].x, loss.data[0].marker.color)) == dict(zip(prec.data[0].x, prec.data[0].marker.color))
    assert "zoomed" in loss.layout.title.text and loss.layout.yaxis.range[0] > 0
    assert prec.layout.yaxis.range is None and [s.y0 for s in prec.layout.shapes] == [0.1]
    part = table.copy()
    part.loc[part["method"] == "oracle", "test_loss"] = np.nan  # a table caught mid-run: that bar only is missing
    assert "oracle" not in compare_figures.metric_bars(part, "test_loss", "loss").data[0].x


def test_cost_bars_sum_to_each_methods_wall_time(rep):
    cost, methods = compare.cost_frame(rep), list(compare.compare_table(rep)["method"])
    fig = compare_figures.cost_bars(cost, methods)
    assert [t.name for t in fig.data] == list(dict.fromkeys(cost["stage"]))
    total = pd.concat([pd.Series(_a(t.x), index=list(t.y)) for t in fig.data]).groupby(level=0).sum()
    for m, e in rep["methods"].items():
        assert total.get(m, 0.0) == pytest.approx(e["wall_s"], abs=1e-2)
    assert list(fig.layout.yaxis.categoryarray) == methods[::-1] and fig.layout.height == 60 + 32 * len(methods)
    log = compare_figures.cost_bars(cost, methods, log_x=True)
    assert log.layout.xaxis.type == "log" and all((_a(t.x) > 0).all() for t in log.data)


def test_agreement_and_per_subtask_heatmaps(rep):
    ov = compare.matrix_frame(rep, "overlap")
    fig = compare_figures.agreement_heatmap(ov, "overlap", 0, 1)
    np.testing.assert_allclose(_a(fig.data[0].z), ov.to_numpy())
    assert list(fig.data[0].y) == COMPARE_ROWS
    rc = compare_figures.agreement_heatmap(compare.matrix_frame(rep, "rank_correlation"), "rc", -1, 1)
    assert fig.data[0].colorscale != rc.data[0].colorscale  # a share on the sequential scale, [-1, 1] diverging
    corr = curvature_figures.curvature_heatmap(curvature.display_matrix(np.eye(4), 2, kind="corr"), "H", 1)
    assert rc.data[0].colorscale == corr.data[0].colorscale  # one diverging scale for every correlation
    sub = compare.per_subtask_frame(rep, "loss")
    fig = compare_figures.per_subtask_heatmap(sub, "loss")
    assert list(fig.data[0].y)[-1] == "base" and list(fig.data[0].x) == SUBTASKS
    np.testing.assert_allclose(_a(fig.data[0].z), sub.to_numpy())
    assert compare_figures.per_subtask_heatmap(compare.per_subtask_frame(rep, "exact_match"), "exact_match").data[0].colorscale \
        != fig.data[0].colorscale


def test_palette_is_the_one_source_of_colours():
    assert palette.family_color("gist_quantile") == palette.family_color("gist") == palette.FAMILY_COLORS["gist"]
    assert palette.family_color("no_such_method") == palette.NEUTRAL
    assert set(palette.TRUTH_COLORS) == {*labels.TRUTH_LABELS, labels.UNKNOWN}
    assert palette.group_color("truth", labels.TRUTH_LABELS[1]) == palette.RED and palette.group_color("skill", "x") is None
    assert palette.translucent("#1565c0", 0.15) == "rgba(21,101,192,0.15)"
    pages = ROOT / "pages"
    for page in pages.glob("*.py"):  # the pages draw through the figures module only
        text = page.read_text()
        assert not re.search(r"^(import|from) plotly|\bgo\.[A-Z]|#[0-9a-fA-F]{6}\b", text, re.M), page.name
