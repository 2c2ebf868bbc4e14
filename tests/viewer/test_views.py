"""The viewer modules (gist_core.viewer.*) and gist_core.runner.launcher on a synthetic run directory (no torch, no Streamlit)."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fake_run import COMPARE_ROWS, SUBTASKS, make_fake_compare, make_fake_geometry, make_fake_run  # noqa: E402

from gist_core.analysis import curvature as curvature_math  # noqa: E402
from gist_core.data.examples import load_examples
from gist_core.data.formatting import IGNORE, tokenize_examples
from gist_core.methods import scoring
from gist_core.methods.gist import advisor
from gist_core.methods.gist.rescore import rescore
from gist_core.runner import launcher
from gist_core.viewer import (
    breakdowns,  # noqa: E402
    brushing,  # noqa: E402
    compare,  # noqa: E402
    curvature,  # noqa: E402
    examples,  # noqa: E402
    pool_map,  # noqa: E402
    progress,  # noqa: E402
    rundir,  # noqa: E402
    spectrum,  # noqa: E402
)
from gist_core.viewer import labels as labels_view  # noqa: E402
from gist_core.viewer import rescore as rescore_view  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return make_fake_run(tmp_path_factory.mktemp("runs") / "fake", n_pool=1500, n_val=20, r=8)


def test_load_run_joins_text_and_drops_stale_cosines(run):
    rd = rundir.load_run(run)
    assert rd.config["r_max"] == 8 and rd.summary["n_selected"] == 75
    f = rd.frame
    assert len(f) == 1500 and f["row"].tolist() == list(range(1500))
    assert f["prompt"].str.startswith("task ").all() and not any(c.startswith("cos:") for c in f)
    assert rd.has_truth and list(rundir.target_groups(rd.target)) == SUBTASKS


def test_rescored_matches_pipeline_rescore_and_select(run):
    for r in (1, 3, 8):
        ref = rescore(run, r)
        rs = rescore_view.rescored_frame(run, r, "subtask", 0.1)
        np.testing.assert_allclose(rs.frame["score"].to_numpy(), ref.score, rtol=1e-6)
        groups = rundir.target_groups(rundir.load_run(run).target)
        idx, picked = scoring.select(ref, 150, "subtask", groups)
        assert np.flatnonzero(rs.frame["selected"].to_numpy()).tolist() == idx.tolist()
        assert rs.picked["subtask"] == picked and rs.k == 150
        np.testing.assert_allclose(rs.frame[f"cos:{SUBTASKS[0]}"].to_numpy(), ref.columns[:, 0], rtol=1e-6)


def test_rescored_at_config_rank_reproduces_stored_scores(run):
    rd = rundir.load_run(run)
    rs = rescore_view.rescored_frame(run, rd.summary["rank"], "global", rd.config["budget"])
    np.testing.assert_allclose(rs.frame["score"].to_numpy(), rd.frame["score"].to_numpy(), rtol=1e-6)
    assert (rs.frame["selected"] == rd.frame["selected_global"]).all()
    assert rs.metrics["global"]["precision"] == pytest.approx(rd.summary["precision"])
    assert rs.frame["rank"].min() == 1 and sorted(rs.frame["rank"]) == list(range(1, 1501))
    assert rs.threshold == pytest.approx(rs.selection["score"].min())


def test_rank_and_budget_change_the_selection(run):
    a = rescore_view.rescored_frame(run, 1, "global", 0.05)
    b = rescore_view.rescored_frame(run, 8, "global", 0.05)
    c = rescore_view.rescored_frame(run, 8, "global", 0.2)
    assert a.selection["id"].tolist() != b.selection["id"].tolist()
    assert (b.k, c.k) == (75, 300) and len(c.selection) == 300
    assert b.metrics["global"]["precision"] > b.metrics["global"]["base_rate"]  # the fake geometry is informative
    with pytest.raises(ValueError):
        rescore_view.rescored_frame(run, 9, "global", 0.05)


def test_coverage_breakdown_and_wrong_examples(run):
    rs = rescore_view.rescored_frame(run, 4, "global", 0.1)
    cov = breakdowns.coverage_table(rs)
    assert cov["subtask"].tolist() == SUBTASKS
    assert cov["picked (global)"].sum() == rs.k and cov["picked (subtask)"].sum() == rs.k
    assert (cov["correct selected (global)"] <= cov["correct in pool"]).all()
    disp = breakdowns.coverage_display(rs)
    for rule in scoring.BALANCES:
        want = [f"{c} / {p}" + (" ⚠ starved" if st else "") for c, p, st in
                zip(cov[f"correct selected ({rule})"], cov[f"picked ({rule})"], cov[f"starved ({rule})"])]
        assert disp[labels_view.RULE_NAMES[rule]].tolist() == want
    bd = breakdowns.subtask_breakdown(rs)
    assert len(bd) == 4 and bd["mean cosine (selected)"].gt(bd["mean cosine (pool)"]).all()
    w = breakdowns.wrong_in_selection(rs)
    assert w["kind"].isin(["wrong", "distractor"]).all() and w["selected"].all()
    m = rs.metrics["global"]
    assert w["skill"].isin(SUBTASKS).sum() == m["n_wrong_selected"] + m["n_distractor_selected"]


def test_histogram_counts_and_brushing(run):
    rs = rescore_view.rescored_frame(run, 4, "global", 0.05)
    for by in ("source", "skill", "truth", "selected"):
        h = brushing.histogram_counts(rs.frame, by, rs.subtasks, bins=30)
        assert h["count"].sum() == len(rs.frame) and h["left"].nunique() == 30
    h = brushing.histogram_counts(rs.frame, "truth", rs.subtasks)
    assert set(h["group"]) <= set(labels_view.TRUTH_LABELS)
    assert brushing.score_range_from_selection({"box": [{"x": [0.5, 0.2], "y": [0, 9]}], "points": []}) == (0.2, 0.5)
    assert brushing.score_range_from_selection({"box": [], "lasso": [], "points": [
        {"customdata": [0.1, 0.2]}, {"customdata": [0.3, 0.4]}]}) == (0.1, 0.4)
    assert brushing.score_range_from_selection({"box": [], "points": []}) is None
    rows = brushing.in_score_range(rs.frame, rs.threshold, 1.0)
    assert brushing.brush_summary(rows, rs.subtasks)["n_selected"] == rs.k
    assert brushing.rows_from_points([{"customdata": [5, 0.3]}, {"customdata": [-2, 1.0]}, {"customdata": 7}, {}]) == [5, 7]


def test_filters_detail_nearest_and_export(run):
    rs = rescore_view.rescored_frame(run, 8, "global", 0.05)
    f = rs.frame
    sel = examples.filter_frame(f, selected="selected")
    assert len(sel) == rs.k
    only = examples.filter_frame(f, skills=["kth_word"], kinds=["wrong"], text="task")
    assert set(only["skill"]) == {"kth_word"} and set(only["kind"]) == {"wrong"}
    assert len(examples.filter_frame(f, text="pool-000007")) == 1
    assert examples.options(f, "source") == ["synthetic-list", "synthetic-word"]
    row = int(sel.iloc[0]["row"])
    d = examples.example_detail(rs, row)
    assert d["selected"]["global"] and len(d["cosines"]) == 4 and d["score"] == pytest.approx(d["cosines"]["cosine"].max())
    nt = examples.nearest_targets(run, row, 8, k=3)
    assert len(nt) == 3 and nt["cosine"].is_monotonic_decreasing and nt["cosine"].between(-1, 1).all()


def test_spectra(run):
    specs = spectrum.spectra(run)
    assert [s.epoch for s in specs] == [1, 2]
    for s in specs:
        assert len(s.sigma) == 20 and np.all(np.diff(s.sigma) <= 1e-9) and s.explained[-1] == pytest.approx(1.0)
        assert 1 <= s.r95 <= s.r99 <= 20 and s.explained[s.r95 - 1] >= 0.95 - 1e-9
    assert spectrum.spectra(run)[0].r95 == rundir.load_run(run).summary["r95"]
    assert set(spectrum.spectrum_frame(specs)["epoch"]) == {1, 2}


def test_map_pca_subsample_and_umap_cache(run):
    md = pool_map.map_coords(run, 8, "pca", max_points=500)
    assert len(md.pool) == 500 and md.pool["row"].is_monotonic_increasing and len(md.targets) == 20
    assert np.isfinite(md.pool[["x", "y"]].to_numpy()).all()
    assert pool_map.map_coords(run, 8, "pca", max_points=500).pool["row"].tolist() == md.pool["row"].tolist()  # seeded
    assert len(pool_map.map_coords(run, 1, "pca").pool) == 1500  # r = 1: one axis, y padded
    assert pool_map.map_coords(run, 3, "umap", compute=False) is None
    fake = np.random.default_rng(0).normal(size=(1500 + 20, 2)).astype(np.float32)
    np.save(pool_map.umap_path(run, 3), fake)  # a cached result is read back, never refitted
    md_u = pool_map.map_coords(run, 3, "umap", compute=False)
    np.testing.assert_allclose(md_u.targets[["x", "y"]].to_numpy(), fake[1500:])
    rs = rescore_view.rescored_frame(run, 3, "global", 0.05)
    pts = pool_map.map_frame(md_u, rs.frame, "truth", rs.subtasks)
    assert len(pts) == 1500 and set(pts["color"]) <= set(labels_view.TRUTH_LABELS)
    sel = {"points": [{"customdata": [7, 0.1]}], "box": [{"x": [0.0, 10.0], "y": [0.0, 10.0]}],
           "lasso": [{"x": [-10.0, -0.0001, -0.0001, -10.0], "y": [-10.0, -10.0, -0.0001, -0.0001]}]}
    got = brushing.rows_in_selection(pts, sel)
    x, y = pts["x"], pts["y"]
    quadrants = (x.between(0, 10) & y.between(0, 10)) | (x.between(-10, -0.0001) & y.between(-10, -0.0001))
    assert set(got) == set(pts.loc[quadrants, "row"]) | {7}
    assert brushing.rows_in_selection(pts, {"points": [], "box": [], "lasso": []}) == []
    np.save(pool_map.umap_path(run, 3), fake[:10])  # wrong shape: treated as stale
    assert not pool_map.umap_cached(run, 3)


def test_umap_cache_is_keyed_by_the_stored_results_not_their_shape(tmp_path):
    """A rerun with --overwrite (same shapes, new projections) must not show the old map."""
    run = make_fake_run(tmp_path / "runs" / "fake", n_pool=300, n_val=20, r=8)
    fake = np.zeros((300 + 20, 2), dtype=np.float32)
    np.save(pool_map.umap_path(run, 3), fake)
    assert pool_map.umap_cached(run, 3)
    m = json.loads((run / "manifest.json").read_text())
    m["stages"]["train_proj"]["digests"] = {"train_proj.npy": {"bytes": 1, "sha256": "new"}}  # what a rerun records
    (run / "manifest.json").write_text(json.dumps(m))
    assert not pool_map.umap_cached(run, 3)
    assert pool_map.umap_key(run, 3) != pool_map.umap_key(run, 4)


def test_progress_state_and_runs_table(run, tmp_path):
    prog = progress.stage_progress(run)
    assert prog["stage"].tolist() == ["data", "warmup", "val_grads/ckpt-1", "val_grads/ckpt-2", "train_proj", "scores"]
    assert (prog["status"] == "done").all()
    assert progress.run_state(run)["status"] == "done"
    table = progress.runs_table(run.parent)
    assert table.loc[0, "run"] == "fake" and table.loc[0, "status"] == "done" and table.loc[0, "precision"] > 0

    half = tmp_path / "half"
    half.mkdir()
    (half / "config.json").write_text((run / "config.json").read_text())
    now = time.time()
    ev = [{"t": now, "stage": "data", "status": "start"}, {"t": now, "stage": "data", "status": "end", "wall_s": 1},
          {"t": now, "stage": "warmup", "status": "start", "total": 40},
          {"t": now, "stage": "warmup", "status": "progress", "done": 10, "total": 40, "loss": 2.5},
          {"t": now, "stage": "warmup", "status": "error", "error": "RuntimeError: boom"}]
    (half / "progress.jsonl").write_text("".join(json.dumps(e) + "\n" for e in ev))
    p = progress.stage_progress(half).set_index("stage")
    assert p.loc["data", "status"] == "done" and p.loc["warmup", "status"] == "error"
    assert p.loc["scores", "status"] == "pending"
    st = progress.run_state(half)
    assert st["status"] == "failed" and "boom" in st["message"]
    assert not rundir.has_scores(half) and rundir.load_run(half).frame is None


def test_progress_of_torchrun_ranks_is_summed(run, tmp_path):
    """Two ranks each report their own rows: one stage row, running until both have ended."""
    d = tmp_path / "ranks"
    d.mkdir()
    (d / "config.json").write_text((run / "config.json").read_text())
    now = time.time()
    ev = [{"t": now, "stage": "data", "status": "start"}, {"t": now, "stage": "data", "status": "end", "wall_s": 1},
          {"t": now, "stage": "train_proj", "status": "start", "total": 50, "rank": 0},
          {"t": now, "stage": "train_proj", "status": "start", "total": 50, "rank": 1},
          {"t": now, "stage": "train_proj", "status": "progress", "done": 30, "total": 50, "rank": 0},
          {"t": now, "stage": "train_proj", "status": "progress", "done": 50, "total": 50, "rank": 1},
          {"t": now, "stage": "train_proj", "status": "end", "wall_s": 9, "rank": 1}]
    write = lambda evs: (d / "progress.jsonl").write_text("".join(json.dumps(e) + "\n" for e in evs))  # noqa: E731
    write(ev)
    p = progress.stage_progress(d).set_index("stage")
    assert p.loc["train_proj", "status"] == "running"
    assert p.loc["train_proj", "done"] == 80 and p.loc["train_proj", "total"] == 100
    assert p.loc["train_proj", "fraction"] == pytest.approx(0.8)
    write([*ev, {"t": now, "stage": "train_proj", "status": "end", "wall_s": 12, "rank": 0}])
    p = progress.stage_progress(d).set_index("stage")
    assert p.loc["train_proj", "status"] == "done" and p.loc["train_proj", "wall_s"] == 12


# ----------------------------------------------------------------------------- launcher
def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphaned zombie may wait long for its reaper here)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def _wait(pred, timeout=10.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_launch_failure_gives_readable_message(tmp_path):
    d = tmp_path / "bad"
    rec = launcher.launch(d, launcher.demo_args(d, epochs=1) + ["--budget", "lots"])  # argparse refuses at once
    assert rec["cmd"][:3] == [sys.executable, "-m", "gist_core.cli"]
    assert json.loads((d / "launch.json").read_text())["pid"] == rec["pid"]
    assert _wait(lambda: not launcher.is_alive(d), 30)
    s = launcher.state(d)
    assert s.returncode == 2 and "budget 'lots' is not a number" in s.error
    st = progress.run_state(d)
    assert st["status"] == "failed" and "budget" in st["message"]
    assert "bad" in progress.runs_table(tmp_path)["run"].tolist()  # listed before it has a config.json


def test_launch_cancel_kills_the_process_group(tmp_path):
    d = tmp_path / "sleepy"
    code = ("import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
            "print('child', p.pid, flush=True); time.sleep(60)")
    launcher.launch(d, [], cmd=[sys.executable, "-c", code])
    assert launcher.is_alive(d)
    assert _wait(lambda: "child" in launcher.read_log_tail(d), 10)
    grandchild = int(launcher.read_log_tail(d).split()[1])
    with pytest.raises(launcher.LaunchError):
        launcher.launch(d, [], cmd=[sys.executable, "-c", "pass"])
    assert launcher.cancel(d, grace_s=3.0)  # returns at once; escalation runs in a background thread
    assert _wait(lambda: not launcher.is_alive(d), 10)
    assert launcher.state(d).cancelled and progress.run_state(d)["status"] == "cancelled"
    assert _wait(lambda: not _running(grandchild), 10)  # the grandchild went with the group
    assert not launcher.cancel(d)


def test_launch_cancel_escalates_to_sigkill(tmp_path):
    d = tmp_path / "stubborn"
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    launcher.launch(d, [], cmd=[sys.executable, "-c", code])
    assert _wait(lambda: "ready" in launcher.read_log_tail(d), 10)
    launcher.cancel(d, grace_s=0.5, wait=True)
    assert not launcher.is_alive(d) and launcher.state(d).returncode == -9


def test_failure_message_parsing():
    assert launcher.failure_message("loading\n\rwarmup 10%\rerror: model 'x' not found\n", 2) == "model 'x' not found"
    tb = "Traceback (most recent call last):\n  File \"x\", line 1\nRuntimeError: CUDA out of memory\n"
    assert launcher.failure_message(tb, 1) == "RuntimeError: CUDA out of memory"
    assert launcher.failure_message("", -9) == "the run was killed by signal 9"
    assert launcher.failure_message("all good\n", 0) is None
    args = launcher.select_args("/tmp/o", model="m", train="p.jsonl", target="v.jsonl", budget="5%", rank=4, tau=0.9,
                                balance="subtask", epochs=2)
    assert args[:2] == ["select", "--model"] and "--tau" not in args and args[args.index("--rank") + 1] == "4"
    assert args[args.index("--budget") + 1] == "5%" and args[args.index("--out") + 1] == "/tmp/o"
    args = launcher.select_args("/tmp/o", model="m", train="p", target="v", rank_rule="advisor", balance="quantile")
    assert args[args.index("--rank-rule") + 1] == "advisor" and args[args.index("--balance") + 1] == "quantile"
    paper = launcher.select_args("/tmp/o", model="m", train="p", target="v", rank_rule="full", balance="quantile",
                                 tau=0.9, paper=True)
    assert "--paper" in paper and not {"--rank-rule", "--balance", "--tau"} & set(paper)


def test_rescore_100k_rows_at_every_rank(tmp_path):
    """The dashboard's rank slider on 100,000 rows (its latency is measured in bench/rescore_latency.py)."""
    d = make_fake_run(tmp_path / "big", n_pool=100_000, n_val=20, r=16)
    picks = [rescore_view.rescored_frame(d, r, "subtask", 0.05) for r in (2, 8, 16)]
    assert all(rs.k == 5000 for rs in picks)
    assert not np.array_equal(picks[0].frame["selected"].to_numpy(), picks[2].frame["selected"].to_numpy())


