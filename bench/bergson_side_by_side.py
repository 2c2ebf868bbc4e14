"""GIST Lab's per-example LoRA gradients side by side with Bergson's (EleutherAI's gradient tool) on one model, the
same rows, the same length-sorted batches and the same loss (mean cross-entropy over each row's response tokens).

    python -m venv --system-site-packages /work/bergson-venv
    /work/bergson-venv/bin/pip install --no-deps bergson==2.5.1 simple-parsing docstring-parser ml_dtypes \
        petname jaxtyping wadler-lindig
    gist-lab models fetch smollm2-135m && gist-lab data fetch sharegpt
    PYTHONPATH=. /work/bergson-venv/bin/python bench/bergson_side_by_side.py --out runs/bergson-side-by-side

(--no-deps: Bergson's own requirements name torch, torchvision, torchaudio and bitsandbytes, which the project's
environment already has or does not need; --system-site-packages lets the venv see the project's torch.)

First the two sides' full per-example gradients are compared (max relative difference per row: float32 rounding
once both take the cross-entropy on the same layout; docs/benchmarks/bergson.md says why GIST Lab's present loss
makes it 1e-3). Then, in alternating rounds on one loaded model (medians, like
`gist-lab bench`'s throughput): a plain batched training step (forward + backward to the LoRA weights, the 1.0x
reference), GIST Lab's GradientEngine full gradients (flat_grads) and projected onto a random orthonormal (D, R)
basis (projected_grads, what select does), Bergson's in-memory collector without projection and with its own
per-module random projection. Bergson's time is taken twice: inside its batch loop, and its whole call (collector
and computer set-up, loop, teardown). Both full-gradient sides write every row into an (N, D) float32 array.
Peak memory: each side once more in a fresh process that loads the model and rows, resets its resident-memory
high-water mark (Linux: /proc/self/clear_refs) and runs the side over every batch: its peak, and that peak over the
resident memory just before (what the side itself adds).
report.json and report.md go under --out.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("TQDM_DISABLE", "1")  # Bergson opens a progress bar per call: noise in a timing loop

import numpy as np
import torch
from datasets import Dataset

from gist_core.config import LoraSettings
from gist_core.data import registry as data_registry
from gist_core.data.examples import load_examples
from gist_core.data.formatting import IGNORE, tokenize_examples
from gist_core.grads.per_example import GradientEngine, causal_lm_losses, length_sorted_batches, pad_batch
from gist_core.model import registry as model_registry
from gist_core.model.load import attach_lora, load_base_model
from gist_core.store.atomic import atomic_write_json, atomic_write_text
from gist_core.store.manifest import versions as package_versions

SIDES = ("train_step", "gist_flat", "gist_projected", "bergson_flat", "bergson_projected")
LABELS = {"train_step": "training step (forward + backward, batch mean loss)",
          "gist_flat": "GIST Lab, full per-example gradients",
          "gist_projected": "GIST Lab, projected (R = {rank}, global orthonormal basis)",
          "bergson_flat": "Bergson, full per-example gradients",
          "bergson_projected": "Bergson, projected ({p}x{p} per module)"}


class BadInput(ValueError):
    """One line for the user, exit 2, before any work."""


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m", help="registry name or model folder")
    p.add_argument("--train", default="sharegpt", help="rows: a fetched data set name or a .jsonl file")
    p.add_argument("--n", type=int, default=24, help="rows (the first N with a labelled token)")
    p.add_argument("--batch-size", type=int, default=8, help="rows per batch (every side)")
    p.add_argument("--max-length", type=int, default=256, help="tokens per row")
    p.add_argument("--lora-layers", type=int, default=None, help="LoRA on the last L layers (default: all)")
    p.add_argument("--rank", type=int, default=64, help="GIST Lab's projection dimension R")
    p.add_argument("--bergson-proj", type=int, default=8,
                   help="Bergson's per-module projection p (each module's gradient becomes p x p)")
    p.add_argument("--rounds", type=int, default=3, help="alternating timing rounds; medians reported")
    p.add_argument("--no-memory", action="store_true", help="skip the one-process-per-side peak memory runs")
    p.add_argument("--memory-only", action="store_true",
                   help="only the peak memory runs, added to the report already in --out (a run with --no-memory)")
    p.add_argument("--out", type=Path, default=Path("runs/bergson-side-by-side"))
    p.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)  # one side in a fresh process
    a = p.parse_args(argv)
    a.argv = list(sys.argv[1:] if argv is None else argv)
    return a


def load_bergson() -> SimpleNamespace:
    """Bergson's collector API, or BadInput when it cannot be imported here."""
    try:  # Bergson lives in its own venv: the project's environment (and its tests) load this file without it
        from bergson import GradientProcessor, IndexConfig  # lazy: Bergson's own venv only
        from bergson.collector.collector import CollectorComputer  # lazy: Bergson's own venv only
        from bergson.collector.in_memory_collector import InMemoryCollector  # lazy: Bergson's own venv only
    except ImportError as e:
        raise BadInput(f"bergson is not importable here ({e}); run this with the bergson venv's python, "
                       "see docs/benchmarks/bergson.md") from None
    return SimpleNamespace(CollectorComputer=CollectorComputer, InMemoryCollector=InMemoryCollector,
                           IndexConfig=IndexConfig, GradientProcessor=GradientProcessor,
                           version=metadata.version("bergson"))


