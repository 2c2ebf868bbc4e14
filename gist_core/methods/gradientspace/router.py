"""The router: a linear classifier on the base model's mean-pooled hidden state of the *prompt* (the only part of
a query known at inference), trained on the cluster labels, that sends each query to one expert.

The paper's router is "lightweight, encoder-based" and otherwise not public (a reconstruction). Ours is
scikit-learn's multinomial LogisticRegression on standardised features (or a one-hidden-layer MLP); the route is
the argmax of its class scores, computed here from the fitted weights so the rule is explicit and testable.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier

ROUTERS = ("logreg", "mlp")


@dataclass
class PromptRouter:
    """Fitted router state: everything `route` needs, as plain arrays (saved with the store's checked save/load)."""
    mean: np.ndarray          # (H,) feature standardisation
    scale: np.ndarray         # (H,)
    weights: list[np.ndarray]  # logreg: [W (H, C)]; mlp: [W1 (H, h), W2 (h, C)]
    biases: list[np.ndarray]
    classes: np.ndarray       # (C,) cluster ids, the column order of the scores

    @classmethod
    def fit(cls, X: np.ndarray, labels: np.ndarray, kind: str = "logreg", seed: int = 0) -> PromptRouter:
        if kind not in ROUTERS:
            raise ValueError(f"router must be one of {', '.join(ROUTERS)}, got '{kind}'")
        X = np.asarray(X, dtype=np.float64)
        mean, scale = X.mean(0), X.std(0)
        scale = np.where(scale > 0, scale, 1.0)
        Z = (X - mean) / scale
        if kind == "logreg":
            clf = LogisticRegression(C=1.0, max_iter=2000, random_state=seed).fit(Z, labels)
            W, b = clf.coef_.T, clf.intercept_
            if W.shape[1] == 1:  # scikit-learn stores two classes as one column: scores (−s, +s)
                W, b = np.hstack([-W, W]) / 2, np.array([-b[0], b[0]]) / 2
            return cls(mean, scale, [W], [b], clf.classes_.astype(np.int64))
        clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=500, random_state=seed).fit(Z, labels)
        W, b = [w.copy() for w in clf.coefs_], [c.copy() for c in clf.intercepts_]
        if W[-1].shape[1] == 1:
            W[-1], b[-1] = np.hstack([-W[-1], W[-1]]) / 2, np.array([-b[-1][0], b[-1][0]]) / 2
        return cls(mean, scale, W, b, clf.classes_.astype(np.int64))

    def scores(self, X: np.ndarray) -> np.ndarray:
        """(n, C) class scores (logits up to a per-row constant)."""
        h = (np.asarray(X, dtype=np.float64) - self.mean) / self.scale
        for i, (W, b) in enumerate(zip(self.weights, self.biases)):
            h = h @ W + b
            if i < len(self.weights) - 1:
                h = np.maximum(h, 0.0)  # MLPClassifier's default ReLU
        return h

    def route(self, X: np.ndarray) -> np.ndarray:
        """(n,) the chosen cluster per query: the argmax of the scores."""
        return self.classes[np.argmax(self.scores(X), axis=1)]

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"mean": self.mean, "scale": self.scale, "classes": self.classes}
        for i, (W, b) in enumerate(zip(self.weights, self.biases)):
            out[f"W{i}"], out[f"b{i}"] = W, b
        return out

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> PromptRouter:
        n = sum(1 for k in a if k.startswith("W"))
        return cls(a["mean"], a["scale"], [a[f"W{i}"] for i in range(n)], [a[f"b{i}"] for i in range(n)],
                   a["classes"].astype(np.int64))


def cluster_skills(labels: np.ndarray, truth: list[str]) -> dict[int, str]:
    """Each cluster's majority skill among its training members (what routing to it means, for accuracy)."""
    out = {}
    for c in np.unique(labels):
        skills, counts = np.unique([truth[i] for i in np.flatnonzero(labels == c)], return_counts=True)
        out[int(c)] = str(skills[np.argmax(counts)])
    return out


def oracle_routes(labels: np.ndarray, truth: list[str], query_truth: list[str], fallback: np.ndarray) -> np.ndarray:
    """(n,) routing by the ground truth: each query to the cluster holding the most training rows of its skill
    (ties: the lower cluster id); a skill no training row has falls back to `fallback` (the router's choice).
    It separates what the router gets wrong from what the experts cannot do."""
    counts: dict[str, dict[int, int]] = {}
    for c, t in zip(labels, truth):
        counts.setdefault(t, {}).setdefault(int(c), 0)
        counts[t][int(c)] += 1
    best = {t: min(cs, key=lambda c: (-cs[c], c)) for t, cs in counts.items()}
    return np.array([best.get(t, int(f)) for t, f in zip(query_truth, fallback)], dtype=np.int64)


def routing_accuracy(chosen: np.ndarray, truth: list[str], skill_of: dict[int, str]) -> float:
    """Share of queries sent to a cluster whose majority skill is the query's true skill."""
    return float(np.mean([skill_of.get(int(c)) == t for c, t in zip(chosen, truth)])) if len(truth) else float("nan")


def confusion(chosen: np.ndarray, truth: list[str], skills: list[str], clusters: list[int]) -> np.ndarray:
    """(skills, clusters) counts: row = the query's true skill, column = the cluster it was routed to."""
    M = np.zeros((len(skills), len(clusters)), dtype=np.int64)
    si, ci = {s: i for i, s in enumerate(skills)}, {c: j for j, c in enumerate(clusters)}
    for c, t in zip(chosen, truth):
        if t in si and int(c) in ci:
            M[si[t], ci[int(c)]] += 1
    return M
