"""Every path inside a run folder, in one place: nothing else in gist_core spells a run-folder file name.

One run = one folder:
    config.json                 the RunConfig that produced it (replay: `gist-lab select --config`)
    manifest.json               per stage: key, files with size and sha256, versions, wall time
    progress.jsonl              one JSON event per line, for the dashboard
    launch.json                 how the dashboard launched the job (pid, command, log)
    .lock                       the writer's advisory lock: pid and command of the process writing the folder
    examples.parquet            the pool as loaded (id, source, skill, ... prompt, response)
    target.parquet              the target (validation) examples
    checkpoints/ckpt-E/         warm-up LoRA adapter after epoch E, its optimizer moments, and
        val_grads.npy           the validation gradients (N_v x D) and
        subspace.safetensors    their SVD (basis, singular values, coordinates)
    train_proj.npy (+ .done.npy, .json)   the pool's projections on the subspace (N x r_max)
    scores.parquet, selected.jsonl, advisor.json, summary.json   the scores stage
    map_umap_r{r}_{key}.npy     cached 2-D UMAP coordinates of the Map page
    compare.json                `gist-lab compare`'s table
    compare/                    its scores.parquet, less/ features, embed*.npy, evals/ (downstream runs)
    geometry/                   `gist-lab geometry`: geometry.json, ckpt-E.safetensors
    clusters/                   `gist-lab cluster`: clusters.json, sketch/coords/labels .npy
    experts/                    `gist-lab experts`: experts.json, adapters/s{seed}/NAME/, router-METHOD.safetensors,
                                features (prompt embeddings, query gradients) .npy, evals/s{seed}.json
    curation/edits.json         `gist-lab curate`: the hand edits of the working selection (gist_core.runner.curation)

A `gist-lab train` folder (TrainLayout; not a select run):
    train.json                  the recipe, the selection settings, test loss and exact match per subtask, walls
    selection.safetensors       layer × example selection counts, per-step cosines to the support gradient, losses
    adapter/                    the trained LoRA adapter
and `gist-lab train --ablation` puts one such folder per METHOD-IMPL-sSEED under its folder, with ablation.json.

Paths come in two forms: `rel_*` names relative to the run (what the manifest records) and `Path`s.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

CONFIG = "config.json"
MANIFEST = "manifest.json"
PROGRESS = "progress.jsonl"
LAUNCH = "launch.json"
LAUNCH_LOG = "launch.log"   # the launched job's stdout and stderr (gist_core.runner.launcher)
LOCK = ".lock"              # the writer's advisory lock and its record (gist_core.store.lock)
SHARED = ".shared"          # in the runs folder: stages that depend on the pool alone (gist_core.store.shared)
PREVIOUS = ".previous"      # an earlier run's results while the folder is rewritten (RunStore.begin)
MANIFEST_LOCK = ".manifest.lock"  # held for each read-modify-write of manifest.json (shard jobs share a folder)
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
CLUSTERS = "clusters"
EXPERTS = "experts"
CURATION = "curation"
COMPARE_REPORT = "compare.json"  # at the top of the run: the table the Compare page reads
CKPT_GLOB = "ckpt-*"            # the warm-up checkpoint folders under checkpoints/
_CKPT_RE = re.compile(r"ckpt-(\d+)")

# inside one warm-up checkpoint folder
CKPT_META = "meta.json"
CKPT_MOMENTS = "optimizer_moments.safetensors"
VAL_GRADS = "val_grads.npy"
SUBSPACE = "subspace.safetensors"
TRAINER_STATE_DIR = ".trainer"


def ckpt_name(epoch: int) -> str:
    return f"ckpt-{epoch}"


def ckpt_epoch(name: str) -> int | None:
    """The warm-up epoch of a checkpoint folder name ('ckpt-3' -> 3); None for any other name."""
    m = _CKPT_RE.fullmatch(name)
    return int(m.group(1)) if m else None


def umap_pattern(rank: int) -> str:
    """Glob (relative to the run) of every cached Map-page UMAP at `rank`, whatever its key."""
    return f"map_umap_r{rank}_*.npy"


def rel_ckpt(epoch: int, *parts: str) -> str:
    return "/".join((CHECKPOINTS, ckpt_name(epoch), *parts))


def rel_compare(*parts: str) -> str:
    return "/".join((COMPARE, *parts))


def shard_rel(rel: str, i: int, k: int) -> str:
    """Shard i of k of the row store `rel` (written by a `--shard i/k` job): shards/<stem>.i-of-k.npy."""
    return f"shards/{rel[: -len('.npy')]}.{i}-of-{k}.npy"


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
    def launch_log(self) -> Path:
        return self.root / LAUNCH_LOG

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
    def compare_report(self) -> Path:
        return self.root / COMPARE_REPORT

    @property
    def compare_scores(self) -> Path:
        return self.root / rel_compare("scores.parquet")

    @property
    def compare_embed(self) -> Path:
        return self.root / EMBED_REL

    @property
    def compare_embed_target(self) -> Path:
        return self.root / EMBED_TARGET_REL

    def compare_embeddings(self, method: str) -> tuple[Path, Path]:
        return tuple(self.root / rel for rel in embedding_rels(method))

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

    # gist-lab cluster (GradientSpace)
    @property
    def clusters_dir(self) -> Path:
        return self.root / CLUSTERS

    @property
    def clusters_report(self) -> Path:
        return self.clusters_dir / "clusters.json"

    def clusters_array(self, name: str) -> Path:
        """rows.npy, sketch.npy, coords.npy, elrea.npy, embed.npy, labels-METHOD.npy, and their .part resumes."""
        return self.clusters_dir / f"{name}.npy"

    # gist-lab experts (GradientSpace experts, router, ELREA ensemble)
    @property
    def experts_dir(self) -> Path:
        return self.root / EXPERTS

    @property
    def experts_report(self) -> Path:
        return self.experts_dir / "experts.json"

    def expert_adapter(self, seed: int, name: str) -> Path:
        return self.experts_dir / "adapters" / f"s{seed}" / name

    def experts_array(self, name: str) -> Path:
        return self.experts_dir / f"{name}.npy"

    def expert_router(self, method: str) -> Path:
        return self.experts_dir / f"router-{method}.safetensors"

    def experts_eval(self, seed: int) -> Path:
        return self.experts_dir / "evals" / f"s{seed}.json"

    # gist-lab curate (the working selection)
    @property
    def curation_dir(self) -> Path:
        return self.root / CURATION

    @property
    def curation_edits(self) -> Path:
        return self.curation_dir / "edits.json"


class TrainLayout:
    """One `gist-lab train` folder, or an ablation folder holding one per run."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    @property
    def report(self) -> Path:
        return self.root / "train.json"

    @property
    def selection(self) -> Path:
        return self.root / "selection.safetensors"

    @property
    def adapter(self) -> Path:
        return self.root / "adapter"

    @property
    def ablation_report(self) -> Path:
        return self.root / "ablation.json"

    def member(self, method: str, implementation: str, seed: int) -> TrainLayout:
        return TrainLayout(self.root / f"{method}-{implementation}-s{seed}")