def check(a) -> Path:
    """Every problem found before any work starts, as one line; returns the rows' file."""
    if min(a.n, a.batch_size, a.max_length, a.rank, a.bergson_proj, a.rounds) < 1:
        raise BadInput("--n, --batch-size, --max-length, --rank, --bergson-proj and --rounds must be >= 1")
    load_bergson()
    entry = model_registry.REGISTRY.get(a.model)
    if entry is not None and not model_registry.is_fetched(entry):
        raise BadInput(f"model '{a.model}' is not fetched yet: run `gist-lab models fetch {a.model}`")
    if entry is None and not Path(a.model).is_dir():
        raise BadInput(f"--model {a.model}: neither a registry name nor a model folder")
    if a.train in data_registry.REGISTRY:
        if data_registry.read_manifest(a.train) is None:
            raise BadInput(f"data set '{a.train}' is not fetched yet: run `gist-lab data fetch {a.train}`")
        return Path(data_registry.resolve_spec(a.train))
    if not Path(a.train).is_file():
        raise BadInput(f"--train {a.train}: neither a fetched data set name nor a file")
    return Path(a.train)


# ----------------------------------------------------------------------------- the shared set-up


@dataclass
class Setup:
    peft: torch.nn.Module
    engine: GradientEngine
    pad_id: int
    input_ids: list[list[int]]
    labels: list[list[int]]
    batches: list[list[int]]


def labelled(labels: list[int]) -> bool:
    """Whether a row has a token its loss counts (the label of position 0 is never predicted)."""
    return any(t != IGNORE for t in labels[1:])


def setup(a, rows_file: Path) -> Setup:
    """The model with a seeded LoRA adapter, the first N rows with a labelled token, and their batches."""
    model, tok = load_base_model(a.model, device="cpu")
    peft = attach_lora(model, LoraSettings(last_layers=a.lora_layers), seed=0)
    warm_b(peft)
    engine = GradientEngine(peft, tok.pad_token_id)  # puts the model in eval mode (no dropout) for every side
    toks = tokenize_examples(load_examples(rows_file, limit=2 * a.n), tok, a.max_length)
    keep = [i for i in range(len(toks.input_ids)) if labelled(toks.labels[i])][:a.n]
    if len(keep) < a.n:
        raise BadInput(f"--train {a.train}: only {len(keep)} rows with a response token in its first {2 * a.n}")
    ids, lab = [toks.input_ids[i] for i in keep], [list(toks.labels[i]) for i in keep]
    batches = list(length_sorted_batches([len(x) for x in ids], range(a.n), a.batch_size))
    return Setup(peft, engine, tok.pad_token_id, ids, lab, batches)


def warm_b(peft, std: float = 0.02) -> None:
    """Seeded random LoRA B weights, as after a warm-up: a fresh adapter's B is zero, which makes every A weight's
    gradient exactly zero on both sides, and the equality check blind to half the blocks."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if p.requires_grad and ".lora_B." in name:
                p.copy_(torch.randn(p.shape, generator=gen) * std)


def orthonormal_basis(dim: int, rank: int) -> torch.Tensor:
    return torch.linalg.qr(torch.randn(dim, rank, generator=torch.Generator().manual_seed(0)))[0]


def bergson_name(param_name: str) -> str:
    """GIST Lab's parameter name (peft's named_parameters) -> the module name Bergson keys its gradients by (it
    hooks `model.base_model`): base_model.model.X.lora_A.default.weight -> model.X.lora_A.default."""
    return param_name.removeprefix("base_model.").removesuffix(".weight")


def bergson_flat(gradients: dict[str, torch.Tensor], blocks) -> torch.Tensor:
    """Bergson's per-module gradients (name -> (N, out * in)) as one (N, D) matrix in param_blocks order."""
    parts = []
    for b in blocks:
        g = gradients[bergson_name(b.name)]
        if g.shape[1] != b.size:
            raise ValueError(f"{b.name}: Bergson's gradient has {g.shape[1]} entries per row, the weight {b.size}")
        parts.append(torch.as_tensor(g).reshape(g.shape[0], -1))
    return torch.cat(parts, dim=1)


