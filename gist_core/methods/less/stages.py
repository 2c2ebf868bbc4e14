"""LESS's features in a compare's run folder, each stage a function of the compare's context:

    less_scores                reads  the warm-up checkpoints (adapter and Adam moments) or the user's checkpoints
                               writes compare/less/val-ckpt-E.npy (N_v x d, float32) and compare/less/ckpt-E.npy
                                      (N x d, float16, resumable), one pair per checkpoint; returns the scores
    less_pool_features_only    the pool features alone, on every torchrun rank or --shard job

The pool features depend on the pool alone: they are published for and taken from runs on the same pool for
other targets (gist_core.store.shared).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from gist_core.grads.per_example import GradientEngine, collect_flat, stream
from gist_core.methods import scoring
from gist_core.methods.less.features import (
    RademacherProjector,
    adam_direction,
    checkpoint_mean_lr,
    less_per_example,
    lr_weights,
    read_moments,
    unit_rows,
)
from gist_core.runner.compare_context import CompareContext
from gist_core.runner.progress import skipped
from gist_core.runner.rows import FLUSH_EVERY, StoreSpec, fill_rows
from gist_core.store import shared
from gist_core.store.artefacts import load_npy, save_npy
from gist_core.store.layout import less_train_rel, less_val_rel, meta_of
from gist_core.store.manifest import stable_hash
from gist_core.store.shared import rewrite_meta

SHARED_FACTS = ("wall_s", "moments", "d", "projection_s", "peak_rss_bytes")  # a pool stage's facts another run reuses


def checkpoint_dirs(cc: CompareContext) -> list[Path]:
    if cc.cmp.less.checkpoints:
        return [Path(p) for p in cc.cmp.less.checkpoints]
    return [cc.run.paths.ckpt(e) for e in range(1, cc.cfg.warmup.epochs + 1)]


def feature_key(cc: CompareContext, ckpt: Path) -> str:
    """The run's own checkpoints by name (the warm-up key pins their content), so `--out runs/x` and
    `--out /abs/runs/x` reuse the same features; users' checkpoints by their resolved path."""
    where = Path(ckpt).name if not cc.cmp.less.checkpoints else str(Path(ckpt).resolve())
    return stable_hash([cc.run.keys["warmup"], where, cc.cmp.less.dim, cc.cmp.less.seed])


def less_pool_features_only(cc: CompareContext) -> None:
    own = not cc.cmp.less.checkpoints
    for e, ckpt in enumerate(checkpoint_dirs(cc), start=1):
        _train_features(cc, e, ckpt, own, feature_key(cc, ckpt), {"pool_projection": 0.0, "pool_features": 0.0})


def less_scores(cc: CompareContext) -> scoring.Scores:
    book, inputs = cc.book, cc.inputs
    ckpts = checkpoint_dirs(cc)
    n, d = len(inputs.pool), cc.cmp.less.dim
    own = not cc.cmp.less.checkpoints
    walls = {"warmup": book.warmup_cost(cc.cfg.warmup.epochs)[0] if own else 0.0, "val_grads": 0.0,
             "val_features": 0.0, "pool_features": 0.0, "pool_projection": 0.0, "scoring": 0.0}
    flops = book.warmup_cost(cc.cfg.warmup.epochs)[1] if own else 0.0
    train_feats, val_feats, lrs = [], [], []
    for e, ckpt in enumerate(ckpts, start=1):
        key = feature_key(cc, ckpt)
        lrs.append(checkpoint_mean_lr(ckpt))
        V, dim = _val_features(cc, e, ckpt, own, key, walls)
        val_feats.append(V)
        train_feats.append(_train_features(cc, e, ckpt, own, key, walls))
        flops += (6 * book.n_params * (book.tokens["pool"] + book.tokens["target"])
                  + 2 * dim * d * (n + len(inputs.target)) + 10 * dim * n)
    t3 = time.time()
    weights, weight_rule = lr_weights(lrs)
    per_example = less_per_example(train_feats, val_feats, weights)
    cols = scoring.group_means(per_example, cc.groups)
    walls["scoring"] = time.time() - t3
    book.costs["less"] = walls
    book.flops["less"] = flops + 2 * n * d * len(inputs.target) * len(ckpts)
    book.bytes["less"] = sum(int(np.prod(f.shape)) * f.dtype.itemsize for f in train_feats)
    cc.notes["less"] = {"d": d, "checkpoints": [str(c) for c in ckpts], "mean_lr": lrs, "weights": weights,
                        "weighting": weight_rule, "projector_seed": cc.cmp.less.seed}
    return scoring.columns_as_scores(cols, list(cc.groups), per_example, cc.groups)


def _engine(cc: CompareContext, e: int, ckpt: Path, own: bool):
    """Gradient engine at a LESS checkpoint, with the checkpoint's Adam moments in gradient order."""
    tok, _ = cc.run.tokenizer_and_model()
    engine = GradientEngine(cc.run.adapter_model(e) if own else cc.run.adapter_model(path=ckpt), tok.pad_token_id)
    moments = read_moments(ckpt, [b.name for b in engine.blocks], [b.size for b in engine.blocks])
    return engine, moments


