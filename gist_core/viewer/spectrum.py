"""The spectrum: singular values of the validation gradients per warm-up checkpoint, and the rank advisor's curve."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gist_core.methods.gist import advisor
from gist_core.methods.gist import artefacts as gist_artefacts
from gist_core.methods.gist.subspace import rank_for_variance
from gist_core.store.layout import RunLayout
from gist_core.viewer.rundir import arrays_at, checkpoint_epochs, run_config, stamp


@dataclass
class Spectrum:
    epoch: int
    sigma: np.ndarray        # all singular values, descending
    explained: np.ndarray    # cumulative explained variance, r = 1..len(sigma)
    r95: int
    r99: int


def spectra(run_dir: str | Path) -> list[Spectrum]:
    return _spectra(str(run_dir), stamp(run_dir))


@functools.lru_cache(maxsize=8)
def _spectra(run_dir: str, _stamp: int) -> list[Spectrum]:
    out, lay = [], RunLayout(run_dir)
    for epoch in checkpoint_epochs(run_dir):
        path = lay.subspace(epoch)
        if not path.is_file():
            continue
        # sigma is 1-D, which safetensors never scrambled: spectra of older runs stay readable
        sigma = np.asarray(gist_artefacts.load_subspace(path, ("sigma",), allow_stale=True).sigma, dtype=np.float64)
        s2 = sigma ** 2
        out.append(Spectrum(epoch=epoch, sigma=sigma, explained=np.cumsum(s2) / max(s2.sum(), 1e-300),
                            r95=rank_for_variance(sigma, 0.95), r99=rank_for_variance(sigma, 0.99)))
    return sorted(out, key=lambda s: s.epoch)


def advisor_curve(run_dir: str | Path, kind: str | None = None):
    """The rank advisor's curve for the run's checkpoint and aggregation under score `kind` (the run's unless
    given), computed from the stored coordinates (cheap); None when no subtask has two validation examples."""
    return _advisor_curve(str(run_dir), stamp(run_dir), kind)


@functools.lru_cache(maxsize=4)
def _advisor_curve(run_dir: str, _stamp: int, kind: str | None):
    a, cfg = arrays_at(run_dir, _stamp), run_config(run_dir)
    normaware = (kind or a.kind) == "normaware" and a.norms is not None
    return advisor.advise(a.val_coords, a.X, a.groups, a.aggregation, seed=cfg.get("seed", 0),
                          norms=a.norms if normaware else None, val_norms=a.val_norms if normaware else None)


def rank_ranges(ranks: list[int]) -> str:
    """[1, 2, 3, 7, 9, 10] -> '1–3, 7, 9–10'."""
    parts, start = [], None
    for i, r in enumerate(ranks):
        if start is None:
            start = r
        if i + 1 == len(ranks) or ranks[i + 1] != r + 1:
            parts.append(f"{start}–{r}" if r != start else str(r))
            start = None
    return ", ".join(parts)


def spectrum_frame(specs: list[Spectrum]) -> pd.DataFrame:
    """Long format for plotting: (epoch, r, sigma, explained)."""
    return pd.concat([pd.DataFrame({"epoch": s.epoch, "r": np.arange(1, len(s.sigma) + 1), "sigma": s.sigma,
                                    "explained": s.explained}) for s in specs], ignore_index=True) \
        if specs else pd.DataFrame(columns=["epoch", "r", "sigma", "explained"])


# ----------------------------------------------------------------------------- 2-D map


def main_spectrum(specs: list[Spectrum], epoch: int) -> Spectrum | None:
    """The spectrum GIST scores with (checkpoint `epoch`), else the first one; None without any."""
    return next((sp for sp in specs if sp.epoch == epoch), specs[0] if specs else None)
