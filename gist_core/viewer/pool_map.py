"""The 2-D map: the pool's projected gradients (and the target examples) on two axes, PCA or cached UMAP."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gist_core.store import artefacts
from gist_core.store.layout import RunLayout, umap_pattern
from gist_core.store.manifest import stable_hash
from gist_core.viewer.labels import group_column
from gist_core.viewer.rundir import arrays, read_json, run_config, target_frame

# Pools up to this many rows are drawn in full; a larger pool shows a seeded sample of this size unless the page's
# "draw all" asks for every point. Measured in headless Chromium (software WebGL, 2 cores): 100,000 points add under
# a second to the ~3.5 s a map page takes to appear, the figure JSON is 4.5 MB (docs/benchmarks/map.md).
MAP_MAX_POINTS = 100_000
# A UMAP fit of n points (8 dims, 2 CPU cores, numba compiled) took 3.9 / 7.8 / 6.6 / 14.0 / 42.5 s at 5,000 /
# 10,000 / 20,000 / 40,000 / 100,000 points: about linear, UMAP_S_PER_POINT * n; the first fit in a process adds
# about UMAP_COMPILE_S of numba compilation (docs/benchmarks/map.md).
UMAP_S_PER_POINT = 4.0e-4
UMAP_COMPILE_S = 35.0


@dataclass
class MapData:
    pool: pd.DataFrame      # row, x, y (float32: what the browser draws, so a lasso is tested on the drawn points)
    targets: pd.DataFrame   # id, subtask, prompt, x, y
    method: str
    rank: int


def map_sample(n: int, max_points: int = MAP_MAX_POINTS, seed: int = 0) -> np.ndarray:
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


def pool_size(run_dir: str | Path) -> int:
    return int(arrays(run_dir).X.shape[0])


def umap_fit_points(run_dir: str | Path, max_points: int = MAP_MAX_POINTS) -> int:
    """How many points a UMAP of this run fits: the drawn pool points plus the target examples."""
    a = arrays(run_dir)
    return min(a.X.shape[0], max_points) + a.val_coords.shape[0]


def umap_estimate_s(n_points: int, first_in_process: bool = True) -> float:
    """Seconds a UMAP fit of `n_points` should take on the development machine (2 CPU cores)."""
    return UMAP_S_PER_POINT * n_points + (UMAP_COMPILE_S if first_in_process else 0.0)


def rough_duration(seconds: float) -> str:
    """'about 40 s', 'about 3 min', 'about 1.5 h': an estimate said as one."""
    if seconds < 90:
        return f"about {max(5, round(seconds / 5) * 5):.0f} s"
    if seconds < 90 * 60:
        return f"about {round(seconds / 60):.0f} min"
    return f"about {seconds / 3600:.1f} h"


def _unit(M: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(M, axis=1, keepdims=True)
    return M / np.where(n > 0, n, 1.0)


def _map_inputs(run_dir: str | Path, rank: int, max_points: int, seed: int):
    a = arrays(run_dir)
    if not 1 <= rank <= a.r_max:
        raise ValueError(f"rank r={rank} outside 1..{a.r_max}")
    idx = map_sample(a.X.shape[0], max_points, seed)
    P = _unit(np.asarray(a.X[idx, :rank], dtype=np.float64))  # cosine geometry: unit rows
    V = _unit(np.asarray(a.val_coords[:, :rank], dtype=np.float64))
    return idx, P, V


def pca_2d(P: np.ndarray, V: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top-2 principal axes of the pool rows; targets projected on the same axes (zeros pad r < 2)."""
    mu = P.mean(0)
    _, _, Vt = np.linalg.svd(P - mu, full_matrices=False)
    W = np.zeros((P.shape[1], 2))
    W[:, :min(2, Vt.shape[0])] = Vt[:2].T
    return (P - mu) @ W, (V - mu) @ W


