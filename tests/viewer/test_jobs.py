"""What the method pages read about their jobs (gist_core/viewer/jobs.py) and what a job does to the run list and a
run's status (viewer/progress.py), from launch records and logs written here."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from fake_run import make_fake_run

from gist_core.runner import launcher
from gist_core.viewer import jobs, progress

SLEEP = [sys.executable, "-c", "import time; time.sleep(30)"]  # a live process whose command line names a command


def record(folder: Path, args: list[str], **fields) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rec = {"pid": 0, "cmd": launcher.cli_command(args), "started_at": time.time(), **fields}
    (folder / launcher.LAUNCH_FILE).write_text(json.dumps(rec))


@pytest.fixture
def root(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("GIST_LAB_RUNS", str(tmp_path))
    return tmp_path


def test_log_lines_show_what_a_terminal_shows(tmp_path):
    (tmp_path / launcher.LOG_FILE).write_text("loading model\nsketch:  10%|#\rsketch:  50%|#####\rsketch: 100%|######\r"
                                              "   \n\nk = 8\n")
    assert jobs.log_lines(tmp_path) == "loading model\nsketch: 100%|######\nk = 8"
    assert jobs.log_lines(tmp_path, n=1) == "k = 8" and jobs.log_lines(tmp_path / "none") == ""


def test_job_failure_and_the_folders_a_command_launched(root):
    record(root / "a", launcher.train_args(root / "a"), returncode=2, started_at=1.0)
    (root / "a" / launcher.LOG_FILE).write_text("error: no such file: p.jsonl\n")
    record(root / "b", launcher.train_args(root / "b"), returncode=0, started_at=2.0)
    record(root / "c", launcher.proxy_args(root / "c"), returncode=-15, cancelled=True)
    (root / "b" / "train.json").write_text("{}")
    assert jobs.job(root / "a", "proxy") is None and jobs.job(root / "a", "train").returncode == 2
    assert jobs.failure(root / "a", "train") == "no such file: p.jsonl" and jobs.failure(root / "b", "train") is None
    assert jobs.failure(root / "c", "proxy") is None  # cancelled: said as such, not as a failure
    assert jobs.launched_folders(root, "train") == ["b", "a"]  # newest first
    assert jobs.unfinished(root, "train", lambda d: (d / "train.json").exists()) == ["a"]
    assert jobs.stages(root / "a", "train").empty


def test_other_writer_is_anyone_but_the_pages_own_job(root):
    run = root / "r"
    run.mkdir()
    assert jobs.other_writer(run, "cluster") is None
    launcher.launch(run, [], cmd=[*SLEEP, "select"])  # a selection launched from the Run page, still going
    try:
        assert jobs.other_writer(run, "cluster").startswith("pid ") and "select" in jobs.other_writer(run, "cluster")
        assert not jobs.running(run, "cluster")
    finally:
        launcher.cancel(run, grace_s=1, wait=True)
    launcher.launch(run, [], cmd=[*SLEEP, "cluster"])
    try:
        assert jobs.running(run, "cluster") and jobs.other_writer(run, "cluster") is None
        assert jobs.other_writer(run, "experts") is not None
    finally:
        launcher.cancel(run, grace_s=1, wait=True)


def test_out_folder_problem(root):
    own = lambda d: (d / "train.json").exists()  # noqa: E731
    assert jobs.out_folder_problem("fresh", "train", own, False) is None
    assert jobs.out_folder_problem("../up", "train", own, True).startswith("Folder name: bad run name")
    (root / "done").mkdir()
    (root / "done" / "train.json").write_text("{}")
    assert "already exists" in jobs.out_folder_problem("done", "train", own, False)
    assert jobs.out_folder_problem("done", "train", own, True) is None
    record(root / "launched", launcher.train_args(root / "launched"), returncode=2)  # launched here, no report yet
    assert jobs.out_folder_problem("launched", "train", own, True) is None
    make_fake_run(root / "run", n_pool=50, n_val=4, r=2)
    assert "holds something else" in jobs.out_folder_problem("run", "train", own, True)  # never into a run
    record(root / "px", launcher.proxy_args(root / "px"), returncode=0)
    assert "holds something else" in jobs.out_folder_problem("px", "train", own, True)
    (root / "file").write_text("x")
    assert "is a file" in jobs.out_folder_problem("file", "train", own, True)


def test_add_on_jobs_leave_the_run_status_and_own_folders_are_not_runs(root):
    run = make_fake_run(root / "run", n_pool=100, n_val=8, r=4)
    for args in (launcher.cluster_args(run), launcher.experts_args(run), launcher.geometry_args(run)):
        for outcome in ({"returncode": 0}, {"returncode": 2}, {"returncode": -15, "cancelled": True}):
            record(run, args, started_at=time.time() + 5, **outcome)  # summary.json predates the launch
            assert progress.run_state(run)["status"] == "done", (args[0], outcome)
    record(run, launcher.select_args(run, model="m", train="p", target="v"), started_at=time.time() + 5, returncode=2)
    assert progress.run_state(run)["status"] == "failed"  # the run's own command: its outcome is the run's
    record(root / "gast", launcher.train_args(root / "gast"), returncode=0)
    record(root / "px", launcher.proxy_args(root / "px"), returncode=0)
    record(root / "launched-demo", launcher.demo_args(root / "launched-demo"))  # a run before its config exists
    assert set(progress.runs_table(root)["run"]) == {"run", "launched-demo"}


def test_a_cluster_jobs_stages_are_its_own_and_the_runs_stay_done(root):
    run = make_fake_run(root / "run", n_pool=100, n_val=8, r=4)
    before = progress.stage_progress(run)
    t = time.time()
    with open(run / "progress.jsonl", "a") as f:  # an earlier cluster attempt, then the launched one
        for e in ({"t": t - 100, "stage": "clusters/elrea", "status": "error", "error": "old"},
                  {"t": t + 1, "stage": "clusters/sketch", "status": "end", "wall_s": 3.0},
                  {"t": t + 2, "stage": "clusters/coords", "status": "progress", "done": 30, "total": 120}):
            f.write(json.dumps(e) + "\n")
    record(run, launcher.cluster_args(run), started_at=t)
    rows = jobs.stages(run, "cluster").set_index("stage")
    assert list(rows.index) == ["clusters/sketch", "clusters/coords"]  # not the earlier attempt's elrea error
    assert rows.loc["clusters/sketch", "status"] == "done" and rows.loc["clusters/coords", "fraction"] == 0.25
    after = progress.stage_progress(run)  # the Run page's bars: the run's own stages, still done
    assert after.equals(before) and set(after["status"]) == {"done"}
