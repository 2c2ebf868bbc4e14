"""What the dashboard pages show, as pure functions over a run directory (no Streamlit here).

Everything is read from the run directory written by `gist_core.pipeline`; nothing here
computes gradients. Re-scoring at another rank is a slice of the stored projections
(`train_proj.npy`) plus a small matrix product, so the heavy loads (memmap, subspace, frames)
are cached with `functools.lru_cache` keyed by (run directory, manifest mtime): a finished
stage rewrites the manifest, which invalidates the cache.
"""
from __future__ import annotations

import functools
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gist_core import artefacts, launcher, scoring
from gist_core.curvature import correlation_matrix  # noqa: F401  (the Curvature page's correlation view)
from gist_core.store import read_events, stable_hash
from gist_core.subspace import rank_for_variance
from gist_core.truth import Truth, has_ground_truth, metrics_from, relevant_mask, truth_masks  # noqa: F401

MAP_MAX_POINTS = 20_000
EXTERNAL_QUIET_S = 120  # a CLI-started run (no launch.json) counts as running while its events are this fresh
SCORE_SEMANTICS = "Score = cosine in [-1, 1] between an example's projected gradient and a target direction; higher = better aligned with the target."
TRUTH_LABELS = ("target skill · correct", "target skill · wrong answer", "target skill · look-alike", "other skill")
UNKNOWN = "(unknown)"
METHOD_NAMES = {"less": "LESS", "rawcos": "raw-gradient cosine", "embedding": "embedding similarity"}
RULE_NAMES = {"global": "global (paper)", "subtask": "quota", "zscore": "z-score", "quantile": "quantile"}
RULE_HELP = ("global: top-k of the max subtask cosine (the GIST paper's and LESS's rule); quota: each subtask column "
             "takes its best example in turn; z-score / quantile: each column standardised over the pool (z-score, or "
             "the share of the pool at or below), then the top-k of their max")
EXPORT_FIELDS = ("id", "prompt", "response", "source", "skill", "subtask", "kind")


# ----------------------------------------------------------------------------- run directory basics
def file_stamp(path: str | Path) -> int:
    """Cache key part: a file's mtime (ns); 0 while there is none."""
    p = Path(path)
    return p.stat().st_mtime_ns if p.exists() else 0


def stamp(run_dir: str | Path) -> int:
    """Cache key part: manifest.json's mtime (a finished stage rewrites it)."""
    return file_stamp(Path(run_dir) / "manifest.json")


def read_json(path: Path, default=None):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return default  # absent, or caught mid-write by a non-atomic writer


def has_scores(run_dir: str | Path) -> bool:
    d = Path(run_dir)
    return all((d / f).exists() for f in ("scores.parquet", "train_proj.npy", "target.parquet", "config.json"))


@dataclass
class RunData:
    path: Path
    config: dict
    summary: dict
    manifest: dict
    frame: pd.DataFrame | None   # scores joined with prompt/response; None before the scores stage
    target: pd.DataFrame | None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def has_truth(self) -> bool:
        return self.frame is not None and has_ground_truth(self.frame)


def load_run(run_dir: str | Path) -> RunData:
    d = Path(run_dir)
    done = has_scores(d)
    return RunData(path=d, config=read_json(d / "config.json", {}), summary=read_json(d / "summary.json", {}),
                   manifest=read_json(d / "manifest.json", {"stages": {}}),
                   frame=_base_frame(str(d), stamp(d)) if done else None,
                   target=_target_frame(str(d), stamp(d)) if done else None)


@functools.lru_cache(maxsize=4)
def _base_frame(run_dir: str, _stamp: int) -> pd.DataFrame:
    """scores.parquet + prompt/response from examples.parquet, one row per pool example in pool order."""
    d = Path(run_dir)
    scores = pd.read_parquet(d / "scores.parquet")
    ex = pd.read_parquet(d / "examples.parquet", columns=["id", "prompt", "response"])
    if len(ex) == len(scores) and (ex["id"].to_numpy() == scores["id"].to_numpy()).all():
        text = ex[["prompt", "response"]].reset_index(drop=True)
    else:  # not in the same order: join on id
        text = scores[["id"]].merge(ex, on="id", how="left")[["prompt", "response"]]
    # cos:* columns hold the config rank; rescored_frame recomputes them at the chosen rank
    frame = scores.drop(columns=[c for c in scores.columns if c.startswith("cos:")]).reset_index(drop=True)
    frame.insert(0, "row", np.arange(len(frame)))
    return pd.concat([frame, text], axis=1)


@functools.lru_cache(maxsize=4)
def _target_frame(run_dir: str, _stamp: int) -> pd.DataFrame:
    return pd.read_parquet(Path(run_dir) / "target.parquet").reset_index(drop=True)


def target_groups(target: pd.DataFrame) -> dict[str, list[int]]:
    """Subtask -> target rows, as pipeline.rescore builds them (no subtask: the example is its own)."""
    return scoring.groups_from_labels(target["id"], target["subtask"])


@dataclass
class Arrays:
    X: np.ndarray            # (N, R) memmap of projected pool gradients
    val_coords: np.ndarray   # (N_v, R) validation coordinates
    groups: dict[str, list[int]]
    aggregation: str

    @property
    def r_max(self) -> int:
        return min(self.X.shape[1], self.val_coords.shape[1])


def _subspace_path(run_dir: str | Path) -> Path:
    cfg = read_json(Path(run_dir) / "config.json", {})
    return Path(run_dir) / "checkpoints" / f"ckpt-{cfg.get('checkpoint', 1)}" / "subspace.safetensors"


def stale_problem(run_dir: str | Path) -> str | None:
    """Why this run's GIST artefacts must not be shown (written before artefact format 2), else None."""
    path = _subspace_path(run_dir)
    fmt = artefacts.artefact_format(path) if path.is_file() else artefacts.FORMAT
    if fmt >= artefacts.FORMAT:
        return None
    return (f"`{path.relative_to(run_dir)}` was written in artefact format {fmt}, when "
            "safetensors 0.8 scrambled GIST's target directions. Rerun the command that made this run "
            "(`gist-lab select --config RUN/config.json`, or the same `demo`/`compare`): it recomputes the "
            "subspace from the stored validation gradients and re-scores, keeping the pool projections.")


