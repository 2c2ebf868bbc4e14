"""GIST's task subspace: the top singular directions of the validation-gradient matrix.

G (N_v x D) holds the raw validation gradients. With K = G G^T = U diag(sigma^2) U^T,
the right singular vectors are V_k = G^T U_k diag(1/sigma_k): D x k with orthonormal columns.
The Gram route costs O(N_v^2 D) and N_v x N_v memory instead of a D-sized SVD, and G is read
in column chunks so it can live in a memmap. Pure math: no paths here.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gist_core.errors import SubspaceError

ORTHO_TOL = 1e-3     # max |V^T V - I| accepted in float32
REL_EPS = 1e-6       # directions with sigma <= REL_EPS * sigma_max are numerically absent
VAL_COORDS_TOL = 1e-4  # val_coords_error above this: the stored target directions are not G V (stale or damaged)


@dataclass
class Subspace:
    basis: np.ndarray | None  # (D, R) float32, orthonormal columns, R = directions kept (None: not loaded)
    sigma: np.ndarray         # (N_v,) all singular values, descending (float64)
    val_coords: np.ndarray    # (N_v, R) = G V_R: the validation examples' coordinates, C-ordered
    ortho_error: float        # max |V^T V - I|
    basis_digest: str | None = None  # content hash of the basis: the projection store's identity
    stored_val_norms: np.ndarray | None = None  # (N_v,) |g_j| of each validation gradient (None: an older file)

    @property
    def val_norms(self) -> np.ndarray:
        """(N_v,) each validation gradient's whole norm; an older file without them: the norm of its stored
        coordinates, which is the same when the stored directions span every validation gradient (r_max >= N_v)."""
        if self.stored_val_norms is not None:
            return self.stored_val_norms
        return np.linalg.norm(np.asarray(self.val_coords, dtype=np.float64), axis=1)

    @property
    def explained(self) -> np.ndarray:
        """Cumulative explained variance sum_{i<=r} sigma_i^2 / sum sigma^2, r = 1..N_v."""
        s2 = self.sigma ** 2
        return np.cumsum(s2) / max(s2.sum(), 1e-300)

    @property
    def r_max(self) -> int:
        return self.val_coords.shape[1]


def gram(G: np.ndarray, chunk: int = 1 << 20) -> np.ndarray:
    """K = G G^T in float64, accumulated over column chunks (G may be a memmap)."""
    K = np.zeros((G.shape[0], G.shape[0]), dtype=np.float64)
    for s in range(0, G.shape[1], chunk):
        block = np.asarray(G[:, s:s + chunk], dtype=np.float64)
        K += block @ block.T
    return K


def fit_subspace(G: np.ndarray, r_max: int, chunk: int = 1 << 20) -> Subspace:
    """Top-min(r_max, numerical rank) right singular directions of G, with the orthonormality check."""
    if G.ndim != 2 or G.shape[0] < 1:
        raise SubspaceError("validation gradient matrix must be 2-D with at least one row")
    if not np.isfinite(np.asarray(G[:, : min(G.shape[1], chunk)])).all():
        raise SubspaceError("validation gradients contain NaN or inf")
    K = gram(G, chunk)
    lam, U = np.linalg.eigh(K)
    order = np.argsort(lam)[::-1]
    lam, U = lam[order], U[:, order]
    sigma = np.sqrt(np.clip(lam, 0.0, None))
    if sigma[0] <= 0:
        raise SubspaceError("all validation gradients are zero (is the adapter's B still at its zero init?)")
    k = int(min(r_max, np.sum(sigma > REL_EPS * sigma[0])))
    Uk = U[:, :k] / sigma[:k]                      # (N_v, k), so basis = G^T Uk
    basis = np.empty((G.shape[1], k), dtype=np.float32)
    for s in range(0, G.shape[1], chunk):
        basis[s:s + chunk] = (np.asarray(G[:, s:s + chunk], dtype=np.float64).T @ Uk).astype(np.float32)
    err = float(np.abs(basis.T.astype(np.float64) @ basis - np.eye(k)).max())
    if err > ORTHO_TOL:
        raise SubspaceError(f"subspace basis is not orthonormal (max |V^T V - I| = {err:.2e})")
    # G V through the stored float32 basis (= U_k diag(sigma_k) up to rounding), so the targets' coordinates
    # are exactly the pool's projection rule applied to the validation gradients. A fresh C-ordered array:
    # U[:, order] is Fortran-ordered, and safetensors 0.8 scrambles such arrays (artefacts.py).
    return Subspace(basis=basis, sigma=sigma, val_coords=project_rows(G, basis, chunk), ortho_error=err,
                    stored_val_norms=np.sqrt(np.clip(np.diag(K), 0.0, None)))


def project_rows(G: np.ndarray, basis: np.ndarray, chunk: int = 1 << 20) -> np.ndarray:
    """(N, R) float32 = G @ basis, accumulated in float64 over column chunks (G may be a memmap)."""
    out = np.zeros((G.shape[0], basis.shape[1]), dtype=np.float64)
    for s in range(0, G.shape[1], chunk):
        out += np.asarray(G[:, s:s + chunk], dtype=np.float64) @ np.asarray(basis[s:s + chunk], dtype=np.float64)
    return np.ascontiguousarray(out, dtype=np.float32)


def val_coords_error(G: np.ndarray, sub: Subspace, chunk: int = 1 << 20) -> float:
    """max |val_coords - G basis| / max |G basis|: ~1e-7 for a sound subspace, O(1) for the scrambled
    directions older run folders hold. Cheap (N_v x D x R), so it is checked whenever a subspace is reused."""
    if sub.basis is None or G.shape[0] != sub.val_coords.shape[0] or G.shape[1] != sub.basis.shape[0]:
        return float("inf")
    want = project_rows(G, sub.basis, chunk).astype(np.float64)
    return float(np.abs(sub.val_coords - want).max() / max(np.abs(want).max(), 1e-30))


def rank_for_variance(sigma: np.ndarray, tau: float) -> int:
    """Smallest r whose cumulative explained variance reaches tau (the paper's rank rule)."""
    if not 0 < tau <= 1:
        raise ValueError(f"tau must lie in (0, 1], got {tau}")
    s2 = np.asarray(sigma, dtype=np.float64) ** 2
    cum = np.cumsum(s2) / s2.sum()
    return int(np.searchsorted(cum, tau - 1e-12) + 1)
