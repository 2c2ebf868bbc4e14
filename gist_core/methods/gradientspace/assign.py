"""Cluster assignment in the sketch's K coordinates, and the criterion that picks the number of clusters.

Rules (the paper's is not public; both are options):
  kmeans    — k-means on the unit-normalised coordinates (cosine geometry: gradient norms vary by orders of
              magnitude between examples, and a direction, not a size, says what an example teaches);
  dominant  — argmax_k |⟨g_i, v_k⟩| over the top singular directions, a second streaming pass not needed
              once the coordinates are stored.
"""
from __future__ import annotations

import numpy as np
from sklearn.cluster import MiniBatchKMeans
from sklearn.metrics import silhouette_score

RULES = ("kmeans", "dominant")


def unit_rows(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    n = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(n > 0, n, 1.0)


def kmeans_labels(X: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Deterministic by seed: scikit-learn's MiniBatchKMeans with a fixed random_state and n_init."""
    km = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=5, batch_size=1024)
    return km.fit_predict(unit_rows(X)).astype(np.int64)


def dominant_labels(coords: np.ndarray, k: int) -> np.ndarray:
    """argmax over the first k singular directions of |coordinate|."""
    if k > coords.shape[1]:
        raise ValueError(f"the dominant-direction rule needs k ≤ the sketch rank {coords.shape[1]}, got {k}")
    return np.argmax(np.abs(coords[:, :k]), axis=1).astype(np.int64)


def assign(coords: np.ndarray, k: int, rule: str, seed: int) -> np.ndarray:
    if rule == "kmeans":
        return kmeans_labels(coords, k, seed)
    if rule == "dominant":
        return dominant_labels(coords, k)
    raise ValueError(f"unknown assignment rule '{rule}' (choose from {', '.join(RULES)})")


def silhouette(X: np.ndarray, labels: np.ndarray, seed: int, sample: int = 4000) -> float:
    """Cosine silhouette on a seeded sample (exact silhouette is O(n²))."""
    if len(set(labels.tolist())) < 2:
        return float("nan")
    return float(silhouette_score(unit_rows(X), labels, metric="euclidean",
                                  sample_size=min(sample, len(labels)), random_state=seed))


def pick_k(coords: np.ndarray, ks: list[int], rule: str, seed: int) -> tuple[int, list[dict]]:
    """The k with the highest silhouette, and the whole curve (shown to the user)."""
    curve = [{"k": k, "silhouette": silhouette(coords, assign(coords, k, rule, seed), seed)} for k in ks]
    best = max(curve, key=lambda c: -np.inf if np.isnan(c["silhouette"]) else c["silhouette"])
    return best["k"], curve
