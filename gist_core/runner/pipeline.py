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

import functools
import json
import os
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from gist_core.methods import scoring
from gist_core.methods.gist.advisor import DEFAULT_RANK_RULE, RANK_RULES
from gist_core.store.artefacts import (ArtefactError, StaleArtefact, array_digest, load_npy, load_subspace, save_npy,
                                 save_subspace, subspace_exists)  # noqa: F401  (re-exported)
from gist_core.store.atomic import atomic_path, atomic_write_json
from gist_core.data.corpus import DEFAULT_DEMO_TARGET, SAMPLE_DATA  # noqa: F401  (re-exported)
from gist_core.data.examples import (Example, ExampleTable, examples_to_frame, load_examples, load_pool, subtask_groups,
                            write_selected_jsonl)
from gist_core.model.load import LoraSettings
from gist_core.runner.sharding import Layout, shard_size
from gist_core.store.manifest import FeatureStore, RunStore, StoreError, file_hash, stable_hash
from gist_core.methods.gist.subspace import VAL_COORDS_TOL, val_coords_error
from gist_core.model.training import TrainConfig
from gist_core.errors import ConfigError  # noqa: F401  (raised here; re-exported)

FLUSH_EVERY = 8  # batches between done-mask flushes: at most this many batches are redone after a kill
PROJ_DTYPES = ("float32", "bfloat16")


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run's results; written to config.json and replayable."""
    model: str = field(metadata={"help": "Hugging Face model id, local folder, .gguf file or registry name "
                                         "(gist-lab models list)"})
    train: str = field(metadata={"help": "pool: JSONL/JSON/CSV/Parquet file or datasets name/path"})
    target: str = field(metadata={"help": "target validation examples (few-shot), optional 'subtask' column"})
    budget: float = field(default=0.05, metadata={"help": "fraction in (0,1] of the pool, or a count > 1"})
    rank: int | None = field(default=None, metadata={"help": "GIST rank r; None = set by rank_rule"})
    rank_rule: str = field(default=DEFAULT_RANK_RULE, metadata={
        "help": "rank when `rank` is None: full = every stored direction (r_max; the default, chosen on evidence), "
                "tau = smallest r reaching tau explained variance (the GIST paper's rule), advisor = the held-out "
                "rank advisor's suggestion"})
    tau: float = field(default=0.95, metadata={"help": "explained-variance threshold for the tau rank rule"})
    r_max: int = field(default=64, metadata={"help": "directions stored per pool example (>= rank)"})
    aggregation: str = field(default="subtask_mean", metadata={"help": "subtask_mean (code) | example_max (paper)"})
    balance: str = field(default=scoring.DEFAULT_RULE, metadata={
        "help": "selection rule: subtask = round-robin quota (the default, chosen on evidence) | global = top-k of "
                "the max subtask cosine (the GIST paper's and LESS's rule) | zscore / quantile = top-k of the max of "
                "per-subtask calibrated columns"})
    checkpoint: int = field(default=1, metadata={"help": "warm-up epoch whose checkpoint GIST scores with"})
    warmup_fraction: float = field(default=0.05, metadata={"help": "random share of the pool for warm-up"})
    max_length: int = field(default=256, metadata={"help": "tokens per example (prompt cut first)"})
    grad_batch_size: int = field(default=16, metadata={"help": "examples per per-example-gradient batch"})
    proj_dtype: str = field(default="float32", metadata={
        "help": "dtype of the pool projection g.V: float32, or bfloat16 as the GIST reference code does (basis "
                "and gradients cast to bf16 before the product, partial products summed and stored in float32)"})
    target_eos: bool = field(default=True, metadata={
        "help": "append the end-of-sequence token to the target's responses, as to the pool's; False = the "
                "GIST/LESS reference code, whose validation examples end at the answer"})
    lora: LoraSettings = field(default_factory=LoraSettings)
    warmup: TrainConfig = field(default_factory=TrainConfig)
    target_split: str = "train"
    train_split: str = "train"
    limit_train: int | None = None
    device: str = "auto"
    dtype: str = "float32"
    trust_remote_code: bool = False
    seed: int = field(default=0, metadata={"help": "warm-up subset and random-baseline seed"})
    model_sha256: str | None = field(default=None, metadata={
        "help": "sha256 of the GGUF file behind `model`, recorded when the run starts; a replay of this config "
                "refuses a different file (None: not a GGUF model)"})

    def __post_init__(self):
        if isinstance(self.lora, dict):
            object.__setattr__(self, "lora", LoraSettings(**self.lora))
        if isinstance(self.warmup, dict):
            object.__setattr__(self, "warmup", TrainConfig(**self.warmup))
        try:
            scoring.check_budget(self.budget)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if self.rank is not None and self.rank < 1:
            raise ConfigError(f"rank must be >= 1, got {self.rank}")
        if not 0 < self.tau <= 1:
            raise ConfigError(f"tau must lie in (0, 1], got {self.tau}")
        if self.rank_rule not in RANK_RULES:
            raise ConfigError(f"rank_rule must be one of {RANK_RULES}, got '{self.rank_rule}'")
        if self.aggregation not in scoring.AGGREGATIONS:
            raise ConfigError(f"aggregation must be one of {scoring.AGGREGATIONS}, got '{self.aggregation}'")
        if self.balance not in scoring.BALANCES:
            raise ConfigError(f"balance must be one of {scoring.BALANCES}, got '{self.balance}'")
        if not 1 <= self.checkpoint <= self.warmup.epochs:
            raise ConfigError(f"checkpoint must lie in 1..{self.warmup.epochs} (warm-up epochs)")
        if not 0 < self.warmup_fraction <= 1:
            raise ConfigError(f"warmup_fraction must lie in (0, 1], got {self.warmup_fraction}")
        if self.proj_dtype not in PROJ_DTYPES:
            raise ConfigError(f"proj_dtype must be one of {PROJ_DTYPES}, got '{self.proj_dtype}'")
        if self.max_length < 8 or self.grad_batch_size < 1:
            raise ConfigError("max_length must be >= 8 and grad_batch_size >= 1")
        object.__setattr__(self, "r_max", max(self.r_max, self.rank or 1))

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "RunConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"config.json: unknown field(s) {sorted(unknown)}")
        # a config written before rank rules existed ranked by tau: its replay keeps that, whatever the default
        return cls(**{"rank_rule": "tau", **d})


