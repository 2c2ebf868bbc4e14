"""`gist-lab bench`: the hot paths, measured side by side in one run (ratios, not absolute pass/fail).

- grad_throughput_ratio: batched per-example gradients, projected as the pipeline does (examples/s)
  / a plain batched training step (forward + backward to the LoRA weights, the same loss and response-only
  logits) on the same model, batches and lengths. 1.0 is the floor.
- loop_speedup: batched per-example gradients / the one-example-at-a-time loop (LESS, GIST code).
- rescore_ms: re-scoring 100,000 stored projections at a new rank (median of repeats).
- peak_rss_ratio: peak resident memory of projecting n_large vs n_small pool examples, each in a
  fresh process that reads the pool from a JSONL file like `select` does.
Timings alternate the compared paths (throughput: batch by batch) over several rounds and report medians, so a
noisy shared machine affects both sides alike.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from gist_core.config import LoraSettings
from gist_core.data.corpus import SAMPLE_DATA, CorpusConfig, build_pool, build_targets
from gist_core.data.examples import load_examples, load_pool
from gist_core.data.formatting import tokenize_examples
from gist_core.grads.per_example import GradientEngine, causal_lm_losses, length_sorted_batches, loop_grads, pad_batch, stream
from gist_core.methods import scoring
from gist_core.methods.scoring import gist_scores
from gist_core.model.load import attach_lora, load_base_model
from gist_core.runner.rows import row_writer
from gist_core.store.atomic import atomic_write_json
from gist_core.store.lock import writer_lock
from gist_core.store.manifest import FeatureStore
from gist_core.store.runs import check_out_folder


@dataclass(frozen=True)
class BenchConfig:
    n_small: int = field(default=10_000, metadata={"help": "pool size of the small memory run"})
    n_large: int = field(default=100_000, metadata={"help": "pool size of the large memory run"})
    batch_size: int = field(default=16, metadata={"help": "examples per batch (both sides)"})
    n_throughput: int = field(default=256, metadata={"help": "examples timed per round for throughput"})
    n_loop: int = field(default=64, metadata={"help": "examples timed for the loop comparison"})
    rounds: int = field(default=3, metadata={"help": "alternating rounds; medians reported"})
    rescore_n: int = field(default=100_000, metadata={"help": "stored projections re-scored"})
    model: str | None = field(default=None, metadata={"help": "model (default: the bundled tiny LM)"})
    max_length: int = field(default=256, metadata={"help": "tokens per example"})
    lora_layers: int | None = field(default=None, metadata={"help": "LoRA on the last L layers only (None = all)"})
    cpu_options: bool = field(default=False, metadata={
        "help": "also measure what each CPU option buys: LoRA layers, response-only logits, attention kernel, "
                "threads (examples/s of the projected per-example gradients, side by side)"})

    def __post_init__(self):
        if min(self.n_small, self.n_large, self.batch_size, self.n_throughput, self.n_loop, self.rounds) < 1:
            raise ValueError("every bench size must be >= 1")


def _sample_data() -> Path:
    return SAMPLE_DATA


def _model_and_batches(cfg: BenchConfig, n: int, last_layers: int | None, loaded=None):
    """LoRA on `last_layers` of the bench model (`loaded` = an already loaded (model, tokenizer)), and n bundled
    pool examples in length-sorted batches."""
    model, tok = loaded or load_base_model(cfg.model or str(_sample_data() / "tiny-lm"), device="auto")
    peft = attach_lora(model, LoraSettings(last_layers=last_layers), seed=0).eval()
    pool = load_examples(_sample_data() / "pool.jsonl", limit=n)
    toks = tokenize_examples(pool, tok, cfg.max_length)
    lengths = [len(x) for x in toks.input_ids]
    return peft, tok, [([toks.input_ids[i] for i in b], [toks.labels[i] for i in b])
                       for b in length_sorted_batches(lengths, range(n), cfg.batch_size)]


def _timed(fn) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def throughput(cfg: BenchConfig) -> dict:
    """Per-example gradient extraction vs a plain training forward+backward. The sides alternate batch by batch (every
    batch is run by each side in turn, in a rotating order), so a shared machine's drift falls on all sides alike."""
    peft, tok, batches = _model_and_batches(cfg, cfg.n_throughput, cfg.lora_layers)
    engine = GradientEngine(peft, tok.pad_token_id)
    basis = torch.linalg.qr(torch.randn(engine.dim, 20, generator=torch.Generator().manual_seed(0)))[0].to(engine.device)
    params = [p for p in peft.parameters() if p.requires_grad]

    def train_step(ids, lab):
        i, lb, att = pad_batch(ids, lab, tok.pad_token_id, engine.device)
        # The same loss with the same response-only logits: the reference is the fastest plain batched step.
        torch.autograd.grad(causal_lm_losses(peft, i, lb, att, engine.trim_logits).mean(), params)

    sides = {"train_step": train_step, "per_example_projected": lambda ids, lab: engine.projected_grads(ids, lab, basis),
             "per_example_flat": engine.flat_grads}
    for f in sides.values():  # warm caches and allocators
        f(*batches[0])
    times = {k: [0.0] * cfg.rounds for k in sides}
    names = list(sides)
    for r in range(cfg.rounds):
        for b, (ids, lab) in enumerate(batches):
            for k in names[(r + b) % len(names):] + names[:(r + b) % len(names)]:
                times[k][r] += _timed(lambda k=k, ids=ids, lab=lab: sides[k](ids, lab))
    rate = {k: cfg.n_throughput / float(np.median(v)) for k, v in times.items()}
    return {"grad_throughput_ratio": rate["per_example_projected"] / rate["train_step"],
            "grad_throughput_ratio_flat": rate["per_example_flat"] / rate["train_step"],
            "examples_per_s": rate, "gradient_dim": engine.dim}


