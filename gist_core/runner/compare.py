"""`gist-lab compare`: GIST next to LESS and the common baselines, in one run directory.

Selection quality (precision, recall, coverage against ground truth), downstream quality (LoRA
fine-tuned on each selection with one fixed recipe, several seeds, target test loss and exact
match) and cost (wall time per stage, estimated FLOPs, bytes stored) for every method.

Layout inside the run directory (the GIST run's own artefacts stay where they are):
    compare/less/ckpt-E.npy (+ .done.npy)  LESS training features, N x d float16, one file per checkpoint
    compare/less/val-ckpt-E.npy             LESS validation features
    compare/rawcos.npy, compare/embed.npy   raw-gradient dot products + norm; pool embeddings
    compare/evals/<row>-s<seed>.json        one downstream run each (skipped when present and matching)
    compare/scores.parquet                  every score-based method's score per pool example
    compare.json                            the table, the recipe, the costs, the ratios
Every feature store resumes from its done-mask; every downstream run is its own file: a killed
compare reruns only what is missing.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from gist_core.methods import baselines

from gist_core.methods import scoring
from gist_core.store.artefacts import load_npy, save_npy
from gist_core.store.atomic import atomic_path, atomic_write_json
from gist_core.runner.sharding import Layout, single_process_env
from gist_core.data.examples import examples_to_frame, load_examples, subtask_groups
from gist_core.runner.pipeline import (FLUSH_EVERY, ConfigError, Run, RunConfig, StoreSpec, choose_rank, load_subspace,
                                rank_advice, skipped)
from gist_core.methods.scoring import RULE_FAMILIES, row_name, split_row  # noqa: F401  (bench and tests use them here)
from gist_core.store.manifest import file_hash, stable_hash
from gist_core.data.truth import metrics_from, truth_masks
from gist_core.model.training import TrainConfig

DEFAULT_METHODS = ("gist", "less", "rawcos", "random", "length", "embedding", "full")
KNOWN_METHODS = DEFAULT_METHODS + ("oracle", "gist_mean", "gist_max")
# GIST at one fixed aggregation, on the run's stored projections (no extra gradients): the run's own
# aggregation is the "gist" row; these add the other one to the same table
AGGREGATION_METHODS = {"gist_mean": "subtask_mean", "gist_max": "example_max"}
DEFAULT_RULES = ("global", "subtask")
FAMILY_LABELS = {"gist": "GIST", "gist_mean": "GIST (subtask means)", "gist_max": "GIST (example max)",
                 "less": "LESS", "rawcos": "raw-gradient cosine", "embedding": "embedding similarity"}
RULE_LABELS = {"global": "global top-k", "subtask": "per-subtask quota", "zscore": "z-scored max",
               "quantile": "quantile max"}
LABELS = {"random": "random", "length": "longest responses", "full": "full pool", "oracle": "oracle (true target examples)"}


def row_label(row: str) -> str:
    family, rule = split_row(row)
    if family in FAMILY_LABELS:
        return f"{FAMILY_LABELS[family]}, {RULE_LABELS[rule]}"
    return LABELS.get(row, row)


@dataclass(frozen=True)
class CompareConfig:
    """What `compare` runs on top of a GIST run; written into compare.json."""
    methods: tuple[str, ...] = field(default=DEFAULT_METHODS, metadata={"help": "methods to compare"})
    rules: tuple[str, ...] = field(default=DEFAULT_RULES, metadata={
        "help": "selection rules applied to every score-based method (global = the paper's top-k of the max)"})
    seeds: int = field(default=3, metadata={"help": "downstream seeds (LoRA init, data order, random/oracle draw)"})
    less_dim: int = field(default=8192, metadata={"help": "LESS random-projection dimension d"})
    less_seed: int = field(default=0, metadata={"help": "seed of the Rademacher projection"})
    less_checkpoints: tuple[str, ...] = field(
        default=(), metadata={"help": "LESS checkpoints (ours or HF Trainer's); default: the run's warm-up epochs"})
    test: str | None = field(default=None, metadata={"help": "target test split; default test.jsonl beside the target"})
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=4, lr=1e-3, seed=0),
                               metadata={"help": "downstream LoRA recipe (seed replaced per run)"})
    full_epochs: int = field(default=1, metadata={"help": "epochs for the full-pool row (20x the examples)"})
    n_em: int | None = field(default=None, metadata={"help": "exact-match prompts per subtask (None = all)"})
    downstream: bool = field(default=True, metadata={"help": "fine-tune and evaluate on each selection"})
    projection_batch: int = field(default=128, metadata={"help": "rows per LESS projection matmul"})
    projector_cache_gb: float = field(default=4.0, metadata={"help": "keep R in memory up to this size"})

    def __post_init__(self):
        if isinstance(self.train, dict):
            object.__setattr__(self, "train", TrainConfig(**self.train))
        object.__setattr__(self, "methods", tuple(self.methods))
        object.__setattr__(self, "less_checkpoints", tuple(self.less_checkpoints))
        object.__setattr__(self, "rules", tuple(self.rules))
        bad = [r for r in self.rules if r not in scoring.BALANCES]
        if bad or not self.rules:
            raise ConfigError(f"unknown selection rule(s) {', '.join(bad) or '(none given)'} "
                              f"(choose from {', '.join(scoring.BALANCES)})")
        unknown = [m for m in self.methods if m not in KNOWN_METHODS]
        if unknown:
            raise ConfigError(f"unknown method(s) {', '.join(unknown)} (choose from {', '.join(KNOWN_METHODS)})")
        if not self.methods:
            raise ConfigError("no methods to compare")
        if self.seeds < 1 or self.less_dim < 1 or self.full_epochs < 1:
            raise ConfigError("seeds, less_dim and full_epochs must be >= 1")

    def rows(self, has_truth: bool) -> list[str]:
        out = [row_name(m, r) for m in self.methods for r in (self.rules if m in RULE_FAMILIES else ("global",))]
        if has_truth and "oracle" not in out:
            out.append("oracle")
        return out


def default_test_split(target: str) -> str | None:
    p = Path(target)
    cand = p.with_name("test.jsonl") if p.is_file() else None
    return str(cand) if cand is not None and cand.exists() and cand != p else None


class Compare:
    """Runs (or resumes) GIST, then every baseline's features, selections, downstream runs and costs."""

    def __init__(self, run_cfg: RunConfig, cmp: CompareConfig, out, quiet: bool = False, overwrite: bool = False,
                 layout: Layout | None = None, until: str | None = None):
        self.run = Run(run_cfg, out, quiet=quiet, overwrite=overwrite, layout=layout, until=until)
        self.cfg, self.cmp, self.store = self.run.cfg, cmp, self.run.store  # with the model file's hash filled in
        self.test_spec = cmp.test or default_test_split(run_cfg.target)
        self.costs: dict[str, dict[str, float]] = {}
        self.flops: dict[str, float] = {}
        self.bytes: dict[str, int] = {}
        self._projector = None

    def log(self, msg: str) -> None:
        self.run.log(msg)

    # ------------------------------------------------------------------ main
    def execute(self) -> dict | None:
        t0 = time.time()
        gist_summary = self.run.execute()
        layout = self.run.layout
        if self.run.until == "prepare":
            return None
        if layout.shard_job:  # this job's share of the LESS pool features; the plain rerun merges and reports
            if "less" in self.cmp.methods:
                self._less_pool_features_on_every_rank()
            return None
        if layout.torchrun:  # the LESS pool features on every rank; the rest on rank 0 alone
            if "less" in self.cmp.methods:
                self._less_pool_features_on_every_rank()
            if not layout.main:
                return None
            self.run.layout = Layout()
            with single_process_env():
                return self._finish(gist_summary, t0)
        return self._finish(gist_summary, t0)

    def _less_pool_features_on_every_rank(self) -> None:
        own = not self.cmp.less_checkpoints
        for e, ckpt in enumerate(self.less_checkpoint_dirs(), start=1):
            self._less_train_features(e, ckpt, own, self._less_key(ckpt), {"pool_projection": 0.0, "pool_features": 0.0})

    def _less_key(self, ckpt: Path) -> str:
        """The run's own checkpoints by name (the warm-up key pins their content), so `--out runs/x` and
        `--out /abs/runs/x` reuse the same features; users' checkpoints by their resolved path."""
        where = Path(ckpt).name if not self.cmp.less_checkpoints else str(Path(ckpt).resolve())
        return stable_hash([self.run.keys["warmup"], where, self.cmp.less_dim, self.cmp.less_seed])

    def _finish(self, gist_summary: dict, t0: float) -> dict:
        pool, target = self.run.pool, self.run.target
        self.groups = subtask_groups(target)
        self.k = scoring.budget_to_count(self.cfg.budget, len(pool))
        frame = examples_to_frame(pool, ["id", "skill", "kind"])
        self.truth = truth_masks(frame, list(self.groups))
        tok, model = self.run.tokenizer_and_model()
        self.n_params = sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)  # base model only
        self.tokens = {"pool": sum(map(len, self.run.pool_tok.input_ids)),
                       "target": sum(map(len, self.run.target_tok.input_ids))}
        rows = self.cmp.rows(self.truth is not None)
        scores = self.method_scores(gist_summary)
        selections = self.selections(scores, rows)
        self.save_scores(frame, scores)
        report = self.report(rows, scores, selections, gist_summary)
        if self.cmp.downstream:
            self.downstream(rows, selections, report)
        report["wall_s"] = round(time.time() - t0, 2)
        atomic_write_json(self.store.path("compare.json"), report)
        return report

    # ------------------------------------------------------------------ scores per method
    def method_scores(self, gist_summary: dict) -> dict[str, scoring.Scores]:
        out: dict[str, scoring.Scores] = {}
        names = list(self.groups)
        m = set(self.cmp.methods)
        if "gist" in m or m & set(AGGREGATION_METHODS):
            out["gist"] = self.gist_scores()
        for name, agg in AGGREGATION_METHODS.items():
            if name in m:
                out[name] = self.gist_scores(agg, name)
        if "gist" not in m:
            del out["gist"]
        if "less" in m:
            out["less"] = self.less_scores()
        if "rawcos" in m:
            out["rawcos"] = self.rawcos_scores()
        if "embedding" in m:
            out["embedding"] = self.embedding_scores()
        if "length" in m:
            t0 = time.time()
            out["length"] = baselines.length_scores(np.asarray(self.run.pool_tok.n_response_tokens), names)
            self.costs["length"] = {"scoring": time.time() - t0}
        return out

    def _stage_walls(self) -> dict:
        return self.store.manifest()["stages"]

    def _warmup_cost(self, epochs_used: int) -> tuple[float, float]:
        """(wall s, FLOPs) of the warm-up up to `epochs_used`, prorated by epochs (a later epoch is not needed)."""
        st = self._stage_walls().get("warmup", {})
        share = epochs_used / self.cfg.warmup.epochs
        n_warm = st.get("n_examples", 0)
        tokens_per_example = self.tokens["pool"] / max(1, len(self.run.pool))
        flops = 6 * self.n_params * tokens_per_example * n_warm * epochs_used
        return st.get("wall_s", 0.0) * share, flops

    def _val_cost(self, epoch: int) -> tuple[float, float]:
        st = self._stage_walls().get(f"val_grads/ckpt-{epoch}", {})
        return st.get("wall_s", 0.0) - st.get("subspace_s", 0.0), st.get("subspace_s", 0.0)

    def gist_scores(self, aggregation: str | None = None, name: str = "gist") -> scoring.Scores:
        """GIST from the run's stored projections; `aggregation` other than the run's adds a row at no
        gradient cost (the same features, another way of combining the target directions)."""
        t0 = time.time()
        sub = load_subspace(self.run.ckpt_dir(self.cfg.checkpoint) / "subspace.safetensors")
        X = load_npy(self.store.path("train_proj.npy"), np.float32, ndim=2, mmap=True)
        rank = choose_rank(self.cfg, sub, rank_advice(self.cfg, sub, X, self.groups) if self.cfg.rank_rule == "advisor"
                           else None)
        sc = scoring.gist_scores(X, sub.val_coords, self.groups, rank, aggregation or self.cfg.aggregation)
        if name != "gist":
            self.costs[name] = {**self.costs["gist"], "scoring": self.costs["gist"]["scoring"] + time.time() - t0}
            self.flops[name], self.bytes[name] = self.flops["gist"], self.bytes["gist"]
            return sc
        st = self._stage_walls()
        warm_s, warm_f = self._warmup_cost(self.cfg.checkpoint)
        val_s, sub_s = self._val_cost(self.cfg.checkpoint)
        D, n, nv, R = sub.basis.shape[0], len(self.run.pool), len(self.run.target), sub.r_max
        self.costs["gist"] = {"warmup": warm_s, "val_grads": val_s, "subspace": sub_s,
                              "pool_features": st["train_proj"]["wall_s"],
                              "scoring": st.get("scores", {}).get("wall_s", 0.0) + time.time() - t0}
        self.flops["gist"] = (warm_f + 6 * self.n_params * self.tokens["target"] + 2 * nv * nv * D + 2 * D * nv * R
                              + 6 * self.n_params * self.tokens["pool"] + 2 * n * D * R + 2 * n * R * len(self.groups))
        self.bytes["gist"] = int(np.prod(X.shape)) * X.dtype.itemsize
        self.gist_rank, self.dim = rank, D
        return sc

    # ---- LESS
    def less_checkpoint_dirs(self) -> list[Path]:
        if self.cmp.less_checkpoints:
            return [Path(p) for p in self.cmp.less_checkpoints]
        return [self.run.ckpt_dir(e) for e in range(1, self.cfg.warmup.epochs + 1)]

    def less_scores(self) -> scoring.Scores:
        from gist_core.methods.less import checkpoint_mean_lr, less_columns, lr_weights
        ckpts = self.less_checkpoint_dirs()
        n, d = len(self.run.pool), self.cmp.less_dim
        own = not self.cmp.less_checkpoints
        walls = {"warmup": self._warmup_cost(self.cfg.warmup.epochs)[0] if own else 0.0, "val_grads": 0.0,
                 "val_features": 0.0, "pool_features": 0.0, "pool_projection": 0.0, "scoring": 0.0}
        flops = self._warmup_cost(self.cfg.warmup.epochs)[1] if own else 0.0
        train_feats, val_feats, lrs = [], [], []
        for e, ckpt in enumerate(ckpts, start=1):
            key = self._less_key(ckpt)
            lrs.append(checkpoint_mean_lr(ckpt))
            V, dim = self._less_val_features(e, ckpt, own, key, walls)
            val_feats.append(V)
            train_feats.append(self._less_train_features(e, ckpt, own, key, walls))
            flops += (6 * self.n_params * (self.tokens["pool"] + self.tokens["target"])
                      + 2 * dim * d * (n + len(self.run.target)) + 10 * dim * n)
        t3 = time.time()
        weights, weight_rule = lr_weights(lrs)
        cols = less_columns(train_feats, val_feats, weights, self.groups)
        walls["scoring"] = time.time() - t3
        self.costs["less"] = walls
        self.flops["less"] = flops + 2 * n * d * len(self.run.target) * len(ckpts)
        self.bytes["less"] = sum(int(np.prod(f.shape)) * f.dtype.itemsize for f in train_feats)
        self.less_info = {"d": d, "checkpoints": [str(c) for c in ckpts], "mean_lr": lrs, "weights": weights,
                          "weighting": weight_rule, "projector_seed": self.cmp.less_seed}
        return scoring.columns_as_scores(cols, list(self.groups))

    def _less_engine(self, e: int, ckpt: Path, own: bool):
        """Gradient engine at a LESS checkpoint, with the checkpoint's Adam moments in gradient order."""
        from gist_core.grads.per_example import GradientEngine
        from gist_core.methods.less import read_moments
        tok, _ = self.run.tokenizer_and_model()
        engine = GradientEngine(self.run.adapter_model(e) if own else self.run.adapter_model(path=ckpt),
                                tok.pad_token_id)
        moments = read_moments(ckpt, [b.name for b in engine.blocks], [b.size for b in engine.blocks])
        return engine, moments

    def _projector_for(self, dim: int, device):
        """The seeded projector, built once per compare (generating R is seconds; caching it is GBs)."""
        from gist_core.methods.less import RademacherProjector
        if self._projector is None:
            self._projector = RademacherProjector(dim, self.cmp.less_dim, self.cmp.less_seed,
                                                  int(self.cmp.projector_cache_gb * (1 << 30)), device)
        return self._projector

    def _less_val_features(self, e: int, ckpt: Path, own: bool, key: str, walls: dict) -> tuple[np.ndarray, int]:
        """Normalised projected plain validation gradients (stored; recomputed only when missing)."""
        import torch
        from gist_core.grads.per_example import collect_flat
        from gist_core.methods.less import unit_rows
        stage, rel = f"compare/less/val-ckpt-{e}", f"compare/less/val-ckpt-{e}.npy"
        if own:
            walls["val_grads"] += self._val_cost(e)[0]
        # (files of older compare runs hold float16 features: recomputed, so every run scores float32 ones)
        if self.store.stage_done(stage, key) and np.load(self.store.path(rel), mmap_mode="r").dtype == np.float32:
            skipped(self.store, stage)
            entry = self._stage_walls()[stage]
            walls["val_grads"] += entry.get("val_grads_s", 0.0)
            walls["val_features"] += entry["wall_s"]
            return load_npy(self.store.path(rel), np.float32, ndim=2), entry["dim"]
        t0 = time.time()
        if own:  # the run's stored plain gradients at its own checkpoints
            G = load_npy(self.run.ckpt_dir(e) / "val_grads.npy", np.float32, ndim=2)
            device = self.run.tokenizer_and_model()[1].device
        else:
            engine, _ = self._less_engine(e, ckpt, own)
            G = collect_flat(engine, self.run.target_tok, list(range(len(self.run.target))),
                             self.cfg.grad_batch_size)
            device = engine.device
        t_grads = time.time() - t0 if not own else 0.0
        t1 = time.time()
        V = unit_rows(self._projector_for(G.shape[1], device).project(torch.from_numpy(G))).cpu().numpy()
        save_npy(self.store.path(rel), V, np.float32)  # float32 here and on every rerun (N_v x d: small)
        walls["val_grads"] += t_grads
        walls["val_features"] += time.time() - t1
        self.run.record(stage, key, [rel], time.time() - t1, {"dim": int(G.shape[1]), "val_grads_s": t_grads})
        return V, int(G.shape[1])

    def _less_train_features(self, e: int, ckpt: Path, own: bool, key: str, walls: dict) -> np.ndarray | None:
        """One simulated Adam step per pool example, projected and normalised, into a resumable store.
        Under torchrun every rank fills its rows; None on ranks other than 0."""
        import torch
        from gist_core.grads.per_example import stream
        from gist_core.methods.less import adam_direction, unit_rows
        n, d = len(self.run.pool), self.cmp.less_dim
        stage, rel = f"compare/less/ckpt-{e}", f"compare/less/ckpt-{e}.npy"
        proj_s, source = [0.0], [None]

        spec = StoreSpec(rel, n, d, {"key": key}, "float16")

        def work(rows, fs, st):
            engine, moments = self._less_engine(e, ckpt, own)
            source[0] = moments.source
            m, v = moments.m.to(engine.device), moments.v.to(engine.device)
            projector = self._projector_for(engine.dim, engine.device)
            buf_rows, buf, count = [], [], [0]

            def project_buffer():  # project many rows per matmul: a 16-row batch wastes the GEMM
                if buf_rows:
                    tp = time.time()
                    P = unit_rows(projector.project(torch.cat(buf)))
                    proj_s[0] += time.time() - tp
                    fs.write(list(buf_rows), P.cpu().numpy().astype(np.float16))
                    buf_rows.clear()
                    buf.clear()
                    count[0] += 1
                    if count[0] % FLUSH_EVERY == 0:
                        fs.flush()

            def consume(batch, g):
                buf_rows.extend(batch)
                buf.append(adam_direction(g, m, v))
                if len(buf_rows) >= self.cmp.projection_batch:
                    project_buffer()

            stream(engine, self.run.pool_tok, rows, self.cfg.grad_batch_size, consume, on_batch=st.advance)
            project_buffer()

        fs = self.run.fill_rows(stage, key, spec, work, extra=lambda wall, k: {"moments": source[0], "d": d,
                                                                             "projection_s": round(proj_s[0], 3)})
        if fs is None:
            return None
        entry = self._stage_walls()[stage]
        walls["pool_projection"] += entry.get("projection_s", 0.0)  # absent in runs made before it was timed
        walls["pool_features"] += entry["wall_s"] - entry.get("projection_s", 0.0)
        return load_npy(fs.path, np.float16, ndim=2, mmap=True)

    # ---- raw-gradient cosine
    def rawcos_scores(self) -> scoring.Scores:
        import torch
        from gist_core.grads.per_example import GradientEngine
        e, n = self.cfg.checkpoint, len(self.run.pool)
        G = load_npy(self.run.ckpt_dir(e) / "val_grads.npy", np.float32, ndim=2)
        key = stable_hash([self.run.keys["val_grads"], e, "rawcos"])  # = the warm-up key unless --no-target-eos
        stage = "compare/rawcos"

        spec = StoreSpec("compare/rawcos.npy", n, G.shape[0] + 1, {"key": key})

        def work(rows, fs, st):
            from gist_core.grads.per_example import stream
            tok, _ = self.run.tokenizer_and_model()
            engine = GradientEngine(self.run.adapter_model(e), tok.pad_token_id)
            Gt = torch.from_numpy(G).to(engine.device)
            stream(engine, self.run.pool_tok, rows, self.cfg.grad_batch_size,
                   lambda batch, g: fs.write(batch, baselines.rawcos_features(g, Gt).cpu().numpy()),
                   on_batch=st.advance)

        fs = self.run.fill_rows(stage, key, spec, work)
        t1 = time.time()
        cols = baselines.rawcos_columns(np.asarray(fs.data), G.astype(np.float64) @ G.T.astype(np.float64), self.groups)
        warm_s, warm_f = self._warmup_cost(e)
        D = G.shape[1]
        self.costs["rawcos"] = {"warmup": warm_s, "val_grads": self._val_cost(e)[0],
                                "pool_features": self._stage_walls()[stage]["wall_s"], "scoring": time.time() - t1}
        self.flops["rawcos"] = (warm_f + 6 * self.n_params * (self.tokens["pool"] + self.tokens["target"])
                                + 2 * n * D * (G.shape[0] + 1))
        self.bytes["rawcos"] = n * (G.shape[0] + 1) * 4
        return scoring.columns_as_scores(cols, list(self.groups))

    # ---- embedding similarity
    def embedding_scores(self) -> scoring.Scores:
        tok, _ = self.run.tokenizer_and_model()
        model = self.run.base_model()  # the base model, not the warm-up adapter
        key = stable_hash([self.run.keys["data"], self.run.fingerprints["model"], self.cfg.max_length, "embed"])
        stage = "compare/embedding"
        paths = [self.store.path("compare", "embed.npy"), self.store.path("compare", "embed-target.npy")]
        if not self.store.stage_done(stage, key):
            t0 = time.time()
            with self.run.progress.stage(stage, total=len(self.run.pool)):
                for path, toks in zip(paths, (self.run.pool_tok, self.run.target_tok)):
                    E = baselines.mean_pooled_embeddings(model, toks.input_ids, tok.pad_token_id)
                    save_npy(path, E, np.float32)
            self.run.record(stage, key, ["compare/embed.npy", "compare/embed-target.npy"], time.time() - t0)
        else:
            skipped(self.store, stage)
        t1 = time.time()
        E, Et = (load_npy(p, np.float32, ndim=2) for p in paths)
        cols = baselines.embedding_columns(E, Et, self.groups)
        self.costs["embedding"] = {"pool_features": self._stage_walls()[stage]["wall_s"], "scoring": time.time() - t1}
        self.flops["embedding"] = 2 * self.n_params * (self.tokens["pool"] + self.tokens["target"])
        self.bytes["embedding"] = int(E.nbytes)
        return scoring.columns_as_scores(cols, list(self.groups))

    # ------------------------------------------------------------------ selections
    def selections(self, scores: dict[str, scoring.Scores], rows: list[str]) -> dict[str, list[np.ndarray]]:
        """Row -> one index array per seed (the same array for deterministic methods)."""
        n, k, seeds = len(self.run.pool), self.k, range(self.cmp.seeds)
        out: dict[str, list[np.ndarray]] = {}
        for row in rows:
            family, rule = split_row(row)
            if family in scores:
                idx = scoring.select(scores[family], k, rule, self.groups)[0]
            elif row == "random":
                out[row] = [baselines.random_selection(n, k, self.cfg.seed + s) for s in seeds]
                continue
            elif row == "full":
                idx = np.arange(n)
            elif row == "oracle":
                out[row] = [baselines.oracle_selection(self.truth.relevant, k, s) for s in seeds]
                continue
            else:
                raise ConfigError(f"no scores for method '{row}'")
            out[row] = [idx] * self.cmp.seeds
        for row in ("random", "full", "oracle"):
            self.costs.setdefault(row, {"scoring": 0.0})
        return out

    def save_scores(self, frame, scores: dict[str, scoring.Scores]) -> None:
        import pandas as pd
        df = pd.DataFrame({"id": frame["id"]})
        for name, sc in scores.items():  # the max, and the subtask columns every rule starts from
            df[f"score:{name}"] = sc.score
            names, cols = scoring.subtask_columns(sc, self.groups)
            for t, sub in enumerate(names):
                df[f"col:{name}:{sub}"] = cols[:, t]
        with atomic_path(self.store.path("compare", "scores.parquet")) as tmp:
            df.to_parquet(tmp, index=False)

    # ------------------------------------------------------------------ the table
    def report(self, rows, scores, selections, gist_summary) -> dict:
        methods = {}
        for row in rows:
            family, rule = split_row(row)
            sel = selections[row]
            entry = {"label": row_label(row), "family": family, "rule": rule, "n_selected": int(len(sel[0]))}
            quality = [self._truth_metrics(s) for s in sel]
            if quality[0] is not None:
                entry["precision"] = float(np.mean([q["precision"] for q in quality]))
                entry["precision_std"] = float(np.std([q["precision"] for q in quality]))
                entry["recall"] = float(np.mean([q["recall"] for q in quality]))
                for key in ("coverage", "n_wrong_selected", "n_distractor_selected"):
                    entry[key] = quality[0][key]
            stage_s = self.costs.get(family, {})
            entry["stage_wall_s"] = {k: round(v, 3) for k, v in stage_s.items()}
            entry["wall_s"] = round(sum(stage_s.values()), 3)
            entry["flops"] = float(self.flops.get(family, 0.0))
            entry["bytes"] = int(self.bytes.get(family, 0))
            methods[row] = entry
        rep = {"n_pool": len(self.run.pool), "n_target": len(self.run.target), "n_selected": self.k,
               "budget": self.cfg.budget, "target": self.cfg.target, "test": self.test_spec,
               "seeds": list(range(self.cmp.seeds)), "config": _jsonable(asdict(self.cmp)),
               "gist": {"rank": getattr(self, "gist_rank", None), "checkpoint": self.cfg.checkpoint,
                        "r_max": gist_summary.get("r_max"), "aggregation": self.cfg.aggregation},
               "less": getattr(self, "less_info", None), "methods": methods,
               "cost_notes": ("wall_s: seconds measured on this machine, per stage; the warm-up is shared and "
                              "counted per method up to the checkpoint it uses (GIST: its checkpoint epoch, "
                              "LESS: all epochs); flops: estimates (6 x parameters x tokens per forward+backward, "
                              "2 x parameters x tokens per forward, plus projections); bytes: the per-example "
                              "feature store, the part that grows with the pool")}
        if "gist" in methods and "less" in methods and methods["less"]["wall_s"] > 0:
            rep["compute_ratio_gist_over_less"] = methods["gist"]["wall_s"] / methods["less"]["wall_s"]
            rep["flops_ratio_gist_over_less"] = methods["gist"]["flops"] / max(methods["less"]["flops"], 1.0)
            rep["storage_ratio_gist_over_less"] = methods["gist"]["bytes"] / max(methods["less"]["bytes"], 1)
            less = self.costs["less"]
            if less.get("pool_projection"):  # how much of LESS's cost is its 8192-d projection
                rep["compute_ratio_gist_over_less_without_projection"] = methods["gist"]["wall_s"] / max(
                    methods["less"]["wall_s"] - less["pool_projection"] - less["val_features"], 1e-9)
        rep["overlap"], rep["rank_correlation"] = agreement(selections, scores)
        return rep

    def _truth_metrics(self, idx: np.ndarray) -> dict | None:
        mask = np.zeros(len(self.run.pool), dtype=bool)
        mask[idx] = True
        return metrics_from(self.truth, mask)

    # ------------------------------------------------------------------ downstream
    def downstream(self, rows, selections, report) -> None:
        if self.test_spec is None:
            report["downstream_note"] = ("no test split (pass --test): downstream loss and exact match not measured")
            self.log(report["downstream_note"])
            return
        test = load_examples(self.test_spec)
        test_key = file_hash(self.test_spec) if Path(self.test_spec).exists() else self.test_spec
        recipe = asdict(self.cmp.train)
        report["train_recipe"] = {**recipe, "full_epochs": self.cmp.full_epochs, "lora": asdict(self.cfg.lora),
                                  "max_length": self.cfg.max_length, "seeds": list(range(self.cmp.seeds))}
        report["base"] = self._eval_cached("base", None, None, test, test_key)
        for row in rows:
            runs = []
            for s, idx in enumerate(selections[row]):
                runs.append(self._eval_cached(f"{row}-s{s}", idx, s, test, test_key,
                                              epochs=self.cmp.full_epochs if row == "full" else None))
            e = report["methods"][row]
            losses, ems = [r["test_loss"] for r in runs], [r["exact_match"] for r in runs]
            e.update({"test_loss": float(np.mean(losses)), "test_loss_std": float(np.std(losses)),
                      "exact_match": float(np.mean(ems)), "exact_match_std": float(np.std(ems)),
                      "train_steps": runs[0]["steps"], "train_s": float(np.mean([r["train_s"] for r in runs])),
                      "per_seed": [{"seed": s, "test_loss": r["test_loss"], "exact_match": r["exact_match"]}
                                   for s, r in enumerate(runs)],
                      "per_subtask": {sub: {"loss": float(np.mean([r["per_subtask"][sub]["loss"] for r in runs])),
                                            "exact_match": float(np.mean([r["per_subtask"][sub]["exact_match"]
                                                                          for r in runs]))}
                                      for sub in runs[0]["per_subtask"]}})
            self.log(f"{row:14s} test loss {e['test_loss']:.3f} ± {e['test_loss_std']:.3f}  "
                     f"exact match {e['exact_match']:.3f} ± {e['exact_match_std']:.3f}")
            atomic_write_json(self.store.path("compare.json"), report)  # partial table, readable while it runs

    def _eval_cached(self, name, idx, seed, test, test_key, epochs=None) -> dict:
        from gist_core.model.evaluate import evaluate_on_target, finetune_and_evaluate
        cfg = self.cmp.train if seed is None else TrainConfig(**{**asdict(self.cmp.train), "seed": seed,
                                                                   **({"epochs": epochs} if epochs else {})})
        key = stable_hash([self.run.keys["data"], self.run.fingerprints["model"], test_key, asdict(cfg),
                           self.cfg.lora.key(), self.cfg.max_length, self.cmp.n_em,
                           None if idx is None else stable_hash(np.asarray(idx).tolist())])
        path = self.store.path("compare", "evals", f"{name}.json")
        if path.exists():
            old = json.loads(path.read_text())
            if old.get("key") == key:
                return old
        path.parent.mkdir(parents=True, exist_ok=True)
        with self.run.progress.stage(f"compare/eval/{name}"):
            if idx is None:
                tok, _ = self.run.tokenizer_and_model()
                res = {**evaluate_on_target(self.run.base_model(), tok, test, self.cfg.max_length, self.cmp.n_em),
                       "steps": 0, "train_s": 0.0}
            else:
                res = finetune_and_evaluate(self.run.model_source.path, [self.run.pool[i] for i in idx], test, cfg, self.cfg.lora,
                                            self.cfg.max_length, self.cmp.n_em)
        res["key"] = key
        atomic_write_json(path, res)
        return res