def agreement(ours: torch.Tensor, theirs: torch.Tensor) -> dict:
    """How far two (N, D) gradient matrices are apart: per row |theirs - ours| / |ours| (L2), its maximum; the
    largest entry difference over the largest entry; the smallest per-row cosine."""
    ours, theirs = ours.double(), theirs.double()
    diff = (theirs - ours).norm(dim=1)
    rel = diff / ours.norm(dim=1).clamp_min(1e-30)
    cos = (ours * theirs).sum(1) / (ours.norm(dim=1) * theirs.norm(dim=1)).clamp_min(1e-30)
    return {"max_rel_l2": float(rel.max()), "median_rel_l2": float(rel.median()),
            "max_abs_diff_over_max_abs": float((theirs - ours).abs().max() / ours.abs().max().clamp_min(1e-30)),
            "min_cosine": float(cos.min())}


# ----------------------------------------------------------------------------- the sides


def train_step(s: Setup) -> dict:
    """The reference: one batched forward + backward per batch, the gradient of the batch's mean loss, with the
    same response-only logits as GIST Lab's side (gist-lab bench's reference)."""
    params = [p for p in s.peft.parameters() if p.requires_grad]
    for batch in s.batches:
        ids, lab, att = pad_batch([s.input_ids[i] for i in batch], [s.labels[i] for i in batch], s.pad_id, "cpu")
        torch.autograd.grad(causal_lm_losses(s.peft, ids, lab, att, s.engine.trim_logits).mean(), params)
    return {}


def gist_flat(s: Setup) -> dict:
    out = np.zeros((len(s.input_ids), s.engine.dim), dtype=np.float32)
    losses = np.zeros(len(s.input_ids), dtype=np.float32)
    for batch in s.batches:
        g, loss = s.engine.flat_grads([s.input_ids[i] for i in batch], [s.labels[i] for i in batch])
        out[batch], losses[batch] = g.numpy(), loss.numpy()
    return {"grads": out, "losses": losses}


def gist_projected(s: Setup, basis: torch.Tensor) -> dict:
    out = np.zeros((len(s.input_ids), basis.shape[1]), dtype=np.float32)
    for batch in s.batches:
        out[batch] = s.engine.projected_grads([s.input_ids[i] for i in batch], [s.labels[i] for i in batch],
                                              basis)[0].numpy()
    return {"grads": out}


def bergson_call(bg: SimpleNamespace, s: Setup, data, work: Path, proj: int | None) -> dict:
    """One whole Bergson collection (in memory) over the rows and batches: collector and computer built, the batch
    loop run, torn down. `loop_s` is the loop alone (from the computer's start to the collector's teardown)."""
    t0 = time.perf_counter()
    cfg = bg.IndexConfig(run_path=str(work / "bergson"), loss_fn="ce", loss_reduction="mean")
    os.makedirs(cfg.partial_run_path, exist_ok=True)  # the computer saves a token count there
    collector = bg.InMemoryCollector(model=s.peft.base_model, cfg=cfg, data=data,
                                     processor=bg.GradientProcessor(projection_dim=proj),
                                     target_modules={bergson_name(b.name) for b in s.engine.blocks})
    computer = bg.CollectorComputer(model=s.peft, data=data, collector=collector, batches=s.batches, cfg=cfg)
    marks, teardown = {}, collector.teardown

    def timed_teardown():
        marks["loop_end"] = time.perf_counter()
        teardown()

    collector.teardown = timed_teardown
    t1 = time.perf_counter()
    computer.run_with_collector_hooks()
    t2 = time.perf_counter()
    return {"gradients": collector.gradients, "losses": collector.per_doc_losses.numpy(),
            "loop_s": marks["loop_end"] - t1, "call_s": t2 - t0}


def bergson_data(s: Setup) -> Dataset:
    """The rows as the Hugging Face Dataset Bergson's computer indexes by batch."""
    return Dataset.from_dict({"input_ids": s.input_ids, "labels": s.labels})