# ----------------------------------------------------------------------------- compare
@pytest.fixture(scope="module")
def compare_runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("compare-runs")
    return {"full": make_fake_compare(make_fake_run(root / "cmp", n_pool=600, n_val=12, r=6)),
            "nodown": make_fake_compare(make_fake_run(root / "nodown", n_pool=300, n_val=8, r=4), with_downstream=False)}


def test_load_compare_tolerates_missing_invalid_and_empty(tmp_path):
    assert not compare.has_compare(tmp_path) and compare.load_compare(tmp_path) is None
    compare.compare_path(tmp_path).write_text('{"methods": {"gist": {"label"')  # cut short
    assert compare.has_compare(tmp_path) and compare.load_compare(tmp_path) is None
    compare.compare_path(tmp_path).write_text('{"methods": {}}')
    assert compare.load_compare(tmp_path) is None
    compare.compare_path(tmp_path).write_text('{"methods": {"gist": {"wall_s": 1.0}, "junk": 3}}')
    rep = compare.load_compare(tmp_path)
    assert list(rep["methods"]) == ["gist"]
    t = compare.compare_table(rep)  # a bare entry: every number NaN but wall_s
    assert len(t) == 1 and t.loc[0, "wall_s"] == 1.0
    assert t.drop(columns=["method", "label", "rule", "wall_s"]).isna().all(axis=None)
    assert compare.cost_frame(rep).empty and compare.matrix_frame(rep, "overlap").empty
    assert compare.per_subtask_frame(rep).empty and compare.ratio_metrics(rep) == {}


