"""Run directory basics: cache stamps, JSON reads, the run's frames and its stored arrays.

Everything is read from the run directory written by `gist_core.runner.pipeline` (paths from
`gist_core.store.layout`); nothing here computes gradients. The heavy loads (memmap, subspace,
frames) are cached with `functools.lru_cache` keyed by (run directory, manifest mtime): a finished
stage rewrites the manifest, which invalidates the cache. The `*_at(run_dir, stamp)` functions are
those caches; the other modules of gist_core.viewer share them through the plain wrappers here.
"""
from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gist_core.data.domains import domain_labels
from gist_core.data.examples import groups_from_labels
from gist_core.data.truth import has_ground_truth
from gist_core.methods import scoring
from gist_core.methods.gist import artefacts as gist_artefacts
from gist_core.store import artefacts
from gist_core.store.layout import CKPT_GLOB, RunLayout, ckpt_epoch


def folders_under(root: Path, is_kind) -> list[str]:
    """Names of the folders directly under `root` for which `is_kind(folder)` holds (a train or proxy folder)."""
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and is_kind(p))


def file_stamp(path: str | Path) -> int:
    """Cache key part: a file's mtime (ns); 0 while there is none."""
    try:  # (not exists() then stat(): a file replaced or removed in between must not raise)
        return Path(path).stat().st_mtime_ns
    except OSError:
        return 0


def tree_stamp(folder: str | Path) -> int:
    """Cache key part: a digest of the path and mtime (ns) of every JSON file under a folder (its manifest, config
    and reports, nested ones included); 0 while there are none. It changes whenever one of them is written, added,
    removed or moved, so it is stronger than any one file's stamp (the manifest's, `stamp`) and than the newest
    mtime (a file replaced by an older copy, a report moved aside)."""
    root = Path(folder)
    h, seen = hashlib.blake2b(digest_size=8), False
    for f in sorted(root.rglob("*.json")):
        h.update(f"{f.relative_to(root)}\0{file_stamp(f)}\0".encode())
        seen = True
    return int.from_bytes(h.digest(), "big") if seen else 0


def stamp(run_dir: str | Path) -> int:
    """Cache key part: manifest.json's mtime (a finished stage rewrites it)."""
    return file_stamp(RunLayout(run_dir).manifest)


def read_json(path: Path, default=None):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return default  # absent, or caught mid-write by a non-atomic writer


def run_config(run_dir: str | Path) -> dict:
    """The run's config.json ({} when there is none yet)."""
    return read_json(RunLayout(run_dir).config, {})


def run_summary(run_dir: str | Path) -> dict:
    """The run's summary.json ({} before the scores stage)."""
    return read_json(RunLayout(run_dir).summary, {})


def has_scores(run_dir: str | Path) -> bool:
    lay = RunLayout(run_dir)
    return all(p.exists() for p in (lay.scores, lay.train_proj, lay.target, lay.config))


@dataclass
class RunData:
    path: Path
    config: dict
    summary: dict
    manifest: dict
    frame: pd.DataFrame | None   # scores joined with prompt/response; None before the scores stage
    target: pd.DataFrame | None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def has_truth(self) -> bool:
        return self.frame is not None and has_ground_truth(self.frame)


def load_run(run_dir: str | Path) -> RunData:
    d = Path(run_dir)
    lay, done = RunLayout(d), has_scores(d)
    return RunData(path=d, config=read_json(lay.config, {}), summary=read_json(lay.summary, {}),
                   manifest=read_json(lay.manifest, {"stages": {}}),
                   frame=base_frame_at(str(d), stamp(d)) if done else None,
                   target=target_frame_at(str(d), stamp(d)) if done else None)


@functools.lru_cache(maxsize=4)
def base_frame_at(run_dir: str, _stamp: int) -> pd.DataFrame:
    """scores.parquet + prompt/response from examples.parquet, one row per pool example in pool order."""
    lay = RunLayout(run_dir)
    scores = pd.read_parquet(lay.scores)
    ex = pd.read_parquet(lay.examples, columns=["id", "prompt", "response"])
    if len(ex) == len(scores) and (ex["id"].to_numpy() == scores["id"].to_numpy()).all():
        text = ex[["prompt", "response"]].reset_index(drop=True)
    else:  # not in the same order: join on id
        text = scores[["id"]].merge(ex, on="id", how="left")[["prompt", "response"]]
    # cos:* columns hold the config rank; rescored_frame recomputes them at the chosen rank
    frame = scores.drop(columns=[c for c in scores.columns if c.startswith("cos:")]).reset_index(drop=True)
    frame.insert(0, "row", np.arange(len(frame)))
    frame = pd.concat([frame, text], axis=1)
    # a reading aid for pools without labels (code / math / writing / other: gist_core.data.domains), once per frame
    frame["domain"] = domain_labels(frame[["prompt", "response"]])
    return frame