def sides(a, s: Setup, work: Path) -> dict:
    """Each side as a function of the batches it runs (a warm-up takes the first batch only)."""
    bg, data = load_bergson(), bergson_data(s)
    basis = orthonormal_basis(s.engine.dim, a.rank)

    def with_batches(fn):
        def run(batches):
            full, s.batches = s.batches, batches
            try:
                return fn()
            finally:
                s.batches = full
        return run

    return {"train_step": with_batches(lambda: train_step(s)),
            "gist_flat": with_batches(lambda: gist_flat(s)),
            "gist_projected": with_batches(lambda: gist_projected(s, basis)),
            "bergson_flat": with_batches(lambda: bergson_call(bg, s, data, work, None)),
            "bergson_projected": with_batches(lambda: bergson_call(bg, s, data, work, a.bergson_proj))}


def timed(fn) -> tuple[float, dict]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


# ----------------------------------------------------------------------------- equality, timing, memory


def equality(s: Setup, run: dict) -> dict:
    """Both sides' full gradients and losses over every row, compared."""
    ours, theirs = run["gist_flat"](s.batches), run["bergson_flat"](s.batches)
    out = agreement(torch.from_numpy(ours["grads"]), bergson_flat(theirs["gradients"], s.engine.blocks))
    out["max_loss_diff"] = float(np.abs(ours["losses"] - theirs["losses"]).max())
    return out


def timing(a, s: Setup, run: dict) -> dict:
    """Alternating rounds, each side over every batch; Bergson's loop and whole-call seconds both kept."""
    for fn in run.values():
        fn(s.batches[:1])  # warm caches, allocators and Bergson's projection matrices
    secs: dict[str, list[float]] = {k: [] for k in SIDES}
    secs.update({"bergson_flat_call": [], "bergson_projected_call": []})
    for _ in range(a.rounds):
        for side, fn in run.items():
            dt, out = timed(lambda fn=fn: fn(s.batches))
            if side.startswith("bergson"):
                secs[side].append(out["loop_s"])
                secs[f"{side}_call"].append(out["call_s"])
            else:
                secs[side].append(dt)
            print(f"  {side}: {secs[side][-1]:.2f} s", flush=True)
    return secs


def rates(secs: dict[str, list[float]], n: int) -> dict:
    """Median examples/s per timed side and its ratio to the training step's."""
    eps = {k: n / float(np.median(v)) for k, v in secs.items()}
    return {k: {"examples_per_s": round(v, 2), "x_train_step": round(v / eps["train_step"], 3),
                "seconds": [round(t, 3) for t in secs[k]]} for k, v in eps.items()}


def child_argv(a, side: str) -> list[str]:
    flags = [f for f in a.argv if f not in ("--no-memory", "--memory-only")]
    return [sys.executable, str(Path(__file__).resolve()), *flags, "--child", side]


def peak_memory(a) -> dict:
    """Per side, run once over every batch in a fresh process: {"before": resident bytes with the model and rows
    loaded, "peak": the high-water mark while the side ran}."""
    out = {}
    for side in SIDES:
        res = subprocess.run(child_argv(a, side), capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"memory run of {side} failed: {res.stderr.strip().splitlines()[-1:]}")
        out[side] = json.loads(res.stdout.strip().splitlines()[-1])
        print(f"  {side}: peak {out[side]['peak'] / 2**20:.0f} MB, {out[side]['before'] / 2**20:.0f} MB before",
              flush=True)
    return out


