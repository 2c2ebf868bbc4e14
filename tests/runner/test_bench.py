"""`gist-lab bench` at toy sizes: every figure is produced and consistent (timings are not asserted)."""
from __future__ import annotations

import json

from gist_core.runner.bench import BenchConfig, run_bench


def test_bench_writes_every_figure(tmp_path):
    cfg = BenchConfig(n_small=100, n_large=200, batch_size=4, n_throughput=8, n_loop=4, rounds=1, rescore_n=2000)
    rep = run_bench(cfg, tmp_path)
    on_disk = json.loads((tmp_path / "bench.json").read_text())
    for key in ("grad_throughput_ratio", "loop_speedup", "rescore_ms", "peak_rss_ratio"):
        assert on_disk[key] > 0, key
    assert rep["max_abs_diff"] <= 1e-5  # the batched path the bench times is the loop's gradient
    assert set(rep["memory_runs"]) == {100, 200} and set(on_disk["memory_runs"]) == {"100", "200"}
    assert (tmp_path / "proj-200.npy").exists()


def test_cpu_options_measure_every_variant_on_one_model():
    """Each option is measured (no timing is asserted): LoRA layer counts the model has, full logits, eager
    attention, one thread; the model's attention kernel and torch's threads are restored afterwards."""
    import torch

    from gist_core.runner.bench import BenchConfig, cpu_options
    threads = torch.get_num_threads()
    rep = cpu_options(BenchConfig(n_throughput=16, rounds=1, cpu_options=True))
    assert set(rep["cpu_options_examples_per_s"]) == {"lora_layers=all", "lora_layers=2", "full_logits",
                                                      "attention=eager", "threads=1"}
    # the reference is the configured setting (here: LoRA on every layer), the others are compared with it
    assert rep["cpu_options_reference"] == "lora_layers=all" and rep["cpu_options_n_layers"] == 4
    assert all(v > 0 for v in rep["cpu_options_examples_per_s"].values())
    assert rep["cpu_options_speedup"]["lora_layers=all"] == 1.0 and torch.get_num_threads() == threads
