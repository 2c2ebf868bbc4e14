"""bench/real_data.py at toy sizes on the micro model and two fixture targets over one pool: every table cell
comes from the compare runs it names, the pool-only stages and the shared selections' adapters are computed once,
a rerun recomputes nothing and rebuilds the same report."""
from __future__ import annotations

import json
import shutil

import pytest
from conftest import write_jsonl
from repo import load_bench

ROWS = "gist,gist_paper,less,rawcos,rds_examples,random,full"


def _bench():
    return load_bench("real_data")


@pytest.fixture(scope="module")
def bench_run(micro_model_dir, micro_corpus, tmp_path_factory):
    d = tmp_path_factory.mktemp("real-bench")
    rows = [json.loads(x) for x in micro_corpus["val"].read_text().splitlines()]
    targets = []
    for name, val in (("alpha", rows), ("beta", rows[: len(rows) // 2])):
        path = write_jsonl(d / name / "val.jsonl", val)
        shutil.copy(micro_corpus["test"], d / name / "test.jsonl")
        targets.append(str(path))
    argv = ["--small", "--model", str(micro_model_dir), "--train", str(micro_corpus["pool"]), "--targets",
            ",".join(targets), "--rows", ROWS, "--pool-size", "120", "--out", str(d / "out"), "--lora-layers", "2",
            "--target-max-length", "128", "--max-length", "96"]
    bench = _bench()
    rep = bench.main(argv)
    return bench, argv, rep, d / "out"


def test_every_cell_is_the_compare_runs_number(bench_run):
    _, argv, rep, out = bench_run
    assert rep["command"] == " ".join(["python bench/real_data.py", *argv])  # the flags that made it, all of them
    assert set(rep["targets"]) == {"alpha", "beta"}
    for target, per_budget in rep["targets"].items():
        assert set(per_budget) == {"0.1", "0.05"}
        for budget, t in per_budget.items():
            c = json.loads((out / target / f"compare-{float(budget) * 100:g}pct.json").read_text())
            assert c["command"] == t["command"] and f"--budget {budget}" in c["command"]
            assert list(t["methods"]) == [*ROWS.split(","), "oracle"]  # oracle: the micro pool has ground truth
            for row, m in t["methods"].items():
                e = c["methods"][row]
                assert m["nll"] == e["test_loss"] and m["per_seed"] == [r["test_loss"] for r in e["per_seed"]]
                assert len(m["per_seed"]) == 2 and m["domains"] == e["domains"]
    md = (out / "report.md").read_text()
    m = rep["targets"]["alpha"]["0.1"]["methods"]["less"]
    assert f"{m['nll']:.3f} ± {m['nll_std']:.3f}" in md


def test_pool_only_work_and_shared_selections_are_done_once(bench_run):
    _, _, _, out = bench_run
    stages = json.loads((out / "beta" / "manifest.json").read_text())["stages"]
    assert "shared_from" in stages["warmup"] and "shared_from" in stages["compare/less/ckpt-1"]
    evals = {t: json.loads((out / t / "compare" / "evals" / "full-s0.json").read_text()) for t in ("alpha", "beta")}
    assert evals["alpha"]["adapter"] == evals["beta"]["adapter"]  # the full pool, trained once for both targets


def test_a_rerun_recomputes_nothing_and_rebuilds_the_same_report(bench_run):
    bench, argv, rep, out = bench_run
    events_before = (out / "alpha" / "progress.jsonl").read_text()
    again = bench.main(argv)
    assert again == rep
    assert (out / "alpha" / "progress.jsonl").read_text() == events_before  # no compare was even started
    kept = out / "alpha" / "compare-5pct.json"
    old = json.loads(kept.read_text())
    kept.unlink()  # as if killed before this table was kept: the compare resumes and gives the same numbers
    third = bench.main(argv)
    for row, m in rep["targets"]["alpha"]["0.05"]["methods"].items():
        assert third["targets"]["alpha"]["0.05"]["methods"][row]["nll"] == pytest.approx(m["nll"], abs=1e-9), row
    new_events = (out / "alpha" / "progress.jsonl").read_text()[len(events_before):]
    assert '"warmup", "status": "start"' not in new_events and "compare/less/ckpt-1\", \"status\": \"start\"" not in new_events
    assert json.loads(kept.read_text())["methods"].keys() == old["methods"].keys()
