"""Stage 1 of Iprox: influence-preserving SVD (IPSVD) of one linear layer, and its ablations.

Per-layer influence factorises as <delta(z), delta(z')> * <h(z), h(z')> (delta: gradient at the layer's
output, h: its input). Under K-FAC, the weight Ŵ that changes influence least among rank-r matrices solves

    min over rank-r Ŵ of || C_delta^1/2 (W - Ŵ) C_h^1/2 ||_F,   C_h = E[h hᵀ] + λI,  C_delta = E[delta deltaᵀ] + λI,

which whitening reduces to one truncated SVD (Eckart-Young): Ŵ = C_delta^-1/2 [C_delta^1/2 W C_h^1/2]_r C_h^-1/2.
From probe columns H (n × N) and Δ (m × N) the covariances are never formed: thin SVDs of H and Δ give their
eigenvectors and eigenvalues S²/N, and the core is at most N × N (the reference's "skinny" solve). When the probes
do not span a layer's input or output space, the part of W outside the probe spans is dropped (the reference
does the same).

Everything is computed in float64 (the reference uses float32; small matrices, so exactness is cheap) and
the factors come back C-contiguous in the weight's dtype. No paths here.
"""
from __future__ import annotations

import math

import torch

RIDGE = 1e-3  # the reference's ridge on both covariances


def estimate_rank(m: int, n: int, rho: float, multiple: int) -> int | None:
    """The factor rank for an m × n layer at sparsity rho (share of its parameters removed), rounded up to a
    multiple of `multiple`; None when the layer should stay dense (the rank reaches min(m, n), or the factors
    would not be smaller than the dense weight: with a large multiple the reference's rule alone can grow a
    small layer)."""
    r = round((1.0 - rho) * m * n / (m + n))
    r = min(max(r, 1), min(m, n))
    r = math.ceil(r / multiple) * multiple
    if r >= min(m, n) or r * (m + n) >= m * n:
        return None
    return r


def _thin(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    U, S, _ = torch.linalg.svd(X, full_matrices=False)
    return U, S.clamp_min(1e-6)


def ipsvd_factors(W: torch.Tensor, H: torch.Tensor, D: torch.Tensor, rank: int,
                  ridge: float = RIDGE) -> tuple[torch.Tensor, torch.Tensor]:
    """A (m × r), B (r × n) with A·B the influence-preserving rank-r approximation of W (m × n), from probe
    inputs H (n × N) and output gradients D (m × N)."""
    dtype = W.dtype
    W, H, D = (x.detach().to(torch.float64) for x in (W, H, D))
    N = H.shape[1]
    if N == 0:
        raise ValueError("IPSVD needs at least one probe column")
    if not torch.any(D != 0):  # the reference's guard: a layer no probe loss reached
        D = D + 1e-8 * torch.randn(D.shape, dtype=D.dtype, generator=torch.Generator().manual_seed(0))
    U_h, S_h = _thin(H)
    U_d, S_d = _thin(D)
    d_h = torch.sqrt(S_h**2 / N + ridge)
    d_d = torch.sqrt(S_d**2 / N + ridge)
    core = (d_d[:, None] * (U_d.T @ W @ U_h)) * d_h[None, :]
    P, S, Qt = torch.linalg.svd(core, full_matrices=False)
    r = min(rank, S.numel())
    root = S[:r].sqrt()
    A = (U_d / d_d[None, :]) @ P[:, :r] * root[None, :]
    B = root[:, None] * Qt[:r] @ (U_h / d_h[None, :]).T
    return A.to(dtype).contiguous(), B.to(dtype).contiguous()


def svd_factors(W: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain truncated SVD (the ablation): A = U_r S_r, B = V_rᵀ."""
    U, S, Vt = torch.linalg.svd(W.detach().to(torch.float64), full_matrices=False)
    return (U[:, :rank] * S[:rank]).to(W.dtype).contiguous(), Vt[:rank].to(W.dtype).contiguous()


def random_factors(m: int, n: int, rank: int, seed: int, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Kaiming-uniform factors (the reference's RANDOM init): what alignment alone can recover."""
    g = torch.Generator().manual_seed(seed)
    A, B = torch.empty(m, rank, dtype=dtype), torch.empty(rank, n, dtype=dtype)
    for t, fan_in in ((A, rank), (B, n)):
        bound = 1.0 / math.sqrt(fan_in)
        t.uniform_(-bound, bound, generator=g)
    return A, B


def weighted_error(W: torch.Tensor, W_hat: torch.Tensor, H: torch.Tensor, D: torch.Tensor,
                   ridge: float = RIDGE) -> float:
    """|| C_delta^1/2 (W - Ŵ) C_h^1/2 ||_F relative to the same norm of W: the objective IPSVD minimises, with
    the covariances of the probes (how much of the layer's influence geometry a factorisation keeps)."""
    W, W_hat, H, D = (x.detach().to(torch.float64) for x in (W, W_hat, H, D))
    N = H.shape[1]

    def root(X):
        vals, vecs = torch.linalg.eigh(X @ X.T / N + ridge * torch.eye(X.shape[0], dtype=X.dtype))
        return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T

    Rd, Rh = root(D), root(H)
    return float(torch.linalg.norm(Rd @ (W - W_hat) @ Rh) / torch.linalg.norm(Rd @ W @ Rh).clamp_min(1e-30))
