"""Two selections side by side: any two runs, ranks, rules or methods, as sets of pool example ids.

A selection is a run folder plus a source:
- 'gist': GIST re-scored at (rank, rule, budget, score kind) from the stored projections, the same
  rescore.rescored_frame every page reads;
- 'compare': one of `gist-lab compare`'s score-based methods (compare/scores.parquet) under a rule, selected as
  runner.compare.select_rows does (scoring.select over the stored score and subtask columns);
- 'stored': the run's own selection as written (selected.jsonl);
- 'working': the curated working selection (the stored one with the run's hand edits replayed).
Each resolves to a Selection: one row per pool example of its run with its score, its rank under that score and
whether it is selected. Two selections are compared by example `id`, so two runs over the same pool line up
(and rows of one run's pool that the other's lacks are counted, never silently matched).
Random and full-pool rows of compare are not offered: the first is a draw, the second the whole pool.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from gist_core.errors import ConfigError
from gist_core.methods import scoring
from gist_core.runner import curation
from gist_core.store.layout import RunLayout
from gist_core.viewer import rescore
from gist_core.viewer.labels import group_column
from gist_core.viewer.rundir import arrays, base_frame, has_scores, target_frame, target_groups

SOURCES = {"gist": "GIST re-scored", "compare": "a compare method", "stored": "stored selection (selected.jsonl)",
           "working": "curated working selection"}
SIDES = ("only A", "both", "only B")
NEITHER = "neither"
GROUPINGS = ("domain", "subtask", "source")
LABEL_COLUMNS = ("subtask", "skill", "source", "kind", "domain", "prompt")
COMPARE_RULES = tuple(r for r in scoring.BALANCES if r != "examples")  # compare keeps no per-example columns


@dataclass(frozen=True)
class Spec:
    """What to select: a run folder and a source with its settings (rank/kind for 'gist' only, method for
    'compare' only, rule and budget for both; 'stored' and 'working' take none)."""
    run: Path
    source: str = "gist"
    rank: int = 1
    rule: str = "global"
    budget: float = 0.05
    kind: str | None = None
    method: str = "gist"

    def args(self) -> tuple:
        """The arguments after the folder of `resolve` (and of ui.folder_view)."""
        return (self.source, int(self.rank), self.rule, float(self.budget), self.kind, self.method)

    def describe(self) -> str:
        where = Path(self.run).name
        budget = f"{self.budget * 100:g}%" if self.budget <= 1 else f"{int(self.budget)}"
        if self.source == "gist":
            return f"{where}: GIST r={self.rank}, {self.rule}, {budget}"
        if self.source == "compare":
            return f"{where}: {self.method}, {self.rule}, {budget}"
        return f"{where}: {SOURCES[self.source]}"


@dataclass
class Selection:
    spec: Spec
    frame: pd.DataFrame   # one row per pool example, pool order (index = pool row): id, score, rank, selected, labels
    k: int                # how many are selected
    ms: float             # time the resolve took

    @property
    def ids(self) -> set[str]:
        return set(self.frame.loc[self.frame["selected"], "id"])


# ----------------------------------------------------------------------------- one selection
def sources(run_dir: str | Path) -> list[str]:
    """The sources a run offers: GIST always (a run with scores), compare where compare ran, the stored and
    working selections where selected.jsonl is."""
    lay = RunLayout(run_dir)
    have = {"gist": True, "compare": lay.compare_scores.is_file(), "stored": lay.selected.is_file(),
            "working": lay.selected.is_file()}
    return [s for s in SOURCES if have[s]]


def watched_files(run_dir: str | Path) -> list[Path]:
    """What `resolve` reads that no JSON write announces (ui.folder_view's files=): compare's scores and
    selected.jsonl (the curation's edits are JSON, already in the folder's stamp)."""
    lay = RunLayout(run_dir)
    return [lay.compare_scores, lay.selected]


def compare_methods(run_dir: str | Path) -> dict[str, bool]:
    """compare's score-based methods in compare/scores.parquet -> whether they have subtask columns (every rule
    applies) or a score only (the global rule)."""
    path = RunLayout(run_dir).compare_scores
    if not path.is_file():
        return {}
    names = pq.read_schema(path).names
    methods = [c.split(":", 1)[1] for c in names if c.startswith("score:")]
    return {m: any(c.startswith(f"col:{m}:") for c in names) for m in methods}


def resolve(run_dir: str | Path, source: str = "gist", rank: int = 1, rule: str = "global", budget: float = 0.05,
            kind: str | None = None, method: str = "gist") -> Selection:
    """The selection `Spec(run_dir, ...)` names; ConfigError (one line) for one the run cannot give."""
    t0 = time.perf_counter()
    spec = Spec(Path(run_dir), source, int(rank), rule, float(budget), kind, method)
    if not has_scores(run_dir):
        raise ConfigError(f"run {Path(run_dir).name} has no scores yet")
    if source not in SOURCES:
        raise ConfigError(f"unknown source '{source}' (use one of {', '.join(SOURCES)})")
    if source in ("gist", "compare") and rule not in scoring.BALANCES:
        raise ConfigError(f"unknown rule '{rule}' (use one of {', '.join(scoring.BALANCES)})")
    labels = _labels(run_dir)
    if source == "gist":
        rs = rescore.rescored_frame(run_dir, spec.rank, rule, budget, kind)
        picked = rs.frame[["score", "rank", "selected"]]
    elif source == "compare":
        picked = _compare_pick(run_dir, method, rule, budget)
    else:
        chosen = set(_stored_ids(run_dir) if source == "stored" else curation.working_selection(run_dir).working)
        base = base_frame(run_dir)
        picked = pd.DataFrame({"score": base["score"], "rank": base["rank"], "selected": base["id"].isin(chosen)})
    frame = pd.concat([labels[["id"]], picked.reset_index(drop=True), labels.drop(columns="id")], axis=1)
    return Selection(spec, frame, int(frame["selected"].sum()), (time.perf_counter() - t0) * 1000)


def _labels(run_dir: str | Path) -> pd.DataFrame:
    base = base_frame(run_dir)
    return base[["id", *[c for c in LABEL_COLUMNS if c in base]]].reset_index(drop=True)


def _compare_pick(run_dir: str | Path, method: str, rule: str, budget: float) -> pd.DataFrame:
    """score, rank, selected of a compare method under `rule`: scoring.select over compare/scores.parquet's
    stored score and subtask columns, as runner.compare.select_rows selects."""
    methods = compare_methods(run_dir)
    if method not in methods:
        raise ConfigError(f"run {Path(run_dir).name}: no compare scores for '{method}' "
                          f"(has: {', '.join(methods) or 'none'})")
    if rule not in COMPARE_RULES or (rule != "global" and not methods[method]):
        raise ConfigError(f"'{method}' under rule '{rule}': compare keeps "
                          + ("no per-target-example columns" if rule == "examples" else "this method's score only")
                          + ", so only " + ("the other rules" if methods[method] else "the global rule") + " apply")
    cs = pd.read_parquet(RunLayout(run_dir).compare_scores)
    ids = base_frame(run_dir)["id"].astype(str).to_numpy()
    if len(cs) != len(ids) or not (cs["id"].astype(str).to_numpy() == ids).all():
        raise ConfigError(f"run {Path(run_dir).name}: compare/scores.parquet holds other rows than the run's pool "
                          "(rerun `gist-lab compare`)")
    score = cs[f"score:{method}"].to_numpy(np.float64)
    names = [c.split(":", 2)[2] for c in cs.columns if c.startswith(f"col:{method}:")]
    cols = cs[[f"col:{method}:{n}" for n in names]].to_numpy(np.float32) if names else score[:, None]
    sc = scoring.Scores(score=score, columns=cols, column_names=names or ["score"], rank=0, aggregation="subtask_mean")
    groups = target_groups(target_frame(run_dir)) if names else {"score": [0]}
    k = scoring.budget_to_count(budget, len(score))
    idx, _ = scoring.select(sc, k, rule, groups)
    return pd.DataFrame({"score": score, "rank": _ranks(score), "selected": np.isin(np.arange(len(score)), idx)})


def _ranks(score: np.ndarray) -> np.ndarray:
    """1 = best; ties by pool row, as rescore and the pipeline rank."""
    order = np.lexsort((np.arange(len(score)), -score))
    ranks = np.empty(len(score), dtype=np.int64)
    ranks[order] = np.arange(1, len(score) + 1)
    return ranks


def _stored_ids(run_dir: str | Path) -> list[str]:
    """The ids of selected.jsonl's rows; a row written without an id is the run's selection's row at its place
    (selected.jsonl keeps the method's selection in pool order: the rows flagged in scores.parquet)."""
    path = RunLayout(run_dir).selected
    if not path.is_file():
        raise ConfigError(f"run {Path(run_dir).name} has no {path.name}")
    lines = [ln for ln in path.read_text(encoding="utf-8").split("\n") if ln.strip()]  # not splitlines: U+2028
    given = [json.loads(ln).get("id") for ln in lines]
    if all(g not in (None, "") for g in given):
        return [str(g) for g in given]
    base = curation.read_run(run_dir).base
    if len(base) != len(given):
        raise ConfigError(f"{path}: {len(given)} rows without ids, scores.parquet selects {len(base)}")
    return [str(g) if g not in (None, "") else b for g, b in zip(given, base)]


# ----------------------------------------------------------------------------- two selections
def overlap(a: Selection, b: Selection) -> dict:
    """|A|, |B|, |A ∩ B|, only A, only B, Jaccard, and how many selected rows of each are not in the other's pool
    (two runs over different pools: those can never be shared)."""
    sa, sb = a.ids, b.ids
    both, union = len(sa & sb), len(sa | sb)
    return {"A": len(sa), "B": len(sb), "both": both, "only A": len(sa - sb), "only B": len(sb - sa),
            "jaccard": both / union if union else 1.0,
            "B not in A's pool": len(sb - set(a.frame["id"])), "A not in B's pool": len(sa - set(b.frame["id"]))}


def side_of(a: Selection, b: Selection) -> pd.Series:
    """'only A' / 'only B' / 'both' / 'neither' for each of A's pool rows (index = A's pool row)."""
    in_a, in_b = a.frame["selected"].to_numpy(), a.frame["id"].isin(b.ids).to_numpy()
    out = np.select([in_a & in_b, in_a, in_b], ["both", "only A", "only B"], NEITHER)
    return pd.Series(out, index=a.frame.index, name="side")


def rows(a: Selection, b: Selection, side: str | None = None) -> pd.DataFrame:
    """Every row selected by A or B (or only those on `side`): id, side, score and rank in each (NaN where a run's
    pool lacks the row), and the row's labels (A's run first); sorted by rank in A, then in B."""
    fa, fb = a.frame.set_index("id"), b.frame.set_index("id")
    ids = sorted(a.ids | b.ids)
    out = pd.DataFrame({"id": ids})
    sa, sb = a.ids, b.ids
    out["side"] = ["both" if i in sa and i in sb else "only A" if i in sa else "only B" for i in ids]
    for tag, f in (("A", fa), ("B", fb)):
        out[f"score {tag}"] = f["score"].reindex(ids).to_numpy()
        out[f"rank {tag}"] = f["rank"].reindex(ids).astype("Int64").to_numpy()
    labels = pd.concat([fa, fb.loc[fb.index.difference(fa.index)]])
    for col in ("domain", "subtask", "prompt"):
        out[col] = labels[col].reindex(ids).to_numpy() if col in labels else None
    if side is not None:
        out = out[out["side"] == side]
    return out.sort_values(["rank A", "rank B"], na_position="last").reset_index(drop=True)


def group_counts(a: Selection, b: Selection, by: str) -> pd.DataFrame:
    """Per group of `by` ('domain', 'subtask', 'source', any label column): how many rows A selects, B selects and
    both select; groups by the row's label in A's run (B's where A's pool lacks the row)."""
    subtasks = list(target_groups(target_frame(a.spec.run)))
    label = pd.concat([group_column(s.frame, by, subtasks).set_axis(s.frame["id"]) for s in (a, b)])
    label = label[~label.index.duplicated()]
    sa, sb = a.ids, b.ids
    counts = {name: label.reindex(sorted(ids)).value_counts() for name, ids in (("A", sa), ("B", sb), ("both", sa & sb))}
    out = pd.DataFrame(counts).fillna(0).astype(int).rename_axis(by).reset_index()
    return out.sort_values(["A", "B"], ascending=False).reset_index(drop=True)


def differ_in_rank_only(a: Spec, b: Spec) -> bool:
    """Two GIST selections of one run that differ only in rank: B's rows not in A enter, A's not in B leave."""
    return (a.source == b.source == "gist" and Path(a.run) == Path(b.run) and a.rank != b.rank
            and (a.rule, a.budget, a.kind) == (b.rule, b.budget, b.kind))


def enters_leaves(a: Selection, b: Selection) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows that enter going from A to B, best in B first; rows that leave, best in A first)."""
    return (rows(a, b, "only B").sort_values("rank B").reset_index(drop=True),
            rows(a, b, "only A").sort_values("rank A").reset_index(drop=True))


def rank_curve(run_dir: str | Path, rule: str, budget: float, kind: str | None, reference: list[str]) -> pd.DataFrame:
    """GIST at every rank 1..r_max under `rule`, `budget`, `kind`: its Jaccard with the `reference` ids and with the
    previous rank's selection (how much one rank step churns). attrs['ms']: the time all the re-scorings took."""
    t0 = time.perf_counter()
    arr, ids = arrays(run_dir), base_frame(run_dir)["id"].astype(str).to_numpy()
    k, ref = scoring.budget_to_count(budget, len(ids)), set(reference)
    out, prev = [], None
    for r in range(1, arr.r_max + 1):
        idx, _ = scoring.select(arr.scores(r, kind), k, rule, arr.groups)
        chosen = set(ids[idx])
        out.append({"rank": r, "jaccard": _jaccard(chosen, ref),
                    "previous rank": _jaccard(chosen, prev) if prev is not None else np.nan})
        prev = chosen
    frame = pd.DataFrame(out)
    frame.attrs["ms"] = (time.perf_counter() - t0) * 1000
    return frame


def _jaccard(x: set, y: set) -> float:
    union = len(x | y)
    return len(x & y) / union if union else 1.0
