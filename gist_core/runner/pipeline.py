"""The orchestrator of a selection run: builds the run's context, checks every input before the folder is touched,
takes the folder (one writer, the run marked running), then calls the stages in order, each skipped when done.

    data        examples.parquet, target.parquet                         runner/stages.py
    warmup      checkpoints/ckpt-E/ (adapter, optimizer moments, mean LR) runner/stages.py
    val_grads   checkpoints/ckpt-E/val_grads.npy + subspace.safetensors   methods/gist/stages.py (every checkpoint)
    train_proj  train_proj.npy (+ .done.npy, .json)                       methods/gist/stages.py (the GIST checkpoint)
    scores      scores.parquet, selected.jsonl, advisor.json, summary.json methods/gist/stages.py
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import time
from dataclasses import replace

from gist_core.config import RunConfig
from gist_core.data.examples import Example, ExampleTable, load_examples, load_pool, subtask_groups
from gist_core.data.formatting import tokenize_examples
from gist_core.errors import ConfigError
from gist_core.methods import scoring
from gist_core.methods.gist.stages import projection_stage, scores_stage, val_grads_stage
from gist_core.model.load import attach_lora
from gist_core.runner.context import RunContext, RunInputs
from gist_core.runner.keys import input_fingerprints, model_source, stage_keys
from gist_core.runner.model_cache import ModelCache
from gist_core.runner.preflight import check_target
from gist_core.runner.progress import Progress
from gist_core.runner.rows import fill_rows
from gist_core.runner.sharding import ProcessSplit
from gist_core.runner.stages import data_stage, warmup_stage
from gist_core.store import layout
from gist_core.store.atomic import atomic_write_json
from gist_core.store.layout import RunLayout
from gist_core.store.lock import command_line, refuse_if_held, writer_lock
from gist_core.store.manifest import DONE, PREPARED, RunStore
from gist_core.store.reports import stamp
from gist_core.store.runs import check_out_folder

# the scores stage's files: moved aside when a run starts, so a folder never presents an earlier run's result
RESULT_FILES = [layout.SUMMARY, layout.SELECTED, layout.SCORES, layout.ADVISOR]


class Run:
    """One selection run: `Run(cfg, out).execute()`; each stage is skipped when already done. `run.ctx` is what the
    stages share; compare, cluster, experts and geometry build a Run to reach the same folder, model and inputs."""

    def __init__(self, cfg: RunConfig, out: str | os.PathLike, quiet: bool = False, overwrite: bool = False,
                 procs: ProcessSplit | None = None, until: str | None = None, merge: bool = False):
        """`procs`: single process (default), torchrun ranks or a `--shard i/n` job; `until='prepare'` stops
        before the pool projection (shared stages only); `merge=True` requires every shard's rows."""
        if until not in (None, "prepare"):
            raise ConfigError(f"until must be None or 'prepare', got '{until}'")
        procs = procs or ProcessSplit()
        self.model_source = model_source(cfg)
        if self.model_source.gguf_sha256:
            cfg = replace(cfg, model_sha256=self.model_source.gguf_sha256)
        if self.model_source.revision:  # a hub id: this commit is recorded and loaded, now and on every replay
            cfg = replace(cfg, model_revision=self.model_source.revision)
        store = RunStore(out)
        quiet = quiet or not (procs.main or procs.shard_job)
        fingerprints = input_fingerprints(cfg, self.model_source.fingerprint)
        self.ctx = RunContext(cfg=cfg, store=store, paths=RunLayout(out), procs=procs,
                              keys=stage_keys(cfg, fingerprints), fingerprints=fingerprints,
                              progress=Progress(store, quiet, rank=procs.rank if procs.sharded else None),
                              models=ModelCache(cfg, self.model_source.path), quiet=quiet, merge=merge)
        self.until = until
        self._check_config(overwrite)

    # ---- what the context holds, by the names the rest of the runner uses
    @property
    def cfg(self) -> RunConfig:
        return self.ctx.cfg

    @property
    def store(self) -> RunStore:
        return self.ctx.store

    @property
    def paths(self) -> RunLayout:
        return self.ctx.paths

    @property
    def procs(self) -> ProcessSplit:
        return self.ctx.procs

    @procs.setter
    def procs(self, procs: ProcessSplit) -> None:
        self.ctx.procs = procs

    @property
    def keys(self) -> dict[str, str]:
        return self.ctx.keys

    @property
    def fingerprints(self) -> dict[str, str]:
        return self.ctx.fingerprints

    @property
    def progress(self) -> Progress:
        return self.ctx.progress

    def log(self, msg: str) -> None:
        self.ctx.log(msg)

    def record(self, stage: str, key: str, files: list[str], wall_s: float, extra: dict | None = None) -> None:
        self.ctx.record(stage, key, files, wall_s, extra)

    def take_shared(self, stage: str, key: str, pool_key: str, files: list[str]) -> bool:
        return self.ctx.take_shared(stage, key, pool_key, files)

    def fill_rows(self, stage: str, key: str, spec, work, extra=None):
        return fill_rows(self.ctx, stage, key, spec, work, extra)

    def tokenizer_and_model(self):
        return self.ctx.tokenizer_and_model()

    def base_model(self):
        return self.ctx.base_model()

    def adapter_model(self, epoch: int | None = None, path=None):
        return self.ctx.adapter_model(epoch, path)

    def ckpt_dir(self, epoch: int):
        return self.ctx.paths.ckpt(epoch)

    # ---- the config the folder holds
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

    # ---- the inputs, checked before anything is written
    @functools.cached_property
    def inputs(self) -> RunInputs:
        """The pool and the target, loaded, checked against the model (preflight) and tokenized, once per
        process: the stages and a compare on top of the run read them from here."""
        pool, target = self.load_data()
        self.preflight(pool, target)
        tok, _ = self.tokenizer_and_model()
        pool_tok = tokenize_examples(pool, tok, self.cfg.max_length)
        target_tok = tokenize_examples(target, tok, self.cfg.target_length, eos=self.cfg.target_eos)
        for name, t, length in (("pool", pool_tok, f"max_length {self.cfg.max_length}"),
                                ("target", target_tok, f"target_max_length {self.cfg.target_length}")):
            if t.n_truncated:
                self.log(f"note: {t.n_truncated} {name} example(s) longer than {length} tokens were cut (prompt first, "
                         "the response kept whole where it fits)")
        return RunInputs(pool, target, pool_tok, target_tok)

    def load_data(self) -> tuple[ExampleTable, list[Example]]:
        pool = load_pool(self.cfg.train, split=self.cfg.train_split, limit=self.cfg.limit_train)
        target = load_examples(self.cfg.target, split=self.cfg.target_split)
        self.log(f"data: {len(pool)} pool examples, {len(target)} target examples "
                 f"in {len(subtask_groups(target))} subtask(s)")
        return pool, target

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
        model = attach_lora(model, self.cfg.lora, seed=self.cfg.warmup.seed).unload()  # LoRA-able at all?
        self.ctx.models.replace_base(model)
        context = getattr(model.config, "max_position_embeddings", None)
        longest = max(self.cfg.max_length, self.cfg.target_length)
        if context and longest > context:
            raise ConfigError(f"max_length {longest} exceeds the model's context of {context} tokens; "
                              f"use --max-length {context} or less (longer examples are cut, prompt first)")

    def check_inputs(self) -> RunInputs:
        """Every refusal of the inputs (output folder, data, model, settings), before the folder is touched."""
        check_out_folder(self.store.root)
        if not (self.procs.torchrun and not self.procs.main):
            refuse_if_held(self.store.root, shared=self.procs.shard_job)
        return self.inputs

    # ---- the folder: one writer, the run's status
    def take_folder(self, held: contextlib.ExitStack, results: list[str]) -> None:
        """The writer lock (shared for `--shard` jobs, which write disjoint rows beside each other) and, on the
        process that writes the results, the 'running' mark with the earlier `results` moved aside."""
        if self.procs.shard_job:
            held.enter_context(writer_lock(self.store.root, shared=True))
            return
        if self.procs.torchrun and not self.procs.main:
            return self.procs.on_main(lambda: None)  # rank 0 takes it; a refusal there reaches every rank

        def take() -> None:
            held.enter_context(writer_lock(self.store.root))
            self.store.begin(results, command_line())
        self.procs.on_main(take)

    def finish(self) -> None:
        """Every result is written: the run is done (or prepared), the earlier results are dropped."""
        if self.procs.main:
            self.store.finish(PREPARED if self.until == "prepare" else DONE)

    # ---- the stages
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

    def stages(self, t0: float) -> dict | None:
        """The stages in order, each skipped when done (the folder must be taken: take_folder)."""
        inputs = self.inputs
        if self.procs.shard_job:
            self._require_prepared()
        else:
            self.procs.on_main(lambda: self.prepare(inputs))
        if self.until == "prepare":
            self.log(f"prepared {self.store.root}: warm-up and validation gradients done; project the pool with "
                     f"`--shard i/n` jobs or torchrun, then `gist-lab merge --run {self.store.root}`")
            return None
        proj = projection_stage(self.ctx, inputs.pool_tok)
        if proj is None:
            return None
        summary = scores_stage(self.ctx, inputs, proj)
        summary["wall_s"] = round(time.time() - t0, 2)  # this invocation; stage_wall_s has each stage's total
        summary = stamp("summary", summary)
        atomic_write_json(self.paths.summary, summary)
        return summary

    def prepare(self, inputs: RunInputs) -> None:
        """The shared stages (one process): config, data, warm-up, validation gradients + subspaces."""
        self._write_config()
        data_stage(self.ctx, inputs.pool, inputs.target)
        warmup_stage(self.ctx, inputs.pool, inputs.pool_tok)
        for epoch in range(1, self.cfg.warmup.epochs + 1):
            val_grads_stage(self.ctx, epoch, inputs.target_tok)

    def _require_prepared(self) -> None:
        """Shard jobs may run at once on a shared folder: they never write the shared stages themselves."""
        stages = ["data", "warmup", f"val_grads/ckpt-{self.cfg.checkpoint}"]
        todo = [s for s in stages if not self.store.stage_done(s, self.keys[s.split("/")[0]])]
        if todo:
            raise ConfigError(f"{self.store.root}: {', '.join(todo)} not done; run the same command once with "
                              f"--prepare (no --shard) before the --shard jobs")


def run_select(cfg: RunConfig, out: str | os.PathLike, quiet: bool = False, overwrite: bool = False) -> dict:
    """The Python entry point: run (or resume) a selection and return the summary."""
    return Run(cfg, out, quiet=quiet, overwrite=overwrite).execute()


def open_run(run_dir: str | os.PathLike, quiet: bool = False) -> tuple[RunContext, RunInputs]:
    """A finished run's context and inputs, for the commands that build on it (cluster, experts)."""
    paths = RunLayout(run_dir)
    if not paths.config.exists():
        raise ConfigError(f"{run_dir}: not a run directory (no config.json); run gist-lab select or demo first")
    run = Run(RunConfig.from_json(json.loads(paths.config.read_text())), run_dir, quiet=quiet)
    return run.ctx, run.inputs
