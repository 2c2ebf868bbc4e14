"""The memory model (gist_core/runner/plan.py) against measured peaks: predicted vs measured per stage.

    # the runs (each command under the shared lock; ~1-5 min each on 2 cores):
    python bench/memory_model.py --launch --out /tmp/plan-runs
    # the table from finished run folders (no torch):
    python bench/memory_model.py --runs /tmp/plan-runs/smol-a /tmp/plan-runs/gemma-a ... --write OUT.json

A run is `gist-lab select` (ShareGPT pool, GSM8K target: 32 validation rows, max length 256, one warm-up epoch, LoRA
on the last L layers) followed by `gist-lab compare --out RUN --methods less --no-downstream`, which reuses the
GIST stages and adds LESS's validation and pool features. Each stage's measured peak is the `peak_rss_bytes` that
gist_core/runner/progress.py writes into the run's manifest.json (the process's VmHWM since the stage began; the
stages reset it through /proc/self/clear_refs, which is why /usr/bin/time's figure is no use here). The prediction
takes the run's own config.json; its pool and validation sizes come from the manifest.
It measures and prints; it decides nothing.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pandas as pd
from tokenizers import Tokenizer

from gist_core.runner.plan import PlanConfig, human_bytes, plan

# name, model, pool rows, per-example batch, LoRA layers (None: all), warm-up epochs. What was fitted on which
# (docs/guide/plan.md): the runtime baseline was set from tiny-a, the CPU throughput and R's generation rate on
# smol-a; the activation factor is the analytic count as it is (1.0); every other row is a check
RUNS = (("tiny-a", "sample_data/tiny-lm", 128, 16, None, 4), ("smol-a", "smollm2-135m", 64, 16, 4, 1),
        ("gemma-a", "gemma3-270m", 48, 16, 4, 1), ("tiny-b", "sample_data/tiny-lm", 64, 8, 2, 1),
        ("smol-b", "smollm2-135m", 96, 8, 6, 1))
FIXTURE_SOURCE = ("peak_rss_bytes of each stage in the manifest.json of runs made by `python bench/memory_model.py "
                  "--launch` on the 2-core, 23 GB dev machine (torch 2.13 CPU, transformers 5.25), 2026-12-08; "
                  "config: the PlanConfig bench/memory_model.py builds from each run's config.json")
LOCK = ["flock", "/tmp/gist-test.lock", "nice", "-n", "10"]
# plan stage -> the manifest stages it stands for (several checkpoints: the largest peak)
STAGES = {"warmup": ("warmup",), "val_grads + subspace": ("val_grads/",), "train_proj": ("train_proj",),
          "val features": ("compare/less/val-ckpt-",), "pool features": ("compare/less/ckpt-",), "scores": ("scores",)}
# GIST's scores stage allocates next to nothing: its peak is whatever the process still holds when it starts, and the
# weights (memory-mapped safetensors) may or may not be resident then; shown, but not part of the 25% check
RESIDUAL = ("scores",)
MODEL_DIRS = {"smollm2-135m": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
              "gemma3-270m": "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"}


def launch(out: Path) -> None:
    for name, model, pool, batch, layers, epochs in RUNS:
        run = out / name
        select = ["gist-lab", "select", "--model", model, "--train", "sharegpt", "--target", "gsm8k", "--pool-size",
                  str(pool), "--batch-size", str(batch), "--max-length", "256", "--epochs", str(epochs),
                  "--out", str(run), "--quiet"] + (["--lora-layers", str(layers)] if layers else [])
        less = ["gist-lab", "compare", "--out", str(run), "--methods", "less", "--no-downstream", "--quiet"]
        for cmd in (select, less):
            subprocess.run(LOCK + cmd, check=True)


def preset_of(model: str) -> str:
    return "tiny" if Path(model).name == "tiny-lm" else model


def tokenizer_file(model: str) -> Path:
    if preset_of(model) == "tiny":
        return Path(__file__).resolve().parents[1] / "sample_data/tiny-lm/tokenizer.json"
    return Path.home() / ".cache/gist-lab/models/by-sha256" / MODEL_DIRS[model] / "tokenizer.json"


def mean_tokens(run: Path, model: str, max_length: int) -> int:
    """Mean tokens of a pool row (prompt + response, cut at max_length): for the time column only."""
    rows = pd.read_parquet(run / "examples.parquet")
    tok = Tokenizer.from_file(str(tokenizer_file(model)))
    counts = [min(len(e.ids), max_length) for e in tok.encode_batch((rows.prompt + "\n" + rows.response).tolist())]
    return max(1, round(sum(counts) / len(counts)))


def plan_config(run: Path) -> PlanConfig:
    cfg = json.loads((run / "config.json").read_text())
    data = json.loads((run / "manifest.json").read_text())["stages"]["data"]
    lora = cfg["lora"]
    return PlanConfig(model=preset_of(cfg["model"]), dtype=cfg["dtype"], device="cpu", lora_r=lora["r"],
                      last_layers=lora["last_layers"], pool=data["n_pool"], val=data["n_target"], r_max=cfg["r_max"],
                      max_length=cfg["max_length"], grad_batch_size=cfg["grad_batch_size"],
                      warmup_batch_size=cfg["warmup"]["batch_size"], warmup_fraction=cfg["warmup_fraction"],
                      less_checkpoints=cfg["warmup"]["epochs"], proj_dtype=cfg["proj_dtype"],
                      mean_tokens=mean_tokens(run, cfg["model"], cfg["max_length"]),
                      **({"targets": tuple(lora["target_modules"])} if lora["target_modules"] else {}))


def measured(run: Path) -> dict[str, dict]:
    """plan stage -> {peak_bytes, wall_s} from the manifest (the largest over checkpoints; walls summed)."""
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    out = {}
    for name, prefixes in STAGES.items():
        hits = [e for s, e in stages.items() if s.startswith(prefixes) and e.get("peak_rss_bytes")]
        if hits:
            out[name] = {"peak_bytes": max(e["peak_rss_bytes"] for e in hits),
                         "wall_s": sum(e.get("wall_s", 0.0) for e in hits)}
    return out


def compare_run(run: Path) -> list[dict]:
    cfg = plan_config(run)
    p = plan(cfg)
    rows = []
    for name, m in measured(run).items():
        s = p.stage(name)
        rows.append({"run": run.name, "model": cfg.model, "pool": cfg.pool, "batch": cfg.grad_batch_size,
                     "lora_layers": cfg.last_layers, "dim": p.dim, "stage": name, "predicted_bytes": s.peak(),
                     "measured_bytes": m["peak_bytes"], "ratio": round(s.peak() / m["peak_bytes"], 3),
                     "predicted_s": round(s.seconds, 1), "measured_s": round(m["wall_s"], 1),
                     "mean_tokens": cfg.mean_tokens, "config": asdict(cfg)})
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| run | model | pool | batch | LoRA layers | stage | predicted | measured | ratio | time pred. | time meas. |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['model']} | {r['pool']} | {r['batch']} | {r['lora_layers']} | {r['stage']} | "
                     f"{human_bytes(r['predicted_bytes'])} | {human_bytes(r['measured_bytes'])} | {r['ratio']:.2f} | "
                     f"{r['predicted_s']:.0f} s | {r['measured_s']:.0f} s |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--launch", action="store_true", help="run the calibration runs into --out first")
    ap.add_argument("--out", type=Path, default=Path("/tmp/plan-runs"))
    ap.add_argument("--runs", nargs="*", type=Path, help="run folders to compare (default: --out's RUNS)")
    ap.add_argument("--write", type=Path, help="also write the rows as JSON")
    ap.add_argument("--fixture", type=Path, help="write the measured peaks as the test fixture "
                    "(tests/runner/data/plan_measured.json)")
    a = ap.parse_args(argv)
    if a.launch:
        launch(a.out)
    runs = a.runs or [a.out / r[0] for r in RUNS if (a.out / r[0] / "manifest.json").exists()]
    if not runs:
        print(f"no run folders under {a.out}; run with --launch first", file=sys.stderr)
        return 2
    rows = [r for run in runs for r in compare_run(run)]
    print(table(rows))
    if a.write:
        a.write.write_text(json.dumps(rows, indent=1) + "\n")
    if a.fixture:
        a.fixture.parent.mkdir(parents=True, exist_ok=True)
        a.fixture.write_text(json.dumps({"source": FIXTURE_SOURCE, "rows": [
            {"run": r["run"], "model": r["model"], "stage": r["stage"], "config": r["config"],
             "measured_peak_rss_bytes": r["measured_bytes"], "measured_wall_s": r["measured_s"]}
            for r in rows if r["stage"] not in RESIDUAL]},
            indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