@functools.lru_cache(maxsize=4)
def target_frame_at(run_dir: str, _stamp: int) -> pd.DataFrame:
    return pd.read_parquet(RunLayout(run_dir).target).reset_index(drop=True)


def base_frame(run_dir: str | Path) -> pd.DataFrame:
    """The cached pool frame (base_frame_at at the current stamp); treat it as read-only."""
    return base_frame_at(str(run_dir), stamp(run_dir))


def target_frame(run_dir: str | Path) -> pd.DataFrame:
    """The cached target (validation) frame; treat it as read-only."""
    return target_frame_at(str(run_dir), stamp(run_dir))


def target_groups(target: pd.DataFrame) -> dict[str, list[int]]:
    """Subtask -> target rows, as pipeline.rescore builds them (no subtask: the example is its own)."""
    return groups_from_labels(target["id"], target["subtask"])


OLD_SCORE_NOTE = ("this run was made before each pool gradient's norm was stored, so its GIST scores are the "
                  "in-subspace cosine ('subspace'), not the norm-aware score; rerun its command to get both")


@dataclass
class Arrays:
    X: np.ndarray            # (N, R) memmap of projected pool gradients
    val_coords: np.ndarray   # (N_v, R) validation coordinates
    groups: dict[str, list[int]]
    aggregation: str
    norms: np.ndarray | None = None      # (N,) each pool gradient's whole norm (None: an older run)
    val_norms: np.ndarray | None = None  # (N_v,) each validation gradient's whole norm
    kind: str = "subspace"               # the run's score kind (an older run: always subspace)

    @property
    def r_max(self) -> int:
        return min(self.X.shape[1], self.val_coords.shape[1])

    @property
    def kinds(self) -> tuple[str, ...]:
        """The score kinds this run's arrays support."""
        return scoring.SCORE_KINDS if self.norms is not None else ("subspace",)

    def scores(self, rank: int, kind: str | None = None, aggregation: str | None = None) -> scoring.Scores:
        """GIST's scores at `rank` (the run's score kind unless `kind`): a slice and a small product, no torch."""
        return scoring.gist_scores(self.X, self.val_coords, self.groups, rank, aggregation or self.aggregation,
                                   kind or self.kind, self.norms)


def subspace_path(run_dir: str | Path) -> Path:
    """The subspace GIST scores with: the config's checkpoint (1 by default)."""
    return RunLayout(run_dir).subspace(int(run_config(run_dir).get("checkpoint", 1)))


def stale_problem(run_dir: str | Path) -> str | None:
    """Why this run's GIST artefacts must not be shown (written before artefact format 2), else None."""
    path = subspace_path(run_dir)
    fmt = artefacts.artefact_format(path) if path.is_file() else artefacts.FORMAT
    if fmt >= artefacts.FORMAT:
        return None
    return (f"`{path.relative_to(run_dir)}` was written in artefact format {fmt}, when "
            "safetensors 0.8 scrambled GIST's target directions. Rerun the command that made this run "
            "(`gist-lab select --config RUN/config.json`, or the same `demo`/`compare`): it recomputes the "
            "subspace from the stored validation gradients and re-scores, keeping the pool projections.")


@functools.lru_cache(maxsize=4)
def arrays_at(run_dir: str, _stamp: int) -> Arrays:
    lay, cfg = RunLayout(run_dir), run_config(run_dir)
    sub = gist_artefacts.load_subspace(subspace_path(run_dir), ("val_coords",))  # the basis is never needed here
    stored = gist_artefacts.load_projections(lay.train_proj)
    # a config written before score kinds existed scored in the subspace; without norms nothing else is possible
    kind = cfg.get("score", "subspace") if stored.norms is not None else "subspace"
    return Arrays(X=stored.coords, val_coords=sub.val_coords, groups=target_groups(target_frame_at(run_dir, _stamp)),
                  aggregation=cfg.get("aggregation", "subtask_mean"), norms=stored.norms,
                  val_norms=sub.val_norms, kind=kind)


def arrays(run_dir: str | Path) -> Arrays:
    return arrays_at(str(run_dir), stamp(run_dir))


def r_max(run_dir: str | Path) -> int:
    return arrays(run_dir).r_max


def checkpoint_epochs(run_dir: str | Path) -> list[int]:
    """Warm-up epochs with a checkpoint folder (checkpoints/ckpt-E), ascending."""
    ck = RunLayout(run_dir).checkpoints
    eps = (ckpt_epoch(p.name) for p in ck.glob(CKPT_GLOB) if p.is_dir()) if ck.is_dir() else ()
    return sorted(e for e in eps if e is not None)


def json_number(v) -> float:
    """A JSON number as float; NaN for missing, null or non-numeric values."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")