def test_compare_table_rows_columns_and_missing_downstream(compare_runs):
    rep = compare.load_compare(compare_runs["full"])
    t = compare.compare_table(rep)
    assert t["method"].tolist() == COMPARE_ROWS and list(t.columns) == list(compare.COMPARE_COLUMNS)
    gist = rep["methods"]["gist"]
    row = t.set_index("method").loc["gist"]
    assert row["precision"] == pytest.approx(gist["precision"]) and row["wrong"] == gist["n_wrong_selected"]
    assert row["test_loss"] == pytest.approx(gist["test_loss"]) and row["rule"] == "global"
    assert t[["precision", "test_loss", "exact_match", "wall_s"]].notna().all(axis=None)
    assert compare.has_downstream(rep)
    nodown = compare.compare_table(compare.load_compare(compare_runs["nodown"]))
    assert len(nodown) == len(COMPARE_ROWS) and nodown["test_loss"].isna().all() and nodown["precision"].notna().all()
    assert not compare.has_downstream(compare.load_compare(compare_runs["nodown"]))
    for key in ("test_loss", "test_loss_std", "precision"):  # a table caught mid-run: that row only is NaN
        del rep["methods"]["oracle"][key]
    part = compare.compare_table(rep).set_index("method")
    assert part.loc["oracle", ["test_loss", "precision"]].isna().all() and part.drop("oracle")["test_loss"].notna().all()