EMBED_REL = rel_compare("embed.npy")
EMBED_TARGET_REL = rel_compare("embed-target.npy")


def embedding_rels(method: str) -> tuple[str, str]:
    """(pool, target) embedding stores of an embedding baseline: compare/embed*.npy for `embedding` (the name
    folders have always used), compare/<method>.npy and compare/<method>-target.npy for the others."""
    if method == "embedding":
        return EMBED_REL, EMBED_TARGET_REL
    return rel_compare(f"{method}.npy"), rel_compare(f"{method}-target.npy")


def less_val_rel(epoch: int) -> str:
    return rel_compare("less", f"val-ckpt-{epoch}.npy")


def less_train_rel(epoch: int) -> str:
    return rel_compare("less", f"ckpt-{epoch}.npy")


def ckpt_trainer_state(ckpt_root: str | os.PathLike) -> Path:
    """Where the warm-up's Trainer keeps its resumable state, under the checkpoints folder."""
    return Path(ckpt_root) / TRAINER_STATE_DIR


def ckpt_meta(ckpt: str | os.PathLike) -> Path:
    return Path(ckpt) / CKPT_META


def ckpt_moments(ckpt: str | os.PathLike) -> Path:
    return Path(ckpt) / CKPT_MOMENTS


class ProxyLayout:
    """One `gist-lab proxy build` folder: the proxy model, its ablations, the selection runs that evaluate them."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    @property
    def report(self) -> Path:
        return self.root / "proxy.json"

    @property
    def model(self) -> Path:
        return self.root / "model"

    def candidate(self, name: str) -> Path:
        return self.root / "candidates" / name

    def evaluation(self, name: str) -> Path:
        return self.root / "eval" / name

    def extraction_meta(self, name: str) -> Path:
        return extraction_meta(self.candidate(name))


def proxy_plan(model_folder: str | os.PathLike) -> Path:
    """An Iprox proxy model folder's plan and build record (its factor layers, ranks, build key)."""
    return Path(model_folder) / "iprox.json"


def extraction_meta(model_folder: str | os.PathLike) -> Path:
    """A layer-extraction baseline's build record inside its model folder (an ordinary model has no iprox.json)."""
    return Path(model_folder) / "layers.json"
