"""GIST's stages in a run folder, each a function of the run's context (gist_core.runner.context):

    val_grads_stage    reads  checkpoints/ckpt-E/ (the warm-up adapter)
                       writes checkpoints/ckpt-E/val_grads.npy (N_v x D) and subspace.safetensors (basis, sigma,
                              val_coords, val_norms); a stale or inconsistent subspace is refitted from the gradients
    projection_stage   reads  the GIST checkpoint's adapter and subspace
                       writes train_proj.npy (N x (r_max + 1): coordinates, then |g|), its done-mask and sidecar
    scores_stage       reads  the subspace and train_proj.npy
                       writes scores.parquet, selected.jsonl, advisor.json; returns the summary's figures
    compare_scores     in a compare: GIST (or a variant of it) from the same stored projections, and its cost
"""
from __future__ import annotations

import logging
import time
from dataclasses import replace

import numpy as np
import torch

from gist_core.data.examples import subtask_groups, write_selected_jsonl
from gist_core.errors import ArtefactError, StaleArtefact, StoreError
from gist_core.grads.per_example import GradientEngine, collect_flat, stream
from gist_core.methods import scoring
from gist_core.methods.gist.advisor import choose_rank, rank_advice
from gist_core.methods.gist.artefacts import NORM_META, load_projections, load_subspace, save_subspace
from gist_core.methods.gist.report import build_summary, scores_frame
from gist_core.methods.gist.subspace import VAL_COORDS_TOL, Subspace, fit_subspace, val_coords_error
from gist_core.methods.registry import GIST_VARIANTS
from gist_core.runner.compare_context import CompareContext
from gist_core.runner.context import RunContext, RunInputs
from gist_core.runner.progress import skipped
from gist_core.runner.rows import StoreSpec, fill_rows, relabel_store, row_writer
from gist_core.store import layout
from gist_core.store.artefacts import array_digest, load_npy
from gist_core.store.atomic import atomic_path, atomic_write_json
from gist_core.store.manifest import FeatureStore, file_hash

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- validation gradients + subspace
def val_grads_stage(ctx: RunContext, epoch: int, target_tok) -> None:
    stage = f"val_grads/ckpt-{epoch}"
    key = ctx.keys["val_grads"]
    rel = [layout.rel_ckpt(epoch, layout.VAL_GRADS), layout.rel_ckpt(epoch, layout.SUBSPACE)]
    if ctx.store.stage_done(stage, key):
        problem = _subspace_problem(ctx, rel)
        if problem is None:
            return skipped(ctx.store, stage)
        return _refit_subspace(ctx, epoch, stage, key, rel, problem)
    tok, _ = ctx.tokenizer_and_model()
    model = ctx.adapter_model(epoch)
    t0 = time.time()
    n = len(target_tok.input_ids)
    with ctx.progress.stage(stage, total=n):
        engine = GradientEngine(model, tok.pad_token_id)
        # Rows go straight into the file, and the subspace is fitted from it in column chunks: the (N_v, D)
        # matrix is never in memory (a few hundred 7B-model LoRA gradients would be 100-200 GB).
        with atomic_path(ctx.store.path(rel[0]), suffix=".npy") as tmp:
            rows = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, engine.dim))
            collect_flat(engine, target_tok, list(range(n)), ctx.cfg.grad_batch_size, out=rows)
            rows.flush()
            del rows
    G = load_npy(ctx.store.path(rel[0]), np.float32, ndim=2, shape=(n, engine.dim), mmap=True)
    t_sub = time.time()
    sub = _fit_and_save_subspace(ctx, G, rel)
    ctx.record(stage, key, rel, time.time() - t0,
               {"dim": int(G.shape[1]), "r_max": sub.r_max, "ortho_error": sub.ortho_error,
                "subspace_s": round(time.time() - t_sub, 4)})


def _fit_and_save_subspace(ctx: RunContext, G: np.ndarray, rel: list[str]) -> Subspace:
    sub = fit_subspace(G, ctx.cfg.r_max)
    save_subspace(ctx.store.path(rel[1]), sub)
    return sub


def _subspace_problem(ctx: RunContext, rel: list[str]) -> str | None:
    """None when the stored subspace is sound: format 2 and val_coords == val_grads . basis (a checksum
    with meaning, N_v x D x R); else what is wrong, in a few words."""
    try:
        sub = load_subspace(ctx.store.path(rel[1]))
    except StaleArtefact:
        return ("written before artefact format 2, when safetensors 0.8 scrambled its non-C-ordered "
                "target directions")
    except ArtefactError as e:
        return str(e)
    G = load_npy(ctx.store.path(rel[0]), np.float32, ndim=2, mmap=True)
    err = val_coords_error(G, sub)
    return None if err <= VAL_COORDS_TOL else f"val_coords differ from val_grads . basis (relative error {err:.2g})"