def test_cost_frame_sums_to_wall_time(compare_runs):
    rep = compare.load_compare(compare_runs["full"])
    cost = compare.cost_frame(rep)
    assert list(cost.columns) == ["method", "stage", "seconds"] and set(cost["stage"]) <= set(compare.COST_STAGES)
    sums = cost.groupby("method")["seconds"].sum()
    for m, e in rep["methods"].items():
        assert sums[m] == pytest.approx(e["wall_s"], abs=1e-2)
    assert cost[cost["method"] == "less"]["stage"].tolist() == ["warmup", "val_grads", "val_features", "pool_features",
                                                                "scoring"]  # pipeline order, not alphabetical


def test_matrices_per_subtask_ratios_and_seeds(compare_runs):
    rep = compare.load_compare(compare_runs["full"])
    ov = compare.matrix_frame(rep, "overlap")
    assert ov.shape == (10, 10) and list(ov.index) == COMPARE_ROWS == list(ov.columns)
    np.testing.assert_allclose(ov.to_numpy(), ov.to_numpy().T)
    assert (np.diag(ov) == 1).all() and ov.loc["gist", "full"] == pytest.approx(rep["n_selected"] / rep["n_pool"])
    rc = compare.matrix_frame(rep, "rank_correlation")
    assert list(rc.index) == ["gist", "less", "rawcos", "length", "embedding"]  # compare's method order
    np.testing.assert_allclose(rc.to_numpy(), rc.to_numpy().T)
    assert rc.loc["gist", "less"] > rc.loc["gist", "rawcos"] > rc.loc["gist", "length"]
    assert compare.matrix_frame(rep, "no_such_key").empty

    sub = compare.per_subtask_frame(rep, "loss")
    assert sub.shape == (11, len(SUBTASKS)) and sub.index[-1] == "base" and list(sub.columns) == SUBTASKS
    assert sub.loc["base", SUBTASKS[0]] == rep["base"]["per_subtask"][SUBTASKS[0]]["loss"]
    assert compare.per_subtask_frame(rep, "exact_match").notna().all(axis=None)
    assert compare.per_subtask_frame(compare.load_compare(compare_runs["nodown"])).empty

    r = compare.ratio_metrics(rep)
    assert list(r) == list(compare.RATIO_LABELS) and r["storage_ratio_gist_over_less"] < 1
    del rep["flops_ratio_gist_over_less"]
    assert "flops_ratio_gist_over_less" not in compare.ratio_metrics(rep) and len(compare.ratio_metrics(rep)) == 3
    seeds = compare.per_seed_frame(rep)
    assert len(seeds) == 10 * 3 and seeds.groupby("method")["test_loss"].mean()["gist"] == pytest.approx(
        rep["methods"]["gist"]["test_loss"])
    assert compare.compare_value(rep, "base", "test_loss") == rep["base"]["test_loss"]
    assert compare.compare_value(compare.load_compare(compare_runs["nodown"]), "oracle", "test_loss") is None


