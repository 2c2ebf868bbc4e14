"""bench/gpu_selection.py on a CPU at toy sizes (the bundled tiny LM, the synthetic corpus), so the GPU benchmark
cannot rot: bad input stops before any work; every figure of the report is read back from the run folders'
manifests and equals a sum or maximum taken here independently; a --report-only rerun rebuilds the same report."""
from __future__ import annotations

import json

import pytest
from repo import load_bench

pytestmark = pytest.mark.slow


def _bench():
    return load_bench("gpu_selection")


@pytest.mark.parametrize("argv, says", [
    (["--small", "--pool-sizes", "48,abc"], "comma-separated integers"),
    (["--small", "--pool-sizes", "8"], "at least 16 rows"),
    (["--small", "--device", "cuda"], "no CUDA device here"),
    (["--small", "--target", "no/such/val.jsonl"], "neither a fetched data set name nor a file"),
    (["--small", "--models", "./no-such-model"], "no such folder or file"),
])
def test_bad_input_is_one_line_and_exit_2_before_any_work(tmp_path, capsys, argv, says):
    pytest.importorskip("torch")
    out = tmp_path / "out"
    assert _bench().main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and says in err and "\n" not in err
    assert not out.exists()


def test_small_run_reports_what_the_manifests_hold(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    bench, out = _bench(), tmp_path / "gpu"
    assert bench.main(["--small", "--pool-sizes", "48", "--out", str(out)]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["device"] == "CPU" and [r["n_pool"] for r in rep["rows"]] == [48]
    row = rep["rows"][0]
    stages = json.loads((out / row["run"] / "manifest.json").read_text())["stages"]
    gist = [k for k in stages if k.split("/")[0] in ("val_grads", "subspace", "train_proj", "scores")]
    less = [k for k in stages if k.startswith("compare/less")]
    assert gist and less, sorted(stages)
    assert row["GIST"]["wall_s"] == pytest.approx(sum(stages[k]["wall_s"] for k in gist), abs=0.01)
    assert row["LESS"]["wall_s"] == pytest.approx(sum(stages[k]["wall_s"] for k in less), abs=0.01)
    assert row["GIST"]["peak_rss_bytes"] == max(stages[k]["peak_rss_bytes"] for k in gist)
    assert row["GIST"]["bytes"] == sum(stages[k].get("bytes", 0) for k in gist) > 0
    assert row["throughput_ex_s"] == stages["train_proj"]["examples_per_s"] > 0
    assert row["GIST"]["peak_cuda_bytes"] is None  # a CPU run has no allocator peak
    md = (out / "report.md").read_text()
    assert f"| tiny-lm | 48 | {row['throughput_ex_s']} | {row['GIST']['wall_s']} |" in md
    before = (out / "report.json").read_text()
    assert bench.main(["--small", "--pool-sizes", "48", "--out", str(out), "--report-only"]) == 0
    assert json.loads((out / "report.json").read_text())["rows"] == json.loads(before)["rows"]
