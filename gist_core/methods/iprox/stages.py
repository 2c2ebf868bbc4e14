"""`gist-lab proxy build`: an Iprox proxy of the target model (IPSVD, then gradient alignment), its ablations,
and a side-by-side evaluation: the same selection run (`compare` with GIST and LESS, no downstream unless
asked) on the target and on every proxy, then how far each proxy's scores agree with the target's and what
each costs.

Layout (ProxyLayout):
    model/                   the proxy: config, safetensors with the factor layers, tokenizer, iprox.json
    candidates/<name>/       the ablations and the ρ sweep, each a model folder of its own
    eval/<name>/             one compare run per model (target, proxy, candidates), resumable like any run
    proxy.json               the build (ranks, timings, stage-2 loss curve) and the agreement / cost table
A model folder whose iprox.json carries the same build key is loaded, not rebuilt.
"""
from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr

from gist_core import memory
from gist_core.config import CompareConfig, RunConfig, TrainConfig
from gist_core.data.examples import load_examples
from gist_core.data.formatting import tokenize_examples
from gist_core.errors import StoreError
from gist_core.grads.per_example import pad_batch
from gist_core.methods.iprox.align import align
from gist_core.methods.iprox.config import ProxyConfig
from gist_core.methods.iprox.proxy import (
    collect_probes,
    compress,
    count_params,
    extract_layers,
    kept_layers,
    plan_ranks,
    target_linears,
)
from gist_core.methods.iprox.store import is_proxy_folder, read_plan, save_proxy
from gist_core.methods.less.config import LessConfig
from gist_core.model.load import DEFAULT_TARGETS, load_base_model
from gist_core.model.registry import resolve
from gist_core.runner.compare import run_compare
from gist_core.runner.keys import input_fingerprint
from gist_core.store.atomic import atomic_folder, atomic_write_json
from gist_core.store.layout import ProxyLayout, RunLayout, extraction_meta
from gist_core.store.lock import writer_lock
from gist_core.store.manifest import stable_hash
from gist_core.store.reports import read_report, stamp
from gist_core.store.runs import check_out_folder

log = logging.getLogger(__name__)
BUILD_FIELDS = ("model", "train", "rank_multiple", "probe_examples", "max_probes", "align_examples", "align_epochs",
                "align_batch", "align_lr", "lambda_kd", "tau", "max_length", "seed", "dtype")


def build_key(cfg: ProxyConfig, rho: float, init: str, aligned: bool, inputs_fp: list[str]) -> str:
    """What a proxy depends on: the build settings and the content of the target and of the pool (probe and
    alignment rows), so an edited model folder or pool file is rebuilt, not reused."""
    return stable_hash([{k: getattr(cfg, k) for k in BUILD_FIELDS}, rho, init, aligned, inputs_fp])


def layer_suffixes(model) -> list[str]:
    found = DEFAULT_TARGETS.get(getattr(model.config, "model_type", ""))
    if found:
        return found
    return sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if type(m) is torch.nn.Linear} - {"lm_head"})


def sample_rows(cfg: ProxyConfig) -> tuple[list, list]:
    """Probe rows and alignment rows: a seeded permutation of the pool, disjoint."""
    rows = load_examples(cfg.train)
    perm = np.random.default_rng(cfg.seed).permutation(len(rows))
    probe = [rows[i] for i in perm[: cfg.probe_examples]]
    aligned = [rows[i] for i in perm[cfg.probe_examples: cfg.probe_examples + cfg.align_examples]]
    return probe, aligned


