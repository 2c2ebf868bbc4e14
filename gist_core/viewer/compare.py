"""Compare (gist-lab compare): the method table, its costs, agreement matrices and per-subtask results."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from gist_core.methods import registry, scoring
from gist_core.store.layout import RunLayout
from gist_core.store.reports import readable_report
from gist_core.viewer.rundir import file_stamp, json_number, read_json

_FAMILY_ORDER = ("gist", "gist_mean", "gist_max", "less", "rawcos", "random", "length", "embedding", "full", "oracle")
METHOD_ORDER = tuple(scoring.row_name(f, r) for f in _FAMILY_ORDER
                     for r in (scoring.BALANCES if f in registry.rule_families() else ("global",)))
# compare's families, each under every selection rule (GIST at either aggregation next to its own), then the oracle
COST_STAGES = ("warmup", "val_grads", "subspace", "val_features", "pool_features", "pool_projection", "scoring")
RATIO_LABELS = {"compute_ratio_gist_over_less": "compute (wall time)", "storage_ratio_gist_over_less": "storage",
                "flops_ratio_gist_over_less": "FLOPs",
                "compute_ratio_gist_over_less_without_projection": "compute without LESS projection"}
COMPARE_COLUMNS = {"method": None, "label": "label", "rule": "rule", "precision": "precision",
                   "precision_std": "precision_std", "recall": "recall", "wrong": "n_wrong_selected",
                   "look-alikes": "n_distractor_selected", "test_loss": "test_loss", "test_loss_std": "test_loss_std",
                   "exact_match": "exact_match", "exact_match_std": "exact_match_std", "train_steps": "train_steps",
                   "wall_s": "wall_s", "flops": "flops", "bytes": "bytes"}
_TEXT_COLUMNS = ("method", "label", "rule")


def compare_path(run_dir: str | Path) -> Path:
    """compare.json: the table `gist-lab compare` writes (and rewrites after each downstream row)."""
    return RunLayout(run_dir).compare_report


def has_compare(run_dir: str | Path) -> bool:
    return compare_path(run_dir).is_file()


def compare_stamp(run_dir: str | Path) -> int:
    """Cache key part: compare.json's mtime (rewritten after each downstream row)."""
    return file_stamp(compare_path(run_dir))


def row_family(row: str) -> str:
    """The method family of a compare row (gist_quantile -> gist)."""
    return scoring.split_row(row)[0]


def load_compare(run_dir: str | Path) -> dict | None:
    """compare.json, or None when it is missing, unreadable or has no method rows.

    A table still being filled (methods without test_loss yet) loads as is; entries that are not
    objects are dropped so every consumer can rely on `methods[row]` being a dict."""
    rep = readable_report(read_json(compare_path(run_dir)), "compare")
    if not isinstance(rep, dict) or not isinstance(rep.get("methods"), dict):
        return None
    methods = {k: v for k, v in rep["methods"].items() if isinstance(v, dict)}
    # compare.json is written with sorted keys; show the methods in compare's own order
    known = {name: i for i, name in enumerate(METHOD_ORDER)}
    methods = dict(sorted(methods.items(), key=lambda kv: (known.get(kv[0], len(known)), kv[0])))
    return {**rep, "methods": methods} if methods else None


def compare_table(rep: dict) -> pd.DataFrame:
    """One row per method in compare's order; NaN where a value is absent (no labels, no downstream yet)."""
    rows = []
    for name, e in rep["methods"].items():
        row = {col: (json_number(e.get(key)) if col not in _TEXT_COLUMNS else e.get(key, "")) for col, key in
               COMPARE_COLUMNS.items() if key}
        rows.append({"method": name, **row})
    return pd.DataFrame(rows, columns=list(COMPARE_COLUMNS))


def compare_rules(rep: dict) -> list[str]:
    """The selection rules a compare report holds rows for, in scoring's order."""
    have = {e.get("rule", "global") for e in rep["methods"].values()}
    return [r for r in scoring.BALANCES if r in have]