@functools.lru_cache(maxsize=4)
def _arrays(run_dir: str, _stamp: int) -> Arrays:
    d = Path(run_dir)
    cfg = read_json(d / "config.json", {})
    val = artefacts.load_subspace(_subspace_path(d), ("val_coords",)).val_coords  # the basis is never needed here
    return Arrays(X=artefacts.load_npy(d / "train_proj.npy", ndim=2, mmap=True), val_coords=val,
                  groups=target_groups(_target_frame(run_dir, _stamp)),
                  aggregation=cfg.get("aggregation", "subtask_mean"))


def arrays(run_dir: str | Path) -> Arrays:
    return _arrays(str(run_dir), stamp(run_dir))


def r_max(run_dir: str | Path) -> int:
    return arrays(run_dir).r_max


# ----------------------------------------------------------------------------- ground truth
# One definition of the random baseline on every page and in the CLI: the *expected* precision of a
# uniformly random selection of the same size (the pool's share of correct target examples), not one draw.
RANDOM_BASELINE_HELP = ("'vs random': this precision minus the expected precision of a random selection of the same size, "
                        "i.e. the share of correct target-skill examples in the pool (no sampling noise)")
def truth_labels(frame: pd.DataFrame, subtasks: list[str]) -> pd.Series:
    """One of TRUTH_LABELS per row (UNKNOWN where the pool carries no skill)."""
    in_target = frame["skill"].isin(subtasks).to_numpy()
    kind = frame["kind"].to_numpy(dtype=object)
    out = np.where(in_target, TRUTH_LABELS[0], TRUTH_LABELS[3]).astype(object)
    out[in_target & (kind == "wrong")] = TRUTH_LABELS[1]
    out[in_target & (kind == "distractor")] = TRUTH_LABELS[2]
    out[frame["skill"].isna().to_numpy()] = UNKNOWN
    return pd.Series(out, index=frame.index, name="truth")


@functools.lru_cache(maxsize=4)
def _truth(run_dir: str, _stamp: int, subtasks: tuple[str, ...]) -> Truth | None:
    return truth_masks(_base_frame(run_dir, _stamp), list(subtasks))


# ----------------------------------------------------------------------------- re-scoring
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

    @property
    def selection(self) -> pd.DataFrame:
        """The chosen rule's selection, best first."""
        return self.frame[self.frame["selected"]].sort_values("score", ascending=False)


def budget_count(budget: float, n: int) -> int:
    return scoring.budget_to_count(budget, n)


def scores_at(run_dir: str | Path, rank: int) -> scoring.Scores:
    """Same result as pipeline.rescore(run_dir, rank), from cached arrays (no basis reload, no torch)."""
    a = arrays(run_dir)
    return scoring.gist_scores(a.X, a.val_coords, a.groups, rank, a.aggregation)


def rescored_frame(run_dir: str | Path, rank: int, balance: str = "global", budget: float = 0.05) -> Rescored:
    """Scores, ranks and both selection rules at `rank` and `budget`; `balance` picks `selected`."""
    t0 = time.perf_counter()
    if balance not in scoring.BALANCES:
        raise ValueError(f"balance must be one of {scoring.BALANCES}")
    a, base = arrays(run_dir), _base_frame(str(run_dir), stamp(run_dir))
    sc = scoring.gist_scores(a.X, a.val_coords, a.groups, rank, a.aggregation)
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
                    ms=(time.perf_counter() - t0) * 1000, starved_basis=basis)


def default_settings(run: RunData) -> dict:
    """Rank, budget (fraction) and balance the run itself used."""
    cfg, summ = run.config, run.summary
    rank = summ.get("rank") or cfg.get("rank") or 1
    budget = cfg.get("budget", 0.05)
    n = len(run.frame) if run.frame is not None else summ.get("n_pool", 1)
    if budget > 1:  # a count: show it as a fraction of the pool
        budget = budget / max(n, 1)
    return {"rank": int(rank), "budget": float(budget), "balance": cfg.get("balance", "global")}


# ----------------------------------------------------------------------------- coverage and breakdowns
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
    path = Path(run_dir) / "compare" / "scores.parquet"
    if not path.is_file():
        return {}
    subtasks = list(target_groups(_target_frame(str(run_dir), stamp(run_dir))))
    df = pd.read_parquet(path)
    base = _base_frame(str(run_dir), stamp(run_dir))
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
    a, base = arrays(run_dir), _base_frame(str(run_dir), stamp(run_dir))
    k = scoring.budget_to_count(budget, len(base))
    rows = []
    for r in ranks:
        idx, _ = scoring.select(scoring.gist_scores(a.X, a.val_coords, a.groups, r, a.aggregation), k, rule, a.groups)
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
def group_column(frame: pd.DataFrame, by: str, subtasks: list[str]) -> pd.Series:
    if by == "truth":
        return truth_labels(frame, subtasks) if has_ground_truth(frame) else pd.Series(UNKNOWN, index=frame.index)
    if by == "selected":
        return frame["selected"].map({True: "selected", False: "not selected"})
    return frame[by].astype(object).where(frame[by].notna(), UNKNOWN).astype(str)


def histogram_counts(frame: pd.DataFrame, by: str, subtasks: list[str], bins: int = 60) -> pd.DataFrame:
    """Score counts per group on shared bin edges: (group, left, right, mid, count); light to plot."""
    score = frame["score"].to_numpy(dtype=np.float64)
    lo, hi = float(score.min()), float(score.max())
    edges = np.linspace(lo, hi if hi > lo else lo + 1e-6, bins + 1)
    groups = group_column(frame, by, subtasks).to_numpy()
    out = []
    for g in pd.unique(groups):
        counts, _ = np.histogram(score[groups == g], edges)
        out.append(pd.DataFrame({"group": g, "left": edges[:-1], "right": edges[1:],
                                 "mid": (edges[:-1] + edges[1:]) / 2, "count": counts}))
    return pd.concat(out, ignore_index=True)


def score_range_from_selection(selection: dict | None) -> tuple[float, float] | None:
    """Score interval brushed on a histogram: the box's x-range, the lasso's x-extent, or the picked bars."""
    if not selection:
        return None
    for shape in list(selection.get("box") or []) + list(selection.get("lasso") or []):
        xs = [float(x) for x in shape.get("x", []) if x is not None]
        if xs:
            return min(xs), max(xs)
    bars = [p.get("customdata") for p in selection.get("points") or [] if p.get("customdata") is not None]
    bars = [b for b in bars if isinstance(b, (list, tuple)) and len(b) >= 2]
    if bars:
        return min(float(b[0]) for b in bars), max(float(b[1]) for b in bars)
    return None