class Builder:
    """Holds the target, its probes and the alignment batches; builds proxies from them."""

    def __init__(self, cfg: ProxyConfig, quiet: bool = True):
        self.cfg, self.quiet = cfg, quiet
        self.source = resolve(cfg.model)
        self.target, self.tok = load_base_model(cfg.model, cfg.dtype, cfg.device)
        self.target_fp = self.source.fingerprint or input_fingerprint(cfg.model)  # content, as the run stages key it
        self.pool_fp = input_fingerprint(cfg.train)
        self.suffixes = layer_suffixes(self.target)
        self._probes, self._batches, self.probe_s = None, None, 0.0

    @property
    def probes(self):
        """The IPSVD probes (H, Δ per layer), collected on first use: a rerun with every model built needs none."""
        if self._probes is None:
            t0 = time.time()
            probe_tok = tokenize_examples(sample_rows(self.cfg)[0], self.tok, self.cfg.max_length)
            self._probes = collect_probes(self.target, list(probe_tok.input_ids),
                                          target_linears(self.target, self.suffixes), self.cfg.max_probes, self.cfg.seed)
            self.probe_s = time.time() - t0
        return self._probes

    @property
    def batches(self) -> list:
        """Stage-2 batches (input ids, labels, attention mask), padded, on the target's device."""
        if self._batches is None:
            cfg, device = self.cfg, next(self.target.parameters()).device
            at = tokenize_examples(sample_rows(cfg)[1], self.tok, cfg.max_length)
            ids, labs = list(at.input_ids), list(at.labels)
            self._batches = [pad_batch(ids[i:i + cfg.align_batch], labs[i:i + cfg.align_batch], self.tok.pad_token_id,
                                       device) for i in range(0, len(ids), cfg.align_batch)]
        return self._batches

    def build(self, folder: Path, rho: float, init: str, aligned: bool) -> dict:
        """The proxy in `folder` (built unless a folder with the same key is there); its iprox.json."""
        key = build_key(self.cfg, rho, init, aligned, [self.target_fp, self.pool_fp])
        if is_proxy_folder(folder) and read_plan(folder).get("key") == key:
            return read_plan(folder)
        t0 = time.time()
        proxy = copy.deepcopy(self.target)
        plan = plan_ranks(target_linears(proxy, self.suffixes), rho, self.cfg.rank_multiple)
        compress(proxy, plan, init, self.probes if init == "ipsvd" else None, self.cfg.seed)
        init_s = time.time() - t0
        steps = []
        if aligned and self.cfg.align_epochs and self.batches:
            steps = align(self.target, proxy, self.batches, self.cfg.align_epochs, self.cfg.align_lr, 0.01,
                          self.cfg.lambda_kd, self.cfg.tau, self.cfg.seed)
        meta = {"key": key, "target": self.cfg.model, "target_folder": self.source.path, "rho": rho, "init": init,
                "aligned": bool(steps), "rank_multiple": self.cfg.rank_multiple, "lambda_kd": self.cfg.lambda_kd,
                "params": count_params(proxy), "target_params": count_params(self.target),
                "plan": [asdict(p) for p in plan], "n_probe_columns": self.probes.n_columns if init == "ipsvd" else 0,
                "probe_s": self.probe_s if init == "ipsvd" else 0.0, "init_s": init_s,
                "align_s": float(sum(s.seconds for s in steps)),
                "align_curve": [{"loss": s.loss, "align": s.align, "kd": s.kd} for s in steps]}
        save_proxy(proxy, self.tok, folder, meta)
        if not self.quiet:
            log.info("%s ρ=%.2f%s: %d of %d parameters, built in %.1f s", init, rho, " + alignment" if steps else "",
                     meta["params"], meta["target_params"], init_s + meta["align_s"] + meta["probe_s"])
        return meta

    def layer_extraction(self, lay: ProxyLayout, name: str, rho: float) -> dict:
        """The baseline proxy: round((1 − ρ)·L) of the target's L layers, an ordinary model folder."""
        folder, meta_path = lay.candidate(name), lay.extraction_meta(name)
        key = stable_hash([self.target_fp, rho, "layers"])
        old = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        if old.get("key") == key:
            return old
        t0 = time.time()
        model = copy.deepcopy(self.target)
        n = model.config.num_hidden_layers
        keep = kept_layers(n, round((1 - rho) * n))
        extract_layers(model, keep)
        meta = {"key": key, "init": "layers", "rho": rho, "kept_layers": keep, "target_folder": self.source.path,
                "params": count_params(model), "target_params": count_params(self.target), "aligned": False}
        with atomic_folder(folder) as tmp:
            model.save_pretrained(tmp)
            self.tok.save_pretrained(tmp)
            meta["init_s"] = time.time() - t0
            atomic_write_json(extraction_meta(tmp), meta)
        return meta


def models_to_build(cfg: ProxyConfig, lay: ProxyLayout) -> list[tuple[str, Path, float, str, bool]]:
    """(name, folder, ρ, init, aligned) of the proxy and of every ablation / sweep point."""
    out = [("proxy", lay.model, cfg.rho, cfg.init, True)]
    named = {"ipsvd-noalign": ("ipsvd", False), "svd": ("svd", True), "random": ("random", True)}
    out += [(c, lay.candidate(c), cfg.rho, *named[c]) for c in cfg.candidates if c in named]
    out += [(f"rho-{r:g}", lay.candidate(f"rho-{r:g}"), r, cfg.init, True) for r in cfg.sweep if r != cfg.rho]
    return out


def selection_configs(cfg: ProxyConfig, model: str):
    run = RunConfig(model=model, train=cfg.train, target=cfg.target, limit_train=cfg.eval_pool,
                    max_length=cfg.max_length, lora=cfg.lora, warmup=TrainConfig(epochs=cfg.warmup_epochs),
                    dtype=cfg.dtype, device=cfg.device)
    return run, CompareConfig(methods=cfg.methods, downstream=cfg.downstream, seeds=1 if not cfg.downstream else 3,
                              less=LessConfig(dim=cfg.less_dim), n_em=cfg.n_em)


