"""`gist-lab train`: one LoRA training with GAST's per-layer selection (or an ablation of it) and its test
evaluation, in a folder of its own (TrainLayout); `--ablation` runs every method × seed (and GAST under both
implementations) and writes the table. A finished run with the same config is not redone.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, replace

import numpy as np
import torch

from gist_core.data.examples import load_examples
from gist_core.data.formatting import encode_pair
from gist_core.data.registry import default_test_split
from gist_core.errors import ConfigError
from gist_core.methods.gast.config import GAST_METHODS, TrainRunConfig
from gist_core.methods.gast.trainer import train_gast
from gist_core.model.evaluate import evaluate_on_target
from gist_core.model.load import attach_lora, load_base_model
from gist_core.store.artefacts import save_tensors
from gist_core.store.atomic import atomic_write_json
from gist_core.store.layout import TrainLayout
from gist_core.store.lock import writer_lock
from gist_core.store.manifest import stable_hash
from gist_core.store.reports import check_report, read_report, stamp
from gist_core.store.runs import check_out_folder

log = logging.getLogger(__name__)


def test_split(cfg: TrainRunConfig) -> str:
    spec = cfg.test or default_test_split(cfg.target)
    if not spec:
        raise ConfigError(f"{cfg.target}: no test.jsonl next to it; pass --test FILE")
    return spec


def training_rows(cfg: TrainRunConfig) -> tuple[list, np.ndarray]:
    """The training examples: a seeded sample (seed 0, the same for every method and seed) of the file."""
    rows = load_examples(cfg.train)
    idx = np.arange(len(rows))
    if cfg.pool_size and cfg.pool_size < len(rows):
        idx = np.sort(np.random.default_rng(0).choice(len(rows), cfg.pool_size, replace=False))
    return [rows[i] for i in idx], idx


def encode(tok, examples, max_length):
    enc = [encode_pair(tok, ex.prompt, ex.response, max_length, ex.messages) for ex in examples]
    return [e[0] for e in enc], [e[1] for e in enc]


def run_train(cfg: TrainRunConfig, out, quiet: bool = True) -> dict:
    """Train, evaluate, save; skipped when `out` holds a finished run of the same config."""
    check_out_folder(out)
    with writer_lock(out):
        return _train(cfg, TrainLayout(out), quiet)


def _train(cfg: TrainRunConfig, lay: TrainLayout, quiet: bool) -> dict:
    key = stable_hash(asdict(cfg))
    if lay.report.exists():
        old = check_report(read_report(lay.report, "train"), "train", str(lay.report))
        if old.get("key") == key and lay.selection.exists():
            return old
    t0 = time.time()
    model, tok = load_base_model(cfg.model, cfg.dtype, cfg.device)
    peft = attach_lora(model, cfg.lora, seed=cfg.recipe.seed)
    examples, rows = training_rows(cfg)
    ids, labels = encode(tok, examples, cfg.max_length)
    support = (ids, labels) if cfg.gast.support == "train" else encode(tok, load_examples(cfg.target), cfg.max_length)
    summary, sel = train_gast(peft, ids, labels, tok.pad_token_id, cfg.recipe, cfg.gast, support)
    tests = load_examples(test_split(cfg))
    ev = evaluate_on_target(peft, tok, tests, cfg.max_length, n_em=cfg.n_em)
    lay.root.mkdir(parents=True, exist_ok=True)
    peft.save_pretrained(lay.adapter)
    save_tensors(lay.selection, {**sel.arrays(), "rows": rows.astype(np.int64)}, {"layers": json.dumps(summary["layers"])})
    steps_s = np.asarray(sel.step_s)
    rep = stamp("train", {
        "key": key, "config": asdict(cfg), "method": cfg.gast.method, "implementation": cfg.gast.implementation,
        "seed": cfg.recipe.seed, "n_train": len(examples), "test": test_split(cfg), "n_test": len(tests),
        "skills": [ex.skill or ex.subtask or "?" for ex in examples],
        "kinds": [ex.kind or "correct" for ex in examples],
        "test_loss": ev["test_loss"], "exact_match": ev["exact_match"], "per_subtask": ev["per_subtask"],
        "examples": ev["examples"], "steps": summary["steps"], "train_loss": summary["train_loss"],
        "layers": summary["layers"], "loss_curve": sel.losses,
        "step_ms_median": float(np.median(steps_s) * 1000) if len(steps_s) else None,
        "held_bytes_per_step": summary["held_bytes_per_step"], "cuda_peak_bytes": summary["cuda_peak_bytes"],
        "cpu_peak_rss_bytes": summary["cpu_peak_rss_bytes"],
        "device": str(next(peft.parameters()).device), "torch": torch.__version__,
        "train_wall_s": summary["wall_s"], "wall_s": time.time() - t0})
    atomic_write_json(lay.report, rep)
    if not quiet:
        log.info("%s/%s seed %d: test loss %.3f, exact match %.3f, %.0f ms/step", cfg.gast.method,
                 cfg.gast.implementation, cfg.recipe.seed, ev["test_loss"], ev["exact_match"], rep["step_ms_median"])
    return rep


ABLATION_RUNS = tuple((m, "cached") for m in GAST_METHODS) + (("gast", "twopass"),)


def run_ablation(cfg: TrainRunConfig, out, seeds: int = 3, runs=ABLATION_RUNS, quiet: bool = True) -> dict:
    """Every (method, implementation) × seed at equal steps and equal batches (one data order per seed),
    then ablation.json: mean ± std over seeds per run, per subtask, and time / memory per step."""
    check_out_folder(out)
    with writer_lock(out):
        return _ablation(cfg, TrainLayout(out), seeds, runs, quiet)


def _ablation(cfg: TrainRunConfig, lay: TrainLayout, seeds: int, runs, quiet: bool) -> dict:
    members = {}
    for method, impl in runs:
        for seed in range(seeds):
            run_cfg = replace(cfg, recipe=replace(cfg.recipe, seed=seed),
                              gast=replace(cfg.gast, method=method, implementation=impl))
            members[(method, impl, seed)] = run_train(run_cfg, lay.member(method, impl, seed).root, quiet)
    table = {}
    for method, impl in runs:
        reps = [members[(method, impl, s)] for s in range(seeds)]
        loss, em = [r["test_loss"] for r in reps], [r["exact_match"] for r in reps]
        subs = sorted(reps[0]["per_subtask"])
        table[f"{method}-{impl}"] = {
            "method": method, "implementation": impl, "test_loss": float(np.mean(loss)), "test_loss_std": float(np.std(loss)),
            "exact_match": float(np.mean(em)), "exact_match_std": float(np.std(em)),
            "per_subtask": {s: {"loss": float(np.mean([r["per_subtask"][s]["loss"] for r in reps])),
                                "exact_match": float(np.mean([r["per_subtask"][s]["exact_match"] for r in reps]))}
                            for s in subs},
            "step_ms_median": float(np.median([r["step_ms_median"] for r in reps])),
            "train_wall_s": float(np.mean([r["train_wall_s"] for r in reps])),
            "held_bytes_per_step": int(np.median([r["held_bytes_per_step"] for r in reps])),
            "cuda_peak_bytes": reps[0]["cuda_peak_bytes"], "steps": reps[0]["steps"],
            "cpu_peak_rss_bytes": _median_or_none([r.get("cpu_peak_rss_bytes") for r in reps]),
            "members": [lay.member(method, impl, s).root.name for s in range(seeds)]}
    rep = stamp("ablation", {"config": asdict(cfg), "seeds": seeds, "table": table,
                             "device": members[next(iter(members))]["device"]})
    atomic_write_json(lay.ablation_report, rep)
    return rep


def _median_or_none(values: list) -> int | None:
    """Median of the measured values (None where none was measured: an older train.json, or not Linux)."""
    got = [v for v in values if v is not None]
    return int(np.median(got)) if got else None