def demo_config(target: str = DEFAULT_DEMO_TARGET, **overrides) -> RunConfig:
    """The bundled default: tiny LM, synthetic pool, one of its target tasks.

    GIST scores with the paper's warm-up checkpoint 1, as `select` does. (An earlier version used the
    last checkpoint, chosen on scrambled target directions; re-measured on every bundled target at every
    checkpoint, checkpoint 1 has the best mean precision under the global rule and is the only one that
    does not collapse on 'facts': bench/checkpoint_sweep.py, README.)
    """
    tdir = SAMPLE_DATA / "targets" / target
    if not tdir.is_dir():
        choices = sorted(p.name for p in (SAMPLE_DATA / "targets").iterdir()) if (SAMPLE_DATA / "targets").is_dir() else []
        raise ConfigError(f"unknown bundled target '{target}' (choose from {', '.join(choices) or 'none found'})")
    base = dict(model=str(SAMPLE_DATA / "tiny-lm"), train=str(SAMPLE_DATA / "pool.jsonl"), target=str(tdir / "val.jsonl"))
    return RunConfig(**{**base, **overrides})


def _model_source(cfg: RunConfig):
    """What --model names (a GGUF file is converted here, once per file, before any stage runs); a config that
    recorded another GGUF file's hash is refused."""
    from gist_core.model.registry import ModelSourceError, resolve
    try:
        src = resolve(cfg.model)
    except ModelSourceError as e:
        raise ConfigError(str(e)) from None
    if cfg.model_sha256 and src.gguf_sha256 != cfg.model_sha256:
        found = f"sha256 {src.gguf_sha256[:12]}..." if src.gguf_sha256 else "not a GGUF file"
        raise ConfigError(f"--model {cfg.model}: {found}, but the config recorded GGUF sha256 "
                          f"{cfg.model_sha256[:12]}...; pass the same file or drop model_sha256 from the config")
    return src


def _input_fingerprint(spec: str) -> str:
    p = Path(spec)
    return file_hash(p) if p.exists() else f"name:{spec}"


class Progress:
    """Progress events into the run directory plus a tqdm bar on the terminal."""

    def __init__(self, store: RunStore, quiet: bool = False, rank: int | None = None):
        self.store, self.quiet, self.rank = store, quiet, rank

    def stage(self, name: str, total: int | None = None, **info):
        return _StageProgress(self, name, total, info if self.rank is None else {**info, "rank": self.rank})


class _StageProgress:
    def __init__(self, parent: Progress, name: str, total: int | None, info: dict):
        self.p, self.name, self.total, self.info, self.done = parent, name, total, info, 0
        self.bar, self.t0, self.last_event = None, time.time(), 0.0

    def __enter__(self):
        self.p.store.event(self.name, "start", total=self.total, **self.info)
        if not self.p.quiet and self.total:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=self.total, desc=self.name, unit="ex", leave=False)
        return self

    def advance(self, n: int = 1, **fields) -> None:
        self.done += n
        if self.bar:
            self.bar.update(n)
        if time.time() - self.last_event > 1.0 or (self.total and self.done >= self.total):
            self.last_event = time.time()
            rank = {} if self.p.rank is None else {"rank": self.p.rank}
            self.p.store.event(self.name, "progress", done=self.done, total=self.total, **rank, **fields)

    def __exit__(self, exc_type, exc, tb):
        if self.bar:
            self.bar.close()
        status = "end" if exc_type is None else "error"
        extra = {} if exc is None else {"error": f"{type(exc).__name__}: {exc}"}
        self.p.store.event(self.name, status, wall_s=round(time.time() - self.t0, 3), **extra)
        return False


def skipped(store: RunStore, stage: str) -> None:
    store.event(stage, "skip")


