"""GIST scores, rank slicing and the selection rules."""
from __future__ import annotations

import numpy as np
import pytest

from gist_core.data.examples import groups_from_labels
from gist_core.methods import scoring
from gist_core.methods.gist.subspace import fit_subspace


def _setup(seed=0, n_pool=300, d=400):
    rng = np.random.default_rng(seed)
    G = rng.standard_normal((9, d))
    groups = {"a": [0, 1, 2], "b": [3, 4, 5], "c": [6, 7, 8]}
    pool = rng.standard_normal((n_pool, d))
    sub = fit_subspace(G, r_max=9)
    X = pool @ sub.basis
    return G, groups, pool, sub, X


def test_scores_are_cosines_of_projected_gradients():
    G, groups, pool, sub, X = _setup()
    r = 5
    sc = scoring.gist_scores(X, sub.val_coords, groups, r)
    V = sub.basis[:, :r].astype(np.float64)
    x = pool @ V
    for t, idx in enumerate(groups.values()):
        c = (G[idx] @ V).mean(0)
        cos = (x @ c) / (np.linalg.norm(x, axis=1) * np.linalg.norm(c))
        assert np.allclose(sc.columns[:, t], cos, atol=1e-5)
    assert np.allclose(sc.score, sc.columns.max(1))
    assert (sc.score >= -1).all() and (sc.score <= 1 + 1e-6).all()


def test_rank_slice_equals_refit_at_that_rank():
    G, groups, pool, sub, X = _setup(1)
    sub3 = fit_subspace(G, r_max=3)
    a = scoring.gist_scores(X, sub.val_coords, groups, 3)
    b = scoring.gist_scores(pool @ sub3.basis, sub3.val_coords, groups, 3)
    assert np.allclose(a.score, b.score, atol=1e-5)


def test_example_max_aggregation():
    G, groups, pool, sub, X = _setup(2)
    sc = scoring.gist_scores(X, sub.val_coords, groups, 4, "example_max")
    assert sc.columns.shape == (len(pool), 9)
    with pytest.raises(ValueError):
        scoring.gist_scores(X, sub.val_coords, groups, 4, "median")


def test_rank_outside_stored_directions_is_refused():
    G, groups, pool, sub, X = _setup()
    with pytest.raises(ValueError, match="outside"):
        scoring.gist_scores(X, sub.val_coords, groups, 10)


def test_budget_to_count():
    assert scoring.budget_to_count(0.05, 1000) == 50
    assert scoring.budget_to_count(1.0, 1000) == 1000
    assert scoring.budget_to_count(120, 1000) == 120
    for bad in (0, -0.1, 1000.5, 2000, float("nan")):
        with pytest.raises(ValueError):
            scoring.budget_to_count(bad, 1000)


def test_global_topk_and_ties():
    s = np.array([0.1, 0.9, 0.5, 0.9, -0.2])
    assert scoring.select_global(s, 2).tolist() == [1, 3]
    assert scoring.select_global(s, 3).tolist() == [1, 2, 3]


def test_balanced_round_robin_gives_every_column_its_share():
    rng = np.random.default_rng(0)
    cols = rng.uniform(-0.1, 0.1, size=(100, 3))
    cols[:50, 0] += 0.8  # column 0 dominates the global max
    sc = scoring.Scores(score=cols.max(1), columns=cols, column_names=["a", "b", "c"], rank=1,
                        aggregation="subtask_mean")
    groups = {"a": [0], "b": [1], "c": [2]}
    glob, share_g = scoring.select(sc, 30, "global", groups)
    bal, share_b = scoring.select(sc, 30, "subtask", groups)
    assert len(set(bal.tolist())) == 30 and len(glob) == 30
    assert share_g == {"a": 30, "b": 0, "c": 0} and scoring.starved(share_g, 30) == ["b", "c"]
    assert share_b == {"a": 10, "b": 10, "c": 10} and scoring.starved(share_b, 30) == []
    # each subtask's quota holds its own best examples
    assert set(np.argsort(-cols[:, 1])[:5]) <= set(bal.tolist())


def test_example_max_columns_collapse_to_subtasks():
    cols = np.array([[0.1, 0.9, 0.2], [0.5, 0.1, 0.0]])
    sc = scoring.Scores(score=cols.max(1), columns=cols, column_names=["0", "1", "2"], rank=1,
                        aggregation="example_max")
    names, M = scoring.subtask_columns(sc, {"x": [0, 1], "y": [2]})
    assert names == ["x", "y"] and np.allclose(M, [[0.9, 0.2], [0.5, 0.0]])


def test_groups_from_labels_gives_unlabelled_rows_their_own_group():
    groups = groups_from_labels(["a", "b", "c", "d"], ["x", None, "x", float("nan")])
    assert groups == {"x": [0, 2], "b": [1], "d": [3]}


