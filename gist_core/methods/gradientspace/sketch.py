"""Frequent Directions (Liberty 2013; Ghashami et al. 2016): a streaming rank-K sketch of the rows g_i ∈ R^D.

Why this and not scikit-learn's IncrementalPCA: gradients are directions about the origin, and IPCA centres
the data (a PCA, not an SVD of G); FD keeps an ℓ × D buffer (ℓ = 2K by default, so memory O(K·D)), needs no
batch ≥ K, and has a deterministic error bound that the tests check:

    0 ≼ GᵀG − BᵀB  and  ‖GᵀG − BᵀB‖₂ ≤ ‖G − G_k‖_F² / (ℓ − k)   for every k < ℓ.

It is exact (BᵀB = GᵀG) while the stream's rank stays below ℓ. This module never touches a path.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SketchState:
    """What a resumed stage needs: the buffer, its fill, the rows seen and the mass shrunk away."""
    buffer: np.ndarray      # (2ℓ, D) float64; rows [0, filled) are live
    filled: int
    rows_seen: int
    shrunk: float           # Σ δ: the squared mass removed by shrinking (the bound's left side, used)


class FrequentDirections:
    def __init__(self, dim: int, ell: int, state: SketchState | None = None):
        if ell < 1:
            raise ValueError(f"sketch size ℓ must be ≥ 1, got {ell}")
        self.dim, self.ell = dim, ell
        self.state = state or SketchState(np.zeros((2 * ell, dim)), 0, 0, 0.0)
        if self.state.buffer.shape != (2 * ell, dim):
            raise ValueError(f"sketch state has shape {self.state.buffer.shape}, expected {(2 * ell, dim)}")

    def update(self, rows: np.ndarray) -> None:
        """Add rows (n, D); the buffer of 2ℓ rows is shrunk back to ℓ whenever it fills."""
        rows = np.asarray(rows, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != self.dim:
            raise ValueError(f"rows must be (n, {self.dim}), got {rows.shape}")
        s = self.state
        for start in range(0, len(rows), self.ell):
            chunk = rows[start:start + self.ell]
            if s.filled + len(chunk) > 2 * self.ell:
                self._shrink()
            s.buffer[s.filled:s.filled + len(chunk)] = chunk
            s.filled += len(chunk)
            s.rows_seen += len(chunk)

    def _shrink(self) -> None:
        s = self.state
        _, sig, vt = np.linalg.svd(s.buffer[:s.filled], full_matrices=False)
        delta = sig[self.ell] ** 2 if len(sig) > self.ell else 0.0
        keep = np.sqrt(np.maximum(sig[:self.ell] ** 2 - delta, 0.0))
        s.buffer[:] = 0.0
        s.buffer[:len(keep)] = keep[:, None] * vt[:len(keep)]
        s.filled = self.ell
        s.shrunk += float(delta)

    def sketch(self) -> np.ndarray:
        """B (≤ ℓ, D) with BᵀB ≈ GᵀG (after a final shrink, so exactly ℓ rows at most)."""
        if self.state.filled > self.ell:
            self._shrink()
        return self.state.buffer[:self.state.filled].copy()

    def top(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The sketch's top-k right singular vectors (k, D) and singular values (k,)."""
        B = self.sketch()
        _, sig, vt = np.linalg.svd(B, full_matrices=False)
        k = min(k, len(sig))
        return vt[:k], sig[:k]


def principal_angles(U: np.ndarray, V: np.ndarray) -> np.ndarray:
    """Principal angles (radians) between the row spaces of U (k, D) and V (k', D)."""
    qu, _ = np.linalg.qr(np.asarray(U, np.float64).T)
    qv, _ = np.linalg.qr(np.asarray(V, np.float64).T)
    cos = np.linalg.svd(qu.T @ qv, compute_uv=False)
    return np.arccos(np.clip(cos, -1.0, 1.0))