# ----------------------------------------------------------------------------- stages
class Run:
    """One selection run: `Run(cfg, out).execute()`; each stage is skipped when already done."""

    def __init__(self, cfg: RunConfig, out: str | os.PathLike, quiet: bool = False, overwrite: bool = False,
                 layout: Layout | None = None, until: str | None = None, merge: bool = False):
        """`layout`: single process (default), torchrun ranks or a `--shard i/n` job; `until='prepare'` stops
        before the pool projection (shared stages only); `merge=True` requires every shard's rows."""
        if until not in (None, "prepare"):
            raise ConfigError(f"until must be None or 'prepare', got '{until}'")
        self.layout = layout or Layout()
        self.model_source = _model_source(cfg)
        if self.model_source.gguf_sha256:
            cfg = replace(cfg, model_sha256=self.model_source.gguf_sha256)
        self.cfg, self.store = cfg, RunStore(out)
        self.quiet = quiet or not (self.layout.main or self.layout.shard_job)
        self.progress = Progress(self.store, self.quiet, rank=self.layout.rank if self.layout.sharded else None)
        self.until, self.merge = until, merge
        self._model = self._tok = self._peft = None
        self._check_config(overwrite)

    def _check_config(self, overwrite: bool) -> None:
        """Refuse to mix a different config into a run folder (written only once the inputs pass preflight)."""
        path = self.store.path("config.json")
        if path.exists() and not overwrite:
            old = json.loads(path.read_text())
            try:  # options added since the folder was made take their defaults, as they did then
                old = json.loads(json.dumps(RunConfig.from_json(old).to_json()))
            except (ConfigError, TypeError):
                pass
            if old != json.loads(json.dumps(self.cfg.to_json())):
                changed = sorted(k for k in set(old) | set(self.cfg.to_json()) if old.get(k) != self.cfg.to_json().get(k))
                raise ConfigError(f"{self.store.root} already holds a run with a different config "
                                  f"(changed: {', '.join(changed)}); use another --out or --overwrite")

    def _write_config(self) -> None:
        path = self.store.path("config.json")
        if not path.exists() or json.loads(path.read_text()) != json.loads(json.dumps(self.cfg.to_json())):
            atomic_write_json(path, self.cfg.to_json())

    def log(self, msg: str) -> None:
        if not self.quiet:
            print(msg, flush=True)

    # ---- shared resources
    def tokenizer_and_model(self):
        if self._model is None:
            import torch
            from gist_core.model.load import load_base_model
            torch.manual_seed(self.cfg.seed)
            self._model, self._tok = load_base_model(self.model_source.path, self.cfg.dtype, self.cfg.device,
                                                     self.cfg.trust_remote_code)  # resolved once, in __init__
        return self._tok, self._model

    def execute(self) -> dict | None:
        """Run or resume every stage. Returns the summary on the process that scores (None on other
        torchrun ranks, on `--shard` jobs and with until='prepare')."""
        t0 = time.time()
        pool, target = self.load_data()
        self.preflight(pool, target)
        tok, _ = self.tokenizer_and_model()
        from gist_core.data.formatting import tokenize_examples
        pool_tok = tokenize_examples(pool, tok, self.cfg.max_length)
        target_tok = tokenize_examples(target, tok, self.cfg.max_length, eos=self.cfg.target_eos)
        self.pool, self.target, self.pool_tok, self.target_tok = pool, target, pool_tok, target_tok  # for compare
        for name, t in (("pool", pool_tok), ("target", target_tok)):
            if t.n_truncated:
                self.log(f"note: {t.n_truncated} {name} example(s) longer than max_length {self.cfg.max_length} "
                         "tokens were cut (prompt first, the response kept whole where it fits)")
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
        atomic_write_json(self.store.path("summary.json"), summary)
        return summary

    def preflight(self, pool, target) -> None:
        """Checks that would otherwise fail hours in: rank vs target size, budget vs pool, model, context."""
        if self.cfg.rank is not None and self.cfg.rank > len(target):
            raise ConfigError(f"rank {self.cfg.rank} exceeds the {len(target)} directions the {len(target)} "
                              f"validation examples can span; use --rank {len(target)} or fewer")
        try:  # a count larger than the pool fails here, not after the gradients
            scoring.budget_to_count(self.cfg.budget, len(pool))
        except ValueError as e:
            raise ConfigError(str(e)) from None
        _, model = self.tokenizer_and_model()
        from gist_core.model.load import attach_lora
        self._model = attach_lora(model, self.cfg.lora, seed=self.cfg.warmup.seed).unload()  # LoRA-able at all?
        model = self._model
        context = getattr(model.config, "max_position_embeddings", None)
        if context and self.cfg.max_length > context:
            raise ConfigError(f"max_length {self.cfg.max_length} exceeds the model's context of {context} tokens; "
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
        """Content hashes of the inputs (once per invocation: hashing a large pool is not free)."""
        c = self.cfg
        return {"train": _input_fingerprint(c.train), "target": _input_fingerprint(c.target),
                "model": self.model_source.fingerprint or _input_fingerprint(c.model)}

    @functools.cached_property
    def keys(self) -> dict[str, str]:
        """Per stage: hash of everything its result depends on (config fields + input hashes)."""
        c, fp = self.cfg, self.fingerprints
        data = stable_hash({"train": fp["train"], "target": fp["target"], "splits": [c.train_split, c.target_split],
                            "limit": c.limit_train})
        model = stable_hash({"model": fp["model"], "dtype": c.dtype, "max_length": c.max_length})
        warm = stable_hash([data, model, c.lora.key(), asdict(c.warmup), c.warmup_fraction, c.seed])
        # options off their defaults join the keys; at their defaults the keys are those of earlier versions
        val = warm if c.target_eos else stable_hash([warm, "no-target-eos"])
        proj = stable_hash([val, c.checkpoint, c.r_max] + ([c.proj_dtype] if c.proj_dtype != "float32" else []))
        # (a rank rule other than tau joins the key: a folder scored by tau before rank rules existed keeps its key)
        scores = stable_hash([proj, c.rank, c.tau, c.aggregation, c.balance, c.budget, c.seed]
                             + ([c.rank_rule] if c.rank_rule != "tau" and c.rank is None else []))
        return {"data": data, "warmup": warm, "val_grads": val, "subspace": val, "train_proj": proj, "scores": scores}

    def record(self, stage: str, key: str, files: list[str], wall_s: float, extra: dict | None = None) -> None:
        self.store.record_stage(stage, key, files, wall_s, {"config_hash": stable_hash(self.cfg.to_json()),
                                                            "input_hashes": self.fingerprints, **(extra or {})})

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
            for name, exs in (("examples.parquet", pool), ("target.parquet", target)):
                with atomic_path(self.store.path(name)) as tmp:
                    examples_to_frame(exs).to_parquet(tmp, index=False)
            self.record("data", key, ["examples.parquet", "target.parquet"], time.time() - t0,
                        {"n_pool": len(pool), "n_target": len(target)})

    def warmup_indices(self, n: int) -> list[int]:
        rng = np.random.default_rng(self.cfg.seed)
        k = max(1, int(round(self.cfg.warmup_fraction * n)))
        return sorted(rng.choice(n, size=k, replace=False).tolist())

    def ckpt_dir(self, epoch: int) -> Path:
        return self.store.path("checkpoints", f"ckpt-{epoch}")

    def stage_warmup(self, pool, pool_tok) -> None:
        from gist_core.model.training import checkpoint_exists, train_lora
        key = self.keys["warmup"]
        files = [f"checkpoints/ckpt-{e}" for e in range(1, self.cfg.warmup.epochs + 1)]
        state = self.store.check_stage("warmup", key)
        if state == "done" and all(checkpoint_exists(self.store.path(f)) for f in files):
            return skipped(self.store, "warmup")
        from gist_core.model.load import attach_lora
        from gist_core.model.training import last_trainer_state
        tok, model = self.tokenizer_and_model()
        idx = self.warmup_indices(len(pool))
        t0 = time.time()
        resume = None if state == "corrupt" else last_trainer_state(self.store.path("checkpoints"), key)
        if resume is None:  # another warm-up's (or a damaged run's) Trainer state is never resumed
            import shutil
            shutil.rmtree(self.store.path("checkpoints", ".trainer"), ignore_errors=True)
        if resume:
            self.log(f"warm-up: resuming from {Path(resume).name} (finished epochs are not retrained)")
        peft_model = attach_lora(model, self.cfg.lora, seed=self.cfg.warmup.seed)
        with self.progress.stage("warmup", n_examples=len(idx), resumed_from=resume and Path(resume).name) as st:
            def on_step(step, total, loss):
                st.total = total
                st.advance(1, loss=round(loss, 4))
            result = train_lora(peft_model, [pool_tok.input_ids[i] for i in idx], [pool_tok.labels[i] for i in idx],
                                tok.pad_token_id, self.cfg.warmup, ckpt_dir=self.store.path("checkpoints"),
                                on_step=on_step, state_key=key)
        self._model = peft_model.unload()  # the base weights back, LoRA layers removed, for later stages
        self.record("warmup", key, files, time.time() - t0,
                                {"n_examples": len(idx), "train_loss": result["train_loss"], "steps": result["steps"]})
        self.log(f"warm-up: {len(idx)} examples, {result['steps']} steps, loss {result['train_loss']:.3f}")

    def base_model(self):
        """The base model with any adapter taken out (peft injects its layers in place)."""
        self.tokenizer_and_model()
        if self._peft is not None:
            self._model, self._peft = self._peft.unload(), None
        return self._model

    def adapter_model(self, epoch: int | None = None, path: Path | None = None):
        """Base model + the warm-up adapter of `epoch` (or the adapter folder `path`); LoRA trainable, eval mode."""
        from gist_core.model.load import load_adapter
        self._peft = load_adapter(self.base_model(), path or self.ckpt_dir(epoch)).eval()
        return self._peft

    def stage_val_grads(self, epoch: int, target_tok) -> None:
        from gist_core.grads.per_example import GradientEngine, collect_flat
        stage = f"val_grads/ckpt-{epoch}"
        key = self.keys["val_grads"]
        rel = [f"checkpoints/ckpt-{epoch}/val_grads.npy", f"checkpoints/ckpt-{epoch}/subspace.safetensors"]
        if self.store.stage_done(stage, key):
            problem = self._subspace_problem(rel)
            if problem is None:
                return skipped(self.store, stage)
            return self._refit_subspace(epoch, stage, key, rel, problem)
        tok, _ = self.tokenizer_and_model()
        model = self.adapter_model(epoch)
        t0 = time.time()
        n = len(target_tok.input_ids)
        with self.progress.stage(stage, total=n):
            engine = GradientEngine(model, tok.pad_token_id)
            G = collect_flat(engine, target_tok, list(range(n)), self.cfg.grad_batch_size)
        save_npy(self.store.path(rel[0]), G, np.float32)
        t_sub = time.time()
        sub = self._fit_and_save_subspace(G, rel)
        self.record(stage, key, rel, time.time() - t0,
                    {"dim": int(G.shape[1]), "r_max": sub.r_max, "ortho_error": sub.ortho_error,
                     "subspace_s": round(time.time() - t_sub, 4)})

    def _fit_and_save_subspace(self, G: np.ndarray, rel: list[str]):
        from gist_core.methods.gist.subspace import fit_subspace
        sub = fit_subspace(G, self.cfg.r_max)
        save_subspace(self.store.path(rel[1]), sub)
        return sub

    def _subspace_problem(self, rel: list[str]) -> str | None:
        """None when the stored subspace is sound: format 2 and val_coords == val_grads . basis (a checksum
        with meaning, N_v x D x R); else what is wrong, in a few words."""
        try:
            sub = load_subspace(self.store.path(rel[1]))
        except StaleArtefact:
            return ("written before artefact format 2, when safetensors 0.8 scrambled its non-C-ordered "
                    "target directions")
        except ArtefactError as e:
            return str(e)
        G = load_npy(self.store.path(rel[0]), np.float32, ndim=2)
        err = val_coords_error(G, sub)
        return None if err <= VAL_COORDS_TOL else f"val_coords differ from val_grads . basis (relative error {err:.2g})"

    def _refit_subspace(self, epoch: int, stage: str, key: str, rel: list[str], problem: str) -> None:
        """Recompute a stale or inconsistent subspace from the stored validation gradients (no model needed).
        The basis comes out bit-identical when the gradients are unchanged: then the pool projections onto it
        stay valid and are kept (their store is re-labelled with the basis digest), else they are recomputed."""
        path = self.store.path(rel[1])
        print(f"notice: {rel[1]}: {problem}; recomputing the subspace from the stored validation gradients "
              "(and the scores after it)", flush=True)
        self.store.event(stage, "stale", problem=problem)
        try:
            old = load_subspace(path, allow_stale=True)
            old_digest, old_file = array_digest(old.basis), file_hash(path)
        except ArtefactError:
            old_digest = old_file = None
        t0 = time.time()
        sub = self._fit_and_save_subspace(load_npy(self.store.path(rel[0]), np.float32, ndim=2), rel)
        new_digest = array_digest(sub.basis)
        if epoch == self.cfg.checkpoint and old_digest == new_digest:
            if relabel_store(self.store.path("train_proj.json"), old_file, new_digest):
                print("notice: the basis is unchanged, so the stored pool projections onto it are kept", flush=True)
        entry = self.store.manifest()["stages"][stage]
        self.record(stage, key, rel, entry.get("wall_s", 0.0),
                    {k: entry[k] for k in ("dim", "subspace_s") if k in entry} |
                    {"r_max": sub.r_max, "ortho_error": sub.ortho_error, "refit": problem,
                     "refit_s": round(time.time() - t0, 4)})

    def stage_train_proj(self, pool_tok) -> FeatureStore | None:
        """Pool gradients projected onto the subspace's R_max directions, into a resumable memmap.

        Single process: every row. torchrun: rank 0 allocates, each rank its rows (i mod world),
        a barrier, rank 0 records. `--shard i/n` job: its rows into shards/, merged later."""
        key = self.keys["train_proj"]
        sub_path = self.store.path("checkpoints", f"ckpt-{self.cfg.checkpoint}", "subspace.safetensors")
        sub = load_subspace(sub_path)
        # The basis's content digest in the store's meta: rows projected onto an older, different basis
        # (say, before a corrupted warm-up was recomputed) are never reused.
        spec = StoreSpec("train_proj.npy", len(pool_tok.input_ids), sub.r_max,
                         {"key": key, "basis": sub.basis_digest or array_digest(sub.basis)})

        def work(rows: list[int], fs: FeatureStore, st) -> None:
            import torch
            from gist_core.grads.per_example import GradientEngine, stream
            tok, _ = self.tokenizer_and_model()
            engine = GradientEngine(self.adapter_model(self.cfg.checkpoint), tok.pad_token_id)
            basis = torch.from_numpy(sub.basis).to(engine.device, getattr(torch, self.cfg.proj_dtype))
            stream(engine, pool_tok, rows, self.cfg.grad_batch_size, self.row_writer(fs), project=basis,
                   on_batch=st.advance)

        return self.fill_rows("train_proj", key, spec, work,
                              extra=lambda wall, k: {"n": spec.n, "r_max": spec.r,
                                                     "examples_per_s": round(k / max(wall, 1e-9), 2)})

    @staticmethod
    def row_writer(fs: FeatureStore):
        """`consume` for gradients.stream: write each batch's rows, flush every FLUSH_EVERY batches."""
        count = [0]

        def consume(batch, x):
            fs.write(batch, x.cpu().numpy())
            count[0] += 1
            if count[0] % FLUSH_EVERY == 0:
                fs.flush()
        return consume

    def fill_rows(self, stage: str, key: str, spec: "StoreSpec", work, extra=None) -> FeatureStore | None:
        """Fill the row store `spec` under this process's layout; returns it on the process that goes on.

        `work(rows, fs, progress)` computes and writes the given pool rows. Rank 0 (or the single
        process) allocates the store, resets it when the manifest says it is corrupt, and first copies
        in rows that `--shard` jobs left in shards/ (all of them, complete, with merge=True)."""
        L = self.layout
        if L.shard_job:
            return self._fill_shard(stage, key, spec, work)

        def allocate() -> tuple[bool, list]:
            state = self.store.check_stage(stage, key)
            fs = spec.open(self.store.root)
            if state == "corrupt":
                fs.reset()
            used = self._take_shards(spec, fs) if state != "done" else []
            fs.flush()
            return state == "done" and not fs.todo(), used

        finished, used = L.on_main(allocate)
        fs = spec.open(self.store.root, create=False)
        if finished:
            skipped(self.store, stage)
            return fs if L.main else None
        todo = fs.todo()
        mine = L.rows(todo)
        if len(todo) < fs.n:
            self.log(f"{stage}: resuming, {fs.n - len(todo)} of {fs.n} rows already done")
        t0 = time.time()
        # one process: progress over all rows (resumed ones count as done); ranks: each over its own rows,
        # which the dashboard sums
        total = len(mine) if L.sharded else fs.n
        with self.progress.stage(stage, total=total, resumed=fs.n - len(todo)) as st:
            st.done = 0 if L.sharded else fs.n - len(todo)
            if mine:
                work(mine, fs, st)
            fs.flush()
        L.barrier()
        if not L.main:
            return None
        fs.refresh()
        missing = fs.todo()
        if missing:
            raise StoreError(f"{stage}: {len(missing)} rows still missing after every process finished")
        wall = time.time() - t0
        prev = self.store.manifest()["stages"].get(stage, {}).get("wall_s", 0.0) if len(todo) < fs.n else 0.0
        self.record(stage, key, spec.files, wall + prev, extra(wall, len(todo)) if extra else None)
        self._drop_shards(stage, spec, used)
        return fs

    # ---- independent shard jobs and their merge
    def _fill_shard(self, stage: str, key: str, spec: "StoreSpec", work) -> None:
        """A `--shard i/n` job: pool rows i, i+n, ... into shards/<store>.i-of-n.npy (local row j = pool row i+jn)."""
        L = self.layout
        part, part_stage = spec.shard(L.rank, L.world), f"{stage}/{L.part}"
        fs = part.open(self.store.root)
        if self.store.check_stage(part_stage, key) == "corrupt":
            fs.reset()
        todo = [L.rank + L.world * j for j in fs.todo()]
        if todo:
            t0 = time.time()
            with self.progress.stage(part_stage, total=fs.n, resumed=fs.n - len(todo)) as st:
                st.done = fs.n - len(todo)
                work(todo, ShardRows(fs, L.rank, L.world), st)
                fs.flush()
            self.record(part_stage, key, part.files, time.time() - t0)
        self.log(f"{stage}: shard {L.rank}/{L.world} holds its {fs.n} rows in {self.store.path(part.rel)}")
        return None

    def _take_shards(self, spec: "StoreSpec", fs: FeatureStore) -> list[tuple[int, int]]:
        """Copy the finished rows of `--shard` jobs' files for `spec` into `fs`; returns the shards used.
        With merge=True every shard must be there and complete, else a one-line ConfigError."""
        folder, stem = self.store.path(spec.shard(0, 1).rel).parent, Path(spec.rel).stem
        found = {}
        for p in sorted(folder.glob(f"{stem}.*-of-*.npy")) if folder.is_dir() else []:
            tag = p.name[len(stem) + 1:-len(".npy")]
            if "-of-" in tag and tag.replace("-of-", "").isdigit():
                i, k = (int(x) for x in tag.split("-of-"))
                found[(i, k)] = p
        if self.merge and not found:
            raise ConfigError(f"{folder}: no {stem} shard files to merge (run the `--shard i/n` jobs first)")
        counts = {k for _, k in found}
        if len(counts) > 1:
            raise ConfigError(f"{folder}: {stem} shard files of different splits {sorted(counts)}; keep one set")
        missing = [f"{i}/{k}" for k in counts for i in range(k) if (i, k) not in found]
        problems = [f"shard(s) {', '.join(missing)} not found"] if missing else []
        used = []
        for (i, k) in sorted(found):
            try:
                part = spec.shard(i, k).open(self.store.root, create=False)
            except StoreError:
                problems.append(f"{found[(i, k)].name} was made for another configuration")
                continue
            done = np.asarray(part.done)
            fs.write(np.arange(i, fs.n, k)[done], np.asarray(part.data)[done])
            used.append((i, k))
            if not done.all():
                problems.append(f"shard {i}/{k} has {int((~done).sum())} of {part.n} rows left")
        fs.flush()
        if self.merge and problems:
            raise ConfigError(f"cannot merge {stem}: {'; '.join(problems)} (rerun those `--shard` jobs, then merge)")
        return used

    def _drop_shards(self, stage: str, spec: "StoreSpec", used: list[tuple[int, int]]) -> None:
        """Once the merged store is recorded, the shard files it took its rows from are redundant."""
        for i, k in used:
            part = spec.shard(i, k)
            for rel in (*part.files, part.rel.replace(".npy", ".json")):
                self.store.path(rel).unlink(missing_ok=True)
            self.store.forget_stage(f"{stage}/{i}-of-{k}")

    def stage_scores(self, pool, target, proj: FeatureStore, pool_tok, target_tok) -> dict:
        t0 = time.time()
        sub = load_subspace(self.store.path("checkpoints", f"ckpt-{self.cfg.checkpoint}", "subspace.safetensors"),
                            ("sigma", "val_coords"))
        groups = subtask_groups(target)
        k = scoring.budget_to_count(self.cfg.budget, len(pool))
        with self.progress.stage("scores"):
            advice = rank_advice(self.cfg, sub, proj.data, groups)  # the memmap: a sample of rows is read
            rank = choose_rank(self.cfg, sub, advice)
            atomic_write_json(self.store.path("advisor.json"), {
                "checkpoint": self.cfg.checkpoint, **(advice.to_json() if advice else
                                                      {"suggested": None, "notes": ["no subtask has two validation examples"]})})
            sc = scoring.gist_scores(proj.rows(), sub.val_coords, groups, rank, self.cfg.aggregation)
            picked = {b: scoring.select(sc, k, b, groups) for b in scoring.BALANCES}
            selections = {b: idx for b, (idx, _) in picked.items()}
            chosen = selections[self.cfg.balance]
            frame = scores_frame(pool, sc, selections, pool_tok, groups)
            with atomic_path(self.store.path("scores.parquet")) as tmp:
                frame.to_parquet(tmp, index=False)
            write_selected_jsonl(pool.take(chosen), sc.score[chosen], self.store.path("selected.jsonl"))
        summary = build_summary(self.cfg, pool, target, picked, sub, rank, k, groups)
        summary["n_truncated"] = {"pool": pool_tok.n_truncated, "target": target_tok.n_truncated}
        summary["stage_wall_s"] = {name: e.get("wall_s") for name, e in self.store.manifest()["stages"].items()}
        summary["rank_rule"] = "explicit" if self.cfg.rank is not None else self.cfg.rank_rule
        summary["advisor_suggested"] = advice.suggested if advice else None
        self.record("scores", self.keys["scores"], ["scores.parquet", "selected.jsonl", "advisor.json"], time.time() - t0)
        return summary


# ----------------------------------------------------------------------------- row stores
@dataclass(frozen=True)
class StoreSpec:
    """A row store's path (relative to the run), shape, meta and dtype; and its per-shard files."""
    rel: str
    n: int
    r: int
    meta: dict
    dtype: str = "float32"

    def open(self, root: Path, create: bool = True) -> FeatureStore:
        return FeatureStore(Path(root) / self.rel, self.n, self.r, self.meta, dtype=np.dtype(self.dtype), create=create)

    @property
    def files(self) -> list[str]:
        return [self.rel, self.rel.replace(".npy", ".done.npy")]

    def shard(self, i: int, k: int) -> "StoreSpec":
        """Shard i of k: pool rows i, i+k, ...; stored under shards/ beside nothing else."""
        stem = self.rel[: -len(".npy")]
        return StoreSpec(f"shards/{stem}.{i}-of-{k}.npy", shard_size(self.n, i, k), self.r,
                         {**self.meta, "shard": f"{i}-of-{k}", "n_pool": self.n}, self.dtype)


class ShardRows:
    """A shard store addressed by pool row: row i + k*j of the pool is local row j."""

    def __init__(self, fs: FeatureStore, i: int, k: int):
        self.fs, self.i, self.k = fs, i, k

    def write(self, rows, values) -> None:
        self.fs.write([(int(r) - self.i) // self.k for r in rows], values)

    def flush(self) -> None:
        self.fs.flush()


def choose_rank(cfg: RunConfig, sub, advice=None) -> int:
    """The explicit rank, else the rank rule's: tau (the paper), the advisor's suggestion, or all stored
    directions. Without an advisor curve (no subtask has two validation examples) the advisor rule uses tau."""
    if cfg.rank is not None:
        if cfg.rank > sub.r_max:
            raise ConfigError(f"rank {cfg.rank} exceeds the {sub.r_max} directions the {len(sub.sigma)} "
                              f"validation examples span; use --rank {sub.r_max} or fewer")
        return cfg.rank
    if cfg.rank_rule == "full":
        return sub.r_max
    if cfg.rank_rule == "advisor" and advice is not None:
        return min(advice.suggested, sub.r_max)
    from gist_core.methods.gist.subspace import rank_for_variance
    return min(rank_for_variance(sub.sigma, cfg.tau), sub.r_max)


def rank_advice(cfg: RunConfig, sub, X, groups):
    """The rank advisor's curve on the stored coordinates (None when no subtask has two examples)."""
    from gist_core.methods.gist.advisor import advise
    return advise(sub.val_coords, X, groups, cfg.aggregation, seed=cfg.seed)


def relabel_store(meta_path: Path, old_file_hash: str | None, basis_digest: str) -> bool:
    """A projection store made before format 2 names its subspace by file hash; when that file's basis is
    bit-identical to the refitted one, name it by the basis digest instead (its rows stay valid)."""
    if old_file_hash is None or not meta_path.exists():
        return False
    meta = json.loads(meta_path.read_text())
    if meta.get("subspace") != old_file_hash:
        return False
    meta.pop("subspace")
    atomic_write_json(meta_path, {**meta, "basis": basis_digest})
    return True


# ----------------------------------------------------------------------------- reports
def scores_frame(pool, sc: "scoring.Scores", selections: dict, pool_tok, groups: dict):
    import pandas as pd
    order = np.lexsort((np.arange(len(sc.score)), -sc.score))
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(1, len(order) + 1)
    df = examples_to_frame(pool, ["id", "source", "skill", "subtask", "kind"])
    df["score"] = sc.score
    df["rank"] = rank
    df["n_tokens"] = [len(x) for x in pool_tok.input_ids]
    for b, idx in selections.items():
        mask = np.zeros(len(pool), dtype=bool)
        mask[idx] = True
        df[f"selected_{b}"] = mask
    if sc.aggregation == "subtask_mean":
        for t, name in enumerate(sc.column_names):
            df[f"cos:{name}"] = sc.columns[:, t]
    for rule in scoring.CALIBRATED:  # what the calibrated rules rank by (score stays the raw max cosine)
        df[f"score_{rule}"] = scoring.rule_scores(sc, groups, rule)
    return pd.DataFrame(df)


def ground_truth_metrics(truth, n: int, selected: np.ndarray) -> dict | None:
    """gist_core.data.truth metrics of a selection given as row indices (None without labels)."""
    from gist_core.data.truth import metrics_from
    mask = np.zeros(n, dtype=bool)
    mask[selected] = True
    return metrics_from(truth, mask)


def build_summary(cfg, pool, target, picked, sub, rank, k, groups) -> dict:
    from gist_core.methods.gist.subspace import rank_for_variance
    from gist_core.data.truth import truth_masks
    truth = truth_masks(examples_to_frame(pool, ["skill", "kind"]), list(groups))
    per_rule = {}
    for rule, (idx, share) in picked.items():
        # starvation: by ground truth where the pool has it (the coverage figures), else by the column each
        # selected example aligns best with (no labels needed); `starved_basis` says which
        entry = {"picked_for_subtask": share, "starved_subtasks": scoring.starved(share, k),
                 "starved_basis": "best-aligned subtask column"}
        gt = ground_truth_metrics(truth, len(pool), idx)
        if gt:
            entry.update(gt)
            entry.update(starved_subtasks=scoring.starved_by_coverage(gt["coverage"]),
                         starved_basis="ground-truth coverage")
        per_rule[rule] = entry
    rng = np.random.default_rng(cfg.seed)
    rand = np.sort(rng.choice(len(pool), size=k, replace=False))
    rand_gt = ground_truth_metrics(truth, len(pool), rand)
    main = per_rule[cfg.balance]
    summary = {"n_pool": len(pool), "n_target": len(target), "n_subtasks": len(groups), "n_selected": k,
               "rank": rank, "r_max": sub.r_max, "r95": rank_for_variance(sub.sigma, 0.95),
               "r99": rank_for_variance(sub.sigma, 0.99), "sigma": [float(s) for s in sub.sigma],
               "aggregation": cfg.aggregation, "balance": cfg.balance, "checkpoint": cfg.checkpoint,
               "starved_subtasks": main["starved_subtasks"], "starved_basis": main["starved_basis"],
               "picked_for_subtask": main["picked_for_subtask"],
               "by_balance": per_rule, "score_semantics": "cosine in [-1, 1]; higher = better aligned with the target"}
    if rand_gt:
        summary.update({key: main[key] for key in ("precision", "recall", "coverage", "n_wrong_selected",
                                                      "n_distractor_selected", "base_rate")})
        # one random baseline everywhere: the expected precision of a random selection (the base rate);
        # one seeded draw is kept beside it for reference
        summary["random_precision"] = main["base_rate"]
        summary["random_draw_precision"] = rand_gt["precision"]
        summary["precision_over_random"] = main["precision"] / max(main["base_rate"], 1e-12)
    return summary


def run_select(cfg: RunConfig, out: str | os.PathLike, quiet: bool = False, overwrite: bool = False) -> dict:
    """The Python entry point: run (or resume) a selection and return the summary."""
    return Run(cfg, out, quiet=quiet, overwrite=overwrite).execute()


def rescore(run_dir: str | os.PathLike, rank: int, aggregation: str | None = None) -> "scoring.Scores":
    """Scores at another rank from the stored projections: no gradients recomputed."""
    run_dir = Path(run_dir)
    cfg = RunConfig.from_json(json.loads((run_dir / "config.json").read_text()))
    import pandas as pd
    sub = load_subspace(run_dir / "checkpoints" / f"ckpt-{cfg.checkpoint}" / "subspace.safetensors",
                        ("sigma", "val_coords"))
    target = pd.read_parquet(run_dir / "target.parquet")
    groups = scoring.groups_from_labels(target["id"], target["subtask"])
    X = load_npy(run_dir / "train_proj.npy", np.float32, ndim=2, mmap=True)
    return scoring.gist_scores(X, sub.val_coords, groups, rank, aggregation or cfg.aggregation)
