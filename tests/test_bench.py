"""`gist-lab bench` at toy sizes: every figure is produced and consistent (timings are not asserted)."""
from __future__ import annotations

import json

from gist_core.bench import BenchConfig, run_bench


def test_bench_writes_every_figure(tmp_path):
    cfg = BenchConfig(n_small=100, n_large=200, batch_size=4, n_throughput=8, n_loop=4, rounds=1, rescore_n=2000)
    rep = run_bench(cfg, tmp_path)
    on_disk = json.loads((tmp_path / "bench.json").read_text())
    for key in ("grad_throughput_ratio", "loop_speedup", "rescore_ms", "peak_rss_ratio"):
        assert on_disk[key] > 0, key
    assert rep["max_abs_diff"] <= 1e-5  # the batched path the bench times is the loop's gradient
    assert set(rep["memory_runs"]) == {100, 200} and set(on_disk["memory_runs"]) == {"100", "200"}
    assert (tmp_path / "proj-200.npy").exists()