def test_starved_by_coverage_uses_the_coverage_figures():
    """The warning is stated in the terms the coverage line prints: correct selected examples per subtask
    against that subtask's proportional share of all correct selected examples."""
    cov = {"a": {"selected": 90, "in_pool": 100}, "b": {"selected": 9, "in_pool": 100},
           "c": {"selected": 1, "in_pool": 50}}
    # 100 correct selected; fair shares 40 / 40 / 20; a third of them 13.3 / 13.3 / 6.7
    assert scoring.starved_by_coverage(cov) == ["b", "c"]
    assert scoring.starved_by_coverage({"a": {"selected": 5, "in_pool": 10}, "b": {"selected": 2, "in_pool": 10}}) == []
    assert scoring.starved_by_coverage({"a": {"selected": 0, "in_pool": 0}}) == []


# ----------------------------------------------------------------------------- calibrated rules
def _naive_zscore(C):
    out = np.zeros_like(C)
    for t in range(C.shape[1]):
        col = list(C[:, t])
        m = sum(col) / len(col)
        sd = (sum((v - m) ** 2 for v in col) / len(col)) ** 0.5
        out[:, t] = [(v - m) / sd for v in col]
    return out


def _naive_quantile(C):
    return np.array([[sum(1 for w in C[:, t] if w <= C[i, t]) / len(C) for t in range(C.shape[1])]
                     for i in range(len(C))])


@pytest.mark.parametrize("rule,naive", [("zscore", _naive_zscore), ("quantile", _naive_quantile)])
def test_calibrated_columns_equal_a_naive_loop(rule, naive):
    rng = np.random.default_rng(3)
    C = np.column_stack([rng.normal(0.9, 0.02, 200), rng.normal(0.1, 0.4, 200), rng.uniform(-1, 1, 200)])
    C[5, 2] = C[6, 2]  # a tie: both get the top share of the tied values
    np.testing.assert_allclose(scoring.calibrate(C, rule), naive(C), atol=1e-12)


@pytest.mark.parametrize("rule", ["zscore", "quantile"])
def test_calibrated_rule_lets_a_low_scale_column_win_its_share(rule):
    """Column 0 is uniformly high (a shared direction): the raw max gives it every slot, calibration does not."""
    rng = np.random.default_rng(0)
    n, k = 400, 40
    C = np.column_stack([rng.normal(0.9, 0.01, n), rng.normal(0.2, 0.1, n)])
    sc = scoring.Scores(score=C.max(1), columns=C.astype(np.float32), column_names=["a", "b"], rank=2,
                        aggregation="subtask_mean")
    groups = {"a": [0], "b": [1]}
    _, raw = scoring.select(sc, k, "global", groups)
    idx, cal = scoring.select(sc, k, rule, groups)
    assert raw == {"a": k, "b": 0}
    assert min(cal.values()) >= k // 4
    want = np.sort(np.argsort(-naive_max(_naive_zscore(C) if rule == "zscore" else _naive_quantile(C)),
                              kind="stable")[:k])
    np.testing.assert_array_equal(idx, want)


def naive_max(M):
    return np.array([max(row) for row in M])


def test_rule_scores_is_the_ranked_quantity():
    rng = np.random.default_rng(1)
    C = rng.normal(size=(50, 3)).astype(np.float32)
    sc = scoring.Scores(score=C.max(1), columns=C, column_names=list("abc"), rank=3, aggregation="subtask_mean")
    groups = {"a": [0], "b": [1], "c": [2]}
    np.testing.assert_array_equal(scoring.rule_scores(sc, groups, "global"), sc.score)
    np.testing.assert_allclose(scoring.rule_scores(sc, groups, "quantile"), naive_max(_naive_quantile(C)))
    with pytest.raises(ValueError, match="unknown balance"):
        scoring.select(sc, 5, "median", groups)


def test_paper_flag_sets_the_papers_exact_rule_and_explicit_flags_win():
    from gist_core.cli import build_parser
    from gist_core.cli.args import overrides as _overrides
    base = ["select", "--model", "m", "--train", "t", "--target", "v"]
    got = _overrides(build_parser().parse_args(base + ["--paper"]))
    assert {k: got[k] for k in ("aggregation", "balance", "rank_rule", "tau")} == {
        "aggregation": "example_max", "balance": "global", "rank_rule": "tau", "tau": 0.95}
    got = _overrides(build_parser().parse_args(base + ["--paper", "--balance", "quantile"]))
    assert got["balance"] == "quantile" and got["aggregation"] == "example_max"
    assert "aggregation" not in _overrides(build_parser().parse_args(base))


# ----------------------------------------------------------------------------- the norm-aware score
def _norm_setup(seed=4, n_pool=250, d=300, n_val=8, r_max=8):
    rng = np.random.default_rng(seed)
    G = rng.standard_normal((n_val, d))
    G[:4] += 2.0 * rng.standard_normal(d)  # a shared direction in one subtask: unequal singular values
    pool = rng.standard_normal((n_pool, d))
    pool[:40] += 0.5 * G[:4].mean(0)  # pool rows that do lie (partly) along the target
    groups = {"a": [0, 1, 2, 3], "b": [4, 5], "c": [6, 7]}
    sub = fit_subspace(G, r_max=r_max)
    return G, groups, pool, sub, pool @ sub.basis