def umap_key(run_dir: str | Path, rank: int, max_points: int = MAP_MAX_POINTS, seed: int = 0) -> str:
    """What a UMAP depends on: the stored projections and target directions (their recorded sha256, so
    a rerun with --overwrite makes a new key), the rank, the sample size and the seed."""
    stages = read_json(RunLayout(run_dir).manifest, {}).get("stages", {})
    cfg = run_config(run_dir)
    sub_stage = stages.get(f"val_grads/ckpt-{cfg.get('checkpoint', 1)}", {})
    parts = [stages.get("train_proj", {}).get("digests") or stages.get("train_proj", {}).get("finished_at"),
             sub_stage.get("digests") or sub_stage.get("finished_at"), rank, max_points, seed]
    return stable_hash(parts)[:10]


def umap_path(run_dir: str | Path, rank: int, max_points: int = MAP_MAX_POINTS, seed: int = 0) -> Path:
    return RunLayout(run_dir).umap(rank, umap_key(run_dir, rank, max_points, seed))


def umap_cached(run_dir: str | Path, rank: int, max_points: int = MAP_MAX_POINTS, seed: int = 0) -> bool:
    return _load_umap(run_dir, rank, max_points, seed) is not None


def _load_umap(run_dir, rank, max_points, seed) -> np.ndarray | None:
    p = umap_path(run_dir, rank, max_points, seed)
    if not p.exists():
        return None
    a = arrays(run_dir)
    expect = (len(map_sample(a.X.shape[0], max_points, seed)) + a.val_coords.shape[0], 2)
    try:
        Z = artefacts.load_npy(p, ndim=2)
    except artefacts.ArtefactError:
        return None
    return Z if Z.shape == expect else None  # damaged: recompute


def map_coords(run_dir: str | Path, rank: int, method: str = "pca", max_points: int = MAP_MAX_POINTS,
               seed: int = 0, compute: bool = True) -> MapData | None:
    """2-D coordinates of (a subsample of) the pool and of the target examples at rank r.

    PCA is instant. UMAP is cached in the run folder (umap_path); with compute=False a missing cache
    returns None instead of fitting (tens of seconds the first time in a process)."""
    idx, P, V = _map_inputs(run_dir, rank, max_points, seed)
    if method == "pca":
        zp, zv = pca_2d(P, V)
    elif method == "umap":
        Z = _load_umap(run_dir, rank, max_points, seed)
        if Z is None:
            if not compute:
                return None
            Z = _fit_umap(np.vstack([P, V]), seed)
            path = umap_path(run_dir, rank, max_points, seed)
            for old in Path(run_dir).glob(umap_pattern(rank)):  # maps of earlier results
                old.unlink(missing_ok=True)
            artefacts.save_npy(path, Z)
        zp, zv = Z[:len(P)], Z[len(P):]
    else:
        raise ValueError(f"unknown map method '{method}' (pca | umap)")
    t = target_frame(run_dir)
    targets = t[["id", "subtask", "prompt"]].reset_index(drop=True).assign(x=zv[:, 0], y=zv[:, 1])
    pool = pd.DataFrame({"row": idx, "x": zp[:, 0].astype(np.float32), "y": zp[:, 1].astype(np.float32)})
    return MapData(pool=pool, targets=targets,
                   method=method, rank=rank)


def map_frame(md: MapData, frame: pd.DataFrame, color_by: str, subtasks: list[str]) -> pd.DataFrame:
    """The map's pool points with what the hover and colouring need ('color' column)."""
    cols = [c for c in ["id", "score", "rank", "source", "skill", "kind", "selected", "prompt"] if c in frame]
    pts = md.pool.join(frame[cols], on="row")  # frame's index is the pool row
    if color_by == "score":
        pts["color"] = pts["score"]
    else:
        pts["color"] = group_column(frame, color_by, subtasks).to_numpy()[pts["row"].to_numpy()]
    return pts


def _fit_umap(M: np.ndarray, seed: int) -> np.ndarray:
    import umap  # lazy: a slow first import (numba), only when a UMAP is asked for
    n_neighbors = int(max(2, min(15, len(M) - 1)))
    return umap.UMAP(n_components=2, n_neighbors=n_neighbors, min_dist=0.1, random_state=seed,
                     init="random" if len(M) < 10 else "spectral").fit_transform(M).astype(np.float32)


# ----------------------------------------------------------------------------- runs and progress
