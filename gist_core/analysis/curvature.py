"""Numbers about curvature matrices (numpy only, no torch: the dashboard and test fixtures use them too).

Over a block's coordinates, A's first then B's: off-diagonal ratio ||M - diag(M)||_F / ||M||_F (also the
relative error of the best diagonal approximation), each block's share of ||M||_F^2, how well a given
diagonal (Adam's) fits at its best scale, top-r eigenspace overlaps (mean squared principal cosine),
and Theorem 3.2's Hessian of a bilinear LoRA product, analytically.
"""
from __future__ import annotations

import numpy as np


def offdiag_ratio(M: np.ndarray) -> float:
    """||M - diag(M)||_F / ||M||_F: 0 for a diagonal matrix; also the best diagonal fit's relative error."""
    total = np.linalg.norm(M)
    return float(np.linalg.norm(M - np.diag(np.diag(M))) / total) if total > 0 else 0.0


def block_numbers(M: np.ndarray, n_a: int) -> dict:
    """Off-diagonal ratio within A-A and B-B, and each block's share of ||M||_F^2 (A-B counted twice)."""
    aa, ab, bb = M[:n_a, :n_a], M[:n_a, n_a:], M[n_a:, n_a:]
    tot = float((M ** 2).sum()) or 1.0
    return {"offdiag_ratio": offdiag_ratio(M), "offdiag_ratio_AA": offdiag_ratio(aa), "offdiag_ratio_BB": offdiag_ratio(bb),
            "mass_AA": float((aa ** 2).sum() / tot), "mass_AB": float(2 * (ab ** 2).sum() / tot),
            "mass_BB": float((bb ** 2).sum() / tot)}


def diagonal_fit_error(M: np.ndarray, diag: np.ndarray) -> float:
    """min_c ||M - c diag(d)||_F / ||M||_F: how well a given diagonal (e.g. Adam's), at its best scale, fits M."""
    d = np.asarray(diag, dtype=np.float64)
    md = np.diag(M)
    c = float(md @ d / (d @ d)) if d @ d > 0 else 0.0
    R = M.copy()
    R[np.diag_indices_from(R)] -= c * d
    total = np.linalg.norm(M)
    return float(np.linalg.norm(R) / total) if total > 0 else 0.0


def top_eigvecs(M: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
    """(eigenvalues, vectors) of the r largest eigenvalues of a symmetric matrix."""
    w, V = np.linalg.eigh(M)
    order = np.argsort(w)[::-1][:r]
    return w[order], V[:, order]


def principal_cosines(U: np.ndarray, V: np.ndarray) -> np.ndarray:
    """Cosines of the principal angles between span(U) and span(V) (orthonormal columns)."""
    return np.clip(np.linalg.svd(U.T @ V, compute_uv=False), 0.0, 1.0)


def subspace_overlap(U: np.ndarray, V: np.ndarray) -> float:
    """||U^T V||_F^2 / r in [0, 1]: 1 = same subspace; a random pair in P dims gives about r / P."""
    return float((principal_cosines(U, V) ** 2).mean())


# ----------------------------------------------------------------------------- Theorem 3.2, analytically
def bilinear_hessian(hw_diag: np.ndarray, gw: np.ndarray, A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Hessian of L(W0 + B A) w.r.t. (vec A, vec B) for a loss whose weight-space Hessian is diagonal
    (hw_diag[i, j] on W_ij) and whose weight gradient at W is gw. Row-major vec, A (r x n) first, then
    B (m x r). The A-B block is sum_ij hw_ij B_ik A_k'j dW... plus delta_kk' gw_ij: the second term
    is Theorem 3.2's cross term, present even when the weight-space Hessian is diagonal."""
    m, r = B.shape
    n = A.shape[1]
    # dW/dA_kj = B[:, k] e_j^T ; dW/dB_ik = e_i A[k, :]
    JA = np.zeros((m * n, r * n))
    for k in range(r):
        for j in range(n):
            JA[j::n, k * n + j] = B[:, k]
    JB = np.zeros((m * n, m * r))
    for i in range(m):
        for k in range(r):
            JB[i * n:(i + 1) * n, i * r + k] = A[k, :]
    J = np.concatenate([JA, JB], axis=1)
    H = J.T @ np.diag(hw_diag.reshape(-1)) @ J
    for i in range(m):
        for k in range(r):
            for j in range(n):  # d2W_ij / dA_kj dB_ik = 1
                H[k * n + j, r * n + i * r + k] += gw[i, j]
                H[r * n + i * r + k, k * n + j] += gw[i, j]
    return H


def correlation_matrix(M: np.ndarray) -> np.ndarray:
    """M_ij / sqrt(|M_ii| |M_jj|); rows and columns of a zero diagonal entry are 0 (undefined).

    The diagonal is sign(M_ii): 1 for a positive semi-definite matrix; an indefinite Hessian can give
    -1 there and |values| above 1 elsewhere."""
    d = np.sqrt(np.abs(np.diag(M)).astype(np.float64))
    inv = np.divide(1.0, d, out=np.zeros_like(d), where=d > 0)
    return np.asarray(M, dtype=np.float64) * inv[:, None] * inv[None, :]


def curvature_numbers(H, GN, F, v, n_a: int, rank: int) -> dict:
    """Everything geometry.json reports for one checkpoint, from the block's matrices and Adam's v."""
    r = min(rank, F.shape[0])
    _, UF = top_eigvecs(F, r)
    wH, UH = top_eigvecs(H, r)
    _, UG = top_eigvecs(GN, r)
    return {"hessian": block_numbers(H, n_a), "gauss_newton": block_numbers(GN, n_a),
            "fisher": block_numbers(F, n_a),
            "adam_sqrt_v_fit_error": diagonal_fit_error(H, np.sqrt(v) + 1e-8),
            "adam_v_fit_error": diagonal_fit_error(H, v),
            "best_diagonal_fit_error": offdiag_ratio(H),
            "gn_share_of_hessian": float(np.linalg.norm(GN) / max(np.linalg.norm(H), 1e-30)),
            "rank": r, "overlap_fisher_hessian": subspace_overlap(UF, UH),
            "overlap_fisher_gauss_newton": subspace_overlap(UF, UG),
            "principal_cosines_fisher_hessian": principal_cosines(UF, UH).tolist(),
            "overlap_random_reference": r / H.shape[0], "hessian_top_eigenvalues": wH.tolist(),
            "hessian_negative_mass": negative_mass(H)}


def negative_mass(H) -> float:
    """Share of the Hessian's |eigenvalue| mass that is negative (the part Gauss-Newton leaves out)."""
    w = np.linalg.eigvalsh(H)
    return float(np.abs(w[w < 0]).sum() / max(np.abs(w).sum(), 1e-30))
