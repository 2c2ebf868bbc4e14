"""GIST scores and selection from stored projections. Pure math on arrays: no paths, no torch.

Score semantics: a cosine in [-1, 1] between an example's gradient g and a target direction inside the
rank-r task subspace V_r; higher = better aligned with the target. Two kinds (`score`):
- 'normaware': (V_r^T g) . (V_r^T c_t) / (|g| |V_r^T c_t|): the target side denoised in the subspace, the pool
  gradient's *whole* length kept. A gradient mostly outside the subspace scores low. At r = N_v (the subspace
  spans every validation gradient) it equals the raw-gradient cosine cos(g, c_t) exactly.
- 'subspace' (the GIST reference code): cos(V_r^T g, V_r^T c_t), both sides normalised *after* projecting, so
  how much of g lies outside the subspace is ignored.
The two differ only in the pool side's norm: |g| (stored per example with its projection) against |V_r^T g|.
- aggregation 'subtask_mean' (GIST code, default): target of subtask t = the mean of the raw projected
  validation gradients of t; score = max_t of the cosine with it.
- aggregation 'example_max' (GIST paper): score = max over validation examples of the cosine with y_j.
Changing r is a slice of the stored projections plus one small matrix product: no gradients.

Selection rules (`balance`), the same for GIST, LESS and raw cosine (any (N, T) subtask columns):
- 'global' (the paper's and LESS's rule): top-k of max_t cos_t. Assumes every column lives on one scale.
- 'subtask': round-robin quota, each subtask column takes its best example not yet taken.
- 'zscore': top-k of max_t (cos_t - mean_pool cos_t) / std_pool cos_t.
- 'quantile': top-k of max_t q_t, q_t(x) = share of the pool whose column-t cosine is <= x's: each
  column's own pool distribution is its scale, so a column with uniformly high cosines no longer wins.
- 'examples': round-robin over the target *examples* (RDS+, arXiv 2503.01807; the TIS study, arXiv
  2602.14696): each validation example in turn takes its best pool example not yet taken, by that example's
  own score column. An example is counted for the subtask of the validation example whose turn took it.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

AGGREGATIONS = ("subtask_mean", "example_max")
SCORE_KINDS = ("normaware", "subspace")
DEFAULT_SCORE = "normaware"  # chosen on evidence (bench/selection_rules.py, docs: the defaults); the paper's code: subspace
BALANCES = ("global", "subtask", "zscore", "quantile", "examples")
RANK_RULES = ("tau", "advisor", "full")  # how GIST's rank is chosen (methods/gist/advisor.py applies them)
DEFAULT_RANK_RULE = "full"  # chosen on evidence (docs/benchmarks/defaults.md); the paper: tau
DEFAULT_RULE = "subtask"  # chosen on evidence (bench/selection_rules.py, README: Selection rules); the paper: global
CALIBRATED = ("zscore", "quantile")
BLOCK_ROWS = 1 << 16  # rows scored at a time: memory stays flat in the pool size


def _unit_rows(M: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(M, axis=1, keepdims=True)
    return M / np.where(n > 0, n, 1.0)


def target_directions(val_coords: np.ndarray, groups: dict[str, list[int]], r: int,
                      aggregation: str = "subtask_mean") -> tuple[list[str], np.ndarray]:
    """(names, unit directions (T, r)): one per subtask, or one per validation example."""
    Y = np.asarray(val_coords[:, :r], dtype=np.float64)
    if aggregation == "subtask_mean":
        names = list(groups)
        return names, _unit_rows(np.stack([Y[idx].mean(0) for idx in groups.values()]))
    if aggregation == "example_max":
        return [str(i) for i in range(len(Y))], _unit_rows(Y)
    raise ValueError(f"unknown aggregation '{aggregation}' (use one of {', '.join(AGGREGATIONS)})")


def cosine_matrix(X: np.ndarray, directions: np.ndarray, r: int, norms: np.ndarray | None = None) -> np.ndarray:
    """(N, T) cosines of the first r coordinates of every row of X with each unit direction: normalised by
    each row's first r coordinates, or (norms given) by the whole gradient's norm |g| (the norm-aware score)."""
    out = np.empty((X.shape[0], directions.shape[0]), dtype=np.float32)
    for s in range(0, X.shape[0], BLOCK_ROWS):
        block = np.asarray(X[s:s + BLOCK_ROWS, :r], dtype=np.float64)
        if norms is None:
            out[s:s + BLOCK_ROWS] = _unit_rows(block) @ directions.T
        else:
            n = np.asarray(norms[s:s + BLOCK_ROWS], dtype=np.float64)[:, None]
            out[s:s + BLOCK_ROWS] = (block @ directions.T) / np.where(n > 0, n, 1.0)
    return out


@dataclass
class Scores:
    score: np.ndarray           # (N,) final score (max over columns)
    columns: np.ndarray         # (N, T) per-target-direction cosines
    column_names: list[str]
    rank: int
    aggregation: str
    kind: str = "subspace"      # GIST's score kind (SCORE_KINDS); other methods' cosines are their own
    # (N, N_v) score against each validation example, for the 'examples' rule; a callable computes it on demand
    per_example: np.ndarray | Callable[[], np.ndarray] | None = field(default=None, repr=False)
    example_subtasks: list[str] | None = None  # the subtask of each validation example (the columns' owners)

    def example_columns(self) -> np.ndarray:
        if self.per_example is None:
            raise ValueError("these scores have no per-target-example columns (the 'examples' rule needs them)")
        if callable(self.per_example):
            self.per_example = self.per_example()
        return self.per_example


def check_score_inputs(X, val_coords: np.ndarray, r: int, kind: str, norms) -> int:
    """The stored directions r_max; a one-line ValueError for a rank outside them, an unknown kind, or the
    norm-aware score without stored gradient norms."""
    r_max = min(X.shape[1], val_coords.shape[1])
    if not 1 <= r <= r_max:
        raise ValueError(f"rank r={r} outside 1..{r_max} (the stored projections hold {r_max} directions)")
    if kind not in SCORE_KINDS:
        raise ValueError(f"unknown score '{kind}' (use one of {', '.join(SCORE_KINDS)})")
    if kind == "normaware" and norms is None:
        raise ValueError("the norm-aware score needs each pool gradient's norm, which this run did not store "
                         "(made before it existed): rerun the run's command, or use --score subspace")
    return r_max


def gist_scores(X: np.ndarray, val_coords: np.ndarray, groups: dict[str, list[int]], r: int,
                aggregation: str = "subtask_mean", kind: str = "subspace", norms: np.ndarray | None = None) -> Scores:
    """GIST's scores at rank r from stored coordinates X (N, >= r) and validation coordinates (N_v, >= r);
    `norms` (N,): each pool gradient's whole norm |g|, which the norm-aware kind divides by."""
    check_score_inputs(X, val_coords, r, kind, norms)
    by = norms if kind == "normaware" else None
    names, dirs = target_directions(val_coords, groups, r, aggregation)
    cols = cosine_matrix(X, dirs, r, by)
    _, example_dirs = target_directions(val_coords, groups, r, "example_max")
    owners = example_owners(groups, len(val_coords))
    per_example = cols if aggregation == "example_max" else (lambda: cosine_matrix(X, example_dirs, r, by))
    return Scores(score=cols.max(1), columns=cols, column_names=names, rank=r, aggregation=aggregation, kind=kind,
                  per_example=per_example, example_subtasks=owners)