def _refit_subspace(ctx: RunContext, epoch: int, stage: str, key: str, rel: list[str], problem: str) -> None:
    """Recompute a stale or inconsistent subspace from the stored validation gradients (no model needed).
    The basis comes out bit-identical when the gradients are unchanged: then the pool projections onto it
    stay valid and are kept (their store is re-labelled with the basis digest), else they are recomputed."""
    path = ctx.store.path(rel[1])
    log.warning(f"notice: {rel[1]}: {problem}; recomputing the subspace from the stored validation gradients "
                "(and the scores after it)")
    ctx.store.event(stage, "stale", problem=problem)
    try:
        old = load_subspace(path, allow_stale=True)
        old_digest, old_file = array_digest(old.basis), file_hash(path)
    except ArtefactError:
        old_digest = old_file = None
    t0 = time.time()
    sub = _fit_and_save_subspace(ctx, load_npy(ctx.store.path(rel[0]), np.float32, ndim=2, mmap=True), rel)
    new_digest = array_digest(sub.basis)
    if epoch == ctx.cfg.checkpoint and old_digest == new_digest:
        if relabel_store(ctx.paths.train_proj_meta, old_file, new_digest):
            log.warning("notice: the basis is unchanged, so the stored pool projections onto it are kept")
    entry = ctx.store.manifest()["stages"][stage]
    ctx.record(stage, key, rel, entry.get("wall_s", 0.0),
               {k: entry[k] for k in ("dim", "subspace_s") if k in entry} |
               {"r_max": sub.r_max, "ortho_error": sub.ortho_error, "refit": problem,
                "refit_s": round(time.time() - t0, 4)})


# ----------------------------------------------------------------------------- the pool's projections
def projection_stage(ctx: RunContext, pool_tok) -> FeatureStore | None:
    """Pool gradients projected onto the subspace's R_max directions, into a resumable memmap.

    Single process: every row. torchrun: rank 0 allocates, each rank its rows (i mod world),
    a barrier, rank 0 records. `--shard i/n` job: its rows into shards/, merged later."""
    key = ctx.keys["train_proj"]
    sub = load_subspace(ctx.paths.subspace(ctx.cfg.checkpoint))
    # The basis's content digest in the store's meta: rows projected onto an older, different basis
    # (say, before a corrupted warm-up was recomputed) are never reused.
    spec = projection_spec(ctx, key, len(pool_tok.input_ids), sub)

    def work(rows: list[int], fs: FeatureStore, st) -> None:
        tok, _ = ctx.tokenizer_and_model()
        engine = GradientEngine(ctx.adapter_model(ctx.cfg.checkpoint), tok.pad_token_id)
        basis = torch.from_numpy(sub.basis).to(engine.device, getattr(torch, ctx.cfg.proj_dtype))
        stream(engine, pool_tok, rows, ctx.cfg.grad_batch_size, row_writer(fs), project=basis,
               on_batch=st.advance, with_norms=True)

    return fill_rows(ctx, "train_proj", key, spec, work,
                     extra=lambda wall, k: {"n": spec.n, "r_max": sub.r_max,
                                            "examples_per_s": round(k / max(wall, 1e-9), 2)})


def projection_spec(ctx: RunContext, key: str, n: int, sub: Subspace) -> StoreSpec:
    """Each row: the r_max coordinates, then |g| (the norm-aware score's denominator, from the same gradient).
    A complete store made before |g| was kept serves the in-subspace score as it is; the norm-aware score
    needs the norms, so there the pool is projected again."""
    meta = {"key": key, "basis": sub.basis_digest or array_digest(sub.basis)}
    if ctx.cfg.score == "subspace":
        older = StoreSpec(layout.TRAIN_PROJ, n, sub.r_max, meta)
        try:
            older.open(ctx.store.root, create=False)
            ctx.log("note: the pool projections were stored before each gradient's norm was kept; the "
                    "in-subspace score uses them as they are (the norm-aware score would project again)")
            return older
        except StoreError:
            pass
    return StoreSpec(layout.TRAIN_PROJ, n, sub.r_max + 1, {**meta, NORM_META: "last column"})


