"""What the Layers page and the notebook read from `gist-lab train` folders (GAST): the ablation table, the
layer × example selection frequencies, the per-layer cosines to the support gradient and the loss curves."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from gist_core.errors import StoreError
from gist_core.methods.gast.artefacts import is_train_folder, load_ablation_report, load_selection, load_train_report
from gist_core.store.layout import TrainLayout
from gist_core.viewer.rundir import folders_under

METHOD_LABELS = {"gast": "GAST (softmax sampling)", "topk": "top-K", "random": "random K", "lora": "plain LoRA"}


def train_folders(root: Path) -> list[str]:
    """Names of the folders under `root` that `gist-lab train` wrote (a run or an ablation)."""
    return folders_under(root, is_train_folder)


def load_ablation(folder: Path) -> dict | None:
    try:
        return load_ablation_report(folder) if TrainLayout(folder).ablation_report.exists() else None
    except StoreError:
        return None


def load_train(folder: Path) -> dict | None:
    try:
        return load_train_report(folder) if TrainLayout(folder).report.exists() else None
    except StoreError:
        return None


def label(method: str, implementation: str) -> str:
    return f"{METHOD_LABELS.get(method, method)} · {implementation}"


def ablation_frame(rep: dict) -> pd.DataFrame:
    rows = []
    for v in rep["table"].values():
        row = {"run": label(v["method"], v["implementation"]), "test loss": v["test_loss"], "± loss": v["test_loss_std"],
               "exact match": v["exact_match"], "± EM": v["exact_match_std"], "ms / step": v["step_ms_median"],
               "held MB / step": v["held_bytes_per_step"] / 2**20,
               "peak RSS MB": _mb(v.get("cpu_peak_rss_bytes")), "training s": v["train_wall_s"]}
        row.update({f"loss · {s}": x["loss"] for s, x in v["per_subtask"].items()})
        rows.append(row)
    return pd.DataFrame(rows)


def _mb(n: int | None) -> float | None:
    return None if n is None else n / 2**20


def per_subtask_frame(rep: dict, metric: str = "loss") -> pd.DataFrame:
    return pd.DataFrame({label(v["method"], v["implementation"]): {s: x[metric] for s, x in v["per_subtask"].items()}
                         for v in rep["table"].values()})


def frequency_frame(folder: Path, rep: dict, sort_by: str = "skill") -> pd.DataFrame:
    """Layers × training examples: the share of an example's batches in which the layer selected it."""
    arrays, layers = load_selection(folder)
    freq = arrays["selected"] / np.maximum(arrays["seen"][None], 1)
    cols = pd.MultiIndex.from_arrays([rep["skills"], rep["kinds"], np.arange(freq.shape[1])],
                                     names=["skill", "kind", "example"])
    out = pd.DataFrame(freq, index=layers, columns=cols)
    out = out.loc[:, arrays["seen"] > 0]
    if sort_by == "frequency":
        return out.iloc[:, np.argsort(-out.mean(0).to_numpy(), kind="stable")]
    keys = [sort_by, "example"] if sort_by in ("skill", "kind") else ["example"]
    return out.sort_index(axis=1, level=keys, sort_remaining=False)


def frequency_by(frame: pd.DataFrame, level: str) -> pd.DataFrame:
    """Mean selection frequency per layer and skill (or kind)."""
    return frame.T.groupby(level=level).mean().T


def cosine_frame(folder: Path) -> pd.DataFrame:
    """Long frame: layer, step, cosine of every (step, batch example) to the support gradient."""
    arrays, layers = load_selection(folder)
    cos = arrays["cosines"]
    if cos.size == 0:
        return pd.DataFrame(columns=["layer", "step", "cosine"])
    S, B, L = cos.shape
    return pd.DataFrame({"layer": np.tile(layers, S * B), "step": np.repeat(np.arange(S), B * L),
                         "cosine": cos.reshape(-1)}).dropna()


def loss_curves(folder: Path, rep: dict, seed: int = 0) -> pd.DataFrame:
    """Step × run: the training loss of every run of the ablation (one seed)."""
    data = {}
    for v in rep["table"].values():
        member = next((m for m in v["members"] if m.endswith(f"-s{seed}")), None)
        r = load_train(folder / member) if member else None
        if r:
            data[label(v["method"], v["implementation"])] = pd.Series(r["loss_curve"])
    return pd.DataFrame(data)