def evaluate_model(cfg: ProxyConfig, model: str, folder: Path) -> dict:
    """One compare run on `model`; its scores, precision and costs."""
    run, cmp = selection_configs(cfg, model)
    t0, rss0 = time.time(), memory.reset_peak()
    # the selection alone first, so its time and memory are not the downstream fine-tuning's; eval/ is this
    # command's own, so it follows the config (overwrite)
    rep = run_compare(run, replace(cmp, downstream=False), folder, quiet=True, overwrite=True)
    wall, peak = time.time() - t0, memory.peak_since(rss0)
    if cmp.downstream:  # resumes the selection, adds the target's fine-tuning on it
        rep = run_compare(run, cmp, folder, quiet=True, overwrite=True)
    scores = pd.read_parquet(RunLayout(folder).compare_scores)
    out = {"n_pool": rep["n_pool"], "n_selected": rep["n_selected"], "wall_s": wall, "peak_rss_bytes": peak,
           "methods": {}}
    for m in cfg.methods:
        e = rep["methods"].get(m, {})
        out["methods"][m] = {"precision": e.get("precision"), "wall_s": e.get("wall_s"), "stage_wall_s": e.get("stage_wall_s"),
                             "test_loss": e.get("test_loss"), "exact_match": e.get("exact_match"),
                             "scores": scores[f"score:{m}"].to_numpy().tolist()}
    out["scores_hash"] = stable_hash([out["methods"][m]["scores"] for m in cfg.methods])
    proj_s = (rep["methods"].get("gist", {}).get("stage_wall_s") or {}).get("pool_features")
    out["grad_s_per_example"] = proj_s / rep["n_pool"] if proj_s else None  # GIST's pool pass: forward + backward
    return out


def agreement(target: dict, other: dict, k: int) -> dict:
    """Per method: Spearman of the pool scores, and the share of the target's top-k the model also ranks top-k."""
    out = {}
    for m, t in target["methods"].items():
        a, b = np.asarray(t["scores"]), np.asarray(other["methods"][m]["scores"])
        top_a, top_b = set(np.argsort(-a, kind="stable")[:k].tolist()), set(np.argsort(-b, kind="stable")[:k].tolist())
        out[m] = {"spearman": float(spearmanr(a, b).statistic), "top_overlap": len(top_a & top_b) / k}
    return out


def run_proxy(cfg: ProxyConfig, out, quiet: bool = True) -> dict:
    """Build the proxy and its ablations in `out`, evaluate each against the target, write proxy.json."""
    check_out_folder(out)
    with writer_lock(out):
        return _build_and_evaluate(cfg, ProxyLayout(out), quiet)


def _build_and_evaluate(cfg: ProxyConfig, lay: ProxyLayout, quiet: bool) -> dict:
    t0 = time.time()
    builder = Builder(cfg, quiet)
    built, folders = {}, {}
    for name, folder, rho, init, aligned in models_to_build(cfg, lay):
        built[name], folders[name] = builder.build(folder, rho, init, aligned), folder
    if "layers" in cfg.candidates:
        built["layers"] = builder.layer_extraction(lay, "layers", cfg.rho)
        folders["layers"] = lay.candidate("layers")
    target_params = count_params(builder.target)
    del builder  # the target and the probes: freed before the selection runs load their models
    rep = {"config": asdict(cfg), "target": cfg.model, "target_params": target_params, "models": {},
           "build_s": time.time() - t0}
    for name, meta in built.items():
        rep["models"][name] = {k: v for k, v in meta.items() if k != "key"}
    if cfg.evaluate:
        old = _previous_evaluation(lay)
        target_eval = _kept_costs(evaluate_model(cfg, cfg.model, lay.evaluation("target")), old.get("target"))
        k = max(1, round(0.05 * target_eval["n_pool"]))
        rep["k_top"] = k
        rep["evaluation"] = {"target": _without_scores(target_eval)}
        atomic_write_json(lay.report, stamp("proxy", rep))  # partial: the target's costs survive an interruption
        for name in built:
            ev = _kept_costs(evaluate_model(cfg, str(folders[name]), lay.evaluation(name)), old.get(name))
            rep["evaluation"][name] = {**_without_scores(ev), "agreement": agreement(target_eval, ev, k)}
            atomic_write_json(lay.report, stamp("proxy", rep))
            if not quiet:
                log.info("%s: %s", name, ", ".join(f"{m} ρs {a['spearman']:.3f} top-5% {a['top_overlap']:.2f}"
                                                   for m, a in rep["evaluation"][name]["agreement"].items()))
    rep["wall_s"] = time.time() - t0
    report = stamp("proxy", rep)
    atomic_write_json(lay.report, report)
    return report


def _previous_evaluation(lay: ProxyLayout) -> dict:
    try:
        return read_report(lay.report, "proxy").get("evaluation", {}) if lay.report.is_file() else {}
    except StoreError:  # an unreadable old report only means the costs are measured again
        return {}


def _kept_costs(ev: dict, old: dict | None) -> dict:
    """A resumed selection run computes nothing, so its wall time and memory say nothing: keep the figures measured
    when it did run (same pool and same scores, so the same run)."""
    if old and old.get("n_pool") == ev["n_pool"] and old.get("scores_hash") == ev["scores_hash"]:
        return {**ev, "wall_s": old["wall_s"], "peak_rss_bytes": old.get("peak_rss_bytes")}
    return ev


def _without_scores(ev: dict) -> dict:
    return {**ev, "methods": {m: {k: v for k, v in e.items() if k != "scores"} for m, e in ev["methods"].items()}}
