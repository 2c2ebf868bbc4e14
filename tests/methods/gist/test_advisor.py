"""The rank advisor against a naive loop that works in the raw gradient space (no stored coordinates)."""
from __future__ import annotations

import numpy as np
import pytest

from gist_core.methods.gist import advisor
from gist_core.methods.gist.subspace import fit_subspace


def _cos(a, b):
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(a @ b / (na * nb)) if na > 0 and nb > 0 else 0.0


def naive_curve(G, P, groups, aggregation):
    """Per fold: SVD of the raw held-in gradients, each rank r, each pool row, one cosine at a time."""
    subtask = {j: name for name, idx in groups.items() for j in idx}
    rows = []
    for _name, members in groups.items():
        if len(members) < 2:
            continue
        for j in members:
            rest = [i for i in range(len(G)) if i != j]
            _, s, Vt = np.linalg.svd(G[rest], full_matrices=False)
            Vt = Vt[s > 1e-6 * s[0]]
            curve = []
            for r in range(1, len(Vt) + 1):
                B = Vt[:r].T
                others = [i for i in members if i != j]
                if aggregation == "subtask_mean":
                    targets = [np.mean([G[i] @ B for i in others], axis=0)]
                else:
                    targets = [G[i] @ B for i in others]
                mine = max(_cos(G[j] @ B, c) for c in targets)
                pool = [max(_cos(p @ B, c) for c in targets) for p in P]
                curve.append(sum(1 for v in pool if v < mine) / len(P))
            rows.append(curve)
    assert all(subtask[j] for j in subtask)
    width = min(map(len, rows))
    return np.array([r[:width] for r in rows])


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(7)
    D, basis = 40, rng.normal(size=(3, 40))
    G = np.concatenate([basis[t] + 0.6 * rng.normal(size=(n, D)) for t, n in enumerate((4, 3, 2))])
    G = np.concatenate([G, rng.normal(size=(1, D))])  # a subtask of one: no fold
    P = np.concatenate([basis[rng.integers(0, 3, 60)] + rng.normal(size=(60, D)), rng.normal(size=(40, D))])
    groups = {"a": [0, 1, 2, 3], "b": [4, 5, 6], "c": [7, 8], "solo": [9]}
    sub = fit_subspace(G, r_max=len(G))
    X = P @ sub.basis.astype(np.float64)
    return G, P, X, sub, groups


@pytest.mark.parametrize("aggregation", ["subtask_mean", "example_max"])
def test_advisor_curve_equals_a_naive_loop_in_gradient_space(setup, aggregation):
    G, P, X, sub, groups = setup
    got = advisor.rank_curve(sub.val_coords, X, groups, aggregation)
    want = naive_curve(G, P, groups, aggregation)
    assert got.held_out == [0, 1, 2, 3, 4, 5, 6, 7, 8]
    np.testing.assert_allclose(got.per_example, want, atol=1e-9)
    np.testing.assert_allclose(got.curve, want.mean(0), atol=1e-9)
    assert got.suggested == int(np.argmax(want.mean(0))) + 1
    assert got.notes and "one validation example" in got.notes[0]
    assert len(got.ranks) == len(G) - 1  # a fold spans one direction fewer than all validation examples
    se = np.array([np.std(want[:, i], ddof=1) / np.sqrt(len(want)) for i in range(want.shape[1])])
    np.testing.assert_allclose(got.standard_error, se, atol=1e-12)
    best = int(np.argmax(want.mean(0)))
    assert got.within_one_se == [i + 1 for i in range(want.shape[1]) if want[:, i].mean() >= want[:, best].mean() - se[best]]


def test_advisor_prefers_the_rank_that_separates_subtasks():
    """Two subtasks that share a dominant direction: r = 1 sees only the shared part, so held-out
    examples cannot beat the pool; r = 3 holds the subtasks' own directions."""
    rng = np.random.default_rng(0)
    D = 30
    shared, own = 5 * rng.normal(size=D), rng.normal(size=(2, D)) * 2
    G = np.concatenate([shared + own[t] + 0.2 * rng.normal(size=(5, D)) for t in range(2)])
    P = shared + 0.3 * rng.normal(size=(200, D))  # generic pool: the shared part, no subtask signal
    sub = fit_subspace(G, r_max=len(G))
    curve = advisor.rank_curve(sub.val_coords, P @ sub.basis.astype(np.float64), {"a": list(range(5)),
                                                                                    "b": list(range(5, 10))})
    assert curve.curve[0] < 0.6 < curve.curve[2]
    assert curve.suggested >= 2


def test_advisor_without_folds_is_refused():
    with pytest.raises(ValueError, match="at least two validation examples"):
        advisor.rank_curve(np.eye(3), np.eye(3), {"a": [0], "b": [1], "c": [2]})


def test_reference_rows_are_a_seeded_sample():
    a, b = advisor.reference_rows(10_000, 100, seed=1), advisor.reference_rows(10_000, 100, seed=1)
    np.testing.assert_array_equal(a, b)
    assert len(a) == 100 and np.all(np.diff(a) > 0)
    np.testing.assert_array_equal(advisor.reference_rows(50, 100), np.arange(50))
