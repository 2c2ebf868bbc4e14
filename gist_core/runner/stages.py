"""The stages every method's features start from, each a function of the run's context:

    data_stage     writes examples.parquet, target.parquet (the inputs as loaded)
    warmup_stage   reads  the pool;  writes checkpoints/ckpt-E/ (adapter, optimizer moments, mean LR) per epoch,
                   taken from another run on the same pool when one published it (gist_core.store.shared)
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

from gist_core.config import RunConfig
from gist_core.data.examples import Example, ExampleTable, examples_to_frame
from gist_core.model.load import attach_lora
from gist_core.model.training import checkpoint_exists, last_trainer_state, train_lora
from gist_core.runner.context import RunContext
from gist_core.runner.progress import skipped
from gist_core.store import layout, shared
from gist_core.store.atomic import atomic_path


def data_stage(ctx: RunContext, pool: ExampleTable, target: list[Example]) -> None:
    key = ctx.keys["data"]
    if ctx.store.stage_done("data", key):
        return skipped(ctx.store, "data")
    with ctx.progress.stage("data"):
        t0 = time.time()
        for name, exs in ((layout.EXAMPLES, pool), (layout.TARGET, target)):
            with atomic_path(ctx.store.path(name)) as tmp:
                examples_to_frame(exs).to_parquet(tmp, index=False)
        ctx.record("data", key, [layout.EXAMPLES, layout.TARGET], time.time() - t0,
                   {"n_pool": len(pool), "n_target": len(target)})


def warmup_indices(cfg: RunConfig, n: int) -> list[int]:
    """The warm-up's random share of the pool (seeded)."""
    rng = np.random.default_rng(cfg.seed)
    k = max(1, int(round(cfg.warmup_fraction * n)))
    return sorted(rng.choice(n, size=k, replace=False).tolist())


def warmup_stage(ctx: RunContext, pool: ExampleTable, pool_tok) -> None:
    key = ctx.keys["warmup"]
    files = [layout.rel_ckpt(e) for e in range(1, ctx.cfg.warmup.epochs + 1)]
    state = ctx.store.check_stage("warmup", key)
    if state == "done" and all(checkpoint_exists(ctx.store.path(f)) for f in files):
        return skipped(ctx.store, "warmup")
    if ctx.take_shared("warmup", key, ctx.keys["pool_warmup"], files):
        return None
    tok, model = ctx.tokenizer_and_model()
    idx = warmup_indices(ctx.cfg, len(pool))
    t0 = time.time()
    resume = None if state == "corrupt" else last_trainer_state(ctx.paths.checkpoints, key)
    if resume is None:  # another warm-up's (or a damaged run's) Trainer state is never resumed
        shutil.rmtree(ctx.paths.trainer_state, ignore_errors=True)
    if resume:
        ctx.log(f"warm-up: resuming from {Path(resume).name} (finished epochs are not retrained)")
    peft_model = attach_lora(model, ctx.cfg.lora, seed=ctx.cfg.warmup.seed)
    with ctx.progress.stage("warmup", n_examples=len(idx), resumed_from=resume and Path(resume).name) as st:
        def on_step(step, total, loss):
            st.total = total
            st.advance(1, loss=round(loss, 4))
        result = train_lora(peft_model, [pool_tok.input_ids[i] for i in idx], [pool_tok.labels[i] for i in idx],
                            tok.pad_token_id, ctx.cfg.warmup, ckpt_dir=ctx.paths.checkpoints,
                            on_step=on_step, state_key=key)
    ctx.models.replace_base(peft_model.unload())  # the base weights back, LoRA layers removed
    facts, wall = {"n_examples": len(idx), "train_loss": result["train_loss"], "steps": result["steps"]}, time.time() - t0
    ctx.record("warmup", key, files, wall, facts)
    shared.publish(ctx.store.root, ctx.keys["pool_warmup"], files,
                   {"wall_s": round(wall, 3), **facts, "peak_rss_bytes": ctx.progress.peaks.get("warmup")})
    ctx.log(f"warm-up: {len(idx)} examples, {result['steps']} steps, loss {result['train_loss']:.3f}")
