"""GAST's two implementations and plain LoRA side by side: time and peak memory per training run, each in a fresh
process (so no allocator cache from an earlier run hides a peak).

    python bench/gast_memory.py --out runs/bench-gast                                   # bundled tiny LM, ~2 min
    python bench/gast_memory.py --out runs/bench-gast-smollm2 --model smollm2-135m --pool-size 64 --epochs 1   # ~5 min

Each row is one `gist-lab train` run; the figures come from its train.json: ms per step (median), the bytes each
implementation holds for the selection (held MB), and the peak resident set during training above the resident
set when training started (peak RSS MB: read from the kernel's high-water mark, reset just before training, so
model loading and data do not count). It measures; it decides nothing and never passes or fails.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

RUNS = (("lora", "cached"), ("gast", "cached"), ("gast", "twopass"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder for one train run per row and bench.json")
    ap.add_argument("--model", default=None, help="any --model value (default: the bundled tiny LM)")
    ap.add_argument("--pool-size", type=int, default=320, help="training rows (batch 16: 20 steps an epoch)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16)
    a = ap.parse_args()
    out = Path(a.out)
    rows = []
    for method, impl in RUNS:
        folder = out / f"{method}-{impl}"
        cmd = [sys.executable, "-m", "gist_core.cli", "train", "--method", method, "--implementation", impl,
               "--pool-size", str(a.pool_size), "--epochs", str(a.epochs), "--max-length", str(a.max_length),
               "--batch-size", str(a.batch_size), "--n-em", "0", "--out", str(folder), "--quiet"]
        if a.model:
            cmd += ["--model", a.model]
        subprocess.run(cmd, check=True)
        rep = json.loads((folder / "train.json").read_text())
        peak = rep.get("cpu_peak_rss_bytes")
        rows.append({"run": f"{method}-{impl}", "steps": rep["steps"], "ms_per_step": rep["step_ms_median"],
                     "held_mb": rep["held_bytes_per_step"] / 2**20,
                     "peak_rss_mb": None if peak is None else peak / 2**20, "train_s": rep["train_wall_s"],
                     "test_loss": rep["test_loss"], "device": rep["device"]})
    base = rows[0]
    print("| run | steps | ms / step | × LoRA | held MB / step | peak RSS MB (training) | × LoRA |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        t_ratio = r["ms_per_step"] / base["ms_per_step"]
        m_ratio = (r["peak_rss_mb"] / base["peak_rss_mb"]) if r["peak_rss_mb"] and base["peak_rss_mb"] else float("nan")
        peak = "n/a" if r["peak_rss_mb"] is None else f"{r['peak_rss_mb']:.0f}"
        print(f"| {r['run']} | {r['steps']} | {r['ms_per_step']:.0f} | {t_ratio:.2f} | {r['held_mb']:.1f} | {peak} | "
              f"{m_ratio:.2f} |")
    (out / "bench.json").write_text(json.dumps({"args": vars(a), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