def test_zoom_range_and_compare_args(tmp_path):
    lo, hi = compare.zoom_range([6.898, 6.899, float("nan"), None, 6.9])
    assert lo < 6.898 and hi > 6.9 and hi - lo < 0.01
    assert compare.zoom_range([float("nan")]) is None and compare.zoom_range([2.0, 2.0]) is not None
    assert launcher.compare_args(tmp_path) == ["compare", "--out", str(tmp_path.resolve())]


# ----------------------------------------------------------------------------- curvature (gist-lab geometry)
@pytest.fixture(scope="module")
def geo_run(tmp_path_factory) -> Path:
    return make_fake_geometry(make_fake_run(tmp_path_factory.mktemp("geo") / "g", n_pool=200, n_val=12, r=4), P=64)


def test_load_geometry_tolerates_missing_invalid_and_empty(tmp_path):
    assert not curvature.has_geometry(tmp_path) and curvature.load_geometry(tmp_path) is None
    assert curvature.geometry_stamp(tmp_path) == 0 and curvature.curvature_matrices(tmp_path, 1) == {}
    curvature.geometry_path(tmp_path).parent.mkdir()
    curvature.geometry_path(tmp_path).write_text('{"checkpoints": {"1": {"hess')  # cut short
    assert curvature.has_geometry(tmp_path) and curvature.load_geometry(tmp_path) is None
    curvature.geometry_path(tmp_path).write_text('{"checkpoints": {}}')
    assert curvature.load_geometry(tmp_path) is None
    curvature.geometry_path(tmp_path).write_text('{"checkpoints": {"2": {"wall_s": 1.5}, "x": {}, "3": 7}}')
    rep = curvature.load_geometry(tmp_path)
    assert curvature.geometry_epochs(rep) == [2] and rep["spectrum"] == []
    t = curvature.geometry_table(rep)  # a bare entry: NaN but wall_s
    assert list(t.columns) == list(curvature.GEOMETRY_COLUMNS) and t.loc[0, "wall_s"] == 1.5
    assert t.drop(columns=["epoch", "wall_s"]).isna().all(axis=None)
    assert curvature.spectrum_table(rep).empty


def test_geometry_table_and_spectrum_follow_the_report(geo_run):
    rep = curvature.load_geometry(geo_run)
    assert curvature.has_geometry(geo_run) and curvature.geometry_epochs(rep) == [1, 2] == curvature.warmup_epochs(geo_run)
    t = curvature.geometry_table(rep)
    assert t["epoch"].tolist() == [1, 2] and list(t.columns) == list(curvature.GEOMETRY_COLUMNS)
    for e, row in t.set_index("epoch").iterrows():
        c = rep["checkpoints"][str(e)]
        assert row["offdiag_hessian"] == pytest.approx(c["hessian"]["offdiag_ratio"])
        assert row["offdiag_fisher"] == pytest.approx(c["fisher"]["offdiag_ratio"])
        assert row["mass_AB_hessian"] == pytest.approx(c["hessian"]["mass_AB"])
        assert row["adam_fit_error"] == pytest.approx(c["adam_sqrt_v_fit_error"])
        assert row["best_diagonal_error"] == pytest.approx(c["best_diagonal_fit_error"]) == row["offdiag_hessian"]
        assert row["overlap_random"] == pytest.approx(8 / 64) and row["wall_s"] == c["wall_s"]
        assert row["adam_fit_error"] >= row["best_diagonal_error"] - 1e-9  # no diagonal beats diag(H)
    # r95/r99 per epoch: the report's spectrum = the run's own spectra (rank_for_variance on sigma)
    from_rep, from_run = curvature.spectrum_table(rep), curvature.spectrum_table(geo_run)
    assert from_rep[["epoch", "r95", "r99", "N_v"]].equals(from_run[["epoch", "r95", "r99", "N_v"]])
    assert from_run.equals(curvature.spectrum_table(spectrum.spectra(geo_run)))
    assert t["r95"].tolist() == from_run["r95"].tolist() and (from_run["r95"] <= from_run["r99"]).all()


