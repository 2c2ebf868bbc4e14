"""Every job from its page: the empty Clusters (cluster, then experts), Layers (train) and Proxy (proxy build) pages
under AppTest. Their form shows the terminal command it amounts to; Launch calls the launcher with exactly those
arguments (recorded here, nothing spawned), which the real CLI parser reads back; a running job is followed and
cancelled; a failed one shows its error; a folder another process writes shows who and offers no button."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fake_run import make_fake_run
from repo import ROOT
from streamlit.testing.v1 import AppTest

from gist_core.cli import build_parser
from gist_core.methods.gast.config import train_config
from gist_core.methods.gradientspace.config import ClusterConfig, cluster_config, expert_config
from gist_core.methods.iprox.config import proxy_config
from gist_core.runner import launcher
from gist_core.store.layout import RunLayout
from gist_core.store.reports import stamp
from gist_core.viewer import progress

CLUSTERS, LAYERS, PROXY = "pages/8_Clusters.py", "pages/9_Layers.py", "pages/10_Proxy.py"


@pytest.fixture
def root(tmp_path, monkeypatch) -> Path:
    runs = tmp_path / "runs"
    make_fake_run(runs / "fake", n_pool=200, n_val=8, r=4)
    monkeypatch.setenv("GIST_LAB_RUNS", str(runs))
    return runs


@pytest.fixture
def launches(monkeypatch) -> list:
    """launcher.launch, recording (folder, args) instead of spawning."""
    calls = []
    monkeypatch.setattr(launcher, "launch", lambda run_dir, args, cmd=None: calls.append((Path(run_dir), args)) or {})
    return calls


def open_page(page: str, run: str = "fake") -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.query_params["run"] = run
    at.run()
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def shown_command(at: AppTest) -> str:
    return next(c.value for c in at.code if c.value.startswith("gist-lab "))


def parse(args: list[str]):
    return build_parser().parse_args(args)


def live_job(folder: Path, command: str) -> dict:
    """A real detached launch that sleeps, recorded as `gist-lab <command>` (its command line names it)."""
    code = "import time; print('working', flush=True); time.sleep(60)"
    return launcher.launch(folder, [], cmd=[sys.executable, "-c", code, command, "--run", str(folder)])


def failed_job(folder: Path, command: str, log: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rec = {"pid": 0, "cmd": launcher.cli_command([command, "--out", str(folder)]), "started_at": time.time(),
           "returncode": 2}
    (folder / launcher.LAUNCH_FILE).write_text(json.dumps(rec))
    (folder / launcher.LOG_FILE).write_text(log)


def make_fake_clusters(run_dir: Path, k: int = 3, K: int = 4) -> None:
    """A clusters/ folder as `gist-lab cluster` leaves it (report and arrays), from the run's own pool rows."""
    frame = pd.read_parquet(run_dir / "examples.parquet")
    rng = np.random.default_rng(0)
    rows = np.arange(len(frame), dtype=np.int64)
    skills = sorted(frame["skill"].unique())
    lay = RunLayout(run_dir)
    lay.clusters_dir.mkdir(exist_ok=True)
    np.save(lay.clusters_array("rows"), rows)
    np.save(lay.clusters_array("coords"), rng.normal(size=(len(rows), K)).astype(np.float32))
    table, composition = {}, {}
    for m in ("gradientspace", "elrea", "embedding", "random"):
        labels = rng.integers(0, k, len(rows)).astype(np.int64)
        np.save(lay.clusters_array(f"labels-{m}"), labels)
        sizes = np.bincount(labels, minlength=k)
        table[m] = {"ari": 0.1, "nmi": 0.2, "purity": 0.3, "n_clusters": k, "size_min": int(sizes.min()),
                    "size_max": int(sizes.max()), "within_var_coords": 0.5}
        composition[m] = [[int(((labels == c) & (frame["skill"] == s)).sum()) for s in skills] for c in range(k)]
    rep = stamp("clusters", {"checkpoint": 1, "config": {**vars(ClusterConfig()), "k_grid": [3]}, "k": k,
                             "k_curve": [], "n_rows": len(rows), "skills": skills, "table": table,
                             "composition": composition})
    lay.clusters_report.write_text(json.dumps(rep))


