"""The orchestrator: runs the stages into a run directory, skipping what is done, resuming what is not.

Stages and artefacts (DESIGN §2):
    data        examples.parquet, target.parquet
    warmup      checkpoints/ckpt-E/ (adapter, optimizer moments by name, mean LR)
    val_grads   checkpoints/ckpt-E/val_grads.npy           (every checkpoint: spectra over training)
    subspace    checkpoints/ckpt-E/subspace.safetensors
    train_proj  train_proj.npy (+ .done.npy, .json)          (the GIST checkpoint only)
    scores      scores.parquet, selected.jsonl, summary.json
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from gist_core.config import PROJ_DTYPES, LoraSettings, RunConfig, TrainConfig, demo_config  # noqa: F401  (re-exported)
from gist_core.data.corpus import DEFAULT_DEMO_TARGET, SAMPLE_DATA  # noqa: F401  (re-exported)
from gist_core.data.examples import (
    Example,
    ExampleTable,
    examples_to_frame,
    load_examples,
    load_pool,
    subtask_groups,
    write_selected_jsonl,
)
from gist_core.data.formatting import Tokenized
from gist_core.errors import ConfigError, StoreError  # noqa: F401  (ConfigError raised here; re-exported)
from gist_core.methods import scoring
from gist_core.methods.gist.advisor import choose_rank, rank_advice  # noqa: F401  (re-exported)
from gist_core.runner.keys import input_fingerprints, model_source, stage_keys
from gist_core.runner.model_cache import ModelCache
from gist_core.runner.preflight import check_target
from gist_core.runner.progress import Progress, skipped
from gist_core.runner.reports import build_summary, ground_truth_metrics, scores_frame, stamp  # noqa: F401  (re-exported)
from gist_core.runner.rows import FLUSH_EVERY, RowFilling, ShardRows, StoreSpec, relabel_store  # noqa: F401  (re-exported)
from gist_core.runner.sharding import Layout  # noqa: F401  (Compare passes one in)
from gist_core.runner.subspace_stage import SubspaceStage
from gist_core.store import layout, shared
from gist_core.store.artefacts import (
    NORM_META,
    array_digest,
    load_npy,  # noqa: F401  (re-exported)
    load_projections,
    load_subspace,
    save_subspace,  # noqa: F401  (re-exported)
)
from gist_core.store.atomic import atomic_path, atomic_write_json
from gist_core.store.layout import RunLayout
from gist_core.store.lock import command_line, refuse_if_held, writer_lock
from gist_core.store.manifest import DONE, PREPARED, FeatureStore, RunStore, stable_hash
from gist_core.store.runs import check_out_folder

if TYPE_CHECKING:  # annotations only
    pass

log = logging.getLogger(__name__)

# the scores stage's files: moved aside when a run starts, so a folder never presents an earlier run's result
RESULT_FILES = [layout.SUMMARY, layout.SELECTED, layout.SCORES, layout.ADVISOR]


class RunInputs(NamedTuple):
    pool: ExampleTable
    target: list[Example]
    pool_tok: Tokenized
    target_tok: Tokenized


# ----------------------------------------------------------------------------- stages
class Run(SubspaceStage, RowFilling):
    """One selection run: `Run(cfg, out).execute()`; each stage is skipped when already done."""

    def __init__(self, cfg: RunConfig, out: str | os.PathLike, quiet: bool = False, overwrite: bool = False,
                 layout: Layout | None = None, until: str | None = None, merge: bool = False):
        """`layout`: single process (default), torchrun ranks or a `--shard i/n` job; `until='prepare'` stops
        before the pool projection (shared stages only); `merge=True` requires every shard's rows."""
        if until not in (None, "prepare"):
            raise ConfigError(f"until must be None or 'prepare', got '{until}'")
        self.layout = layout or Layout()
        self.model_source = model_source(cfg)
        if self.model_source.gguf_sha256:
            cfg = replace(cfg, model_sha256=self.model_source.gguf_sha256)
        if self.model_source.revision:  # a hub id: this commit is recorded and loaded, now and on every replay
            cfg = replace(cfg, model_revision=self.model_source.revision)
        self.cfg, self.store, self.paths = cfg, RunStore(out), RunLayout(out)
        self.quiet = quiet or not (self.layout.main or self.layout.shard_job)
        self.progress = Progress(self.store, self.quiet, rank=self.layout.rank if self.layout.sharded else None)
        self.until, self.merge = until, merge
        self.models = ModelCache(cfg, self.model_source.path)  # resolved once, here
        self._check_config(overwrite)

    def _check_config(self, overwrite: bool) -> None:
        """Refuse to mix a different config into a run folder (written only once the inputs pass preflight)."""
        path = self.paths.config
        if path.exists() and not overwrite:
            old = json.loads(path.read_text())
            try:  # options added since the folder was made take their defaults, as they did then
                old = json.loads(json.dumps(RunConfig.from_json(old).to_json()))
            except (ConfigError, TypeError):
                pass
            new = json.loads(json.dumps(self.cfg.to_json()))
            for d in (old, new):  # permission to run remote code is the person's, not part of the results
                d.pop("trust_remote_code", None)
            if old != new:
                changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
                raise ConfigError(f"{self.store.root} already holds a run with a different config "
                                  f"(changed: {', '.join(changed)}); use another --out or --overwrite")

    def _write_config(self) -> None:
        path = self.paths.config
        if not path.exists() or json.loads(path.read_text()) != json.loads(json.dumps(self.cfg.to_json())):
            atomic_write_json(path, self.cfg.to_json())

    def log(self, msg: str) -> None:
        if not self.quiet:
            log.info(msg)

    # ---- shared resources
    def tokenizer_and_model(self) -> tuple[Any, Any]:
        return self.models.tokenizer_and_model()

    @functools.cached_property
    def inputs(self) -> RunInputs:
        """The pool and the target, loaded, checked against the model (preflight) and tokenized, once per
        process: the stages and a compare on top of the run read them from here."""
        pool, target = self.load_data()
        self.preflight(pool, target)
        tok, _ = self.tokenizer_and_model()
        from gist_core.data.formatting import tokenize_examples
        pool_tok = tokenize_examples(pool, tok, self.cfg.max_length)
        target_tok = tokenize_examples(target, tok, self.cfg.target_length, eos=self.cfg.target_eos)
        for name, t, length in (("pool", pool_tok, self.cfg.max_length), ("target", target_tok, self.cfg.target_length)):
            if t.n_truncated:
                self.log(f"note: {t.n_truncated} {name} example(s) longer than {length} tokens were cut (prompt first, "
                         "the response kept whole where it fits)")
        return RunInputs(pool, target, pool_tok, target_tok)

    def execute(self) -> dict | None:
        """Run or resume every stage. Returns the summary on the process that scores (None on other
        torchrun ranks, on `--shard` jobs and with until='prepare').

        Every check of the inputs runs before the run folder is touched; then the folder's writer lock is
        taken and the run marked as running (an earlier result moved aside) before any stage writes."""
        t0 = time.time()
        self.check_inputs()
        with contextlib.ExitStack() as held:
            self.take_folder(held, RESULT_FILES)
            summary = self.stages(t0)
            self.finish()
        return summary

    def check_inputs(self) -> RunInputs:
        """Every refusal of the inputs (output folder, data, model, settings), before the folder is touched."""
        check_out_folder(self.store.root)
        if not (self.layout.torchrun and not self.layout.main):
            refuse_if_held(self.store.root, shared=self.layout.shard_job)
        return self.inputs

    def take_folder(self, held: contextlib.ExitStack, results: list[str]) -> None:
        """The writer lock (shared for `--shard` jobs, which write disjoint rows beside each other) and, on the
        process that writes the results, the 'running' mark with the earlier `results` moved aside."""
        if self.layout.shard_job:
            held.enter_context(writer_lock(self.store.root, shared=True))
            return
        if self.layout.torchrun and not self.layout.main:
            return self.layout.on_main(lambda: None)  # rank 0 takes it; a refusal there reaches every rank

        def take() -> None:
            held.enter_context(writer_lock(self.store.root))
            self.store.begin(results, command_line())
        self.layout.on_main(take)

    def finish(self) -> None:
        """Every result is written: the run is done (or prepared), the earlier results are dropped."""
        if self.layout.main:
            self.store.finish(PREPARED if self.until == "prepare" else DONE)

    def stages(self, t0: float) -> dict | None:
        """The stages in order, each skipped when done (the folder must be taken: take_folder)."""
        pool, target, pool_tok, target_tok = self.inputs
        if self.layout.shard_job:
            self._require_prepared()
        else:
            self.layout.on_main(lambda: self.prepare(pool, target, pool_tok, target_tok))
        if self.until == "prepare":
            self.log(f"prepared {self.store.root}: warm-up and validation gradients done; project the pool with "
                     f"`--shard i/n` jobs or torchrun, then `gist-lab merge --run {self.store.root}`")
            return None
        proj = self.stage_train_proj(pool_tok)
        if proj is None:
            return None
        summary = self.stage_scores(pool, target, proj, pool_tok, target_tok)
        summary["wall_s"] = round(time.time() - t0, 2)  # this invocation; stage_wall_s has each stage's total
        summary = stamp("summary", summary)
        atomic_write_json(self.paths.summary, summary)
        return summary

    def preflight(self, pool, target) -> None:
        """Checks that would otherwise fail hours in: target size, rank vs target size, budget vs pool, model,
        context. All of them run before the run folder is created or touched."""
        check_target(target, self.cfg.aggregation)
        if self.cfg.rank is not None and self.cfg.rank > len(target):
            raise ConfigError(f"rank {self.cfg.rank} exceeds the {len(target)} directions the {len(target)} "
                              f"validation examples can span; use --rank {len(target)} or fewer")
        try:  # a count larger than the pool fails here, not after the gradients
            scoring.budget_to_count(self.cfg.budget, len(pool))
        except ValueError as e:
            raise ConfigError(str(e)) from None
        _, model = self.tokenizer_and_model()
        from gist_core.model.load import attach_lora
        model = attach_lora(model, self.cfg.lora, seed=self.cfg.warmup.seed).unload()  # LoRA-able at all?
        self.models.replace_base(model)
        context = getattr(model.config, "max_position_embeddings", None)
        longest = max(self.cfg.max_length, self.cfg.target_length)
        if context and longest > context:
            raise ConfigError(f"max_length {longest} exceeds the model's context of {context} tokens; "
                              f"use --max-length {context} or less (longer examples are cut, prompt first)")

    def _require_prepared(self) -> None:
        """Shard jobs may run at once on a shared folder: they never write the shared stages themselves."""
        stages = ["data", "warmup", f"val_grads/ckpt-{self.cfg.checkpoint}"]
        todo = [s for s in stages if not self.store.stage_done(s, self.keys[s.split("/")[0]])]
        if todo:
            raise ConfigError(f"{self.store.root}: {', '.join(todo)} not done; run the same command once with "
                              f"--prepare (no --shard) before the --shard jobs")

    def prepare(self, pool, target, pool_tok, target_tok) -> None:
        """The shared stages (one process): config, data, warm-up, validation gradients + subspaces."""
        self._write_config()
        self.stage_data(pool, target)
        self.stage_warmup(pool, pool_tok)
        for epoch in range(1, self.cfg.warmup.epochs + 1):
            self.stage_val_grads(epoch, target_tok)

    @functools.cached_property
    def fingerprints(self) -> dict[str, str]:
        """Content hashes of the inputs (once per invocation)."""
        return input_fingerprints(self.cfg, self.model_source.fingerprint)

    @functools.cached_property
    def keys(self) -> dict[str, str]:
        return stage_keys(self.cfg, self.fingerprints)

    def record(self, stage: str, key: str, files: list[str], wall_s: float, extra: dict | None = None) -> None:
        peak = {"peak_rss_bytes": self.progress.peaks[stage]} if stage in self.progress.peaks else {}
        self.store.record_stage(stage, key, files, wall_s, {"config_hash": stable_hash(self.cfg.to_json()),
                                                            "input_hashes": self.fingerprints, **peak, **(extra or {})})

    def load_data(self) -> tuple[ExampleTable, list[Example]]:
        pool = load_pool(self.cfg.train, split=self.cfg.train_split, limit=self.cfg.limit_train)
        target = load_examples(self.cfg.target, split=self.cfg.target_split)
        self.log(f"data: {len(pool)} pool examples, {len(target)} target examples "
                 f"in {len(subtask_groups(target))} subtask(s)")
        return pool, target

    def stage_data(self, pool: ExampleTable, target: list[Example]) -> None:
        key = self.keys["data"]
        if self.store.stage_done("data", key):
            return skipped(self.store, "data")
        with self.progress.stage("data"):
            t0 = time.time()
            for name, exs in ((layout.EXAMPLES, pool), (layout.TARGET, target)):
                with atomic_path(self.store.path(name)) as tmp:
                    examples_to_frame(exs).to_parquet(tmp, index=False)
            self.record("data", key, [layout.EXAMPLES, layout.TARGET], time.time() - t0,
                        {"n_pool": len(pool), "n_target": len(target)})

    def warmup_indices(self, n: int) -> list[int]:
        rng = np.random.default_rng(self.cfg.seed)
        k = max(1, int(round(self.cfg.warmup_fraction * n)))
        return sorted(rng.choice(n, size=k, replace=False).tolist())

    def ckpt_dir(self, epoch: int) -> Path:
        return self.paths.ckpt(epoch)

    def stage_warmup(self, pool, pool_tok) -> None:
        from gist_core.model.training import checkpoint_exists, train_lora
        key = self.keys["warmup"]
        files = [layout.rel_ckpt(e) for e in range(1, self.cfg.warmup.epochs + 1)]
        state = self.store.check_stage("warmup", key)
        if state == "done" and all(checkpoint_exists(self.store.path(f)) for f in files):
            return skipped(self.store, "warmup")
        if self.take_shared("warmup", key, self.keys["pool_warmup"], files):
            return None
        from gist_core.model.load import attach_lora
        from gist_core.model.training import last_trainer_state
        tok, model = self.tokenizer_and_model()
        idx = self.warmup_indices(len(pool))
        t0 = time.time()
        resume = None if state == "corrupt" else last_trainer_state(self.paths.checkpoints, key)
        if resume is None:  # another warm-up's (or a damaged run's) Trainer state is never resumed
            import shutil
            shutil.rmtree(self.paths.trainer_state, ignore_errors=True)
        if resume:
            self.log(f"warm-up: resuming from {Path(resume).name} (finished epochs are not retrained)")
        peft_model = attach_lora(model, self.cfg.lora, seed=self.cfg.warmup.seed)
        with self.progress.stage("warmup", n_examples=len(idx), resumed_from=resume and Path(resume).name) as st:
            def on_step(step, total, loss):
                st.total = total
                st.advance(1, loss=round(loss, 4))
            result = train_lora(peft_model, [pool_tok.input_ids[i] for i in idx], [pool_tok.labels[i] for i in idx],
                                tok.pad_token_id, self.cfg.warmup, ckpt_dir=self.paths.checkpoints,
                                on_step=on_step, state_key=key)
        self.models.replace_base(peft_model.unload())  # the base weights back, LoRA layers removed
        facts, wall = {"n_examples": len(idx), "train_loss": result["train_loss"], "steps": result["steps"]}, time.time() - t0
        self.record("warmup", key, files, wall, facts)
        shared.publish(self.store.root, self.keys["pool_warmup"], files,
                       {"wall_s": round(wall, 3), **facts, "peak_rss_bytes": self.progress.peaks.get("warmup")})
        self.log(f"warm-up: {len(idx)} examples, {result['steps']} steps, loss {result['train_loss']:.3f}")

    def take_shared(self, stage: str, key: str, pool_key: str, files: list[str]) -> bool:
        """Link a stage another run on the same pool already computed (gist_core.store.shared) into this folder and
        record it with that run's wall time and facts; False when none is published."""
        record = shared.take(self.store.root, pool_key, files)
        if record is None:
            return False
        wall = float(record.pop("wall_s", 0.0))
        self.record(stage, key, files, wall, {**record, "shared_from": pool_key})
        self.log(f"{stage}: taken from a run on the same pool ({pool_key}; nothing recomputed)")
        return True

    def base_model(self) -> Any:
        """The base model with any adapter taken out (peft injects its layers in place)."""
        return self.models.base_model()

    def adapter_model(self, epoch: int | None = None, path: Path | None = None) -> Any:
        """Base model + the warm-up adapter of `epoch` (or the adapter folder `path`); LoRA trainable, eval mode."""
        return self.models.adapter_model(path or self.ckpt_dir(epoch))

    def stage_train_proj(self, pool_tok) -> FeatureStore | None:
        """Pool gradients projected onto the subspace's R_max directions, into a resumable memmap.

        Single process: every row. torchrun: rank 0 allocates, each rank its rows (i mod world),
        a barrier, rank 0 records. `--shard i/n` job: its rows into shards/, merged later."""
        key = self.keys["train_proj"]
        sub_path = self.paths.subspace(self.cfg.checkpoint)
        sub = load_subspace(sub_path)
        # The basis's content digest in the store's meta: rows projected onto an older, different basis
        # (say, before a corrupted warm-up was recomputed) are never reused.
        spec = self.projection_spec(key, len(pool_tok.input_ids), sub)

        def work(rows: list[int], fs: FeatureStore, st) -> None:
            import torch

            from gist_core.grads.per_example import GradientEngine, stream
            tok, _ = self.tokenizer_and_model()
            engine = GradientEngine(self.adapter_model(self.cfg.checkpoint), tok.pad_token_id)
            basis = torch.from_numpy(sub.basis).to(engine.device, getattr(torch, self.cfg.proj_dtype))
            stream(engine, pool_tok, rows, self.cfg.grad_batch_size, self.row_writer(fs), project=basis,
                   on_batch=st.advance, with_norms=True)

        return self.fill_rows("train_proj", key, spec, work,
                              extra=lambda wall, k: {"n": spec.n, "r_max": sub.r_max,
                                                     "examples_per_s": round(k / max(wall, 1e-9), 2)})

    def projection_spec(self, key: str, n: int, sub) -> StoreSpec:
        """Each row: the r_max coordinates, then |g| (the norm-aware score's denominator, from the same gradient).
        A complete store made before |g| was kept serves the in-subspace score as it is; the norm-aware score
        needs the norms, so there the pool is projected again."""
        meta = {"key": key, "basis": sub.basis_digest or array_digest(sub.basis)}
        if self.cfg.score == "subspace":
            older = StoreSpec(layout.TRAIN_PROJ, n, sub.r_max, meta)
            try:
                older.open(self.store.root, create=False)
                self.log("note: the pool projections were stored before each gradient's norm was kept; the "
                         "in-subspace score uses them as they are (the norm-aware score would project again)")
                return older
            except StoreError:
                pass
        return StoreSpec(layout.TRAIN_PROJ, n, sub.r_max + 1, {**meta, NORM_META: "last column"})

    def stage_scores(self, pool, target, proj: FeatureStore, pool_tok, target_tok) -> dict:
        t0 = time.time()
        sub = load_subspace(self.paths.subspace(self.cfg.checkpoint),
                            ("sigma", "val_coords"))
        groups = subtask_groups(target)
        k = scoring.budget_to_count(self.cfg.budget, len(pool))
        with self.progress.stage("scores"):
            stored = load_projections(proj.path)
            advice = rank_advice(self.cfg, sub, stored, groups)  # the memmap: a sample of rows is read
            rank = choose_rank(self.cfg, sub, advice)
            atomic_write_json(self.paths.advisor, {
                "checkpoint": self.cfg.checkpoint, **(advice.to_json() if advice else
                                                      {"suggested": None, "notes": ["no subtask has two validation examples"]})})
            sc = scoring.gist_scores(proj.rows(), sub.val_coords, groups, rank, self.cfg.aggregation, self.cfg.score,
                                     stored.norms)
            picked = {b: scoring.select(sc, k, b, groups) for b in scoring.BALANCES}
            selections = {b: idx for b, (idx, _) in picked.items()}
            chosen = selections[self.cfg.balance]
            frame = scores_frame(pool, sc, selections, pool_tok, groups)
            with atomic_path(self.paths.scores) as tmp:
                frame.to_parquet(tmp, index=False)
            write_selected_jsonl(pool.take(chosen), sc.score[chosen], self.paths.selected)
        summary = build_summary(self.cfg, pool, target, picked, sub, rank, k, groups)
        summary["score"] = sc.kind  # the kind these scores are (a store from before |g| was kept: subspace)
        summary["n_truncated"] = {"pool": pool_tok.n_truncated, "target": target_tok.n_truncated}
        summary["stage_wall_s"] = {name: e.get("wall_s") for name, e in self.store.manifest()["stages"].items()}
        summary["rank_rule"] = "explicit" if self.cfg.rank is not None else self.cfg.rank_rule
        summary["advisor_suggested"] = advice.suggested if advice else None
        self.record("scores", self.keys["scores"], [layout.SCORES, layout.SELECTED, layout.ADVISOR], time.time() - t0)
        return summary


def run_select(cfg: RunConfig, out: str | os.PathLike, quiet: bool = False, overwrite: bool = False) -> dict:
    """The Python entry point: run (or resume) a selection and return the summary."""
    return Run(cfg, out, quiet=quiet, overwrite=overwrite).execute()
