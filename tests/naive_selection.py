"""GIST's selection recomputed from a run folder's files alone, sharing no code with gist_core's scoring, for the
tests of the Side by side view (tests/viewer/test_selections.py, tests/app/test_side_by_side.py and its browser
test): the in-subspace cosine of each pool row's first r coordinates with each subtask's mean validation
coordinates, the max over subtasks, a stable argsort; the global top-k of a fraction of the pool."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from safetensors.numpy import load_file


def top_k_ids(run: Path, rank: int, budget: float | None = None) -> set[str]:
    """The ids of the run's GIST global top-k at `rank` (budget: the run's config's unless given)."""
    X = np.load(run / "train_proj.npy")[:, :rank].astype(np.float64)
    V = load_file(str(run / "checkpoints" / "ckpt-1" / "subspace.safetensors"))["val_coords"][:, :rank]
    sub = pd.read_parquet(run / "target.parquet")["subtask"]
    dirs = np.stack([V[(sub == s).to_numpy()].mean(0) for s in dict.fromkeys(sub)])
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    cos = (X / np.linalg.norm(X, axis=1, keepdims=True)) @ dirs.T
    ids = pd.read_parquet(run / "examples.parquet")["id"].to_numpy()
    budget = json.loads((run / "config.json").read_text())["budget"] if budget is None else budget
    k = max(1, round(budget * len(ids)))
    return set(ids[np.argsort(-cos.max(1), kind="stable")[:k]])


def jaccard(x: set, y: set) -> float:
    return len(x & y) / len(x | y)