# ----------------------------------------------------------------------------- Clusters: gist-lab cluster
def test_empty_clusters_page_launches_cluster_with_the_forms_settings(root, launches):
    run = root / "fake"
    at = open_page(CLUSTERS)
    assert any("No clustering in this run yet" in i.value for i in at.info)
    assert shown_command(at) == launcher.shell_command(launcher.cluster_args(run))  # defaults: no flag
    at.number_input(key="cl_k").set_value(5)
    at.number_input(key="cl_pool").set_value(500)
    at.radio(key="cl_rule").set_value("dominant")
    at.run()
    expected = launcher.cluster_args(run, clusters=5, pool_size=500, rule="dominant")
    assert shown_command(at) == launcher.shell_command(expected)
    at.button(key="launch_cluster").click().run()
    assert not at.exception, at.exception
    [(folder, args)] = launches
    cfg = cluster_config(parse(args))
    assert folder == run and args == expected and (cfg.n_clusters, cfg.pool_size, cfg.rule) == (5, 500, "dominant")


def test_clusters_form_refuses_what_the_cli_would(root, launches):
    at = open_page(CLUSTERS)
    at.text_input(key="cl_grid").set_value("4, eight").run()
    assert any("not a comma-separated list of whole numbers" in e.value for e in at.error)
    assert at.button(key="launch_cluster").disabled
    at.text_input(key="cl_grid").set_value("4,8").run()
    at.number_input(key="cl_sketch").set_value(8).run()  # below the rank 32
    assert any("must be at least the rank" in e.value for e in at.error) and at.button(key="launch_cluster").disabled
    (root / "pending").mkdir()  # a run with a config but no warm-up checkpoint yet
    (root / "pending" / "config.json").write_text((root / "fake" / "config.json").read_text())
    at = open_page(CLUSTERS, run="pending")
    assert any("no finished warm-up" in e.value for e in at.error) and at.button(key="launch_cluster").disabled
    assert launches == []


def test_a_running_cluster_is_followed_and_cancelled(root):
    run = root / "fake"
    rec = live_job(run, "cluster")
    try:
        at = open_page(CLUSTERS)
        assert any("`gist-lab cluster` is running in `fake`" in i.value for i in at.info)
        assert not [b for b in at.button if b.key == "launch_cluster"]  # no second launch while it runs
        deadline = time.time() + 10
        while "working" not in launcher.read_log_tail(run) and time.time() < deadline:
            time.sleep(0.1)
        at.run()
        assert any("working" in c.value for c in at.code)  # the log's last lines
        next(b for b in at.button if b.label == "Cancel").click().run()
        assert not at.exception, at.exception
        deadline = time.time() + 10
        while launcher.is_alive(run) and time.time() < deadline:
            time.sleep(0.1)
        assert not launcher.is_alive(run) and launcher.state(run).cancelled
        at = open_page(CLUSTERS)
        assert any("was cancelled" in w.value for w in at.warning) and at.button(key="launch_cluster")
    finally:
        launcher.cancel(run, grace_s=1, wait=True)
    assert rec["pid"] and not launcher.is_alive(run)


def test_a_failed_cluster_shows_its_error_and_the_form_again(root):
    run = root / "fake"
    failed_job(run, "cluster", "loading\nclusters/sketch:  10%\rclusters/sketch: 20%\n"
                               "error: checkpoint 1 of this run is missing: rerun the warm-up\n")
    at = open_page(CLUSTERS)
    assert any("failed: checkpoint 1 of this run is missing" in e.value for e in at.error)
    assert not at.button(key="launch_cluster").disabled