def test_curvature_matrices_and_diagonals(geo_run):
    m = curvature.curvature_matrices(geo_run, 1)
    assert m["hessian"].shape == m["fisher"].shape == m["gauss_newton"].shape == (64, 64)
    assert m["n_a"] == 32 == len(m["idx_a"]) and len(m["idx_b"]) == 32 and m["module"].endswith("down_proj")
    assert m["shape_a"] == [8, 48] and curvature.curvature_matrices(geo_run, 9) == {}
    np.testing.assert_allclose(m["hessian"], m["hessian"].T)
    d = curvature.diagonal_frame(m)
    assert len(d) == 64 and (d["block"] == "A").sum() == 32 and d["block"].iloc[-1] == "B"
    np.testing.assert_allclose(d["diag_H"], np.diag(m["hessian"]))
    err = [np.linalg.norm(d["diag_H"] - k * d["adam_scaled"]) for k in (0.9, 1.0, 1.1)]
    assert err[1] <= min(err[0], err[2])  # adam_scaled is at the best scale
    assert curvature.geometry_job(geo_run) is None  # nothing launched from the dashboard


def test_matrix_display_and_diagonals_read_one_epochs_file(geo_run):
    """What the Curvature page loads through ui.folder_view: one epoch's matrix ready for the heatmap, its
    diagonals; None for an epoch without a matrices file."""
    m = curvature.curvature_matrices(geo_run, 2)
    dm = curvature.matrix_display(geo_run, 2, "fisher", "corr", max_side=16)
    ref = curvature.display_matrix(m["fisher"], m["n_a"], max_side=16, kind="corr")
    np.testing.assert_array_equal(dm.z, ref.z)
    assert dm.P == 64 and dm.z.shape == (16, 16) and dm.boundary == 8
    assert curvature.matrix_diagonals(geo_run, 2).equals(curvature.diagonal_frame(m))
    assert curvature.matrix_display(geo_run, 9, "hessian", "abs") is None and curvature.matrix_diagonals(geo_run, 9) is None


def test_display_matrix_downsamples_and_keeps_the_boundary():
    rng = np.random.default_rng(0)
    G = rng.normal(size=(40, 600))
    M = G.T @ G  # PSD: correlation has a unit diagonal
    dm = curvature.display_matrix(M, n_a=250, max_side=256, kind="abs")
    assert dm.z.shape == (256, 256) and dm.downsampled and len(dm.edges) == 257
    assert dm.edges[0] == 0 and dm.edges[-1] == 600 and (np.diff(dm.edges) > 0).all()
    assert dm.edges[dm.boundary] == 250 and dm.boundary == round(256 * 250 / 600)  # no cell straddles A/B
    e = dm.edges
    assert dm.z[0, 0] == pytest.approx(np.abs(M[e[0]:e[1], e[0]:e[1]]).mean())
    i, j = dm.boundary, dm.boundary - 1
    assert dm.z[i, j] == pytest.approx(np.abs(M[e[i]:e[i + 1], e[j]:e[j + 1]]).mean())
    corr = curvature_math.correlation_matrix(M)
    np.testing.assert_allclose(np.diag(corr), 1.0)
    assert np.abs(corr).max() <= 1 + 1e-9
    small = curvature.display_matrix(M[:100, :100], n_a=30, kind="corr")  # no downsampling below max_side
    assert small.z.shape == (100, 100) and small.boundary == 30 and not small.downsampled
    np.testing.assert_allclose(np.diag(small.z), 1.0)
    np.testing.assert_allclose(curvature.display_matrix(M[:100, :100], 30).z, np.abs(M[:100, :100]))
    tiny_a = curvature.display_matrix(M, n_a=1, max_side=64)  # a tiny A still gets its own cell
    assert tiny_a.boundary == 1 and tiny_a.edges[1] == 1 and tiny_a.z.shape == (64, 64)
    assert curvature.display_matrix(M, n_a=0, max_side=64).boundary == 0
    H = M.copy()
    H[0, 0], H[1, 1] = -H[0, 0], 0.0  # indefinite, and a zero diagonal entry
    c = curvature_math.correlation_matrix(H)
    assert c[0, 0] == pytest.approx(-1) and not c[1].any() and np.isfinite(c).all()
    with pytest.raises(ValueError):
        curvature.display_matrix(M, 10, kind="log")
    lz, lo, hi = curvature.log_color(np.array([[0.0, 1e-9], [1e-2, 10.0]]), decades=6)
    assert hi == pytest.approx(1.0) and lo == pytest.approx(-5.0) and lz.min() == lo and lz[1, 0] == pytest.approx(-2)


def test_geometry_args(tmp_path):
    assert launcher.geometry_args(tmp_path) == ["geometry", "--run", str(tmp_path.resolve()), "--coords", "2048"]
    assert launcher.geometry_args(tmp_path, coords=0, module=" down_proj ")[-4:] == ["--coords", "0", "--module",
                                                                                     "down_proj"]
    assert "--module" not in launcher.geometry_args(tmp_path, module="")


def test_geometry_running_from_a_terminal(tmp_path):
    """A `gist-lab geometry` started from a terminal holds the folder's writer lock: the page sees it while that
    process lives, and not once it is gone (the kernel drops the lock with the process)."""
    (tmp_path / "config.json").write_text("{}")
    assert not curvature.geometry_running(tmp_path)
    code = ("import sys, time\nfrom gist_core.store.lock import writer_lock\n"
            "with writer_lock(sys.argv[1], cmd=['gist-lab', 'geometry', '--run', sys.argv[1]]):\n"
            "    print('held', flush=True)\n    time.sleep(60)\n")
    p = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        assert curvature.geometry_running(tmp_path)
        assert progress.run_state(tmp_path)["status"] == "running"
    finally:
        p.kill()
        p.wait()
    assert not curvature.geometry_running(tmp_path)


def test_a_finished_geometry_launch_leaves_the_run_done(tmp_path):
    run = make_fake_run(tmp_path / "r", n_pool=100, n_val=8, r=4)
    assert progress.run_state(run)["status"] == "done"
    rec = {"pid": 0, "cmd": launcher.cli_command(launcher.geometry_args(run)), "started_at": time.time() + 5,
           "returncode": 0}
    (run / launcher.LAUNCH_FILE).write_text(json.dumps(rec))  # summary.json predates this launch
    assert progress.run_state(run)["status"] == "done"
    (run / launcher.LAUNCH_FILE).write_text(json.dumps({**rec, "cmd": launcher.cli_command(["demo"])}))
    assert progress.run_state(run)["status"] != "done"  # any other command must rewrite the summary


