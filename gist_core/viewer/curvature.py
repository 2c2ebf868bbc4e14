"""Curvature (gist-lab geometry): the geometry report, one LoRA block's matrices ready for a heatmap, diagonals,
and the intrinsic dimension per warm-up epoch."""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gist_core.analysis.curvature import correlation_matrix
from gist_core.runner import launcher
from gist_core.store import artefacts, lock
from gist_core.store.layout import RunLayout
from gist_core.store.reports import readable_report
from gist_core.viewer.rundir import checkpoint_epochs, file_stamp, json_number, read_json
from gist_core.viewer.spectrum import spectra

MATRICES = {"hessian": "Hessian", "gauss_newton": "Gauss–Newton", "fisher": "empirical Fisher"}
GEOMETRY_COLUMNS = ("epoch", "r95", "r99", "offdiag_hessian", "offdiag_gauss_newton", "offdiag_fisher",
                    "mass_AB_hessian", "adam_fit_error", "best_diagonal_error", "overlap_fisher_hessian",
                    "overlap_random", "wall_s")


def geometry_path(run_dir: str | Path) -> Path:
    return RunLayout(run_dir).geometry_report


def has_geometry(run_dir: str | Path) -> bool:
    return geometry_path(run_dir).is_file()


def geometry_stamp(run_dir: str | Path) -> int:
    """Cache key part: geometry.json's mtime (rewritten after each checkpoint)."""
    return file_stamp(geometry_path(run_dir))


def load_geometry(run_dir: str | Path) -> dict | None:
    """geometry.json, or None when it is missing, unreadable or has no checkpoint entries.

    Only checkpoint entries that are objects under an integer epoch are kept, so consumers can rely
    on `checkpoints[str(epoch)]` being a dict."""
    rep = readable_report(read_json(geometry_path(run_dir)), "geometry")
    if not isinstance(rep, dict) or not isinstance(rep.get("checkpoints"), dict):
        return None
    cks = {k: v for k, v in rep["checkpoints"].items() if isinstance(v, dict) and str(k).isdigit()}
    spectrum = [s for s in rep.get("spectrum") or [] if isinstance(s, dict) and "epoch" in s]
    return {**rep, "checkpoints": cks, "spectrum": spectrum} if cks else None


def geometry_epochs(rep: dict) -> list[int]:
    """The warm-up epochs measured, ascending."""
    return sorted(int(k) for k in rep["checkpoints"])


def geometry_matrix_path(run_dir: str | Path, epoch: int) -> Path:
    return RunLayout(run_dir).geometry_matrices(epoch)


def warmup_epochs(run_dir: str | Path) -> list[int]:
    """Warm-up epochs with a checkpoint folder (what `gist-lab geometry` measures), ascending."""
    return checkpoint_epochs(run_dir)


def geometry_job(run_dir: str | Path) -> launcher.LaunchState | None:
    """The launch state when the folder's last dashboard launch was `gist-lab geometry`, else None."""
    ls = launcher.state(run_dir)
    return ls if ls.launched and "geometry" in (ls.cmd or []) else None


def geometry_running(run_dir: str | Path) -> bool:
    """`gist-lab geometry` is going in this folder: launched from the dashboard and alive, or (started from a
    terminal) the live writer holding the folder's lock is a geometry command."""
    job = geometry_job(run_dir)
    if job is not None and job.alive:
        return True
    writer = lock.holder(run_dir)
    return writer is not None and "geometry" in (writer.get("cmd") or [])


def curvature_matrices(run_dir: str | Path, epoch: int) -> dict:
    """The arrays of epoch E's geometry matrices file (geometry_matrix_path): hessian, gauss_newton, fisher (P x P),
    adam_v (P), idx_a, idx_b, plus its metadata (module, n_a, shape_a, shape_b); {} when the file is missing.
    Cached per (file, mtime): treat the arrays as read-only."""
    p = geometry_matrix_path(run_dir, epoch)
    return _curvature_matrices(str(p), p.stat().st_mtime_ns) if p.exists() else {}