def test_a_folder_another_process_writes_shows_who_and_no_button(root):
    run = root / "fake"
    code = ("import sys, time\nfrom gist_core.store.lock import writer_lock\n"
            "with writer_lock(sys.argv[1], cmd=['gist-lab', 'select', '--out', sys.argv[1]]):\n"
            "    print('held', flush=True)\n    time.sleep(60)\n")
    p = subprocess.Popen([sys.executable, "-c", code, str(run)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert p.stdout.readline().strip() == "held"
        at = open_page(CLUSTERS)
        assert any(f"is being written by pid {p.pid} (gist-lab select" in w.value for w in at.warning)
        assert not [b for b in at.button if b.key == "launch_cluster"]
    finally:
        p.kill()
        p.wait()


# ----------------------------------------------------------------------------- Clusters: gist-lab experts
def test_experts_form_below_the_clusters(root, launches):
    run = root / "fake"
    make_fake_clusters(run)
    at = open_page(CLUSTERS)
    assert any("No experts in this run yet" in i.value for i in at.info)
    assert shown_command(at) == launcher.shell_command(launcher.experts_args(run))
    at.multiselect(key="ex_clusterings").set_value(["gradientspace", "random"])
    at.multiselect(key="ex_ensembles").set_value([])
    at.number_input(key="ex_seeds").set_value(1)
    at.number_input(key="ex_epochs").set_value(1)
    at.checkbox(key="ex_oracle").uncheck()
    at.run()
    at.button(key="launch_experts").click().run()
    assert not at.exception, at.exception
    [(folder, args)] = launches
    cfg = expert_config(parse(args))
    assert folder == run and cfg.clusterings == ("gradientspace", "random") and cfg.ensembles == ()
    assert (cfg.seeds, cfg.train.epochs, cfg.oracle_routing) == (1, 1, False)
    at.multiselect(key="ex_clusterings").set_value([]).run()
    assert at.button(key="launch_experts").disabled


# ----------------------------------------------------------------------------- Layers: gist-lab train
def test_empty_layers_page_launches_train_into_a_new_folder(root, launches):
    at = open_page(LAYERS)
    assert any("No `gist-lab train` folder" in i.value for i in at.info)
    assert shown_command(at) == launcher.shell_command(launcher.train_args(root / "gast"))
    at.text_input(key="tr_name").set_value("abl")
    at.toggle(key="tr_ablation").set_value(True).run()  # the seeds input opens with the ablation
    at.number_input(key="tr_seeds").set_value(1)
    at.number_input(key="tr_epochs").set_value(1)
    at.number_input(key="tr_pool").set_value(64)
    at.run()
    at.button(key="launch_train").click().run()
    assert not at.exception, at.exception
    [(folder, args)] = launches
    a = parse(args)
    cfg = train_config(a)
    assert folder == root / "abl" and a.out == (root / "abl").resolve() and a.ablation and a.seeds == 1
    assert (cfg.recipe.epochs, cfg.pool_size) == (1, 64)
    assert shown_command(at) == launcher.shell_command(args)


def test_layers_refuses_an_existing_name_unless_overwrite_and_never_a_run(root, launches):
    failed_job(root / "gast", "train", "error: interrupted\n")  # a train folder launched here before
    at = open_page(LAYERS)
    assert any("already exists" in e.value for e in at.error) and at.button(key="launch_train").disabled
    at.checkbox(key="tr_overwrite").check().run()
    assert [e.value for e in at.error] == ["The last `gist-lab train` in `gast` failed: interrupted"]
    assert not at.button(key="launch_train").disabled
    at.text_input(key="tr_name").set_value("fake").run()  # a selection run's folder: never written into
    assert any("holds something else" in e.value for e in at.error) and at.button(key="launch_train").disabled
    at.text_input(key="tr_name").set_value("../out").run()
    assert any(e.value.startswith("Folder name: bad run name") for e in at.error)
    assert launches == []


def test_a_train_job_is_followed_on_the_layers_page_and_not_listed_as_a_run(root):
    folder = root / "gast-new"
    live_job(folder, "train")
    try:
        at = open_page(LAYERS)
        assert any("`gist-lab train` is running in `gast-new`" in i.value for i in at.info)
        assert set(progress.runs_table(root)["run"]) == {"fake"}  # not a selection run: not on Home, not picked
    finally:
        launcher.cancel(folder, grace_s=1, wait=True)
    failed_job(root / "gast-bad", "train", "Traceback (most recent call last):\nValueError: no rows in p.jsonl\n")
    at = open_page(LAYERS)
    assert any("`gist-lab train` in `gast-bad` failed: ValueError: no rows in p.jsonl" in e.value for e in at.error)


# ----------------------------------------------------------------------------- Proxy: gist-lab proxy build
def test_empty_proxy_page_launches_proxy_build(root, launches, tmp_path, monkeypatch):
    monkeypatch.setenv("GIST_LAB_MODELS", str(tmp_path / "empty-cache"))
    at = open_page(PROXY)
    assert any("No `gist-lab proxy build` folder" in i.value for i in at.info)
    assert shown_command(at) == launcher.shell_command(launcher.proxy_args(root / "proxy"))
    choice = at.selectbox(key="px_model_choice")
    smol = next(i for i in choice.options if "smollm2-135m" in str(i))
    choice.set_value(choice.options.index(smol) if isinstance(choice.value, int) else smol).run()
    assert any("gist-lab models fetch smollm2-135m" in c.value for c in at.caption)
    at.text_input(key="px_sweep").set_value("0.3, x").run()
    assert any(e.value.startswith("Further ρ values:") for e in at.error) and at.button(key="launch_proxy").disabled
    at.text_input(key="px_sweep").set_value("0.3,0.7")
    at.number_input(key="px_rho").set_value(0.4)
    at.multiselect(key="px_candidates").set_value(["svd"])
    at.checkbox(key="px_evaluate").uncheck()
    at.run()
    at.button(key="launch_proxy").click().run()
    assert not at.exception, at.exception
    [(folder, args)] = launches
    cfg = proxy_config(parse(args))
    assert folder == root / "proxy" and cfg.model == "smollm2-135m" and cfg.sweep == (0.3, 0.7)
    assert (cfg.rho, cfg.candidates, cfg.evaluate) == (0.4, ("svd",), False)