@pytest.mark.parametrize("aggregation", ["subtask_mean", "example_max"])
@pytest.mark.parametrize("r", [1, 3, 8])
def test_normaware_equals_the_naive_formula(aggregation, r):
    """(V_r^T g)·(V_r^T c_t) / (|g| |V_r^T c_t|), computed in gradient space one row at a time."""
    G, groups, pool, sub, X = _norm_setup()
    norms = np.linalg.norm(pool, axis=1)
    sc = scoring.gist_scores(X, sub.val_coords, groups, r, aggregation, "normaware", norms)
    V = sub.basis[:, :r].astype(np.float64)
    targets = [G[idx].mean(0) for idx in groups.values()] if aggregation == "subtask_mean" else list(G)
    for t, c in enumerate(targets):
        pc = V.T @ c
        want = [float((V.T @ g) @ pc / (np.linalg.norm(g) * np.linalg.norm(pc))) for g in pool]
        np.testing.assert_allclose(sc.columns[:, t], want, atol=1e-5)
    subspace = scoring.gist_scores(X, sub.val_coords, groups, r, aggregation, "subspace")
    assert (np.abs(sc.columns) <= np.abs(subspace.columns) + 1e-6).all()  # |V_r^T g| <= |g|


def test_normaware_at_full_rank_is_raw_gradient_cosine():
    """At r = N_v the subspace spans every validation gradient: the norm-aware score is cos(g, c_t) exactly,
    as compare's raw-cosine baseline computes it from its own features."""
    from gist_core.methods.baselines.scores import rawcos_columns
    G, groups, pool, sub, X = _norm_setup()
    norms = np.linalg.norm(pool, axis=1)
    sc = scoring.gist_scores(X, sub.val_coords, groups, len(G), "subtask_mean", "normaware", norms)
    raw = rawcos_columns(np.column_stack([pool @ G.T, norms]), G @ G.T, groups)
    np.testing.assert_allclose(sc.columns, raw, atol=1e-5)
    below = scoring.gist_scores(X, sub.val_coords, groups, 3, "subtask_mean", "normaware", norms)
    assert np.abs(below.columns - raw).max() > 1e-2  # below full rank it is a different score


def test_normaware_without_stored_norms_is_one_clear_line():
    G, groups, pool, sub, X = _norm_setup()
    with pytest.raises(ValueError, match="needs each pool gradient's norm"):
        scoring.gist_scores(X, sub.val_coords, groups, 3, "subtask_mean", "normaware", None)
    with pytest.raises(ValueError, match="unknown score"):
        scoring.gist_scores(X, sub.val_coords, groups, 3, "subtask_mean", "cosine", None)


# ----------------------------------------------------------------------------- round-robin over target examples
def _naive_round_robin(per_example: np.ndarray, k: int) -> tuple[list[int], list[int]]:
    """Each target example in turn takes its best pool row not yet taken (ties: the lower row)."""
    taken, turns = [], []
    for turn in range(k):
        j = turn % per_example.shape[1]
        best = max((i for i in range(len(per_example)) if i not in taken), key=lambda i: (per_example[i, j], -i))
        taken.append(best)
        turns.append(j)
    return taken, turns


@pytest.mark.parametrize("aggregation", ["subtask_mean", "example_max"])
def test_round_robin_over_target_examples_equals_a_naive_loop(aggregation):
    G, groups, pool, sub, X = _norm_setup(5)
    norms = np.linalg.norm(pool, axis=1)
    sc = scoring.gist_scores(X, sub.val_coords, groups, 5, aggregation, "normaware", norms)
    V = sub.basis[:, :5].astype(np.float64)
    per_example = np.array([[float((V.T @ g) @ (V.T @ c) / (np.linalg.norm(g) * np.linalg.norm(V.T @ c)))
                             for c in G] for g in pool])
    k = 37
    taken, turns = _naive_round_robin(per_example, k)
    idx, counts = scoring.select(sc, k, "examples", groups)
    assert idx.tolist() == sorted(taken)
    owner = {j: name for name, members in groups.items() for j in members}
    want = {name: sum(owner[j] == name for j in turns) for name in groups}
    assert counts == want  # 'a' has 4 of the 8 examples: about half the turns


def test_round_robin_over_examples_for_any_method_with_per_example_columns():
    """LESS, raw cosine and embeddings hand their (N, N_v) matrix to columns_as_scores: the same rule applies."""
    rng = np.random.default_rng(7)
    per_example = rng.normal(size=(60, 5))
    groups = {"x": [0, 1, 2], "y": [3, 4]}
    cols = np.stack([per_example[:, idx].mean(1) for idx in groups.values()], axis=1)
    sc = scoring.columns_as_scores(cols, list(groups), per_example, groups)
    taken, _ = _naive_round_robin(per_example, 12)
    assert scoring.select(sc, 12, "examples", groups)[0].tolist() == sorted(taken)
    with pytest.raises(ValueError, match="per-target-example"):
        scoring.select(scoring.columns_as_scores(cols, list(groups)), 12, "examples", groups)
