"""What the stages of one run share, handed to each stage explicitly: the settings, the run folder, this process's
part of the work, the model, progress and the manifest's bookkeeping.

A stage is a function `stage(ctx, inputs...) -> outputs` that reads and writes the artefacts its docstring names;
nothing is shared through inheritance. `Run` (runner/pipeline.py) builds the context and calls the stages in
order; a test can build a context over a temporary folder and call one stage alone.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from gist_core.config import RunConfig
from gist_core.data.examples import Example, ExampleTable
from gist_core.data.formatting import Tokenized
from gist_core.runner.model_cache import ModelCache
from gist_core.runner.progress import Progress
from gist_core.runner.sharding import ProcessSplit
from gist_core.store import shared
from gist_core.store.layout import RunLayout
from gist_core.store.manifest import RunStore, stable_hash

log = logging.getLogger(__name__)


class RunInputs(NamedTuple):
    """The pool and the target, loaded, checked and tokenized once per process."""
    pool: ExampleTable
    target: list[Example]
    pool_tok: Tokenized
    target_tok: Tokenized


@dataclass
class RunContext:
    cfg: RunConfig
    store: RunStore          # the manifest, progress events and status of the run folder
    paths: RunLayout         # every path inside the run folder
    procs: ProcessSplit            # this process's part: one process, a torchrun rank or a --shard job
    keys: dict[str, str]     # each stage's key (runner/keys.py)
    fingerprints: dict[str, str]
    progress: Progress
    models: ModelCache       # the model, loaded once per process, with the adapter currently on it
    quiet: bool = False
    merge: bool = False      # a `gist-lab merge`: every --shard job's rows must be there

    def log(self, msg: str) -> None:
        if not self.quiet:
            log.info(msg)

    def record(self, stage: str, key: str, files: list[str], wall_s: float, extra: dict | None = None) -> None:
        """The stage's manifest entry: its key, files (size, sha256), wall time, peak memory and `extra` facts."""
        peak = {"peak_rss_bytes": self.progress.peaks[stage]} if stage in self.progress.peaks else {}
        if stage in self.progress.device_peaks:
            peak["peak_cuda_bytes"] = self.progress.device_peaks[stage]
        self.store.record_stage(stage, key, files, wall_s, {"config_hash": stable_hash(self.cfg.to_json()),
                                                            "input_hashes": self.fingerprints, **peak, **(extra or {})})

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

    # ---- the model
    def tokenizer_and_model(self) -> tuple[Any, Any]:
        return self.models.tokenizer_and_model()

    def base_model(self) -> Any:
        """The base model with any adapter taken out (peft injects its layers in place)."""
        return self.models.base_model()

    def adapter_model(self, epoch: int | None = None, path: Path | None = None) -> Any:
        """Base model + the warm-up adapter of `epoch` (or the adapter folder `path`); LoRA trainable, eval mode."""
        return self.models.adapter_model(path or self.paths.ckpt(epoch))
