"""GIST subspace math against a direct SVD on random matrices."""
from __future__ import annotations

import numpy as np
import pytest

from gist_core.errors import SubspaceError
from gist_core.methods.gist.subspace import fit_subspace, gram, rank_for_variance


def _G(n=12, d=500, seed=0):
    rng = np.random.default_rng(seed)
    # decaying spectrum so truncation is meaningful
    return (rng.standard_normal((n, n)) * (0.7 ** np.arange(n))) @ rng.standard_normal((n, d))


def test_chunked_gram_equals_direct():
    G = _G()
    assert np.allclose(gram(G, chunk=37), G @ G.T)


def test_matches_direct_svd():
    G = _G()
    sub = fit_subspace(G, r_max=5, chunk=64)
    U, s, Vt = np.linalg.svd(G, full_matrices=False)
    assert np.allclose(sub.sigma, s, rtol=1e-6)
    # same directions up to sign
    overlap = np.abs(Vt[:5] @ sub.basis)
    assert np.allclose(overlap, np.eye(5), atol=1e-4)
    assert sub.ortho_error < 1e-5
    # val coordinates are G V_k
    assert np.allclose(sub.val_coords, G @ sub.basis, atol=1e-4)


def test_rank_capped_by_numerical_rank():
    rng = np.random.default_rng(1)
    G = rng.standard_normal((10, 3)) @ rng.standard_normal((3, 200))  # rank 3
    sub = fit_subspace(G, r_max=8)
    assert sub.r_max == 3


def test_rank_for_variance():
    sigma = np.sqrt(np.array([50.0, 30.0, 15.0, 5.0]))
    assert rank_for_variance(sigma, 0.5) == 1
    assert rank_for_variance(sigma, 0.8) == 2
    assert rank_for_variance(sigma, 0.95) == 3
    assert rank_for_variance(sigma, 1.0) == 4
    with pytest.raises(ValueError):
        rank_for_variance(sigma, 0)


def test_zero_and_nan_gradients_are_refused():
    with pytest.raises(SubspaceError, match="zero"):
        fit_subspace(np.zeros((3, 10)), 2)
    G = _G(4, 20)
    G[1, 3] = np.nan
    with pytest.raises(SubspaceError, match="NaN"):
        fit_subspace(G, 2)