def group_means(per_example: np.ndarray, groups: dict[str, list[int]]) -> np.ndarray:
    """(N, T) float32: per subtask, the mean of its validation examples' columns of an (N, N_v) matrix."""
    M = np.asarray(per_example, dtype=np.float64)
    return np.stack([M[:, idx].mean(1) for idx in groups.values()], axis=1).astype(np.float32)


def example_owners(groups: dict[str, list[int]], n_val: int) -> list[str]:
    """The subtask of each validation example, in validation-row order."""
    owner = [""] * n_val
    for name, idx in groups.items():
        for i in idx:
            owner[i] = name
    return owner


def check_budget(budget: float) -> None:
    """The budget's form alone (no pool yet): a fraction in (0, 1] or a whole count > 1."""
    if not np.isfinite(budget) or budget <= 0:
        raise ValueError(f"budget must be a fraction in (0, 1] or a count >= 1, got {budget}")
    if budget > 1 and budget != int(budget):
        raise ValueError(f"budget {budget:g} is neither a fraction in (0, 1] nor a whole count of examples")


def budget_to_count(budget: float, n: int) -> int:
    """A fraction in (0, 1] of n (rounded; the GIST reference code floors), or a whole count >= 1 (a number > 1)."""
    check_budget(budget)
    if budget <= 1:
        return max(1, int(round(budget * n)))
    if budget > n:
        raise ValueError(f"budget {int(budget)} exceeds the pool's {n} examples")
    return int(budget)


