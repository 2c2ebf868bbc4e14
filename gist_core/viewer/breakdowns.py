"""Coverage and breakdowns of a re-scored selection: per subtask, per column, who each rule selects and at which rank."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from gist_core.methods import scoring
from gist_core.store.layout import RunLayout
from gist_core.viewer.labels import RULE_NAMES, UNKNOWN, group_column
from gist_core.viewer.rescore import Rescored
from gist_core.viewer.rundir import arrays, base_frame, target_frame, target_groups


def coverage_table(rs: Rescored) -> pd.DataFrame:
    """Per target subtask: picks and ground-truth coverage under the global top-k and the per-subtask quota."""
    rows = []
    for s in rs.subtasks:
        row = {"subtask": s}
        for rule in scoring.BALANCES:
            row[f"picked ({rule})"] = rs.picked[rule].get(s, 0)
            row[f"starved ({rule})"] = s in rs.starved[rule]
            m = rs.metrics[rule]
            if m:
                row[f"correct selected ({rule})"] = m["coverage"][s]["selected"]
        if rs.metrics["global"]:
            row["correct in pool"] = rs.metrics["global"]["coverage"][s]["in_pool"]
        rows.append(row)
    return pd.DataFrame(rows)


def coverage_display(rs: Rescored) -> pd.DataFrame:
    """coverage_table for the page: per subtask, one column per rule, 'correct / picked' (or 'picked' without
    labels), with ' ⚠ starved' where that rule starves it."""
    cov = coverage_table(rs)
    out = cov[["subtask"] + (["correct in pool"] if "correct in pool" in cov else [])].copy()
    for rule in scoring.BALANCES:
        cell = (cov[f"correct selected ({rule})"].astype(str) + " / " if f"correct selected ({rule})" in cov else "") \
            + cov[f"picked ({rule})"].astype(str)
        out[RULE_NAMES[rule]] = cell + np.where(cov[f"starved ({rule})"], " ⚠ starved", "")
    return out


def subtask_breakdown(rs: Rescored) -> pd.DataFrame:
    """Mean cosine with each subtask's direction: whole pool vs the selection."""
    f, sel = rs.frame, rs.frame["selected"].to_numpy()
    return pd.DataFrame([{"subtask": s, "mean cosine (pool)": float(f[f"cos:{s}"].mean()),
                          "mean cosine (selected)": float(f.loc[sel, f"cos:{s}"].mean()) if sel.any() else float("nan"),
                          "picked for it": rs.picked[rs.balance].get(s, 0)} for s in rs.subtasks])


def column_distributions(subtasks: list[str], cols: np.ndarray, rule: str = "global") -> pd.DataFrame:
    """Long frame (subtask, value) of each subtask column over the pool: raw, or calibrated by `rule`."""
    vals = np.asarray(cols, dtype=np.float64) if rule in ("global", "subtask") else scoring.calibrate(cols, rule)
    return pd.DataFrame({"subtask": np.repeat(subtasks, len(vals)), "value": vals.T.reshape(-1)})