def _projector(cc: CompareContext, dim: int, device) -> RademacherProjector:
    """The seeded projector, built once per compare (generating R is seconds; caching it is GBs)."""
    if "less_projector" not in cc.cache:
        cc.cache["less_projector"] = RademacherProjector(dim, cc.cmp.less.dim, cc.cmp.less.seed,
                                                         int(cc.cmp.less.projector_cache_gb * (1 << 30)), device)
    return cc.cache["less_projector"]


VAL_CHUNK_BYTES = 1 << 30  # validation gradients read at a time (N_v x D at 7B would be 100-200 GB)


def _val_features(cc: CompareContext, e: int, ckpt: Path, own: bool, key: str, walls: dict) -> tuple[np.ndarray, int]:
    """Normalised projected plain validation gradients (stored; recomputed only when missing)."""
    run, store = cc.run, cc.run.store
    stage, rel = f"compare/less/val-ckpt-{e}", less_val_rel(e)
    if own:
        walls["val_grads"] += cc.book.val_cost(e)[0]
    # (files of older compare runs hold float16 features: recomputed, so every run scores float32 ones)
    if store.stage_done(stage, key) and np.load(store.path(rel), mmap_mode="r").dtype == np.float32:
        skipped(store, stage)
        entry = cc.book.stage_walls()[stage]
        walls["val_grads"] += entry.get("val_grads_s", 0.0)
        walls["val_features"] += entry["wall_s"]
        return load_npy(store.path(rel), np.float32, ndim=2), entry["dim"]
    t0 = time.time()
    if own:  # the run's stored plain gradients at its own checkpoints, read in row chunks from the file
        G = load_npy(run.paths.val_grads(e), np.float32, ndim=2, mmap=True)
        device = run.tokenizer_and_model()[1].device
    else:
        engine, _ = _engine(cc, e, ckpt, own)
        G = collect_flat(engine, cc.inputs.target_tok, list(range(len(cc.inputs.target))), cc.cfg.grad_batch_size)
        device = engine.device
    t_grads = time.time() - t0 if not own else 0.0
    t1 = time.time()
    projector = _projector(cc, G.shape[1], device)
    rows = max(1, VAL_CHUNK_BYTES // (4 * G.shape[1]))  # one chunk for a small model: R's blocks are made once
    V = unit_rows(torch.cat([projector.project(torch.from_numpy(np.array(G[s:s + rows])))  # a copy: G is read-only
                             for s in range(0, G.shape[0], rows)])).cpu().numpy()
    save_npy(store.path(rel), V, np.float32)  # float32 here and on every rerun (N_v x d: small)
    walls["val_grads"] += t_grads
    walls["val_features"] += time.time() - t1
    run.record(stage, key, [rel], time.time() - t1, {"dim": int(G.shape[1]), "val_grads_s": t_grads})
    return V, int(G.shape[1])


def _train_features(cc: CompareContext, e: int, ckpt: Path, own: bool, key: str, walls: dict) -> np.ndarray | None:
    """One simulated Adam step per pool example, projected and normalised, into a resumable store.
    Under torchrun every rank fills its rows; None on ranks other than 0."""
    run, store = cc.run, cc.run.store
    n, d = len(cc.inputs.pool), cc.cmp.less.dim
    stage, rel = f"compare/less/ckpt-{e}", less_train_rel(e)
    proj_s, source = [0.0], [None]

    spec = StoreSpec(rel, n, d, {"key": key}, "float16")
    pool_key = stable_hash(["less-pool", run.keys["pool_warmup"], Path(ckpt).name, d, cc.cmp.less.seed]) if own else None
    if pool_key and not store.stage_done(stage, key) and run.take_shared(stage, key, pool_key, spec.files):
        rewrite_meta(store.path(meta_of(rel)), spec.sidecar)

    def work(rows, fs, st):
        engine, moments = _engine(cc, e, ckpt, own)
        source[0] = moments.source
        m, v = moments.m.to(engine.device), moments.v.to(engine.device)
        projector = _projector(cc, engine.dim, engine.device)
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
            if len(buf_rows) >= cc.cmp.less.projection_batch:
                project_buffer()

        stream(engine, cc.inputs.pool_tok, rows, cc.cfg.grad_batch_size, consume, on_batch=st.advance)
        project_buffer()

    fs = fill_rows(run, stage, key, spec, work, extra=lambda wall, k: {"moments": source[0], "d": d,
                                                                     "projection_s": round(proj_s[0], 3)})
    if fs is None:
        return None
    entry = cc.book.stage_walls()[stage]
    if pool_key and "shared_from" not in entry:
        shared.publish(store.root, pool_key, spec.files, {k: v for k, v in entry.items() if k in SHARED_FACTS})
    walls["pool_projection"] += entry.get("projection_s", 0.0)  # absent in runs made before it was timed
    walls["pool_features"] += entry["wall_s"] - entry.get("projection_s", 0.0)
    return load_npy(fs.path, np.float16, ndim=2, mmap=True)