def status_bytes(field: str) -> int:
    """A memory figure of this process from /proc/self/status (VmRSS: resident now, VmHWM: its high-water mark)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def reset_peak_rss() -> int:
    """Start the high-water mark afresh (the model's loading peaks higher than a small side); resident bytes now."""
    Path("/proc/self/clear_refs").write_text("5")
    return status_bytes("VmRSS")


def run_child(a, rows_file: Path) -> int:
    s = setup(a, rows_file)
    with tempfile.TemporaryDirectory() as work:
        run = sides(a, s, Path(work))[a.child]
        before = reset_peak_rss()
        run(s.batches)
        peak = status_bytes("VmHWM")
    print(json.dumps({"side": a.child, "before": before, "peak": peak,
                      "process_max_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
    return 0


# ----------------------------------------------------------------------------- the report


def machine() -> dict:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"}


def build_report(a, s: Setup, agree: dict, secs: dict, memory: dict | None, bergson_version: str) -> dict:
    lengths = [len(x) for x in s.input_ids]
    return {"command": " ".join(["python bench/bergson_side_by_side.py", *a.argv]),
            "versions": {**package_versions(), "bergson": bergson_version}, "machine": machine(),
            "settings": {"model": a.model, "train": a.train, "n": a.n, "batch_size": a.batch_size,
                         "max_length": a.max_length, "lora_layers": a.lora_layers, "rank": a.rank,
                         "bergson_proj": a.bergson_proj, "rounds": a.rounds},
            "rows": {"n": len(lengths), "batches": len(s.batches), "mean_tokens": round(float(np.mean(lengths)), 1),
                     "max_tokens": max(lengths)},
            "gradient_dim": s.engine.dim, "modules": len(s.engine.blocks),
            "bergson_projected_dim": len(s.engine.blocks) * a.bergson_proj ** 2,
            "agreement": agree, "timing": rates(secs, len(lengths)),
            "peak_rss_bytes": memory}


def mb(b: int | None) -> str:
    return "-" if b is None else f"{b / 2**20:,.0f}"


def markdown(rep: dict) -> str:
    st, t, mem = rep["settings"], rep["timing"], rep["peak_rss_bytes"] or {}
    head = [f"{rep['settings']['model']}, {rep['rows']['n']} {st['train']} rows in {rep['rows']['batches']} "
            f"length-sorted batches of {st['batch_size']} (max length {st['max_length']}, mean "
            f"{rep['rows']['mean_tokens']} tokens), LoRA on {'all' if st['lora_layers'] is None else st['lora_layers']}"
            f" layers, D = {rep['gradient_dim']:,}; {rep['machine']['device']}, {rep['machine']['cpu_count']} cores; "
            f"medians of {st['rounds']} alternating rounds.", "",
            f"Gradients: max per-row relative difference (L2) Bergson vs GIST Lab "
            f"{rep['agreement']['max_rel_l2']:.1e}, smallest cosine {rep['agreement']['min_cosine']:.8f}, "
            f"largest loss difference {rep['agreement']['max_loss_diff']:.1e}.", "",
            "| side | examples/s | x training step | peak RSS MB | peak over the loaded model MB |",
            "|---|---|---|---|---|"]
    rows = []
    for side in SIDES:
        label = LABELS[side].format(rank=st["rank"], p=st["bergson_proj"])
        m = mem.get(side)
        peak, extra = ("-", "-") if m is None else (mb(m["peak"]), mb(m["peak"] - m["before"]))
        timing = "in its loop" if side.startswith("bergson") else ""
        rows.append(f"| {label}{', ' + timing if timing else ''} | {t[side]['examples_per_s']} | "
                    f"{t[side]['x_train_step']} | {peak} | {extra} |")
        if side.startswith("bergson"):
            c = t[f"{side}_call"]
            rows.append(f"| {label}, whole call | {c['examples_per_s']} | {c['x_train_step']} | | |")
    return "\n".join(head + rows) + "\n"


def add_memory(a) -> int:
    """The peak memory runs, written into the report of an earlier run in --out (the same settings)."""
    path = a.out / "report.json"
    if not path.is_file():
        raise BadInput(f"--memory-only: no report in {a.out} yet (run without --memory-only first)")
    rep = json.loads(path.read_text())
    print("== peak memory, one process per side", flush=True)
    rep["peak_rss_bytes"] = peak_memory(a)
    rep["memory_command"] = " ".join(["python bench/bergson_side_by_side.py", *a.argv])
    atomic_write_json(path, rep)
    atomic_write_text(a.out / "report.md", markdown(rep))
    print(markdown(rep))
    return 0


def main(argv=None) -> int:
    before = logging.root.manager.disable
    logging.disable(logging.INFO)  # Bergson logs each call's module list on stdout
    try:
        return _main(argv)
    finally:  # a caller in the same process (the tests, a notebook) gets its logging back
        logging.disable(before)


def _main(argv=None) -> int:
    a = parse(argv)
    try:
        rows_file = check(a)
        if a.child:
            return run_child(a, rows_file)
        if a.memory_only:
            return add_memory(a)
        s = setup(a, rows_file)
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as work:
        run = sides(a, s, Path(work))
        print(f"== equality: {a.n} rows, D = {s.engine.dim:,}", flush=True)
        agree = equality(s, run)
        print(f"  {agree}", flush=True)
        print(f"== timing: {a.rounds} rounds", flush=True)
        secs = timing(a, s, run)
    memory = None
    if not a.no_memory:
        print("== peak memory, one process per side", flush=True)
        memory = peak_memory(a)
    rep = build_report(a, s, agree, secs, memory, load_bergson().version)
    a.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(a.out / "report.json", rep)
    atomic_write_text(a.out / "report.md", markdown(rep))
    print(markdown(rep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