@functools.lru_cache(maxsize=2)
def _curvature_matrices(path: str, _stamp: int) -> dict:
    # older files are sound as they are (square symmetric matrices, 1-D vectors): runner.geometry.load_matrices
    out, meta = artefacts.load_tensors(path, allow_stale=True)
    n_a = int(meta["n_a"]) if "n_a" in meta else len(out.get("idx_a", ()))
    shapes = {k: json.loads(meta[k]) if k in meta else None for k in ("shape_a", "shape_b")}
    return {**out, "n_a": n_a, "module": meta.get("module", ""), **shapes}


@dataclass
class DisplayMatrix:
    z: np.ndarray          # (k, k): cell means of |M| (kind "abs") or of the correlation (kind "corr")
    edges: np.ndarray      # (k + 1,) cell edges in coordinate units: cell i covers coordinates edges[i]..edges[i+1]-1
    boundary: int          # display cells that belong to A (A's cells come first); the A/B line is at cell boundary
    n_a: int               # coordinates in A
    P: int                 # coordinates in all
    kind: str

    @property
    def downsampled(self) -> bool:
        return len(self.z) < self.P


def _cell_edges(n: int, k: int) -> np.ndarray:
    return np.unique(np.round(np.linspace(0, n, k + 1)).astype(np.int64))


def display_matrix(M: np.ndarray, n_a: int | None = None, max_side: int = 256, kind: str = "abs") -> DisplayMatrix:
    """A matrix ready for a heatmap: |M| or its correlation matrix, block-averaged to at most
    max_side x max_side cells when P is larger. A and B get cells in proportion to their sizes (at
    least one each) and no cell straddles the A/B boundary, so the boundary stays exact."""
    if kind not in ("abs", "corr"):
        raise ValueError(f"kind must be 'abs' or 'corr', got {kind!r}")
    M = np.asarray(M)
    P = M.shape[0]
    n_a = P if n_a is None else int(min(max(n_a, 0), P))
    n_b = P - n_a
    X = np.abs(M.astype(np.float64)) if kind == "abs" else correlation_matrix(M)
    if P <= max_side:
        return DisplayMatrix(z=X, edges=np.arange(P + 1), boundary=n_a, n_a=n_a, P=P, kind=kind)
    max_side = max(max_side, 2)
    ka = int(round(max_side * n_a / P))
    if n_a and n_b:
        ka = min(max(ka, 1), max_side - 1)
    ka = min(ka, n_a)
    kb = min(max_side - ka, n_b)
    edges = np.concatenate([_cell_edges(n_a, ka)[:-1] if ka else np.zeros(0, np.int64), n_a + _cell_edges(n_b, kb)]) \
        if kb else _cell_edges(n_a, ka)
    starts, sizes = edges[:-1], np.diff(edges)
    Z = np.add.reduceat(np.add.reduceat(X, starts, axis=0), starts, axis=1) / np.outer(sizes, sizes)
    return DisplayMatrix(z=Z, edges=edges, boundary=int(np.searchsorted(edges, n_a)), n_a=n_a, P=P, kind=kind)


def log_color(z: np.ndarray, decades: float = 6.0) -> tuple[np.ndarray, float, float]:
    """(log10 z, floor, top) for a log colour scale: values below `decades` under the maximum, and zeros,
    are drawn at the floor."""
    top = float(np.nanmax(z)) if np.size(z) and np.nanmax(z) > 0 else 1.0
    floor = np.log10(top) - decades
    with np.errstate(divide="ignore"):
        lz = np.log10(np.where(z > 0, z, 0.0))
    return np.maximum(lz, floor), floor, float(np.log10(top))


