"""`gist-lab cluster --run RUN`: GradientSpace clustering (a reconstruction from the abstract) and its baselines.

On a seeded sample of the run's pool, at the run's warm-up checkpoint:
  pass 1  full-dimensional per-example LoRA gradients (never stored) → Frequent Directions sketch, rank K;
  pass 2  the same gradients projected on the sketch's top-K directions → coordinates (n, K);
  ELREA   gradients of the instruction tokens only, Gaussian random projection, BIRCH;
  embed   mean-pooled hidden states of the base model, k-means;
  random  uniform labels.
Each streaming pass saves its state every few batches (atomically) and resumes where it stopped; labels are
a deterministic function of the stored arrays and the seed. Writes RUN/clusters/clusters.json.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from sklearn.cluster import Birch

from gist_core.grads.per_example import GradientEngine, length_sorted_batches
from gist_core.methods.baselines.scores import mean_pooled_embeddings
from gist_core.methods.gradientspace import assign, metrics
from gist_core.methods.gradientspace.config import ClusterConfig
from gist_core.methods.gradientspace.sketch import FrequentDirections, SketchState
from gist_core.runner.context import RunContext, RunInputs
from gist_core.runner.pipeline import open_run
from gist_core.store.artefacts import load_npy, save_npy
from gist_core.store.atomic import atomic_path, atomic_write_json
from gist_core.store.lock import refuse_if_held, writer_lock
from gist_core.store.manifest import stable_hash
from gist_core.store.reports import stamp

log = logging.getLogger(__name__)
SAVE_EVERY = 8  # batches between saved states of a streaming pass
METHODS = ("gradientspace", "elrea", "embedding", "random")


class Cluster:
    """The clustering passes over one finished run: `Cluster(ctx, inputs, cfg)` with the run's context and inputs
    (runner/pipeline.py, open_run), or `Cluster.open(run_dir, cfg)`."""

    def __init__(self, ctx: RunContext, inputs: RunInputs, cfg: ClusterConfig):
        self.ctx, self.inputs, self.cfg = ctx, inputs, cfg
        self.dir, self.paths, self.run_cfg = ctx.paths.root, ctx.paths, ctx.cfg
        self.walls: dict[str, float] = {}
        self._engine = None

    @classmethod
    def open(cls, run_dir, cfg: ClusterConfig, quiet: bool = False) -> Cluster:
        return cls(*open_run(run_dir, quiet), cfg)

    def engine(self):
        """One gradient engine on the warm-up adapter for every pass (loading the adapter once)."""
        if self._engine is None:
            tok, _ = self.ctx.tokenizer_and_model()
            self._engine = GradientEngine(self.ctx.adapter_model(self.run_cfg.checkpoint), tok.pad_token_id)
        return self._engine

    # ------------------------------------------------------------------ streaming passes with resume
    def _stream(self, name: str, key: str, rows: list[int], labels, fold, state: dict) -> dict:
        """Feed gradient batches to `fold(state, positions, grads)`; `state` (arrays + 'done') saved as it goes."""
        part = self.paths.clusters_array(f"{name}.part").with_suffix(".npz")
        if part.exists():
            with np.load(part, allow_pickle=False) as z:
                if str(z["key"]) == key:
                    state = {k: z[k] for k in z.files if k != "key"}
                    log.info("%s: resuming after %d batches", name, int(state["done"]))
        engine = self.engine()
        ids = self.inputs.pool_tok.input_ids
        pos = {r: p for p, r in enumerate(rows)}
        batches = list(length_sorted_batches([len(x) for x in ids], rows, self.cfg.batch_size))
        t0 = time.time()
        with self.ctx.progress.stage(f"clusters/{name}", total=len(rows)) as st:
            for b, batch in enumerate(batches):
                if b < int(state["done"]):
                    continue
                state = fold(state, [pos[r] for r in batch], engine, [ids[r] for r in batch], [labels[r] for r in batch])
                state["done"] = np.int64(b + 1)
                if (b + 1) % SAVE_EVERY == 0 or b + 1 == len(batches):
                    with atomic_path(part, suffix=".npz") as tmp:
                        np.savez(tmp, key=np.str_(key), **state)
                if st is not None and hasattr(st, "advance"):
                    st.advance(len(batch))
        self.walls[name] = round(time.time() - t0, 2)
        return state

    def sketch_pass(self, rows, key) -> np.ndarray:
        dim = self._dim()
        ell = self.cfg.sketch_size
        empty = {"buffer": np.zeros((2 * ell, dim)), "filled": np.int64(0), "rows_seen": np.int64(0),
                 "shrunk": np.float64(0.0), "done": np.int64(0)}

        def fold(state, _pos, engine, ids, labs):
            fd = FrequentDirections(dim, ell, SketchState(state["buffer"], int(state["filled"]),
                                                          int(state["rows_seen"]), float(state["shrunk"])))
            fd.update(engine.flat_grads(ids, labs)[0].double().cpu().numpy())
            s = fd.state
            return {"buffer": s.buffer, "filled": np.int64(s.filled), "rows_seen": np.int64(s.rows_seen),
                    "shrunk": np.float64(s.shrunk), "done": state["done"]}

        s = self._stream("sketch", key, rows, self.inputs.pool_tok.labels, fold, empty)
        fd = FrequentDirections(dim, ell, SketchState(s["buffer"], int(s["filled"]), int(s["rows_seen"]), float(s["shrunk"])))
        V, sig = fd.top(self.cfg.rank)
        self.sigma = sig
        return V

    def project_pass(self, name, key, rows, labels, basis: np.ndarray) -> np.ndarray:
        B = torch.from_numpy(np.ascontiguousarray(basis.T, dtype=np.float32))  # (D, K)
        empty = {"out": np.zeros((len(rows), B.shape[1]), np.float32), "done": np.int64(0)}

        def fold(state, pos, engine, ids, labs):
            state["out"][pos] = engine.projected_grads(ids, labs, B.to(engine.device))[0].cpu().numpy()
            return state

        return self._stream(name, key, rows, labels, fold, empty)["out"]

    def _dim(self) -> int:
        return self.engine().dim

    # ------------------------------------------------------------------ the stage
    def rows(self) -> list[int]:
        n = len(self.inputs.pool)
        m = n if self.cfg.pool_size in (0, None) or self.cfg.pool_size >= n else self.cfg.pool_size
        return sorted(np.random.default_rng(self.cfg.seed).choice(n, size=m, replace=False).tolist())

    def cached(self, name: str, key: str, compute, part: str | None = None) -> np.ndarray:
        """An array saved under clusters/ with its key in a sidecar; recomputed when the key changed. Once it is
        saved, the resume state of the pass that made it (`part`) is deleted (a 2ℓ × D buffer is large)."""
        a = cached_npy(self.paths.clusters_array(name), key, compute)
        if part:
            self.paths.clusters_array(f"{part}.part").with_suffix(".npz").unlink(missing_ok=True)
        return a

    def execute(self) -> dict:
        self.paths.clusters_dir.mkdir(exist_ok=True)
        rows = self.rows()
        base = stable_hash([self.ctx.keys["warmup"], self.run_cfg.checkpoint, rows, self.cfg.batch_size])
        k_sketch = stable_hash([base, self.cfg.rank, self.cfg.sketch_size])
        V = self.cached("basis", k_sketch, lambda: self.sketch_pass(rows, k_sketch).astype(np.float32), "sketch")
        coords = self.cached("coords", stable_hash([k_sketch, "coords"]), lambda: self.project_pass(
            "coords", stable_hash([k_sketch, "coords"]), rows, self.inputs.pool_tok.labels, V), "coords")
        k_elrea = stable_hash([base, self.cfg.elrea_dim, self.cfg.seed, "elrea"])

        def elrea():
            return self.project_pass("elrea", k_elrea, rows, instruction_labels(self.inputs.pool_tok),
                                     self.elrea_projection())
        feats = {"gradientspace": coords, "elrea": self.cached("elrea", k_elrea, elrea, "elrea"),
                 "embedding": self.cached("embed", stable_hash([base, "embed"]), lambda: self._embed(rows))}
        return self.report(rows, feats)

    def elrea_projection(self) -> np.ndarray:
        """(elrea_dim, D) the seeded Gaussian projection of the ELREA features (`experts` projects queries with it)."""
        g = torch.Generator().manual_seed(self.cfg.seed)
        return (torch.randn(self.cfg.elrea_dim, self._dim(), generator=g) / self.cfg.elrea_dim ** 0.5).numpy()

    def _embed(self, rows) -> np.ndarray:
        t0 = time.time()
        tok, _ = self.ctx.tokenizer_and_model()
        self._engine = None  # base_model() takes the adapter off the shared model: the engine's model is gone
        E = mean_pooled_embeddings(self.ctx.base_model(), [self.inputs.pool_tok.input_ids[r] for r in rows],
                                   tok.pad_token_id)
        self.walls["embedding"] = round(time.time() - t0, 2)
        return E.astype(np.float32)

    def labels_for(self, feats: dict, k: int) -> dict[str, np.ndarray]:
        n = len(feats["gradientspace"])
        birch = Birch(n_clusters=k, threshold=self.cfg.birch_threshold)
        return {"gradientspace": assign.assign(feats["gradientspace"], k, self.cfg.rule, self.cfg.seed),
                "elrea": birch.fit_predict(assign.unit_rows(feats["elrea"])).astype(np.int64),
                "embedding": assign.kmeans_labels(feats["embedding"], k, self.cfg.seed),
                "random": np.random.default_rng(self.cfg.seed).integers(0, k, size=n).astype(np.int64)}

    def report(self, rows, feats) -> dict:
        pool = self.inputs.pool
        truth = [pool[r].skill or "?" for r in rows]
        if self.cfg.n_clusters:
            k, curve = self.cfg.n_clusters, []
        else:
            k, curve = assign.pick_k(feats["gradientspace"], list(self.cfg.k_grid), self.cfg.rule, self.cfg.seed)
        labels = self.labels_for(feats, k)
        unit = assign.unit_rows(feats["gradientspace"])
        table, comp = {}, {}
        for m, lab in labels.items():
            save_npy(self.paths.clusters_array(f"labels-{m}"), lab)
            table[m] = {**metrics.agreement(lab, truth),
                        "within_var_coords": metrics.within_variance_ratio(unit, lab)}
            skills, M = metrics.composition(lab, truth)
            comp[m] = M.tolist()
        save_npy(self.paths.clusters_array("rows"), np.asarray(rows, dtype=np.int64))
        rep = stamp("clusters", {"config": asdict(self.cfg), "checkpoint": self.run_cfg.checkpoint,
               "n_rows": len(rows), "k": k, "k_curve": curve, "table": table, "skills": skills,
               "composition": comp, "sketch_sigma": [float(s) for s in getattr(self, "sigma", [])],
               "walls_s": self.walls})
        atomic_write_json(self.paths.clusters_report, rep)
        return rep


def cached_npy(path: Path, key: str, compute) -> np.ndarray:
    """The array at `path` when its `.key` sidecar says it was made with `key`; else compute, save, record the key."""
    side = path.with_suffix(".key")
    if path.exists() and side.exists() and side.read_text() == key:
        return load_npy(path)
    a = compute()
    save_npy(path, a)
    with atomic_path(side) as tmp:
        tmp.write_text(key)
    return a


def instruction_labels(tok) -> list[list[int]]:
    """ELREA's feature: the loss on the instruction (prompt) tokens only, responses excluded."""
    return [[t if lab == -100 else -100 for t, lab in zip(ids, labs)] for ids, labs in zip(tok.input_ids, tok.labels)]


def run_cluster(run_dir, cfg: ClusterConfig, quiet: bool = False) -> dict:
    refuse_if_held(run_dir)  # at once, before the run's inputs are loaded
    job = Cluster.open(run_dir, cfg, quiet=quiet)
    with writer_lock(run_dir):
        return job.execute()