# ----------------------------------------------------------------------------- scores and the selection
def scores_stage(ctx: RunContext, inputs: RunInputs, proj: FeatureStore) -> dict:
    """Scores at the chosen rank, every selection rule, selected.jsonl, the advisor's curve; the summary."""
    cfg, (pool, target, pool_tok, target_tok) = ctx.cfg, inputs
    t0 = time.time()
    sub = load_subspace(ctx.paths.subspace(cfg.checkpoint), ("sigma", "val_coords"))
    groups = subtask_groups(target)
    k = scoring.budget_to_count(cfg.budget, len(pool))
    with ctx.progress.stage("scores"):
        stored = load_projections(proj.path)
        advice = rank_advice(cfg, sub, stored, groups)  # the memmap: a sample of rows is read
        rank = choose_rank(cfg, sub, advice)
        atomic_write_json(ctx.paths.advisor, {
            "checkpoint": cfg.checkpoint, **(advice.to_json() if advice else
                                             {"suggested": None, "notes": ["no subtask has two validation examples"]})})
        sc = scoring.gist_scores(proj.rows(), sub.val_coords, groups, rank, cfg.aggregation, cfg.score, stored.norms)
        picked = {b: scoring.select(sc, k, b, groups) for b in scoring.BALANCES}
        selections = {b: idx for b, (idx, _) in picked.items()}
        chosen = selections[cfg.balance]
        frame = scores_frame(pool, sc, selections, pool_tok, groups)
        with atomic_path(ctx.paths.scores) as tmp:
            frame.to_parquet(tmp, index=False)
        write_selected_jsonl(pool.take(chosen), sc.score[chosen], ctx.paths.selected)
    summary = build_summary(cfg, pool, target, picked, sub, rank, k, groups)
    summary["score"] = sc.kind  # the kind these scores are (a store from before |g| was kept: subspace)
    summary["n_truncated"] = {"pool": pool_tok.n_truncated, "target": target_tok.n_truncated}
    summary["stage_wall_s"] = {name: e.get("wall_s") for name, e in ctx.store.manifest()["stages"].items()}
    summary["rank_rule"] = "explicit" if cfg.rank is not None else cfg.rank_rule
    summary["advisor_suggested"] = advice.suggested if advice else None
    ctx.record("scores", ctx.keys["scores"], [layout.SCORES, layout.SELECTED, layout.ADVISOR], time.time() - t0)
    return summary


# ----------------------------------------------------------------------------- in a compare
def compare_scores(cc: CompareContext, variant: dict | None = None, name: str = "gist") -> scoring.Scores:
    """GIST from the run's stored projections; a `variant` (other settings: aggregation, score, rank rule) adds a
    row at no gradient cost (the same features, another way of scoring with them)."""
    book, inputs = cc.book, cc.inputs
    t0 = time.time()
    cfg = replace(cc.cfg, **{k: v for k, v in (variant or {}).items() if k != "balance"})
    sub = load_subspace(cc.run.paths.subspace(cc.cfg.checkpoint))
    stored = load_projections(cc.run.paths.train_proj)
    X = stored.coords
    rank = choose_rank(cfg, sub, rank_advice(cfg, sub, stored, cc.groups) if cfg.rank_rule == "advisor" else None)
    kind = cfg.score if stored.norms is not None else "subspace"  # an older store: the score it can give
    sc = scoring.gist_scores(X, sub.val_coords, cc.groups, rank, cfg.aggregation, kind, stored.norms)
    if name != "gist":
        book.costs[name] = {**book.costs["gist"], "scoring": book.costs["gist"]["scoring"] + time.time() - t0}
        book.flops[name], book.bytes[name] = book.flops["gist"], book.bytes["gist"]
        return sc
    st = book.stage_walls()
    warm_s, warm_f = book.warmup_cost(cc.cfg.checkpoint)
    val_s, sub_s = book.val_cost(cc.cfg.checkpoint)
    D, n, nv, R = sub.basis.shape[0], len(inputs.pool), len(inputs.target), sub.r_max
    book.costs["gist"] = {"warmup": warm_s, "val_grads": val_s, "subspace": sub_s,
                          "pool_features": st["train_proj"]["wall_s"],
                          "scoring": st.get("scores", {}).get("wall_s", 0.0) + time.time() - t0}
    book.flops["gist"] = (warm_f + 6 * book.n_params * book.tokens["target"] + 2 * nv * nv * D + 2 * D * nv * R
                          + 6 * book.n_params * book.tokens["pool"] + 2 * n * D * R + 2 * n * R * len(cc.groups))
    book.bytes["gist"] = (int(np.prod(X.shape)) + n) * X.dtype.itemsize  # the coordinates and |g|
    cc.notes["gist_rank"] = rank
    return sc


def _variant(name: str):
    def scores(cc: CompareContext) -> scoring.Scores:
        if "gist" not in cc.book.costs:  # a variant's cost is GIST's plus its own scoring
            compare_scores(cc)
        return compare_scores(cc, GIST_VARIANTS[name], name)
    scores.__doc__ = f"compare's {name} row: GIST's stored projections scored with {GIST_VARIANTS[name]}"
    return scores


subtask_mean_scores = _variant("gist_mean")
example_max_scores = _variant("gist_max")
paper_scores = _variant("gist_paper")
