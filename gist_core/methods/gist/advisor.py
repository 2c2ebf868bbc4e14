"""The rank advisor: which rank r lets GIST find target examples it has not seen. Pure math: no paths.

The GIST paper fixes r (or takes the smallest r reaching 95 % explained variance) and names choosing it
an open problem. The advisor asks the data. Leave one validation example j of subtask t out; fit the
subspace on the other validation examples (plain SVD, as GIST does); at each r, score j and a reference
sample of the pool against t's direction built from t's other examples (the run's aggregation rule);
record the share of the pool that j outscores (its held-out percentile). A rank whose subspace
generalises puts unseen target examples at the top of the pool; too small an r cannot tell the
subtasks from the shared direction, too large an r fits individual examples' noise.

Everything runs inside the stored coordinates: the held-out fold's subspace lies in the span of the
validation gradients, and the pool rows' coordinates in the full basis V are their projection onto
that span, so rotating them by the fold's right singular vectors W gives their fold coordinates
exactly (X V-coords @ W). No gradient is recomputed. Subtasks with one example have no fold. When the run
stores fewer directions than it has validation examples (r_max < N_v), the folds are refitted inside those
r_max directions: exact for the stored coordinates, an approximation of refitting in gradient space.

curve[r-1] = mean over held-out examples of their percentile at rank r; suggested r = its argmax
(the smallest such r).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gist_core.config import RunConfig
from gist_core.errors import ConfigError
from gist_core.methods.gist.artefacts import Projections
from gist_core.methods.gist.subspace import Subspace, rank_for_variance

REF_ROWS = 4096  # pool rows the held-out example is ranked against (a seeded sample; all when fewer)


@dataclass
class AdvisorCurve:
    ranks: np.ndarray                  # (R',) 1..R'
    curve: np.ndarray                  # (R',) mean held-out percentile at each rank
    per_example: np.ndarray            # (F, R') percentile of each held-out example (F folds)
    held_out: list[int]                # validation row of each fold
    suggested: int                     # argmax of the curve (smallest r on ties)
    n_ref: int                         # pool rows ranked against
    aggregation: str
    notes: list[str] = field(default_factory=list)

    @property
    def standard_error(self) -> np.ndarray:
        """(R',) standard error of the curve over the held-out examples."""
        F = len(self.per_example)
        return self.per_example.std(0, ddof=1) / np.sqrt(F) if F > 1 else np.zeros_like(self.curve)

    @property
    def within_one_se(self) -> list[int]:
        """Ranks whose curve lies within one standard error of the best: what the data cannot tell apart."""
        best = int(np.argmax(self.curve))
        return [int(r) for r, v in zip(self.ranks, self.curve) if v >= self.curve[best] - self.standard_error[best]]

    def to_json(self) -> dict:
        return {"ranks": self.ranks.tolist(), "curve": [float(v) for v in self.curve],
                "standard_error": [float(v) for v in self.standard_error], "within_one_se": self.within_one_se,
                "per_example": np.round(self.per_example, 6).tolist(), "held_out": self.held_out,
                "suggested": int(self.suggested), "n_ref": int(self.n_ref), "aggregation": self.aggregation,
                "notes": self.notes}


def reference_rows(n: int, max_rows: int = REF_ROWS, seed: int = 0) -> np.ndarray:
    """Sorted pool rows to rank against: all of them, or a seeded sample of max_rows."""
    if n <= max_rows:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_rows, replace=False))


def fold_basis(Y_rest: np.ndarray) -> np.ndarray:
    """(R, R') right singular vectors of the remaining validation coordinates, by descending sigma."""
    _, s, Vt = np.linalg.svd(Y_rest, full_matrices=False)
    keep = s > 1e-6 * max(s[0], 1e-300)
    return Vt[keep].T


def _cumulative_cosines(Z: np.ndarray, c: np.ndarray, norms: np.ndarray | None = None) -> np.ndarray:
    """(N, R') cosine of every row's first r coordinates with c's first r, for every r at once; with `norms`
    (N,) each row is divided by its whole gradient's norm instead of its first r coordinates' (norm-aware)."""
    dots = np.cumsum(Z * c, axis=1)
    rows = np.sqrt(np.cumsum(Z * Z, axis=1)) if norms is None else np.asarray(norms, dtype=np.float64)[:, None]
    denom = rows * np.sqrt(np.cumsum(c * c))
    return dots / np.where(denom > 0, denom, 1.0)