def test_load_compare_restores_compares_method_order(tmp_path):
    """compare.json is written with sorted keys; the page shows compare's own order, unknown rows last."""
    rows = ["oracle", "zzz_custom", "less", "gist", "random", "gist_subtask"]
    (tmp_path / "compare.json").write_text(json.dumps({"methods": {r: {"wall_s": 1.0} for r in rows}}, sort_keys=True))
    assert list(compare.load_compare(tmp_path)["methods"]) == ["gist", "gist_subtask", "less", "random", "oracle",
                                                               "zzz_custom"]


def test_starved_subtasks_follow_the_coverage_figures_when_labels_exist(run):
    """The Scores page's starvation flag uses the CLI's rule: ground-truth coverage, not column attribution."""
    rs = rescore_view.rescored_frame(run, 2, "global", 0.02)  # a rank and budget where a subtask is starved
    assert rs.starved_basis == "ground-truth coverage" and rs.starved["global"]
    for rule in ("global", "subtask"):
        cov = rs.metrics[rule]["coverage"]
        sel, pool = sum(c["selected"] for c in cov.values()), sum(c["in_pool"] for c in cov.values())
        assert rs.starved[rule] == [s for s, c in cov.items() if c["selected"] < sel * c["in_pool"] / pool / 3]
        table = breakdowns.coverage_table(rs)
        assert table[f"starved ({rule})"].tolist() == [s in rs.starved[rule] for s in table["subtask"]]


def test_model_input_is_what_the_pipeline_tokenizes(tmp_path):
    """The Examples page's 'as the model sees it': the run's tokenizer, the pipeline's own encoding, decoded."""
    from transformers import AutoTokenizer  # lazy: heavy, and this module otherwise runs without it
    run = make_fake_run(tmp_path / "fake", n_pool=60, n_val=8, r=4)
    ex = pd.read_parquet(run / "examples.parquet").iloc[7]
    mi = examples.model_input(run, 7)
    tok = AutoTokenizer.from_pretrained("sample_data/tiny-lm")
    src = tmp_path / "one.jsonl"
    src.write_text(json.dumps({"prompt": ex["prompt"], "response": ex["response"]}) + "\n")
    t = tokenize_examples(load_examples(src), tok, 256)  # the batch path select uses, not encode_pair
    ids, labels = t.input_ids[0], t.labels[0]
    start = next(i for i, y in enumerate(labels) if y != IGNORE)
    assert (mi["n_prompt"], mi["n_response"]) == (start, len(ids) - start)
    assert mi["prompt"] == tok.decode(ids[:start]) and ex["prompt"] in mi["prompt"]
    assert mi["response"] == tok.decode(ids[start:]) and mi["response"].strip().startswith(ex["response"])
    assert mi["response"].endswith(tok.eos_token) and not mi["truncated"]


def test_model_choices_list_the_bundled_model_and_the_registry(tmp_path, monkeypatch):
    monkeypatch.setenv("GIST_LAB_MODELS", str(tmp_path / "empty-cache"))
    choices = launcher.model_choices("sample_data/tiny-lm")
    assert choices[0][1] == "sample_data/tiny-lm"
    assert ("smollm2-135m" in [spec for _, spec in choices]
            and "not fetched: run `gist-lab models fetch smollm2-135m` first" in choices[1][0])
    args = launcher.select_args("/tmp/o", model="smollm2-135m", train="p.jsonl", target="v.jsonl", lora_layers=4,
                                max_length=128, pool_size=300)
    assert args[args.index("--lora-layers") + 1] == "4" and args[args.index("--pool-size") + 1] == "300"
    assert args[args.index("--max-length") + 1] == "128"


# ----------------------------------------------------------------------------- selection rules and the advisor
def test_calibrated_rules_in_the_rescored_frame(run):
    rs = rescore_view.rescored_frame(run, 5, "quantile", 0.05)
    cols = np.column_stack([rs.frame[f"cos:{s}"].to_numpy() for s in rs.subtasks])
    q = np.array([[np.mean(cols[:, t] <= cols[i, t]) for t in range(cols.shape[1])] for i in range(len(cols))])
    order = np.lexsort((np.arange(len(q)), -q.max(1)))
    assert set(np.flatnonzero(rs.frame["selected"].to_numpy())) == set(order[:rs.k].tolist())
    assert set(rs.metrics) == set(scoring.BALANCES) and all(rs.metrics.values())
    for rule in scoring.BALANCES:
        assert rs.frame[f"selected_{rule}"].sum() == rs.k
        assert sum(rs.picked[rule].values()) == rs.k


def test_column_distributions_and_quantiles(run):
    rs = rescore_view.rescored_frame(run, 5, "global", 0.05)
    cols = breakdowns.gist_columns(rs)
    d = breakdowns.column_distributions(rs.subtasks, cols)
    assert len(d) == len(rs.frame) * len(rs.subtasks)
    first = d[d["subtask"] == rs.subtasks[0]]["value"].to_numpy()
    np.testing.assert_allclose(first, rs.frame[f"cos:{rs.subtasks[0]}"].to_numpy())
    z = breakdowns.column_distributions(rs.subtasks, cols, "zscore").groupby("subtask")["value"]
    np.testing.assert_allclose(z.mean().to_numpy(), 0, atol=1e-9)
    np.testing.assert_allclose(z.std(ddof=0).to_numpy(), 1, atol=1e-9)
    q = breakdowns.column_quantiles(rs.subtasks, cols, rs.k)
    per = rs.k // len(rs.subtasks)
    for _, row in q.iterrows():
        col = np.sort(rs.frame[f"cos:{row['subtask']}"].to_numpy())[::-1]
        assert row[f"top-{per} edge"] == pytest.approx(col[per - 1]) and row["max"] == pytest.approx(col[0])


