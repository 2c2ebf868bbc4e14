"""The ELREA ensemble (arXiv 2502.00089), as far as its sources go: per query, the instruction-token gradient
(randomly projected, as in the clustering) is compared with each cluster's centroid gradient; the cosines are
standardised per cluster (by the mean and spread of that cluster's own members' cosines: the paper's Eq. 8–9, which
a reviewer calls under-defined); w = softmax(cos′ / τ) over the experts. Next-token logits are combined:

    logits = β · logits(base adapter) + (1 − β) · Σ_c w_c · logits(expert c)

The base adapter stays in the ensemble (reviewers confirm it); its weight β (default ½) is our choice: the paper's
weights "do not need to sum to 1" and their treatment of the base adapter is not stated.
"""
from __future__ import annotations

import numpy as np

from gist_core.methods.gradientspace.assign import unit_rows


def centroids(features: np.ndarray, labels: np.ndarray, clusters: list[int]) -> np.ndarray:
    """(C, d) unit mean of each cluster's unit feature rows."""
    U = unit_rows(features)
    return unit_rows(np.stack([U[labels == c].mean(0) for c in clusters]))


def member_stats(features: np.ndarray, labels: np.ndarray, cents: np.ndarray, clusters: list[int]):
    """Per cluster: mean and std of its own members' cosines to its centroid (the standardisation)."""
    U = unit_rows(features)
    mu, sd = np.zeros(len(clusters)), np.ones(len(clusters))
    for j, c in enumerate(clusters):
        cos = U[labels == c] @ cents[j]
        mu[j] = cos.mean()
        sd[j] = cos.std() if len(cos) > 1 and cos.std() > 1e-8 else 1.0
    return mu, sd


def weights(query_features: np.ndarray, cents: np.ndarray, mu: np.ndarray, sd: np.ndarray,
            temperature: float = 1.0) -> np.ndarray:
    """(n, C) expert weights per query: softmax over clusters of the standardised cosines."""
    z = (unit_rows(query_features) @ cents.T - mu) / sd / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
