"""What a `gist-lab train` folder holds, read back: the train and ablation reports and the per-layer selection
arrays. Light (no torch): the Layers page and the notebook read it; gist_core.methods.gast.stages writes it."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from gist_core.store.artefacts import load_tensors
from gist_core.store.layout import TrainLayout
from gist_core.store.reports import check_report, read_report


def is_train_folder(folder: Path) -> bool:
    lay = TrainLayout(folder)
    return lay.report.exists() or lay.ablation_report.exists()


def load_train_report(folder) -> dict:
    return check_report(read_report(TrainLayout(folder).report, "train"), "train", str(TrainLayout(folder).report))


def load_ablation_report(folder) -> dict:
    lay = TrainLayout(folder)
    return check_report(read_report(lay.ablation_report, "ablation"), "ablation", str(lay.ablation_report))


def load_selection(folder) -> tuple[dict[str, np.ndarray], list[str]]:
    arrays, meta = load_tensors(TrainLayout(folder).selection)
    return arrays, json.loads(meta["layers"])