def loop_speedup(cfg: BenchConfig) -> dict:
    peft, tok, batches = _model_and_batches(cfg, cfg.n_loop, cfg.lora_layers)
    engine = GradientEngine(peft, tok.pad_token_id)
    ids = [x for b, _ in batches for x in b]
    lab = [y for _, b in batches for y in b]
    t_batched, t_loop = [], []
    for _ in range(cfg.rounds):
        t_batched.append(_timed(lambda: [engine.flat_grads(b, lb) for b, lb in batches]))
        t_loop.append(_timed(lambda: loop_grads(peft, ids, lab, tok.pad_token_id)))
    batched = torch.cat([engine.flat_grads(b, lb)[0] for b, lb in batches])
    diff = float((batched - loop_grads(peft, ids, lab, tok.pad_token_id)).abs().max())
    return {"loop_speedup": float(np.median(t_loop) / np.median(t_batched)),
            "loop_examples_per_s": cfg.n_loop / float(np.median(t_loop)),
            "batched_examples_per_s": cfg.n_loop / float(np.median(t_batched)), "max_abs_diff": diff}


def rescore_latency(cfg: BenchConfig, r_max: int = 64, n_val: int = 64, repeats: int = 15) -> dict:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((cfg.rescore_n, r_max)).astype(np.float32)
    val = rng.standard_normal((n_val, r_max)).astype(np.float32)
    groups = {f"t{t}": list(range(t, n_val, 8)) for t in range(8)}
    scoring.gist_scores(X, val, groups, r_max // 2)
    ms = [1000 * _timed(lambda r=r: scoring.gist_scores(X, val, groups, r)) for r in
          rng.integers(1, r_max + 1, size=repeats)]
    return {"rescore_ms": float(np.median(ms)), "rescore_ms_max": float(np.max(ms)), "rescore_n": cfg.rescore_n}


def cpu_options(cfg: BenchConfig) -> dict:
    """Examples/s of the pipeline's projected per-example gradients under each CPU option, measured side by side
    on one loaded model (the same examples and batches; each variant's rounds alternate with the others')."""
    base = load_base_model(cfg.model or str(_sample_data() / "tiny-lm"), device="auto")
    n_layers = base[0].config.num_hidden_layers
    layer_choices = [None] + [L for L in (8, 4, 2) if L < n_layers]
    default = cfg.lora_layers if cfg.lora_layers in layer_choices else layer_choices[-1]
    variants = {f"lora_layers={'all' if L is None else L}": dict(layers=L) for L in layer_choices}
    variants.update({"full_logits": dict(layers=default, trim=False), "attention=eager": dict(layers=default, attn="eager"),
                     "threads=1": dict(layers=default, threads=1)})
    rates: dict[str, list[float]] = {k: [] for k in variants}
    threads0 = torch.get_num_threads()
    for _ in range(cfg.rounds):
        for name, v in variants.items():
            peft, tok, batches = _model_and_batches(cfg, cfg.n_throughput, v["layers"], loaded=base)
            try:
                base[0].set_attn_implementation(v.get("attn", "sdpa"))
                engine = GradientEngine(peft, tok.pad_token_id)
                engine.trim_logits = engine.trim_logits and v.get("trim", True)
                basis = torch.linalg.qr(torch.randn(engine.dim, 20, generator=torch.Generator().manual_seed(0)))[0]
                engine.projected_grads(*batches[0], basis)  # warm
                torch.set_num_threads(v.get("threads", threads0))
                dt = _timed(lambda: [engine.projected_grads(ids, lab, basis) for ids, lab in batches])  # noqa: B023  (called at once)
            finally:
                torch.set_num_threads(threads0)
                base[0].set_attn_implementation("sdpa")
                peft.unload()
            rates[name].append(cfg.n_throughput / dt)
    med = {k: float(np.median(v)) for k, v in rates.items()}
    ref = f"lora_layers={'all' if default is None else default}"
    return {"cpu_options_examples_per_s": med, "cpu_options_reference": ref,
            "cpu_options_speedup": {k: v / med[ref] for k, v in med.items()},
            "cpu_options_n_layers": n_layers}


def project_pool(n: int, work: Path, model: str | None = None, batch_size: int = 16, max_length: int = 256,
                 lora_layers: int | None = None) -> dict:
    """In this process, as `select` does: read an n-example pool JSONL into the columnar pool, tokenize it
    into compact rows, project every gradient into a memmap store (flushing as train_proj does), then
    score the stored rows in blocks. Peak RSS and wall time of the whole process."""
    t0 = time.time()
    model_, tok = load_base_model(model or str(_sample_data() / "tiny-lm"))
    peft = attach_lora(model_, LoraSettings(last_layers=lora_layers), seed=0).eval()
    pool = load_pool(work / f"pool-{n}.jsonl")
    toks = tokenize_examples(pool, tok, max_length)
    t_data = time.time() - t0
    engine = GradientEngine(peft, tok.pad_token_id)
    basis = torch.linalg.qr(torch.randn(engine.dim, 64, generator=torch.Generator().manual_seed(0)))[0]
    fs = FeatureStore(work / f"proj-{n}.npy", n, 64, {"bench": n})
    t1 = time.time()
    stream(engine, toks, fs.todo(), batch_size, row_writer(fs), project=basis.to(engine.device))
    fs.flush()
    t_proj = time.time() - t1
    t2 = time.time()
    rng = np.random.default_rng(0)
    gist_scores(fs.rows(), rng.standard_normal((32, 64)), {f"s{i}": list(range(8 * i, 8 * i + 8)) for i in range(4)}, 16)
    return {"n": n, "wall_s": time.time() - t0, "data_and_tokenize_s": t_data, "projection_s": t_proj,
            "scoring_s": time.time() - t2, "examples_per_s": n / t_proj,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def write_pool(n: int, work: Path) -> Path:
    """`work`/pool-N.jsonl: N rows of the bundled synthetic corpus (made once; any size up to 300,000)."""
    path = work / f"pool-{n}.jsonl"
    if not path.exists():
        cfg = CorpusConfig(n_pool=n, seed=7)
        _, reserved = build_targets(cfg)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as fh:
            for row in build_pool(cfg, reserved):
                fh.write(json.dumps(row) + "\n")
        os.replace(tmp, path)
    return path


def memory_scaling(cfg: BenchConfig, work: Path) -> dict:
    runs = {}
    for n in (cfg.n_small, cfg.n_large):
        write_pool(n, work)
        cmd = [sys.executable, "-m", "gist_core.runner.bench", "--project", str(n), "--work", str(work)]
        if cfg.model:
            cmd += ["--model", cfg.model]
        cmd += ["--max-length", str(cfg.max_length)] + (["--lora-layers", str(cfg.lora_layers)] if cfg.lora_layers else [])
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        runs[n] = json.loads(out.stdout.strip().splitlines()[-1])
    small, large = runs[cfg.n_small], runs[cfg.n_large]
    return {"peak_rss_ratio": large["peak_rss_mb"] / small["peak_rss_mb"], "memory_runs": runs}


def run_bench(cfg: BenchConfig, out: str | os.PathLike) -> dict:
    out = check_out_folder(out)
    with writer_lock(out):
        return _bench(cfg, out)


def _bench(cfg: BenchConfig, out: Path) -> dict:
    t0 = time.time()
    rep = {"config": asdict(cfg), "device": "cuda" if torch.cuda.is_available() else "cpu",
           "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}
    rep.update(throughput(cfg))
    rep.update(loop_speedup(cfg))
    rep.update(rescore_latency(cfg))
    rep.update(memory_scaling(cfg, out))
    if cfg.cpu_options:
        rep.update(cpu_options(cfg))
    rep["wall_s"] = time.time() - t0
    atomic_write_json(out / "bench.json", rep)
    return rep


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="bench worker: project a pool in this process, print peak RSS")
    p.add_argument("--project", type=int, required=True)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--model")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--lora-layers", type=int)
    a = p.parse_args(argv)
    print(json.dumps(project_pool(a.project, a.work, a.model, max_length=a.max_length, lora_layers=a.lora_layers)))


if __name__ == "__main__":
    main()