def rows_from_points(points: list[dict] | None) -> list[int]:
    """Pool rows of selected scatter points (customdata[0] = row; target markers carry negatives)."""
    rows = []
    for p in points or []:
        cd = p.get("customdata")
        v = cd[0] if isinstance(cd, (list, tuple)) and cd else cd
        if isinstance(v, (int, float)) and v >= 0:
            rows.append(int(v))
    return sorted(set(rows))


def points_in_polygon(x: np.ndarray, y: np.ndarray, px: list[float], py: list[float]) -> np.ndarray:
    """Even-odd rule, vectorised over the points (one pass per polygon edge)."""
    inside = np.zeros(len(x), dtype=bool)
    n = len(px)
    for i in range(n):
        x1, y1, x2, y2 = px[i], py[i], px[(i + 1) % n], py[(i + 1) % n]
        if y1 == y2:
            continue
        crosses = (y1 > y) != (y2 > y)
        x_at = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
        inside ^= crosses & (x < x_at)
    return inside


def rows_in_selection(pts: pd.DataFrame, selection: dict | None) -> list[int]:
    """Pool rows picked on the map: clicked points plus every drawn point inside a box or lasso.

    The shapes come back from the browser even when the points do not (WebGL traces, many
    points), so the geometry here is what makes lasso/box selection reliable."""
    if not selection:
        return []
    rows = set(rows_from_points(selection.get("points")))
    x, y = pts["x"].to_numpy(), pts["y"].to_numpy()
    mask = np.zeros(len(pts), dtype=bool)
    for b in selection.get("box") or []:
        if len(b.get("x", [])) >= 2 and len(b.get("y", [])) >= 2:
            (x0, x1), (y0, y1) = sorted(b["x"][:2]), sorted(b["y"][:2])
            mask |= (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
    for lasso in selection.get("lasso") or []:
        if len(lasso.get("x", [])) >= 3:
            mask |= points_in_polygon(x, y, [float(v) for v in lasso["x"]], [float(v) for v in lasso["y"]])
    rows.update(pts["row"].to_numpy()[mask].tolist())
    return sorted(rows)


def in_score_range(frame: pd.DataFrame, lo: float, hi: float) -> pd.DataFrame:
    s = frame["score"]
    return frame[(s >= lo) & (s <= hi)]


def brush_summary(rows: pd.DataFrame, subtasks: list[str]) -> dict:
    out = {"n": len(rows), "n_selected": int(rows["selected"].sum()) if len(rows) else 0}
    if len(rows) and has_ground_truth(rows):
        out["precision"] = float(relevant_mask(rows, subtasks).mean())
    return out


# ----------------------------------------------------------------------------- examples table
def filter_frame(frame: pd.DataFrame, *, sources=None, skills=None, kinds=None, selected: str = "all",
                 text: str = "", score_range: tuple[float, float] | None = None) -> pd.DataFrame:
    """Rows matching every given filter (None / empty = no filter on that column)."""
    m = np.ones(len(frame), dtype=bool)
    for col, vals in (("source", sources), ("skill", skills), ("kind", kinds)):
        if vals:
            m &= group_column(frame, col, []).isin(vals).to_numpy()
    if selected == "selected":
        m &= frame["selected"].to_numpy()
    elif selected == "not selected":
        m &= ~frame["selected"].to_numpy()
    if text:
        pat = re.escape(text)
        m &= (frame["prompt"].str.contains(pat, case=False, na=False)
              | frame["response"].str.contains(pat, case=False, na=False)
              | frame["id"].astype(str).str.contains(pat, case=False, na=False)).to_numpy()
    if score_range:
        s = frame["score"].to_numpy()
        m &= (s >= score_range[0]) & (s <= score_range[1])
    return frame[m]


def options(frame: pd.DataFrame, col: str) -> list[str]:
    return sorted(group_column(frame, col, []).unique().tolist()) if col in frame else []


def example_detail(rs: Rescored, row: int) -> dict:
    """One pool example: text, labels, score/rank, per-subtask cosines, selection under both rules."""
    r = rs.frame.iloc[row]
    cos = pd.DataFrame({"subtask": rs.subtasks, "cosine": [float(r[f"cos:{s}"]) for s in rs.subtasks]})
    return {"row": int(row), "id": r["id"], "prompt": r["prompt"], "response": r["response"],
            "source": r.get("source"), "skill": r.get("skill"), "kind": r.get("kind"), "score": float(r["score"]),
            "rank": int(r["rank"]), "n_tokens": int(r["n_tokens"]) if "n_tokens" in r else None,
            "selected": {rule: bool(r[f"selected_{rule}"]) for rule in scoring.BALANCES}, "cosines": cos}


@functools.lru_cache(maxsize=4)
def run_tokenizer(model: str, trust_remote_code: bool = False):
    """The run's own tokenizer (a GGUF or registry model: its converted folder), loaded once per model."""
    from gist_core.model import load_tokenizer
    return load_tokenizer(model, trust_remote_code)


def model_input(run_dir: str | Path, row: int) -> dict:
    """Pool example `row` as the model saw it: the run's tokenizer, chat template and max_length, decoded back
    to text with special tokens shown; `response` is exactly the tokens in the loss (and so in the gradient)."""
    from gist_core.formatting import IGNORE, encode_pair
    d = Path(run_dir)
    cfg = read_json(d / "config.json", {})
    if not cfg.get("model"):
        raise FileNotFoundError(f"{d}: no config.json naming the model")
    tok = run_tokenizer(cfg["model"], bool(cfg.get("trust_remote_code", False)))
    ex = _base_frame(str(d), stamp(d)).iloc[int(row)]  # the page's own cached frame: no second read of the text
    # examples.parquet keeps a chat row's last user turn as its prompt, not the turns before it
    ids, labels, cut = encode_pair(tok, ex["prompt"], ex["response"], int(cfg.get("max_length", 256)))
    start = next((i for i, y in enumerate(labels) if y != IGNORE), len(ids))
    return {"prompt": tok.decode(ids[:start], skip_special_tokens=False),
            "response": tok.decode(ids[start:], skip_special_tokens=False),
            "n_prompt": start, "n_response": len(ids) - start, "truncated": bool(cut),
            "chat_template": bool(getattr(tok, "chat_template", None)), "tokenizer": type(tok).__name__,
            "model": cfg["model"]}


def nearest_targets(run_dir: str | Path, row: int, rank: int, k: int = 5) -> pd.DataFrame:
    """The k target (validation) examples whose coordinates are closest in cosine to pool row `row` at rank r."""
    a = arrays(run_dir)
    x = np.asarray(a.X[row, :rank], dtype=np.float64)
    Y = np.asarray(a.val_coords[:, :rank], dtype=np.float64)
    cos = (Y @ x) / np.maximum(np.linalg.norm(Y, axis=1) * np.linalg.norm(x), 1e-300)
    order = np.argsort(-cos, kind="stable")[:k]
    t = _target_frame(str(run_dir), stamp(run_dir))
    out = t.iloc[order][["id", "subtask", "prompt", "response"]].reset_index(drop=True)
    out.insert(0, "cosine", cos[order])
    return out


def export_jsonl(rows: pd.DataFrame) -> bytes:
    """Rows in selected.jsonl's shape: the example's fields plus `score` (one JSON object per line)."""
    cols = [c for c in EXPORT_FIELDS if c in rows] + ["score"]
    lines = []
    for rec in rows[cols].to_dict("records"):
        clean = {k: (float(v) if k == "score" else v) for k, v in rec.items() if not _missing(v)}
        lines.append(json.dumps(clean, ensure_ascii=False, default=str))
    return ("\n".join(lines) + ("\n" if lines else "")).encode("utf-8")


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA


# ----------------------------------------------------------------------------- spectrum
@dataclass
class Spectrum:
    epoch: int
    sigma: np.ndarray        # all singular values, descending
    explained: np.ndarray    # cumulative explained variance, r = 1..len(sigma)
    r95: int
    r99: int


def spectra(run_dir: str | Path) -> list[Spectrum]:
    return _spectra(str(run_dir), stamp(run_dir))


@functools.lru_cache(maxsize=8)
def _spectra(run_dir: str, _stamp: int) -> list[Spectrum]:
    out = []
    for path in Path(run_dir).glob("checkpoints/ckpt-*/subspace.safetensors"):
        m = re.fullmatch(r"ckpt-(\d+)", path.parent.name)
        if not m:
            continue
        # sigma is 1-D, which safetensors never scrambled: spectra of older runs stay readable
        sigma = np.asarray(artefacts.load_subspace(path, ("sigma",), allow_stale=True).sigma, dtype=np.float64)
        s2 = sigma ** 2
        out.append(Spectrum(epoch=int(m.group(1)), sigma=sigma, explained=np.cumsum(s2) / max(s2.sum(), 1e-300),
                            r95=rank_for_variance(sigma, 0.95), r99=rank_for_variance(sigma, 0.99)))
    return sorted(out, key=lambda s: s.epoch)


def advisor_curve(run_dir: str | Path):
    """The rank advisor's curve for the run's checkpoint and aggregation: advisor.json when it matches,
    else computed from the stored coordinates (cheap); None when no subtask has two validation examples."""
    return _advisor_curve(str(run_dir), stamp(run_dir))


@functools.lru_cache(maxsize=4)
def _advisor_curve(run_dir: str, _stamp: int):
    from gist_core import advisor
    a, cfg = _arrays(run_dir, _stamp), read_json(Path(run_dir) / "config.json", {})
    return advisor.advise(a.val_coords, a.X, a.groups, a.aggregation, seed=cfg.get("seed", 0))


def rank_ranges(ranks: list[int]) -> str:
    """[1, 2, 3, 7, 9, 10] -> '1–3, 7, 9–10'."""
    parts, start = [], None
    for i, r in enumerate(ranks):
        if start is None:
            start = r
        if i + 1 == len(ranks) or ranks[i + 1] != r + 1:
            parts.append(f"{start}–{r}" if r != start else str(r))
            start = None
    return ", ".join(parts)


def spectrum_frame(specs: list[Spectrum]) -> pd.DataFrame:
    """Long format for plotting: (epoch, r, sigma, explained)."""
    return pd.concat([pd.DataFrame({"epoch": s.epoch, "r": np.arange(1, len(s.sigma) + 1), "sigma": s.sigma,
                                    "explained": s.explained}) for s in specs], ignore_index=True) \
        if specs else pd.DataFrame(columns=["epoch", "r", "sigma", "explained"])


# ----------------------------------------------------------------------------- 2-D map
@dataclass
class MapData:
    pool: pd.DataFrame      # row, x, y (a seeded subsample of at most max_points pool rows)
    targets: pd.DataFrame   # id, subtask, prompt, x, y
    method: str
    rank: int


def map_sample(n: int, max_points: int = MAP_MAX_POINTS, seed: int = 0) -> np.ndarray:
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


def _unit(M: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(M, axis=1, keepdims=True)
    return M / np.where(n > 0, n, 1.0)


def _map_inputs(run_dir: str | Path, rank: int, max_points: int, seed: int):
    a = arrays(run_dir)
    if not 1 <= rank <= a.r_max:
        raise ValueError(f"rank r={rank} outside 1..{a.r_max}")
    idx = map_sample(a.X.shape[0], max_points, seed)
    P = _unit(np.asarray(a.X[idx, :rank], dtype=np.float64))  # cosine geometry: unit rows
    V = _unit(np.asarray(a.val_coords[:, :rank], dtype=np.float64))
    return idx, P, V


def pca_2d(P: np.ndarray, V: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top-2 principal axes of the pool rows; targets projected on the same axes (zeros pad r < 2)."""
    mu = P.mean(0)
    _, _, Vt = np.linalg.svd(P - mu, full_matrices=False)
    W = np.zeros((P.shape[1], 2))
    W[:, :min(2, Vt.shape[0])] = Vt[:2].T
    return (P - mu) @ W, (V - mu) @ W


def umap_key(run_dir: str | Path, rank: int, max_points: int = MAP_MAX_POINTS, seed: int = 0) -> str:
    """What a UMAP depends on: the stored projections and target directions (their recorded sha256, so
    a rerun with --overwrite makes a new key), the rank, the sample size and the seed."""
    stages = read_json(Path(run_dir) / "manifest.json", {}).get("stages", {})
    cfg = read_json(Path(run_dir) / "config.json", {})
    sub_stage = stages.get(f"val_grads/ckpt-{cfg.get('checkpoint', 1)}", {})
    parts = [stages.get("train_proj", {}).get("digests") or stages.get("train_proj", {}).get("finished_at"),
             sub_stage.get("digests") or sub_stage.get("finished_at"), rank, max_points, seed]
    return stable_hash(parts)[:10]


def umap_path(run_dir: str | Path, rank: int, max_points: int = MAP_MAX_POINTS, seed: int = 0) -> Path:
    return Path(run_dir) / f"map_umap_r{rank}_{umap_key(run_dir, rank, max_points, seed)}.npy"


def umap_cached(run_dir: str | Path, rank: int, max_points: int = MAP_MAX_POINTS, seed: int = 0) -> bool:
    return _load_umap(run_dir, rank, max_points, seed) is not None


def _load_umap(run_dir, rank, max_points, seed) -> np.ndarray | None:
    p = umap_path(run_dir, rank, max_points, seed)
    if not p.exists():
        return None
    a = arrays(run_dir)
    expect = (len(map_sample(a.X.shape[0], max_points, seed)) + a.val_coords.shape[0], 2)
    try:
        Z = artefacts.load_npy(p, ndim=2)
    except artefacts.ArtefactError:
        return None
    return Z if Z.shape == expect else None  # damaged: recompute


def map_coords(run_dir: str | Path, rank: int, method: str = "pca", max_points: int = MAP_MAX_POINTS,
               seed: int = 0, compute: bool = True) -> MapData | None:
    """2-D coordinates of (a subsample of) the pool and of the target examples at rank r.

    PCA is instant. UMAP is cached in RUN/map_umap_r{r}.npy; with compute=False a missing cache
    returns None instead of fitting (tens of seconds the first time in a process)."""
    idx, P, V = _map_inputs(run_dir, rank, max_points, seed)
    if method == "pca":
        zp, zv = pca_2d(P, V)
    elif method == "umap":
        Z = _load_umap(run_dir, rank, max_points, seed)
        if Z is None:
            if not compute:
                return None
            Z = _fit_umap(np.vstack([P, V]), seed)
            path = umap_path(run_dir, rank, max_points, seed)
            for old in Path(run_dir).glob(f"map_umap_r{rank}_*.npy"):  # maps of earlier results
                old.unlink(missing_ok=True)
            artefacts.save_npy(path, Z)
        zp, zv = Z[:len(P)], Z[len(P):]
    else:
        raise ValueError(f"unknown map method '{method}' (pca | umap)")
    t = _target_frame(str(run_dir), stamp(run_dir))
    targets = t[["id", "subtask", "prompt"]].reset_index(drop=True).assign(x=zv[:, 0], y=zv[:, 1])
    return MapData(pool=pd.DataFrame({"row": idx, "x": zp[:, 0], "y": zp[:, 1]}), targets=targets,
                   method=method, rank=rank)


def map_frame(md: MapData, frame: pd.DataFrame, color_by: str, subtasks: list[str]) -> pd.DataFrame:
    """The map's pool points with what the hover and colouring need ('color' column)."""
    cols = [c for c in ["id", "score", "rank", "source", "skill", "kind", "selected", "prompt"] if c in frame]
    pts = md.pool.join(frame[cols], on="row")  # frame's index is the pool row
    if color_by == "score":
        pts["color"] = pts["score"]
    else:
        pts["color"] = group_column(frame, color_by, subtasks).to_numpy()[pts["row"].to_numpy()]
    return pts


def _fit_umap(M: np.ndarray, seed: int) -> np.ndarray:
    import umap  # slow first import (numba): only when asked for
    n_neighbors = int(max(2, min(15, len(M) - 1)))
    return umap.UMAP(n_components=2, n_neighbors=n_neighbors, min_dist=0.1, random_state=seed,
                     init="random" if len(M) < 10 else "spectral").fit_transform(M).astype(np.float32)


# ----------------------------------------------------------------------------- runs and progress
def stage_plan(config: dict) -> list[str]:
    epochs = int((config.get("warmup") or {}).get("epochs", 1))
    return ["data", "warmup", *[f"val_grads/ckpt-{e}" for e in range(1, epochs + 1)], "train_proj", "scores"]


def current_events(run_dir: str | Path) -> list[dict]:
    """Events of the latest attempt: since the last launch, else since the last 'data' start."""
    events = read_events(run_dir)
    ls = launcher.read_launch(run_dir)
    if ls and ls.get("started_at"):
        return [e for e in events if e.get("t", 0) >= ls["started_at"] - 1]
    starts = [i for i, e in enumerate(events) if e.get("stage") == "data" and e.get("status") == "start"]
    return events[starts[-1]:] if starts else events


def stage_progress(run_dir: str | Path) -> pd.DataFrame:
    """Per planned stage: status (pending/running/done/skipped/error), done, total, fraction, wall_s, error."""
    cfg = read_json(Path(run_dir) / "config.json", {})
    plan = stage_plan(cfg) if cfg else []
    state = {s: {"stage": s, "status": "pending", "done": None, "total": None, "fraction": 0.0,
                 "wall_s": None, "error": None, "loss": None} for s in plan}
    ranks: dict[str, dict] = {}  # torchrun: stage -> rank -> its own row
    for e in current_events(run_dir):
        if e.get("rank") is not None:
            r = ranks.setdefault(e["stage"], {}).setdefault(e["rank"], {"stage": e["stage"], "status": "pending",
                                                                      "done": None, "total": None, "fraction": 0.0,
                                                                      "wall_s": None, "error": None, "loss": None})
            _apply_event(r, e)
            continue
        s = state.setdefault(e["stage"], {"stage": e["stage"], "status": "pending", "done": None, "total": None,
                                          "fraction": 0.0, "wall_s": None, "error": None, "loss": None})
        _apply_event(s, e)
    for stage, per_rank in ranks.items():
        state[stage] = _merge_ranks(stage, list(per_rank.values()))
    return pd.DataFrame(list(state.values()))


def _merge_ranks(stage: str, rows: list[dict]) -> dict:
    """One row for a stage several ranks ran: rows summed; running while any rank runs, error if any failed."""
    statuses = {r["status"] for r in rows}
    status = next((s for s in ("error", "running", "pending", "done", "skipped") if s in statuses), "pending")
    done = sum(r["done"] or 0 for r in rows)
    total = sum(r["total"] or 0 for r in rows) or None
    walls = [r["wall_s"] for r in rows if r["wall_s"] is not None]
    return {"stage": stage, "status": status, "done": done, "total": total,
            "fraction": 1.0 if status in ("done", "skipped") else (min(1.0, done / total) if total else 0.0),
            "wall_s": max(walls) if walls else None, "error": next((r["error"] for r in rows if r["error"]), None),
            "loss": None}


def _apply_event(s: dict, e: dict) -> None:
    """Fold one progress event into a stage row."""
    st = e.get("status")
    if st in ("start", "progress"):
        s["status"] = "running"
        s["total"] = e.get("total", s["total"])
        s["done"] = e.get("done", s["done"] or 0)
        s["loss"] = e.get("loss", s["loss"])
        s["fraction"] = min(1.0, s["done"] / s["total"]) if s["total"] else 0.0
    elif st in ("end", "skip"):
        s.update(status="done" if st == "end" else "skipped", fraction=1.0, wall_s=e.get("wall_s"))
    elif st == "error":
        s.update(status="error", error=e.get("error"), wall_s=e.get("wall_s"))


def run_state(run_dir: str | Path) -> dict:
    """{'status': running | done | failed | cancelled | stopped | empty, 'message': str | None, 'launch': ...}."""
    d = Path(run_dir)
    ls = launcher.state(d)
    events = current_events(d)
    summary = d / "summary.json"
    t_start = (ls.started_at if ls.launched else (events[0]["t"] if events else 0)) or 0
    # `gist-lab geometry` only reads a finished run: its launch leaves the run's own summary valid
    measured_only = ls.launched and "geometry" in (ls.cmd or [])
    fresh = summary.exists() and (measured_only or summary.stat().st_mtime >= t_start - 1)
    err_events = [e for e in events if e.get("status") == "error"]
    if ls.alive:
        status, msg = "running", None
    elif fresh and ls.returncode in (None, 0):
        status, msg = "done", None
    elif ls.cancelled:
        status, msg = "cancelled", "cancelled from the dashboard; launch the same settings again to resume"
    elif ls.error or err_events or (ls.returncode not in (None, 0)):
        status = "failed"
        msg = ls.error or (err_events[-1].get("error") if err_events else None) or \
            f"the run exited with code {ls.returncode}; see launch.log"
    elif not ls.launched and events and time.time() - events[-1].get("t", 0) < EXTERNAL_QUIET_S:
        status, msg = "running", "started outside the dashboard (cancel it where it was started)"
    elif events:
        status, msg = "stopped", "the run stopped before finishing; launch the same settings again to resume"
    elif ls.launched:
        status, msg = "failed", "the run exited before its first stage; see launch.log"
    else:
        status, msg = "empty", None
    return {"status": status, "message": msg, "launch": ls}


def runs_table(root: str | Path) -> pd.DataFrame:
    """Home-page rows: every run folder under root (config.json or launch.json), newest first."""
    root = Path(root)
    dirs = {p.parent for pattern in ("*/config.json", f"*/{launcher.LAUNCH_FILE}") for p in root.glob(pattern)} \
        if root.is_dir() else set()
    out = []
    for d in dirs:
        cfg, summ = read_json(d / "config.json", {}), read_json(d / "summary.json", {})
        out.append({"run": d.name, "status": run_state(d)["status"], "model": _short(cfg.get("model")),
                    "data": f"{_short(cfg.get('train'))} → {_short(cfg.get('target'), 2)}" if cfg else "",
                    "budget": cfg.get("budget"), "rank": summ.get("rank", cfg.get("rank")),
                    "precision": summ.get("precision"), "random precision": summ.get("random_precision"),
                    "selected": summ.get("n_selected"), "mtime": d.stat().st_mtime})
    df = pd.DataFrame(out, columns=["run", "status", "model", "data", "budget", "rank", "precision",
                                    "random precision", "selected", "mtime"])
    return df.sort_values("mtime", ascending=False).drop(columns="mtime").reset_index(drop=True)


def _short(spec: str | None, parts: int = 1) -> str:
    """Last path component(s) of a path-like spec, for compact tables."""
    if not spec:
        return ""
    return "/".join(Path(spec).parts[-parts:])


# ----------------------------------------------------------------------------- compare (gist-lab compare)
COMPARE_FILE = "compare.json"
_FAMILY_ORDER = ("gist", "gist_mean", "gist_max", "less", "rawcos", "random", "length", "embedding", "full", "oracle")
METHOD_ORDER = tuple(scoring.row_name(f, r) for f in _FAMILY_ORDER
                     for r in (scoring.BALANCES if f in scoring.RULE_FAMILIES else ("global",)))
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
    return Path(run_dir) / COMPARE_FILE


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
    rep = read_json(compare_path(run_dir))
    if not isinstance(rep, dict) or not isinstance(rep.get("methods"), dict):
        return None
    methods = {k: v for k, v in rep["methods"].items() if isinstance(v, dict)}
    # compare.json is written with sorted keys; show the methods in compare's own order
    known = {name: i for i, name in enumerate(METHOD_ORDER)}
    methods = dict(sorted(methods.items(), key=lambda kv: (known.get(kv[0], len(known)), kv[0])))
    return {**rep, "methods": methods} if methods else None


def _num(v) -> float:
    """A JSON number as float; NaN for missing, null or non-numeric values."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def compare_table(rep: dict) -> pd.DataFrame:
    """One row per method in compare's order; NaN where a value is absent (no labels, no downstream yet)."""
    rows = []
    for name, e in rep["methods"].items():
        row = {col: (_num(e.get(key)) if col not in _TEXT_COLUMNS else e.get(key, "")) for col, key in
               COMPARE_COLUMNS.items() if key}
        rows.append({"method": name, **row})
    return pd.DataFrame(rows, columns=list(COMPARE_COLUMNS))


def compare_rules(rep: dict) -> list[str]:
    """The selection rules a compare report holds rows for, in scoring's order."""
    have = {e.get("rule", "global") for e in rep["methods"].values()}
    return [r for r in scoring.BALANCES if r in have]


def rows_with_rules(table: pd.DataFrame, rep: dict, rules: list[str]) -> pd.DataFrame:
    """The table's rows under the given selection rules; methods without scores (random, full, oracle) stay."""
    keep = [row for row in table["method"]
            if rep["methods"][row].get("family", row) not in scoring.RULE_FAMILIES or rep["methods"][row].get("rule", "global") in rules]
    return table[table["method"].isin(keep)].reset_index(drop=True)


def has_downstream(rep: dict) -> bool:
    return any("test_loss" in e for e in rep["methods"].values())


def cost_frame(rep: dict) -> pd.DataFrame:
    """Long table (method, stage, seconds) of each method's wall time per stage, stages in pipeline order."""
    order = {s: i for i, s in enumerate(COST_STAGES)}
    rows = [{"method": name, "stage": stage, "seconds": _num(sec)}
            for name, e in rep["methods"].items()
            for stage, sec in sorted((e.get("stage_wall_s") or {}).items(), key=lambda kv: order.get(kv[0], 99))]
    return pd.DataFrame(rows, columns=["method", "stage", "seconds"])


def matrix_frame(rep: dict, key: str) -> pd.DataFrame:
    """A method x method matrix ('overlap' Jaccard or 'rank_correlation' Spearman), rows and columns in
    compare's method order; NaN for a missing pair. Empty when compare did not write it."""
    m = rep.get(key) or {}
    names = [n for n in rep["methods"] if n in m] + [n for n in m if n not in rep["methods"]]
    return pd.DataFrame([[_num((m.get(a) or {}).get(b)) for b in names] for a in names], index=names, columns=names)


def per_subtask_frame(rep: dict, metric: str = "loss") -> pd.DataFrame:
    """method x subtask test `metric` ('loss' or 'exact_match'), with the base model (no LoRA) as the last row."""
    sources = {n: e.get("per_subtask") for n, e in rep["methods"].items()}
    if isinstance(rep.get("base"), dict):
        sources["base"] = rep["base"].get("per_subtask")
    sources = {n: p for n, p in sources.items() if isinstance(p, dict) and p}
    subtasks = list(dict.fromkeys(s for p in sources.values() for s in p))
    return pd.DataFrame([[_num((p.get(s) or {}).get(metric)) for s in subtasks] for p in sources.values()],
                        index=list(sources), columns=subtasks)


def per_seed_frame(rep: dict) -> pd.DataFrame:
    """Long table (method, seed, test_loss, exact_match) of the downstream runs behind each mean."""
    rows = [{"method": n, "seed": r.get("seed"), "test_loss": _num(r.get("test_loss")),
             "exact_match": _num(r.get("exact_match"))}
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
    v = _num((src or {}).get(key))
    return None if np.isnan(v) else v


# ----------------------------------------------------------------------------- curvature (gist-lab geometry)
GEOMETRY_DIR = "geometry"
GEOMETRY_FILE = "geometry.json"
MATRICES = {"hessian": "Hessian", "gauss_newton": "Gauss–Newton", "fisher": "empirical Fisher"}
GEOMETRY_COLUMNS = ("epoch", "r95", "r99", "offdiag_hessian", "offdiag_gauss_newton", "offdiag_fisher",
                    "mass_AB_hessian", "adam_fit_error", "best_diagonal_error", "overlap_fisher_hessian",
                    "overlap_random", "wall_s")


def geometry_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / GEOMETRY_DIR / GEOMETRY_FILE


def has_geometry(run_dir: str | Path) -> bool:
    return geometry_path(run_dir).is_file()


def geometry_stamp(run_dir: str | Path) -> int:
    """Cache key part: geometry.json's mtime (rewritten after each checkpoint)."""
    return file_stamp(geometry_path(run_dir))


def load_geometry(run_dir: str | Path) -> dict | None:
    """geometry.json, or None when it is missing, unreadable or has no checkpoint entries.

    Only checkpoint entries that are objects under an integer epoch are kept, so consumers can rely
    on `checkpoints[str(epoch)]` being a dict."""
    rep = read_json(geometry_path(run_dir))
    if not isinstance(rep, dict) or not isinstance(rep.get("checkpoints"), dict):
        return None
    cks = {k: v for k, v in rep["checkpoints"].items() if isinstance(v, dict) and str(k).isdigit()}
    spectrum = [s for s in rep.get("spectrum") or [] if isinstance(s, dict) and "epoch" in s]
    return {**rep, "checkpoints": cks, "spectrum": spectrum} if cks else None


def geometry_epochs(rep: dict) -> list[int]:
    """The warm-up epochs measured, ascending."""
    return sorted(int(k) for k in rep["checkpoints"])


def geometry_matrix_path(run_dir: str | Path, epoch: int) -> Path:
    return Path(run_dir) / GEOMETRY_DIR / f"ckpt-{epoch}.safetensors"


def warmup_epochs(run_dir: str | Path) -> list[int]:
    """Warm-up epochs with a checkpoint folder (what `gist-lab geometry` measures), ascending."""
    eps = [re.fullmatch(r"ckpt-(\d+)", p.name) for p in Path(run_dir).glob("checkpoints/ckpt-*") if p.is_dir()]
    return sorted(int(m.group(1)) for m in eps if m)


def geometry_job(run_dir: str | Path) -> launcher.LaunchState | None:
    """The launch state when the folder's last dashboard launch was `gist-lab geometry`, else None."""
    ls = launcher.state(run_dir)
    return ls if ls.launched and "geometry" in (ls.cmd or []) else None


def geometry_running(run_dir: str | Path) -> bool:
    """`gist-lab geometry` is going in this folder: launched from the dashboard and alive, or a running
    stage named geometry/... (started from a terminal)."""
    job = geometry_job(run_dir)
    if job is not None and job.alive:
        return True
    if not Path(run_dir).exists() or run_state(run_dir)["status"] != "running":
        return False
    prog = stage_progress(run_dir)
    return bool(prog.loc[prog["status"] == "running", "stage"].str.startswith("geometry/").any())


def curvature_matrices(run_dir: str | Path, epoch: int) -> dict:
    """The arrays of RUN/geometry/ckpt-E.safetensors (hessian, gauss_newton, fisher: P x P; adam_v: P;
    idx_a, idx_b) plus its metadata (module, n_a, shape_a, shape_b); {} when the file is missing.
    Cached per (file, mtime): treat the arrays as read-only."""
    p = geometry_matrix_path(run_dir, epoch)
    return _curvature_matrices(str(p), p.stat().st_mtime_ns) if p.exists() else {}


@functools.lru_cache(maxsize=2)
def _curvature_matrices(path: str, _stamp: int) -> dict:
    # older files are sound as they are (square symmetric matrices, 1-D vectors): geometry_run.load_matrices
    out, meta = artefacts.load_tensors(path, allow_stale=True)
    n_a = int(meta["n_a"]) if "n_a" in meta else len(out.get("idx_a", ()))
    shapes = {k: json.loads(meta[k]) if k in meta else None for k in ("shape_a", "shape_b")}
    return {**out, "n_a": n_a, "module": meta.get("module", ""), **shapes}


@dataclass
class DisplayMatrix:
    z: np.ndarray          # (k, k): cell means of |M| (kind "abs") or of the correlation (kind "corr")
    edges: np.ndarray      # (k + 1,) cell edges in coordinate units: cell i covers coordinates edges[i]..edges[i+1]-1
    boundary: int          # display cells that belong to A (A's cells come first); the A/B line is at cell boundary
    n_a: int               # coordinates in A
    P: int                 # coordinates in all
    kind: str

    @property
    def downsampled(self) -> bool:
        return len(self.z) < self.P


def _cell_edges(n: int, k: int) -> np.ndarray:
    return np.unique(np.round(np.linspace(0, n, k + 1)).astype(np.int64))


def display_matrix(M: np.ndarray, n_a: int | None = None, max_side: int = 256, kind: str = "abs") -> DisplayMatrix:
    """A matrix ready for a heatmap: |M| or its correlation matrix, block-averaged to at most
    max_side x max_side cells when P is larger. A and B get cells in proportion to their sizes (at
    least one each) and no cell straddles the A/B boundary, so the boundary stays exact."""
    if kind not in ("abs", "corr"):
        raise ValueError(f"kind must be 'abs' or 'corr', got {kind!r}")
    M = np.asarray(M)
    P = M.shape[0]
    n_a = P if n_a is None else int(min(max(n_a, 0), P))
    n_b = P - n_a
    X = np.abs(M.astype(np.float64)) if kind == "abs" else correlation_matrix(M)
    if P <= max_side:
        return DisplayMatrix(z=X, edges=np.arange(P + 1), boundary=n_a, n_a=n_a, P=P, kind=kind)
    max_side = max(max_side, 2)
    ka = int(round(max_side * n_a / P))
    if n_a and n_b:
        ka = min(max(ka, 1), max_side - 1)
    ka = min(ka, n_a)
    kb = min(max_side - ka, n_b)
    edges = np.concatenate([_cell_edges(n_a, ka)[:-1] if ka else np.zeros(0, np.int64), n_a + _cell_edges(n_b, kb)]) \
        if kb else _cell_edges(n_a, ka)
    starts, sizes = edges[:-1], np.diff(edges)
    Z = np.add.reduceat(np.add.reduceat(X, starts, axis=0), starts, axis=1) / np.outer(sizes, sizes)
    return DisplayMatrix(z=Z, edges=edges, boundary=int(np.searchsorted(edges, n_a)), n_a=n_a, P=P, kind=kind)


def log_color(z: np.ndarray, decades: float = 6.0) -> tuple[np.ndarray, float, float]:
    """(log10 z, floor, top) for a log colour scale: values below `decades` under the maximum, and zeros,
    are drawn at the floor."""
    top = float(np.nanmax(z)) if np.size(z) and np.nanmax(z) > 0 else 1.0
    floor = np.log10(top) - decades
    with np.errstate(divide="ignore"):
        lz = np.log10(np.where(z > 0, z, 0.0))
    return np.maximum(lz, floor), floor, float(np.log10(top))


def diagonal_frame(mats: dict) -> pd.DataFrame:
    """Per coordinate: block (A/B), diag(H) (the best diagonal's entries), Adam's sqrt(v), and c*sqrt(v) at
    the scale c that fits diag(H) best (the scale adam_sqrt_v_fit_error uses)."""
    h = np.diag(mats["hessian"]).astype(np.float64)
    s = np.sqrt(np.asarray(mats["adam_v"], dtype=np.float64)) + 1e-8
    c = float(h @ s / (s @ s)) if s @ s > 0 else 0.0
    n_a = int(mats["n_a"])
    return pd.DataFrame({"coord": np.arange(len(h)), "block": np.where(np.arange(len(h)) < n_a, "A", "B"),
                         "diag_H": h, "adam_sqrt_v": s, "adam_scaled": c * s})


def spectrum_table(src) -> pd.DataFrame:
    """r95 / r99 (intrinsic dimension) of the validation-gradient spectrum per warm-up epoch.

    `src`: a geometry report (its "spectrum"), a list of Spectrum, or a run directory (its spectra)."""
    cols = ["epoch", "r95", "r99", "N_v", "sigma_1"]
    if isinstance(src, dict):
        rows = [{"epoch": int(s["epoch"]), "r95": s.get("r95"), "r99": s.get("r99"), "N_v": s.get("n"),
                 "sigma_1": _num(s.get("sigma_1"))} for s in src.get("spectrum") or []]
    else:
        specs = spectra(src) if isinstance(src, (str, Path)) else src
        rows = [{"epoch": s.epoch, "r95": s.r95, "r99": s.r99, "N_v": len(s.sigma),
                 "sigma_1": float(s.sigma[0]) if len(s.sigma) else float("nan")} for s in specs]
    return pd.DataFrame(rows, columns=cols).sort_values("epoch").reset_index(drop=True)


def geometry_table(rep: dict) -> pd.DataFrame:
    """One row per measured checkpoint: intrinsic dimension (r95, r99), the off-diagonal ratio of each
    matrix, the Hessian's A-B mass, the diagonal fits, the F_hat / H overlap and its random reference.
    NaN where a value is absent."""
    spec = {int(s["epoch"]): s for s in rep.get("spectrum") or []}
    rows = []
    for e in geometry_epochs(rep):
        c, s = rep["checkpoints"][str(e)], spec.get(e, {})

        def blk(m, key, c=c):
            return _num((c.get(m) or {}).get(key))
        rows.append({"epoch": e, "r95": _num(s.get("r95")), "r99": _num(s.get("r99")),
                     "offdiag_hessian": blk("hessian", "offdiag_ratio"),
                     "offdiag_gauss_newton": blk("gauss_newton", "offdiag_ratio"),
                     "offdiag_fisher": blk("fisher", "offdiag_ratio"), "mass_AB_hessian": blk("hessian", "mass_AB"),
                     "adam_fit_error": _num(c.get("adam_sqrt_v_fit_error")),
                     "best_diagonal_error": _num(c.get("best_diagonal_fit_error")),
                     "overlap_fisher_hessian": _num(c.get("overlap_fisher_hessian")),
                     "overlap_random": _num(c.get("overlap_random_reference")), "wall_s": _num(c.get("wall_s"))})
    return pd.DataFrame(rows, columns=list(GEOMETRY_COLUMNS))
