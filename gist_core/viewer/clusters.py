"""What the Clusters page shows, read from RUN/clusters/ (written by `gist-lab cluster`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from gist_core.errors import StoreError
from gist_core.store.artefacts import load_npy
from gist_core.store.layout import RunLayout
from gist_core.store.reports import read_report, readable_report

METHOD_LABELS = {"gradientspace": "GradientSpace (gradient sketch, reconstruction)",
                 "elrea": "ELREA-style (instruction-token gradients, random projection, BIRCH)",
                 "embedding": "embedding (base-model mean-pooled hidden states, k-means)", "random": "random"}


def load_clusters(run_dir: Path) -> dict | None:
    try:
        return readable_report(read_report(RunLayout(run_dir).clusters_report, "clusters"), "clusters")
    except StoreError:  # an unreadable report shows as absent, like the other reports
        return None


def methods(rep: dict) -> list[str]:
    """The report's methods, GradientSpace first (JSON reports are written with sorted keys)."""
    return [m for m in METHOD_LABELS if m in rep["table"]] + sorted(set(rep["table"]) - set(METHOD_LABELS))


def table_frame(rep: dict) -> pd.DataFrame:
    rows = [{"method": METHOD_LABELS.get(m, m), "ARI": r["ari"], "NMI": r["nmi"], "purity": r["purity"],
             "clusters": r["n_clusters"], "smallest": r["size_min"], "largest": r["size_max"],
             "within-cluster variance / total": r["within_var_coords"]} for m, r in
            ((m, rep["table"][m]) for m in methods(rep))]
    return pd.DataFrame(rows)


def composition_frame(rep: dict, method: str) -> pd.DataFrame:
    """cluster × skill counts, clusters ordered by their largest skill (a block diagonal when clusters are skills)."""
    M = np.asarray(rep["composition"][method])
    order = sorted(range(len(M)), key=lambda c: (int(M[c].argmax()), -int(M[c].max())))
    return pd.DataFrame(M[order], index=[f"c{c}" for c in order], columns=rep["skills"])


def cluster_members(run_dir: Path, method: str, frame: pd.DataFrame | None) -> pd.DataFrame:
    """The clustered pool rows with their cluster, joined with the run's example frame (row-indexed) when there is one."""
    lay = RunLayout(run_dir)
    rows = load_npy(lay.clusters_array("rows"), np.int64, ndim=1)
    labels = load_npy(lay.clusters_array(f"labels-{method}"), np.int64, shape=(len(rows),))
    out = pd.DataFrame({"row": rows, "cluster": labels})
    if frame is not None:
        keep = [c for c in ("skill", "prompt", "response") if c in frame.columns]
        out = out.join(frame[keep], on="row")
    return out
