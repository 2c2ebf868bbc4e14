"""How a clustering relates to the ground-truth skills, and the paper's argument (within-cluster variance)."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score


def agreement(labels: np.ndarray, truth: list[str]) -> dict:
    """ARI, NMI and purity against ground truth (scikit-learn's adjusted_rand_score / NMI)."""
    truth = np.asarray(truth)
    purity = 0
    for c in np.unique(labels):
        _, counts = np.unique(truth[labels == c], return_counts=True)
        purity += counts.max()
    sizes = np.bincount(labels)
    return {"ari": float(adjusted_rand_score(truth, labels)), "nmi": float(normalized_mutual_info_score(truth, labels)),
            "purity": float(purity / len(labels)), "n_clusters": int(len(np.unique(labels))),
            "size_min": int(sizes[sizes > 0].min()), "size_max": int(sizes.max())}


def within_variance_ratio(X: np.ndarray, labels: np.ndarray) -> float:
    """Σ_c Σ_{i∈c} ‖x_i − μ_c‖² / Σ_i ‖x_i − μ‖²: 1 = clusters explain nothing, 0 = every cluster a point."""
    X = np.asarray(X, dtype=np.float64)
    total = ((X - X.mean(0)) ** 2).sum()
    within = sum(((X[labels == c] - X[labels == c].mean(0)) ** 2).sum() for c in np.unique(labels))
    return float(within / total) if total > 0 else float("nan")


def composition(labels: np.ndarray, truth: list[str]) -> tuple[list[str], np.ndarray]:
    """Skills (sorted) and the cluster × skill count matrix."""
    skills = sorted(set(truth))
    col = {s: j for j, s in enumerate(skills)}
    M = np.zeros((int(labels.max()) + 1, len(skills)), dtype=np.int64)
    for c, s in zip(labels, truth):
        M[c, col[s]] += 1
    return skills, M