def test_max_winners_count_the_selection_by_group_and_column(run):
    rs = rescore_view.rescored_frame(run, 5, "global", 0.05)
    w = breakdowns.max_winners(rs, "global", "skill")
    sel = rs.frame[rs.frame["selected_global"]]
    assert w["selected"].sum() == rs.k
    assert dict(zip(w["skill"], w["selected"])) == sel["skill"].fillna(labels_view.UNKNOWN).value_counts().to_dict()
    owners = np.asarray(rs.subtasks)[np.column_stack([sel[f"cos:{s}"] for s in rs.subtasks]).argmax(1)]
    top = w.iloc[0]
    got = dict(x.rsplit(" ", 1) for x in top["picked for"].split(", "))
    mine = owners[(sel["skill"].fillna(labels_view.UNKNOWN) == top["skill"]).to_numpy()]
    assert {k: int(v) for k, v in got.items()} == {k: int((mine == k).sum()) for k in set(mine)}
    assert w["target subtask"].tolist() == [s in rs.subtasks for s in w["skill"]]
    quota = breakdowns.max_winners(rs, "subtask", "skill")  # the quota counts each example for the turn that took it
    turns = [int(x.rsplit(" ", 1)[1]) for cell in quota["picked for"] for x in cell.split(", ")]
    assert sum(turns) == rs.k and sorted(rs.picked["subtask"].values()) == sorted(
        sum(int(x.rsplit(" ", 1)[1]) for cell in quota["picked for"] for x in cell.split(", ") if x.startswith(s + " "))
        for s in rs.subtasks)


def test_compare_columns_feed_the_same_views(tmp_path):
    run = make_fake_run(tmp_path / "r", n_pool=200, n_val=8, r=4)
    assert breakdowns.compare_columns(run) == {}
    base = rundir.load_run(run).frame
    subs = list(rundir.target_groups(rundir.load_run(run).target))
    rng = np.random.default_rng(0)
    C = rng.normal(size=(len(base), len(subs)))
    (run / "compare").mkdir(exist_ok=True)
    pd.DataFrame({"id": base["id"], **{f"col:rawcos:{s}": C[:, t] for t, s in enumerate(subs)}}).to_parquet(
        run / "compare" / "scores.parquet")
    got = breakdowns.compare_columns(run)
    assert list(got) == ["rawcos"]
    np.testing.assert_allclose(got["rawcos"], C)
    w = breakdowns.selection_winners(base, subs, C, "quantile", 20, "skill")
    idx = np.argsort(-np.column_stack([(C[:, t][:, None] >= C[:, t][None, :]).mean(1) for t in range(len(subs))]).max(1),
                     kind="stable")[:20]
    assert dict(zip(w["skill"], w["selected"])) == base.iloc[idx]["skill"].fillna(labels_view.UNKNOWN).value_counts().to_dict()


def test_winners_by_rank_follow_rescoring(run):
    wr = breakdowns.winners_by_rank(run, [1, 4, 8], "subtask", 0.05, "skill", top=3)
    assert sorted(wr["rank"].unique()) == [1, 4, 8]
    assert (wr.groupby("rank")["count"].sum() == 75).all()
    assert wr["group"].nunique() <= 4  # the top 3 and 'other'
    rs = rescore_view.rescored_frame(run, 4, "subtask", 0.05)
    want = rs.selection["skill"].fillna(labels_view.UNKNOWN).value_counts()
    got = wr[wr["rank"] == 4].set_index("group")["count"]
    for g, c in got.items():
        if g != "other":
            assert c == want[g]


def test_rank_ranges():
    assert spectrum.rank_ranges([1, 2, 3, 7, 9, 10]) == "1–3, 7, 9–10" and spectrum.rank_ranges([4]) == "4"


def test_advisor_curve_of_a_run(run):
    a = rundir.arrays(run)
    curve = spectrum.advisor_curve(run)
    want = advisor.rank_curve(a.val_coords, np.asarray(a.X), a.groups, a.aggregation)  # pool < REF_ROWS: all rows
    np.testing.assert_allclose(curve.curve, want.curve)
    assert curve.n_ref == len(a.X) and 1 <= curve.suggested <= len(curve.ranks)


def test_compare_rows_can_be_thinned_by_rule():
    rep = {"methods": {"gist": {"family": "gist", "rule": "global"}, "gist_quantile": {"family": "gist", "rule": "quantile"},
                       "rawcos_zscore": {"family": "rawcos", "rule": "zscore"}, "random": {"family": "random", "rule": "global"},
                       "less_subtask": {"family": "less", "rule": "subtask"}}}
    assert compare.compare_rules(rep) == ["global", "subtask", "zscore", "quantile"]
    table = compare.compare_table(rep)
    assert compare.rows_with_rules(table, rep, ["quantile"])["method"].tolist() == ["gist_quantile", "random"]


def test_long_rows_are_previewed_at_a_line_end_without_leaving_a_code_block_open():
    text = "Here is the program:\n```python\n" + "\n".join(f"x{i} = {i}" for i in range(400)) + "\n```\nDone."
    head, cut = examples.preview(text, 300)
    assert cut and len(head) < len(text) and head.count("```") % 2 == 0 and text.startswith(head[:-4].rstrip("\n"))
    assert examples.preview("short", 300) == ("short", False)
    assert examples.looks_like_markdown(text) and examples.looks_like_markdown("Steps:\n1. mix\n2. bake")
    assert not examples.looks_like_markdown("give the letters i l j in order *now*")


def test_every_pool_row_has_a_domain(run):
    frame = rundir.base_frame(run)
    assert set(frame["domain"]) <= {"code", "math", "writing", "other"} and frame["domain"].notna().all()
