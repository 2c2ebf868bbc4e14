"""Re-scoring at any rank and budget: a slice of the stored projections plus a small matrix product (no torch)."""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gist_core.data.truth import Truth, metrics_from, truth_masks
from gist_core.methods import scoring
from gist_core.viewer.rundir import RunData, arrays, base_frame, base_frame_at, stamp


@functools.lru_cache(maxsize=4)
def _truth(run_dir: str, _stamp: int, subtasks: tuple[str, ...]) -> Truth | None:
    return truth_masks(base_frame_at(run_dir, _stamp), list(subtasks))


@dataclass
class Rescored:
    frame: pd.DataFrame               # base frame with score, rank, cos:*, selected* at this rank
    rank: int
    balance: str
    k: int
    subtasks: list[str]
    picked: dict[str, dict[str, int]]   # rule -> subtask -> examples picked for it
    starved: dict[str, list[str]]       # rule -> starved subtasks (by starved_basis)
    threshold: float                    # lowest score in the global top-k
    metrics: dict[str, dict | None]     # rule -> ground-truth metrics (None without labels)
    ms: float                           # time the re-score took
    starved_basis: str = "best-aligned subtask column"  # or "ground-truth coverage": the CLI's rule
    kind: str = "subspace"              # the GIST score kind these scores are

    @property
    def selection(self) -> pd.DataFrame:
        """The chosen rule's selection, best first."""
        return self.frame[self.frame["selected"]].sort_values("score", ascending=False)


def budget_count(budget: float, n: int) -> int:
    return scoring.budget_to_count(budget, n)


def scores_at(run_dir: str | Path, rank: int, kind: str | None = None) -> scoring.Scores:
    """Same result as pipeline.rescore(run_dir, rank, kind=kind), from cached arrays (no basis reload, no torch)."""
    return arrays(run_dir).scores(rank, kind)


def rescored_frame(run_dir: str | Path, rank: int, balance: str = "global", budget: float = 0.05,
                   kind: str | None = None) -> Rescored:
    """Scores (the run's kind unless `kind`), ranks and every selection rule at `rank` and `budget`; `balance`
    picks `selected`."""
    t0 = time.perf_counter()
    if balance not in scoring.BALANCES:
        raise ValueError(f"balance must be one of {scoring.BALANCES}")
    a, base = arrays(run_dir), base_frame(run_dir)
    sc = a.scores(rank, kind)
    n = len(sc.score)
    k = scoring.budget_to_count(budget, n)
    order = np.lexsort((np.arange(n), -sc.score))
    ranks = np.empty(n, dtype=np.int64)
    ranks[order] = np.arange(1, n + 1)
    names, cols = scoring.subtask_columns(sc, a.groups)
    new = {"score": sc.score, "rank": ranks}
    picked, masks = {}, {}
    for rule in scoring.BALANCES:
        idx, picked[rule] = scoring.select(sc, k, rule, a.groups)
        masks[rule] = np.zeros(n, dtype=bool)
        masks[rule][idx] = True
        new[f"selected_{rule}"] = masks[rule]
    new["selected"] = masks[balance]
    new.update({f"cos:{name}": cols[:, t] for t, name in enumerate(names)})
    frame = base.assign(**new)  # copy-on-write: the text columns are shared, not copied
    truth = _truth(str(run_dir), stamp(run_dir), tuple(names))
    metrics = {rule: metrics_from(truth, masks[rule]) for rule in scoring.BALANCES}
    # the CLI's rule: by the coverage figures where the pool has labels, else by column attribution
    if all(metrics.values()):
        starved, basis = {r: scoring.starved_by_coverage(m["coverage"]) for r, m in metrics.items()}, \
            "ground-truth coverage"
    else:
        starved, basis = {r: scoring.starved(p, k) for r, p in picked.items()}, "best-aligned subtask column"
    return Rescored(frame=frame, rank=rank, balance=balance, k=k, subtasks=names, picked=picked, starved=starved,
                    threshold=float(sc.score[order[k - 1]]), metrics=metrics,
                    ms=(time.perf_counter() - t0) * 1000, starved_basis=basis, kind=sc.kind)


def default_settings(run: RunData) -> dict:
    """Rank, budget (fraction) and balance the run itself used."""
    cfg, summ = run.config, run.summary
    rank = summ.get("rank") or cfg.get("rank") or 1
    budget = cfg.get("budget", 0.05)
    n = len(run.frame) if run.frame is not None else summ.get("n_pool", 1)
    if budget > 1:  # a count: show it as a fraction of the pool
        budget = budget / max(n, 1)
    return {"rank": int(rank), "budget": float(budget), "balance": cfg.get("balance", "global"),
            "kind": cfg.get("score", "subspace")}
