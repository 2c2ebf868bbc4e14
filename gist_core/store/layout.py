"""Every path inside a run folder, in one place: nothing else in gist_core spells a run-folder file name.

One run = one folder:
    config.json                 the RunConfig that produced it (replay: `gist-lab select --config`)
    manifest.json               per stage: key, files with size and sha256, versions, wall time
    progress.jsonl              one JSON event per line, for the dashboard
    launch.json                 how the dashboard launched the job (pid, command, log)
    examples.parquet            the pool as loaded (id, source, skill, ... prompt, response)
    target.parquet              the target (validation) examples
    checkpoints/ckpt-E/         warm-up LoRA adapter after epoch E, its optimizer moments, and
        val_grads.npy           the validation gradients (N_v x D) and
        subspace.safetensors    their SVD (basis, singular values, coordinates)
    train_proj.npy (+ .done.npy, .json)   the pool's projections on the subspace (N x r_max)
    scores.parquet, selected.jsonl, advisor.json, summary.json   the scores stage
    map_umap_r{r}_{key}.npy     cached 2-D UMAP coordinates of the Map page
    compare/                    `gist-lab compare`: compare.json, scores.parquet, less/, embed*.npy, evals/
    geometry/                   `gist-lab geometry`: geometry.json, ckpt-E.safetensors

Paths come in two forms: `rel_*` names relative to the run (what the manifest records) and `Path`s.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CONFIG = "config.json"
MANIFEST = "manifest.json"
PROGRESS = "progress.jsonl"
LAUNCH = "launch.json"
SUMMARY = "summary.json"
EXAMPLES = "examples.parquet"
TARGET = "target.parquet"
TRAIN_PROJ = "train_proj.npy"
SCORES = "scores.parquet"
SELECTED = "selected.jsonl"
ADVISOR = "advisor.json"
CHECKPOINTS = "checkpoints"
COMPARE = "compare"
GEOMETRY = "geometry"

# inside one warm-up checkpoint folder
CKPT_META = "meta.json"
CKPT_MOMENTS = "optimizer_moments.safetensors"
VAL_GRADS = "val_grads.npy"
SUBSPACE = "subspace.safetensors"
TRAINER_STATE_DIR = ".trainer"


def ckpt_name(epoch: int) -> str:
    return f"ckpt-{epoch}"


def rel_ckpt(epoch: int, *parts: str) -> str:
    return "/".join((CHECKPOINTS, ckpt_name(epoch), *parts))


def rel_compare(*parts: str) -> str:
    return "/".join((COMPARE, *parts))


def done_mask_of(rel: str) -> str:
    """The done-mask file next to a row store `x.npy`: `x.done.npy`."""
    return rel[: -len(".npy")] + ".done.npy"


def meta_of(rel: str) -> str:
    """The JSON sidecar next to a row store `x.npy`: `x.json`."""
    return rel[: -len(".npy")] + ".json"


@dataclass(frozen=True)
class RunLayout:
    """The paths of one run folder (nothing is created or read here)."""

    root: Path

    def __init__(self, root: str | os.PathLike):
        object.__setattr__(self, "root", Path(root))

    def path(self, rel: str) -> Path:
        return self.root / rel

    # the run's own files
    @property
    def config(self) -> Path:
        return self.root / CONFIG

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST

    @property
    def progress(self) -> Path:
        return self.root / PROGRESS

    @property
    def launch(self) -> Path:
        return self.root / LAUNCH

    @property
    def summary(self) -> Path:
        return self.root / SUMMARY

    @property
    def examples(self) -> Path:
        return self.root / EXAMPLES

    @property
    def target(self) -> Path:
        return self.root / TARGET

    @property
    def train_proj(self) -> Path:
        return self.root / TRAIN_PROJ

    @property
    def train_proj_meta(self) -> Path:
        return self.root / meta_of(TRAIN_PROJ)

    @property
    def scores(self) -> Path:
        return self.root / SCORES

    @property
    def selected(self) -> Path:
        return self.root / SELECTED

    @property
    def advisor(self) -> Path:
        return self.root / ADVISOR

    # warm-up checkpoints
    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS

    def ckpt(self, epoch: int) -> Path:
        return self.root / rel_ckpt(epoch)

    def val_grads(self, epoch: int) -> Path:
        return self.root / rel_ckpt(epoch, VAL_GRADS)

    def subspace(self, epoch: int) -> Path:
        return self.root / rel_ckpt(epoch, SUBSPACE)

    @property
    def trainer_state(self) -> Path:
        return self.checkpoints / TRAINER_STATE_DIR

    # the Map page's cache
    def umap(self, rank: int, key: str) -> Path:
        return self.root / f"map_umap_r{rank}_{key}.npy"

    # gist-lab compare
    @property
    def compare_dir(self) -> Path:
        return self.root / COMPARE

    @property
    def compare_report(self) -> Path:
        return self.root / rel_compare("compare.json")

    @property
    def compare_scores(self) -> Path:
        return self.root / rel_compare("scores.parquet")

    @property
    def compare_embed(self) -> Path:
        return self.root / rel_compare("embed.npy")

    @property
    def compare_embed_target(self) -> Path:
        return self.root / rel_compare("embed-target.npy")

    def compare_eval(self, name: str) -> Path:
        return self.root / rel_compare("evals", f"{name}.json")

    # gist-lab geometry
    @property
    def geometry_dir(self) -> Path:
        return self.root / GEOMETRY

    @property
    def geometry_report(self) -> Path:
        return self.geometry_dir / "geometry.json"

    def geometry_matrices(self, epoch: int) -> Path:
        return self.geometry_dir / f"{ckpt_name(epoch)}.safetensors"


def less_val_rel(epoch: int) -> str:
    return rel_compare("less", f"val-ckpt-{epoch}.npy")


def less_train_rel(epoch: int) -> str:
    return rel_compare("less", f"ckpt-{epoch}.npy")


def ckpt_meta(ckpt: str | os.PathLike) -> Path:
    return Path(ckpt) / CKPT_META


def ckpt_moments(ckpt: str | os.PathLike) -> Path:
    return Path(ckpt) / CKPT_MOMENTS
