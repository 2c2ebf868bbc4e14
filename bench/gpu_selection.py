"""The selection benchmark for a GPU machine: per-example gradient throughput, GIST and LESS selection time, memory
and storage, per model and pool size, in one command that writes a report.

    gist-lab models fetch smollm2-135m gemma3-270m && gist-lab data fetch sharegpt gsm8k
    python bench/gpu_selection.py --out runs/gpu-selection                 # CUDA: SmolLM2 and Gemma 3 270M,
                                                                           # ShareGPT pools of 1K / 10K rows
    python bench/gpu_selection.py --train bundled --target sample_data/targets/transform/val.jsonl \
        --pool-sizes 1000,10000,100000
                                             # up to 100K rows: the bundled synthetic corpus (ShareGPT has 16.9K)
    python bench/gpu_selection.py --small --out /tmp/gpu-small             # the same stages on a CPU, toy sizes

For every model and pool size it runs (or resumes) one `gist-lab compare --only gist_subtask,less
--no-downstream` in its own run folder: GIST's warm-up, validation gradients, subspace, projection and scores, and
LESS's features at its checkpoints, on the device asked for. Nothing is timed here: every figure is read back from
the run folders' manifests (each stage's wall time, peak resident memory and, on CUDA, the allocator's peak; the
bytes of the files it wrote), so the report can be rebuilt from the folders alone (--report-only) and a killed run
resumes where it stopped. Throughput is the projection stage's examples/s (batched per-example gradients projected
onto the target subspace, what a pool costs). report.json and report.md go under --out, with the command, the
versions and the device's name.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from gist_core.data import registry as data_registry
from gist_core.data.corpus import SAMPLE_DATA
from gist_core.model import registry as model_registry
from gist_core.runner.bench import write_pool
from gist_core.store.atomic import atomic_write_json, atomic_write_text
from gist_core.store.manifest import versions as package_versions

FULL = {"models": "smollm2-135m,gemma3-270m", "train": "sharegpt", "target": "gsm8k", "pool_sizes": "1000,10000",
        "device": "cuda", "lora_layers": 0, "max_length": 256, "epochs": 1, "less_dim": 8192, "batch_size": 16,
        "out": "runs/gpu-selection"}
SMALL = {**FULL, "models": str(SAMPLE_DATA / "tiny-lm"), "train": "bundled",
         "target": str(SAMPLE_DATA / "targets" / "transform" / "val.jsonl"),
         "pool_sizes": "48,96", "device": "cpu", "less_dim": 64, "out": "runs/gpu-selection-small"}
ROWS = "gist_subtask,less"
STAGE_GROUPS = {"warm-up": ("warmup",), "GIST": ("val_grads", "subspace", "train_proj", "scores"),
                "LESS": ("compare/less",)}


class BadInput(ValueError):
    """One line for the user, exit 2, before any work."""


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", action="store_true", help="toy sizes on the CPU with the bundled tiny LM, minutes")
    helps = {"models": "comma-separated --model values", "train": "pool: a registry data name, a file, or 'bundled'",
             "target": "target (validation) set", "pool_sizes": "comma-separated pool sizes",
             "device": "cuda | cuda:N | cpu", "lora_layers": "LoRA on the last L layers (0 = all)",
             "max_length": "tokens per example", "epochs": "warm-up epochs", "less_dim": "LESS projection dimension",
             "batch_size": "per-example gradient batch", "out": "report and run folders"}
    for name, default in FULL.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=None,
                       help=f"{helps[name]} (full: {default}; --small: {SMALL[name]})")
    p.add_argument("--report-only", action="store_true", help="rebuild the report from the finished run folders")
    a = p.parse_args(argv)
    preset = SMALL if a.small else FULL
    for name, default in preset.items():
        if getattr(a, name) is None:
            setattr(a, name, default)
    a.out = Path(a.out)
    a.argv = list(sys.argv[1:] if argv is None else argv)
    return a


def pool_file(a, sizes: list[int]) -> str:
    """The --train value the runs get: 'bundled' is a synthetic pool of the largest size, written once under --out
    (each run takes its first N rows)."""
    return str(write_pool(max(100, *sizes), a.out)) if a.train == "bundled" else a.train  # the corpus makes >= 100


def pool_rows(train: str) -> int | None:
    """Rows the pool holds (None: not known without reading a data set this script does not open)."""
    if train == "bundled":
        return 300_000
    if train in data_registry.REGISTRY:
        manifest = data_registry.read_manifest(train)
        if manifest is None:
            raise BadInput(f"data set '{train}' is not fetched yet: run `gist-lab data fetch {train}`")
        rows = manifest.get("files", {}).get("pool.jsonl", {}).get("rows")
        return None if rows is None else int(rows)
    path = Path(train)
    if path.suffix == ".jsonl":
        if not path.is_file():
            raise BadInput(f"--train {train}: no such file")
        with open(path, "rb") as fh:
            return sum(1 for line in fh if line.strip())
    return None


def check(a) -> tuple[list[str], list[int]]:
    """Every problem found before any work starts, as one line."""
    models = [m for m in a.models.split(",") if m]
    try:
        sizes = [int(s) for s in a.pool_sizes.split(",") if s]
    except ValueError:
        raise BadInput(f"--pool-sizes {a.pool_sizes}: comma-separated integers expected") from None
    if not models or not sizes or min(sizes) < 16:
        raise BadInput("name at least one model and pool sizes of at least 16 rows")
    for m in models:
        entry = model_registry.REGISTRY.get(m)
        if entry is not None and not model_registry.is_fetched(entry):
            raise BadInput(f"model '{m}' is not fetched yet: run `gist-lab models fetch {m}`")
        if entry is None and not Path(m).exists() and m.startswith(("/", ".")):
            raise BadInput(f"--models {m}: no such folder or file")
    if a.device.startswith("cuda"):
        import torch  # lazy: only to ask whether the device exists; the checks above need none of it
        if not torch.cuda.is_available():
            raise BadInput(f"--device {a.device}: no CUDA device here (use --device cpu, or --small)")
    if a.target not in data_registry.REGISTRY and not Path(a.target).is_file():
        raise BadInput(f"--target {a.target}: neither a fetched data set name nor a file")
    have = pool_rows(a.train)
    if have is not None and max(sizes) > have:
        raise BadInput(f"--pool-sizes {max(sizes)} > the {have:,} rows of --train {a.train} "
                       "(--train bundled makes up to 300,000 synthetic rows)")
    return models, sizes


def run_name(model: str, n: int) -> str:
    return f"{Path(model).name}-{n}"


def compare_argv(a, model: str, n: int, train: str) -> list[str]:
    argv = ["compare", "--model", model, "--train", train, "--target", a.target, "--pool-size", str(n),
            "--device", a.device, "--only", ROWS, "--no-downstream", "--epochs", str(a.epochs),
            "--max-length", str(a.max_length), "--less-dim", str(a.less_dim), "--batch-size", str(a.batch_size),
            "--out", str(a.out / run_name(model, n)), "--quiet"]
    return argv + (["--lora-layers", str(a.lora_layers)] if a.lora_layers else [])


def stage_figures(run: Path) -> dict:
    """Per stage group: wall seconds, the highest peak resident / CUDA bytes of its stages, bytes written."""
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    out = {}
    for group, prefixes in STAGE_GROUPS.items():
        mine = {k: v for k, v in stages.items() if k.startswith(prefixes) and isinstance(v, dict)}
        peaks = [v["peak_rss_bytes"] for v in mine.values() if v.get("peak_rss_bytes")]
        cuda = [v["peak_cuda_bytes"] for v in mine.values() if v.get("peak_cuda_bytes")]
        out[group] = {"stages": sorted(mine), "wall_s": round(sum(v.get("wall_s", 0.0) for v in mine.values()), 2),
                      "peak_rss_bytes": max(peaks) if peaks else None, "peak_cuda_bytes": max(cuda) if cuda else None,
                      "bytes": int(sum(v.get("bytes", 0) for v in mine.values()))}
    proj = stages.get("train_proj", {})
    out["throughput_ex_s"] = proj.get("examples_per_s")
    out["n_pool"] = proj.get("n")
    return out


def device_name(device: str) -> str:
    if not device.startswith("cuda"):
        return "CPU"
    import torch  # lazy: the report names the card; only on a CUDA run
    return torch.cuda.get_device_name(torch.device(device))


def gb(b) -> str:
    return "–" if b is None else f"{b / 2**30:.2f}"


def markdown(rep: dict) -> str:
    lines = [f"# Selection benchmark on {rep['device']}", "", f"`python bench/gpu_selection.py {' '.join(rep['argv'])}`",
             "", "| model | pool | gradients ex/s | GIST s | GIST peak RSS GB | GIST peak GPU GB | LESS s | "
             "LESS peak RSS GB | LESS peak GPU GB | warm-up s | GIST MB | LESS MB |", "|" + "---|" * 12]
    for r in rep["rows"]:
        g, le, w = r["GIST"], r["LESS"], r["warm-up"]
        lines.append(f"| {r['model']} | {r['n_pool']:,} | {r['throughput_ex_s']} | {g['wall_s']} | "
                     f"{gb(g['peak_rss_bytes'])} | {gb(g['peak_cuda_bytes'])} | {le['wall_s']} | "
                     f"{gb(le['peak_rss_bytes'])} | {gb(le['peak_cuda_bytes'])} | {w['wall_s']} | "
                     f"{g['bytes'] / 1e6:.2f} | {le['bytes'] / 1e6:.2f} |")
    lines += ["", "Peaks are each stage's (the highest of a method's stages): resident memory of the process, and "
              "on CUDA the allocator's peak (tensors, not the CUDA context). GIST's time covers validation "
              "gradients, subspace, projection and scores; LESS's its features at every checkpoint; both share "
              "the warm-up. Versions: " + ", ".join(f"{k} {v}" for k, v in rep["versions"].items()), ""]
    return "\n".join(lines)


def report(a, models: list[str], sizes: list[int]) -> dict:
    rows = []
    for model in models:
        for n in sizes:
            run = a.out / run_name(model, n)
            if (run / "manifest.json").is_file():
                rows.append({"model": Path(model).name, "run": run.name, **stage_figures(run)})
    rep = {"device": device_name(a.device), "argv": a.argv, "versions": package_versions(), "rows": rows}
    atomic_write_json(a.out / "report.json", rep)
    atomic_write_text(a.out / "report.md", markdown(rep))
    return rep


def main(argv=None) -> int:
    a = parse(argv)
    try:
        models, sizes = check(a)
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    a.out.mkdir(parents=True, exist_ok=True)
    if not a.report_only:
        train = pool_file(a, sizes)
        for model in models:
            for n in sizes:
                print(f"== {model}, {n:,} pool rows, {a.device}", flush=True)
                rc = subprocess.call([sys.executable, "-m", "gist_core.cli", *compare_argv(a, model, n, train)])
                if rc != 0:
                    print(f"error: gist-lab compare failed for {model} at {n} rows (exit {rc}); "
                          "rerun the same command to resume", file=sys.stderr)
                    return rc
    rep = report(a, models, sizes)
    print(markdown(rep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
