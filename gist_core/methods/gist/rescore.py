"""Scores at another rank (or score kind) from a finished run's stored projections: no gradients recomputed."""
from __future__ import annotations

import json
import os

import pandas as pd

from gist_core.config import RunConfig
from gist_core.data.examples import groups_from_labels
from gist_core.methods import scoring
from gist_core.methods.gist.artefacts import load_projections, load_subspace
from gist_core.store.layout import RunLayout


def rescore(run_dir: str | os.PathLike, rank: int, aggregation: str | None = None,
            kind: str | None = None) -> scoring.Scores:
    """Scores at another rank from the stored projections: no gradients recomputed."""
    paths = RunLayout(run_dir)
    cfg = RunConfig.from_json(json.loads(paths.config.read_text()))
    sub = load_subspace(paths.subspace(cfg.checkpoint),
                        ("sigma", "val_coords"))
    target = pd.read_parquet(paths.target)
    groups = groups_from_labels(target["id"], target["subtask"])
    stored = load_projections(paths.train_proj)
    if kind is None and stored.norms is None and cfg.score == "normaware":
        kind = "subspace"  # made before |g| was stored: the in-subspace score is all it holds (summary says which)
    return scoring.gist_scores(stored.coords, sub.val_coords, groups, rank, aggregation or cfg.aggregation,
                               kind or cfg.score, stored.norms)