def select_global(score: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores (ties broken by index: deterministic)."""
    order = np.lexsort((np.arange(len(score)), -score))
    return np.sort(order[:k])


def select_balanced(columns: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Round-robin over the columns: each takes its best example not yet taken.

    Returns (indices sorted, owner column of each of those indices)."""
    T = columns.shape[1]
    # each column needs about k/T rows plus the ones others took first: sort only its best few, the whole
    # column only if those run out (hundreds of target examples x 100,000 rows would otherwise be full sorts)
    head = min(len(columns), 2 * (-(-k // T)) + 16)
    orders = [best_rows(columns[:, t], head) for t in range(T)]
    pos = [0] * T
    owner = np.full(len(columns), -1)
    n_taken = 0
    while n_taken < k:
        t = n_taken % T
        while True:
            if pos[t] == len(orders[t]):
                orders[t] = best_rows(columns[:, t], len(columns))
            if owner[orders[t][pos[t]]] < 0:
                break
            pos[t] += 1
        owner[orders[t][pos[t]]] = t
        n_taken += 1
    idx = np.flatnonzero(owner >= 0)
    return idx, owner[idx]


def best_rows(col: np.ndarray, m: int) -> np.ndarray:
    """At least the m highest rows of `col`, best first, ties by row index (every row tied with the m-th is
    kept, so the order never depends on how a partition broke ties)."""
    n = len(col)
    if m >= n:
        return np.lexsort((np.arange(n), -col))
    cut = np.partition(col, n - m)[n - m]  # the m-th largest value
    rows = np.flatnonzero(col >= cut)
    return rows[np.lexsort((rows, -col[rows]))]


def subtask_columns(scores: Scores, groups: dict[str, list[int]]) -> tuple[list[str], np.ndarray]:
    """(subtask names, (N, T) cosines): per-example columns collapse to their subtask's max."""
    if scores.aggregation == "subtask_mean":
        return scores.column_names, scores.columns
    return list(groups), np.stack([scores.columns[:, idx].max(1) for idx in groups.values()], axis=1)


def calibrate(columns: np.ndarray, rule: str) -> np.ndarray:
    """(N, T) columns put on one scale by each column's own distribution over the pool (float64)."""
    C = np.asarray(columns, dtype=np.float64)
    if rule == "zscore":
        sd = C.std(0)
        return (C - C.mean(0)) / np.where(sd > 0, sd, 1.0)
    if rule == "quantile":  # share of the pool at or below each value, per column (ties share the top rank)
        return np.column_stack([np.searchsorted(np.sort(c), c, side="right") for c in C.T]) / max(len(C), 1)
    raise ValueError(f"no calibration for rule '{rule}' (use one of {', '.join(CALIBRATED)})")


def rule_scores(scores: Scores, groups: dict[str, list[int]], rule: str) -> np.ndarray:
    """The (N,) score a global-top-k rule ranks by: the raw max, or the max of calibrated subtask columns."""
    if rule == "global":
        return scores.score
    return calibrate(subtask_columns(scores, groups)[1], rule).max(1)


def select_owned(scores: Scores, k: int, balance: str, groups: dict[str, list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(selected indices sorted, the subtask column each was picked for).

    'global': top-k of the score; an example counts for the subtask it aligns with best.
    'subtask': round-robin quota; an example counts for the subtask whose turn took it.
    'zscore' / 'quantile': top-k of the max of calibrated columns; an example counts for the subtask
    whose calibrated column is highest."""
    _, cols = subtask_columns(scores, groups)
    if balance == "global":
        idx = select_global(scores.score, k)
        return idx, cols[idx].argmax(1)
    if balance == "subtask":
        return select_balanced(cols, k)
    if balance in CALIBRATED:
        cal = calibrate(cols, balance)
        idx = select_global(cal.max(1), k)
        return idx, cal[idx].argmax(1)
    if balance == "examples":
        idx, turn = select_balanced(scores.example_columns(), k)
        names = subtask_columns(scores, groups)[0]
        owners = scores.example_subtasks or []
        return idx, np.array([names.index(owners[j]) if owners and owners[j] in names else 0 for j in turn], dtype=int)
    raise ValueError(f"unknown balance '{balance}' (use one of {', '.join(BALANCES)})")


def select(scores: Scores, k: int, balance: str, groups: dict[str, list[int]]) -> tuple[np.ndarray, dict[str, int]]:
    """(selected indices, how many were picked for each subtask): select_owned's counts."""
    names = subtask_columns(scores, groups)[0]
    idx, owner = select_owned(scores, k, balance, groups)
    return idx, {name: int((owner == t).sum()) for t, name in enumerate(names)}


def columns_as_scores(columns: np.ndarray, names: list[str], per_example: np.ndarray | None = None,
                      groups: dict[str, list[int]] | None = None) -> Scores:
    """Any method's (N, T) subtask columns as Scores (score = their max), so every rule applies to them;
    `per_example` (N, N_v) with `groups`: its score against each validation example (the 'examples' rule)."""
    columns = np.asarray(columns, dtype=np.float32)
    owners = example_owners(groups, per_example.shape[1]) if per_example is not None and groups else None
    return Scores(score=columns.max(1), columns=columns, column_names=list(names), rank=0, aggregation="subtask_mean",
                  per_example=per_example, example_subtasks=owners)


def starved(counts: dict[str, int], k: int, floor: float = 1 / 3) -> list[str]:
    """Columns that got less than `floor` of their proportional share k / T."""
    fair = k / max(1, len(counts))
    return [name for name, c in counts.items() if c < floor * fair]


def fair_shares(coverage: dict[str, dict]) -> dict[str, float]:
    """Each subtask's proportional share of the correct selected examples: all of them, split by the
    subtask's share of the correct examples in the pool."""
    total_sel = sum(c["selected"] for c in coverage.values())
    total_pool = sum(c["in_pool"] for c in coverage.values())
    return {s: total_sel * c["in_pool"] / total_pool if total_pool else 0.0 for s, c in coverage.items()}


def starved_by_coverage(coverage: dict[str, dict], floor: float = 1 / 3) -> list[str]:
    """Subtasks whose correct selected examples are fewer than `floor` of their proportional share."""
    fair = fair_shares(coverage)
    return [s for s, c in coverage.items() if c["selected"] < floor * fair[s]]


# ----------------------------------------------------------------------------- compare's table rows
def row_name(family: str, rule: str) -> str:
    """A compare row: the family alone for the global top-k (the paper's rule), else family_rule."""
    return family if rule == "global" else f"{family}_{rule}"


def split_row(row: str) -> tuple[str, str]:
    """(family, rule) of a compare row."""
    for rule in BALANCES:
        if rule != "global" and row.endswith(f"_{rule}"):
            return row[: -len(rule) - 1], rule
    return row, "global"