def fold_percentiles(Y: np.ndarray, X_ref: np.ndarray, members: list[int], j: int, aggregation: str,
                     ref_norms: np.ndarray | None = None, val_norms: np.ndarray | None = None) -> np.ndarray:
    """(R',) share of the reference pool rows that held-out validation row j outscores at each rank; with
    `ref_norms` and `val_norms` (whole gradient norms) under the norm-aware score."""
    rest = [i for i in range(len(Y)) if i != j]
    W = fold_basis(Y[rest])
    Z, Yw = X_ref @ W, Y @ W
    others = [i for i in members if i != j]
    if aggregation == "subtask_mean":
        targets = [Yw[others].mean(0)]
    elif aggregation == "example_max":
        targets = [Yw[i] for i in others]
    else:
        raise ValueError(f"unknown aggregation '{aggregation}'")
    mine_norm = None if val_norms is None else np.asarray(val_norms[j:j + 1])
    pool = np.max([_cumulative_cosines(Z, c, ref_norms) for c in targets], axis=0)     # (N, R')
    mine = np.max([_cumulative_cosines(Yw[j:j + 1], c, mine_norm)[0] for c in targets], axis=0)  # (R',)
    return (pool < mine).mean(0)


def rank_curve(val_coords: np.ndarray, X_ref: np.ndarray, groups: dict[str, list[int]],
               aggregation: str = "subtask_mean", ref_norms: np.ndarray | None = None,
               val_norms: np.ndarray | None = None) -> AdvisorCurve:
    """The advisor's curve over r = 1..R' (R' = the smallest fold's rank), from stored coordinates; with the
    whole gradient norms of the reference rows and of the validation examples, for the norm-aware score."""
    Y = np.asarray(val_coords, dtype=np.float64)
    X = np.asarray(X_ref, dtype=np.float64)
    folds = [(j, idx) for idx in groups.values() if len(idx) >= 2 for j in idx]
    notes = []
    singles = [name for name, idx in groups.items() if len(idx) < 2]
    if singles:
        notes.append(f"{len(singles)} subtask(s) with one validation example have no held-out fold")
    if not folds:
        raise ValueError("the rank advisor needs a subtask with at least two validation examples")
    rows = [fold_percentiles(Y, X, idx, j, aggregation, ref_norms, val_norms) for j, idx in folds]
    width = min(len(r) for r in rows)
    P = np.stack([r[:width] for r in rows])
    curve = P.mean(0)
    return AdvisorCurve(ranks=np.arange(1, width + 1), curve=curve, per_example=P, held_out=[j for j, _ in folds],
                        suggested=int(np.argmax(curve) + 1), n_ref=len(X), aggregation=aggregation, notes=notes)


def advise(val_coords: np.ndarray, X: np.ndarray, groups: dict[str, list[int]], aggregation: str,
           seed: int = 0, max_rows: int = REF_ROWS, norms: np.ndarray | None = None,
           val_norms: np.ndarray | None = None) -> AdvisorCurve | None:
    """The curve against a seeded sample of the pool's stored coordinates (norm-aware when the pool's and the
    validation examples' whole norms are given); None without any fold."""
    if not any(len(idx) >= 2 for idx in groups.values()):
        return None
    ref = reference_rows(len(X), max_rows, seed)
    ref_norms = None if norms is None or val_norms is None else np.asarray(norms[ref])
    return rank_curve(val_coords, np.asarray(X[ref]), groups, aggregation, ref_norms,
                      None if ref_norms is None else val_norms)


def choose_rank(cfg: RunConfig, sub: Subspace, advice: AdvisorCurve | None = None) -> int:
    """The explicit rank, else the rank rule's: tau (the paper), the advisor's suggestion, or all stored
    directions. Without an advisor curve (no subtask has two validation examples) the advisor rule uses tau."""
    if cfg.rank is not None:
        if cfg.rank > sub.r_max:
            raise ConfigError(f"rank {cfg.rank} exceeds the {sub.r_max} directions the {len(sub.sigma)} "
                              f"validation examples span; use --rank {sub.r_max} or fewer")
        return cfg.rank
    if cfg.rank_rule == "full":
        return sub.r_max
    if cfg.rank_rule == "advisor" and advice is not None:
        return min(advice.suggested, sub.r_max)
    return min(rank_for_variance(sub.sigma, cfg.tau), sub.r_max)


def rank_advice(cfg: RunConfig, sub: Subspace, stored: Projections,
                groups: dict[str, list[int]]) -> AdvisorCurve | None:
    """The rank advisor's curve on the stored coordinates, under the run's score (None when no subtask has two
    examples)."""
    normaware = cfg.score == "normaware" and stored.norms is not None
    return advise(sub.val_coords, stored.coords, groups, cfg.aggregation, seed=cfg.seed,
                  norms=stored.norms if normaware else None, val_norms=sub.val_norms if normaware else None)