def diagonal_frame(mats: dict) -> pd.DataFrame:
    """Per coordinate: block (A/B), diag(H) (the best diagonal's entries), Adam's sqrt(v), and c*sqrt(v) at
    the scale c that fits diag(H) best (the scale adam_sqrt_v_fit_error uses)."""
    h = np.diag(mats["hessian"]).astype(np.float64)
    s = np.sqrt(np.asarray(mats["adam_v"], dtype=np.float64)) + 1e-8
    c = float(h @ s / (s @ s)) if s @ s > 0 else 0.0
    n_a = int(mats["n_a"])
    return pd.DataFrame({"coord": np.arange(len(h)), "block": np.where(np.arange(len(h)) < n_a, "A", "B"),
                         "diag_H": h, "adam_sqrt_v": s, "adam_scaled": c * s})



def matrix_display(run_dir: str | Path, epoch: int, matrix: str, kind: str = "abs",
                   max_side: int = 256) -> DisplayMatrix | None:
    """Epoch E's `matrix` (hessian, gauss_newton, fisher) ready for a heatmap (display_matrix); None when its
    matrices file is missing."""
    mats = curvature_matrices(run_dir, epoch)
    return display_matrix(mats[matrix], mats["n_a"], max_side=max_side, kind=kind) if mats else None


def matrix_diagonals(run_dir: str | Path, epoch: int) -> pd.DataFrame | None:
    """Epoch E's diagonals (diagonal_frame); None when its matrices file is missing."""
    mats = curvature_matrices(run_dir, epoch)
    return diagonal_frame(mats) if mats else None

def spectrum_table(src) -> pd.DataFrame:
    """r95 / r99 (intrinsic dimension) of the validation-gradient spectrum per warm-up epoch.

    `src`: a geometry report (its "spectrum"), a list of Spectrum, or a run directory (its spectra)."""
    cols = ["epoch", "r95", "r99", "N_v", "sigma_1"]
    if isinstance(src, dict):
        rows = [{"epoch": int(s["epoch"]), "r95": s.get("r95"), "r99": s.get("r99"), "N_v": s.get("n"),
                 "sigma_1": json_number(s.get("sigma_1"))} for s in src.get("spectrum") or []]
    else:
        specs = spectra(src) if isinstance(src, (str, Path)) else src
        rows = [{"epoch": s.epoch, "r95": s.r95, "r99": s.r99, "N_v": len(s.sigma),
                 "sigma_1": float(s.sigma[0]) if len(s.sigma) else float("nan")} for s in specs]
    return pd.DataFrame(rows, columns=cols).sort_values("epoch").reset_index(drop=True)


def geometry_table(rep: dict) -> pd.DataFrame:
    """One row per measured checkpoint: intrinsic dimension (r95, r99), the off-diagonal ratio of each
    matrix, the Hessian's A-B mass, the diagonal fits, the F_hat / H overlap and its random reference.
    NaN where a value is absent."""
    spec = {int(s["epoch"]): s for s in rep.get("spectrum") or []}
    rows = []
    for e in geometry_epochs(rep):
        c, s = rep["checkpoints"][str(e)], spec.get(e, {})

        def blk(m, key, c=c):
            return json_number((c.get(m) or {}).get(key))
        rows.append({"epoch": e, "r95": json_number(s.get("r95")), "r99": json_number(s.get("r99")),
                     "offdiag_hessian": blk("hessian", "offdiag_ratio"),
                     "offdiag_gauss_newton": blk("gauss_newton", "offdiag_ratio"),
                     "offdiag_fisher": blk("fisher", "offdiag_ratio"), "mass_AB_hessian": blk("hessian", "mass_AB"),
                     "adam_fit_error": json_number(c.get("adam_sqrt_v_fit_error")),
                     "best_diagonal_error": json_number(c.get("best_diagonal_fit_error")),
                     "overlap_fisher_hessian": json_number(c.get("overlap_fisher_hessian")),
                     "overlap_random": json_number(c.get("overlap_random_reference")), "wall_s": json_number(c.get("wall_s"))})
    return pd.DataFrame(rows, columns=list(GEOMETRY_COLUMNS))