def column_quantiles(subtasks: list[str], cols: np.ndarray, k: int) -> pd.DataFrame:
    """Per subtask column: pool median, spread and the value its own top-(k/T) needs; what a shared scale hides."""
    per = max(1, k // max(1, len(subtasks)))
    rows = []
    for t, s in enumerate(subtasks):
        c = np.sort(np.asarray(cols[:, t], dtype=np.float64))[::-1]
        rows.append({"subtask": s, "median": float(np.median(c)), "p95": float(np.quantile(c, 0.95)),
                     "std": float(c.std()), f"top-{per} edge": float(c[per - 1]), "max": float(c[0])})
    return pd.DataFrame(rows)


def gist_columns(rs: Rescored) -> np.ndarray:
    """(N, T) GIST subtask columns of a re-scored frame."""
    return np.column_stack([rs.frame[f"cos:{s}"].to_numpy() for s in rs.subtasks])


def compare_columns(run_dir: str | Path) -> dict[str, np.ndarray]:
    """Method -> (N, T) subtask columns that `compare` stored (LESS, raw cosine, embedding), in pool order;
    {} without a compare or for one written before the columns were stored."""
    path = RunLayout(run_dir).compare_scores
    if not path.is_file():
        return {}
    subtasks = list(target_groups(target_frame(run_dir)))
    df = pd.read_parquet(path)
    base = base_frame(run_dir)
    if "id" not in df or df["id"].tolist() != base["id"].tolist():
        return {}
    out = {}
    for method in ("less", "rawcos", "embedding"):
        names = [f"col:{method}:{s}" for s in subtasks]
        if all(n in df for n in names):
            out[method] = df[names].to_numpy(np.float64)
    return out


def selection_winners(frame: pd.DataFrame, subtasks: list[str], cols: np.ndarray, rule: str, k: int,
                      by: str = "skill") -> pd.DataFrame:
    """Who a rule selects from these columns: one row per value of `by` (skill, source, kind) with how many,
    the subtask each was picked for (the column it wins, or the quota turn that took it), their median length
    in tokens against the pool's, and whether that value is one of the target's subtasks."""
    idx, owner = scoring.select_owned(scoring.columns_as_scores(cols, subtasks), k, rule,
                                      {s: [t] for t, s in enumerate(subtasks)})
    sel = frame.iloc[idx]
    key = group_column(sel, by, subtasks) if by in sel else pd.Series(UNKNOWN, index=sel.index)
    d = pd.DataFrame({by: key.to_numpy(), "picked for": np.asarray(subtasks, dtype=object)[owner],
                      "n_tokens": sel["n_tokens"].to_numpy() if "n_tokens" in sel else np.nan})
    out = (d.groupby(by).agg(selected=("picked for", "size"), median_tokens=("n_tokens", "median"),
                             picked_for=("picked for", lambda w: ", ".join(f"{a} {b}" for a, b in w.value_counts().items())))
           .sort_values(["selected", by], ascending=[False, True]).reset_index())
    out["target subtask"] = out[by].isin(subtasks)
    out["median tokens (pool)"] = float(frame["n_tokens"].median()) if "n_tokens" in frame else np.nan
    return out.rename(columns={"picked_for": "picked for", "median_tokens": "median tokens"})


def max_winners(rs: Rescored, rule: str = "global", by: str = "skill") -> pd.DataFrame:
    """selection_winners for the GIST columns at the re-scored rank."""
    return selection_winners(rs.frame, rs.subtasks, gist_columns(rs), rule, rs.k, by)


def winners_by_rank(run_dir: str | Path, ranks: list[int], rule: str = "global", budget: float = 0.05,
                    by: str = "skill", top: int = 8) -> pd.DataFrame:
    """(rank, group, count): the composition of the rule's selection at each rank; the `top` most frequent
    groups by name, the rest as 'other'."""
    a, base = arrays(run_dir), base_frame(run_dir)
    k = scoring.budget_to_count(budget, len(base))
    rows = []
    for r in ranks:
        idx, _ = scoring.select(a.scores(r), k, rule, a.groups)
        g = group_column(base.iloc[idx], by, list(a.groups)) if by in base else pd.Series(UNKNOWN, index=idx)
        rows += [{"rank": r, "group": name, "count": int(c)} for name, c in g.value_counts().items()]
    out = pd.DataFrame(rows)
    keep = out.groupby("group")["count"].sum().nlargest(top).index
    out["group"] = out["group"].where(out["group"].isin(keep), "other")
    out = out.groupby(["rank", "group"], as_index=False)["count"].sum()
    out["target subtask"] = out["group"].isin(list(a.groups))
    return out


def wrong_in_selection(rs: Rescored) -> pd.DataFrame:
    """Selected examples whose ground truth says wrong answer or look-alike."""
    sel = rs.selection
    if "kind" not in sel:
        return sel.iloc[:0]
    return sel[sel["kind"].isin(["wrong", "distractor"])]


# ----------------------------------------------------------------------------- histograms and brushing