def rows_with_rules(table: pd.DataFrame, rep: dict, rules: list[str]) -> pd.DataFrame:
    """The table's rows under the given selection rules; methods without scores (random, full, oracle) stay."""
    def kept(row: str) -> bool:
        e = rep["methods"][row]
        return e.get("family", row) not in registry.rule_families() or e.get("rule", "global") in rules
    keep = [row for row in table["method"] if kept(row)]
    return table[table["method"].isin(keep)].reset_index(drop=True)


def has_downstream(rep: dict) -> bool:
    return any("test_loss" in e for e in rep["methods"].values())


def cost_frame(rep: dict) -> pd.DataFrame:
    """Long table (method, stage, seconds) of each method's wall time per stage, stages in pipeline order."""
    order = {s: i for i, s in enumerate(COST_STAGES)}
    rows = [{"method": name, "stage": stage, "seconds": json_number(sec)}
            for name, e in rep["methods"].items()
            for stage, sec in sorted((e.get("stage_wall_s") or {}).items(), key=lambda kv: order.get(kv[0], 99))]
    return pd.DataFrame(rows, columns=["method", "stage", "seconds"])


def matrix_frame(rep: dict, key: str) -> pd.DataFrame:
    """A method x method matrix ('overlap' Jaccard or 'rank_correlation' Spearman), rows and columns in
    compare's method order; NaN for a missing pair. Empty when compare did not write it."""
    m = rep.get(key) or {}
    names = [n for n in rep["methods"] if n in m] + [n for n in m if n not in rep["methods"]]
    return pd.DataFrame([[json_number((m.get(a) or {}).get(b)) for b in names] for a in names], index=names, columns=names)


def per_subtask_frame(rep: dict, metric: str = "loss") -> pd.DataFrame:
    """method x subtask test `metric` ('loss' or 'exact_match'), with the base model (no LoRA) as the last row."""
    sources = {n: e.get("per_subtask") for n, e in rep["methods"].items()}
    if isinstance(rep.get("base"), dict):
        sources["base"] = rep["base"].get("per_subtask")
    sources = {n: p for n, p in sources.items() if isinstance(p, dict) and p}
    subtasks = list(dict.fromkeys(s for p in sources.values() for s in p))
    return pd.DataFrame([[json_number((p.get(s) or {}).get(metric)) for s in subtasks] for p in sources.values()],
                        index=list(sources), columns=subtasks)


def per_seed_frame(rep: dict) -> pd.DataFrame:
    """Long table (method, seed, test_loss, exact_match) of the downstream runs behind each mean."""
    rows = [{"method": n, "seed": r.get("seed"), "test_loss": json_number(r.get("test_loss")),
             "exact_match": json_number(r.get("exact_match"))}
            for n, e in rep["methods"].items() for r in (e.get("per_seed") or [])]
    return pd.DataFrame(rows, columns=["method", "seed", "test_loss", "exact_match"])


def ratio_metrics(rep: dict) -> dict[str, float]:
    """The GIST / LESS cost ratios compare wrote (only when both ran), keyed as in compare.json."""
    return {k: float(rep[k]) for k in RATIO_LABELS if isinstance(rep.get(k), (int, float))}


def zoom_range(values, pad: float = 0.15) -> list[float] | None:
    """A y-axis range around the finite values: mean losses of a few LoRA runs differ in the 3rd decimal,
    which bars drawn from 0 would hide. None when there is nothing finite."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if not len(v):
        return None
    lo, hi = float(v.min()), float(v.max())
    span = (hi - lo) or abs(hi) * 0.01 or 1.0
    return [lo - pad * span, hi + pad * span]


def compare_value(rep: dict, row: str, key: str) -> float | None:
    """One number of a method row, or of the base model (row 'base'); None when absent (partial table)."""
    src = rep.get("base") if row == "base" else rep["methods"].get(row)
    v = json_number((src or {}).get(key))
    return None if np.isnan(v) else v


# ----------------------------------------------------------------------------- curvature (gist-lab geometry)
