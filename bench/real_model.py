"""The method on a real model, on ground truth: SmolLM2-135M-Instruct on the bundled synthetic pool and targets.

    gist-lab models fetch smollm2-135m
    python bench/real_model.py --out-prefix runs/real-smollm2          # ~32 min on 2 cores, pool 1,000

For each bundled target it runs (or resumes: every stage is reused) one `gist-lab compare --no-downstream` on the
pool's first --pool-size rows with LoRA on the last --lora-layers layers, then prints precision and per-subtask
coverage per method, and the cost columns of the LESS run. LESS (4 checkpoints x 8192 dimensions) runs on the
first target only (--less-targets): it is 80 % of the cost. It measures; it decides nothing and never passes or
fails.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROWS = ("gist", "gist_subtask", "gist_max", "gist_max_subtask", "less", "less_subtask", "rawcos", "embedding",
        "random", "oracle")


def run_compare(target: str, out: Path, a) -> float:
    methods = "gist,gist_max,rawcos,random,embedding" + (",less" if target in a.less_targets.split(",") else "")
    cmd = [sys.executable, "-m", "gist_core.cli", "compare", "--model", a.model, "--target", target,
           "--pool-size", str(a.pool_size), "--lora-layers", str(a.lora_layers), "--no-downstream",
           "--methods", methods, "--less-cache-gb", str(a.less_cache_gb), "--out", str(out), "--quiet"]
    t0 = time.time()
    subprocess.run(cmd, check=True)
    return time.time() - t0


def table(reports: dict[str, dict]) -> str:
    lines = ["| target | method | precision | coverage (selected / in pool per subtask) | wrong | wall s |",
             "|---|---|---|---|---|---|"]
    for target, rep in reports.items():
        for row in ROWS:
            e = rep["methods"].get(row)
            if e is None:
                continue
            cov = ", ".join(f"{s} {c['selected']}/{c['in_pool']}" for s, c in e.get("coverage", {}).items())
            lines.append(f"| {target} | {e['label']} | {e['precision']:.3f} | {cov} | {e.get('n_wrong_selected', '-')} "
                         f"| {e['wall_s']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-prefix", default="runs/real-smollm2")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--targets", default="transform,lookup,facts")
    p.add_argument("--less-targets", default="transform")
    p.add_argument("--pool-size", type=int, default=1000)
    p.add_argument("--lora-layers", type=int, default=4)
    p.add_argument("--less-cache-gb", type=float, default=12.0)
    a = p.parse_args()
    reports, walls = {}, {}
    for t in a.targets.split(","):
        out = Path(f"{a.out_prefix}-{t}")
        walls[t] = run_compare(t, out, a)
        reports[t] = json.loads((out / "compare.json").read_text())
    print(table(reports))
    for t, rep in reports.items():
        g = rep["gist"]
        print(f"{t}: pool {rep['n_pool']}, selected {rep['n_selected']}, GIST rank {g['rank']} (r_max {g['r_max']}, "
              f"checkpoint {g['checkpoint']}, {g['aggregation']}); this invocation {walls[t]:.0f} s")
        for k in ("compute_ratio_gist_over_less", "storage_ratio_gist_over_less", "flops_ratio_gist_over_less"):
            if k in rep:
                print(f"  {k}: {rep[k]:.4f}")


if __name__ == "__main__":
    main()