def agreement(selections: dict, scores: dict) -> tuple[dict, dict]:
    """Jaccard overlap of first-seed selections; Spearman correlation of the score-based methods."""
    import pandas as pd
    names = list(selections)
    overlap = {}
    for a in names:
        sa = set(selections[a][0].tolist())
        overlap[a] = {b: len(sa & set(selections[b][0].tolist())) / max(1, len(sa | set(selections[b][0].tolist())))
                      for b in names}
    frame = pd.DataFrame({m: sc.score for m, sc in scores.items()})
    corr = frame.rank().corr().round(4).to_dict() if len(frame.columns) > 1 else {}
    return overlap, corr


def _jsonable(d):
    return json.loads(json.dumps(d, default=str))


def run_compare(run_cfg: RunConfig, cmp: CompareConfig, out, quiet: bool = False, overwrite: bool = False) -> dict:
    return Compare(run_cfg, cmp, out, quiet=quiet, overwrite=overwrite).execute()


def format_table(rep: dict) -> str:
    """The printed table: one line per method."""
    lines = [f"{'method':16s} {'precision':>9s} {'test loss':>15s} {'exact match':>15s} {'wall s':>8s} {'bytes':>12s}"]
    for row, e in rep["methods"].items():
        prec = f"{e['precision']:.3f}" if "precision" in e else "-"
        loss = f"{e['test_loss']:.3f}±{e['test_loss_std']:.3f}" if "test_loss" in e else "-"
        em = f"{e['exact_match']:.3f}±{e['exact_match_std']:.3f}" if "exact_match" in e else "-"
        lines.append(f"{row:16s} {prec:>9s} {loss:>15s} {em:>15s} {e['wall_s']:>8.1f} {e['bytes']:>12,d}")
    if "base" in rep:
        lines.append(f"{'base (no LoRA)':16s} {'-':>9s} {rep['base']['test_loss']:>15.3f} "
                     f"{rep['base']['exact_match']:>15.3f}")
    for key in ("compute_ratio_gist_over_less", "storage_ratio_gist_over_less", "flops_ratio_gist_over_less",
                "compute_ratio_gist_over_less_without_projection"):
        if key in rep:
            lines.append(f"{key}: {rep[key]:.4f}")
    return "\n".join(lines)
