"""What the dashboard shows of a run's working selection (the method's selection edited by hand): its rows, its
edits, its difference from the method's selection, the groups it can exclude, and what an edit from a view would
change. Read-only: the edits are written by gist_core.runner.curation (edit, take, undo, reset), the files by
gist_core.runner.export.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from gist_core.methods.curation import GROUP_KEYS, Op
from gist_core.runner import curation
from gist_core.store.layout import RunLayout
from gist_core.viewer.rescore import Rescored
from gist_core.viewer.rundir import base_frame

TABLE_COLUMNS = ("id", "score", "rank", "domain", "source", "prompt", "response")
LABEL_KEYS = tuple(k for k in GROUP_KEYS if k != "cluster")


def working(run_dir: str | Path) -> curation.Curation:
    """The run's working selection (the method's selection with its edits replayed): the pages' one read of it."""
    return curation.working_selection(run_dir)


def pending(working_ids: Iterable[str], ids: Iterable[str]) -> tuple[list[str], list[str]]:
    """(to add, to remove): of the rows a view points at, those an "add" or a "remove" would change, in the order
    given, each once."""
    chosen, ids = set(working_ids), list(dict.fromkeys(ids))
    return [i for i in ids if i not in chosen], [i for i in ids if i in chosen]


def mark_working(frame: pd.DataFrame, working_ids: Iterable[str]) -> pd.DataFrame:
    """The frame with a `working` column: is the row in the working selection."""
    return frame.assign(working=frame["id"].astype(str).isin(set(working_ids)).to_numpy())


def status_text(c: curation.Curation) -> str:
    """One line: the working selection's size, its base, what the edits changed."""
    n, p = c.counts, c.pool
    rank = p.summary.get("rank")
    base = f"the method's selection of {n['method']:,} ({p.rule} rule" + (f", rank r = {rank})" if rank else ")")
    return (f"Working selection: **{n['working']:,} rows** · base: {base} · +{n['added']:,} added, "
            f"−{n['removed']:,} removed · {n['edits']} edit{'s' if n['edits'] != 1 else ''}")


def selection_ids(rs: Rescored) -> tuple[str, ...]:
    """The rows a re-scored selection picks (its rank, rule, budget and score kind), in pool order."""
    return tuple(rs.frame.loc[rs.frame["selected"].to_numpy(), "id"].astype(str))


def shown_against_working(shown: Iterable[str], c: curation.Curation) -> dict:
    """How the selection a page shows (at its rank, rule, budget) relates to the working selection and its base:
    sizes and how many rows differ (either way)."""
    shown, base, work = set(shown), set(c.pool.base), set(c.working)
    return {"shown": len(shown), "base": len(base), "working": len(work), "differ_from_base": len(shown ^ base),
            "to_add": len(shown - work), "to_remove": len(work - shown), "is_base": shown == base,
            "is_working": shown == work}


def working_table(run_dir: str | Path) -> pd.DataFrame:
    """The working selection as rows (id, score, rank, domain, source, prompt, response), in pool order: the order
    and the rows the export writes. Score and rank are the run's own (scores.parquet), the ones the export writes."""
    c, frame = working(run_dir), base_frame(run_dir)
    return rows_of(frame, c.working)


def rows_of(frame: pd.DataFrame, ids: Iterable[str]) -> pd.DataFrame:
    """The pool frame's TABLE_COLUMNS for `ids`, in pool order (the frame's own)."""
    mask = frame["id"].astype(str).isin(set(ids)).to_numpy()
    return frame.loc[mask, [col for col in TABLE_COLUMNS if col in frame]].reset_index(drop=True)


def difference(run_dir: str | Path) -> dict[str, pd.DataFrame]:
    """The rows the edits added to the method's selection and the rows they removed from it (pool order)."""
    c, frame = working(run_dir), base_frame(run_dir)
    base, work = set(c.pool.base), set(c.working)
    return {"added": rows_of(frame, work - base), "removed": rows_of(frame, base - work)}


def edits_table(c: curation.Curation) -> pd.DataFrame:
    """The edits in the order they were made: number, action (with the group an exclusion named), rows, view,
    when."""
    return pd.DataFrame([edit_row(n, op) for n, op in enumerate(c.edits.ops, 1)],
                        columns=["edit", "action", "rows", "view", "when"])


def edit_row(n: int, op: Op) -> dict:
    action = f"exclude {op.group[0]}={op.group[1]}" if op.group else op.action
    return {"edit": n, "action": action, "rows": len(op.ids), "view": op.view, "when": op.at.replace("T", " ")}


def group_keys(run_dir: str | Path) -> list[str]:
    """The groups a whole set of rows can be excluded by here: the label columns the pool has values in, the
    domain, and `cluster` once `gist-lab cluster` ran."""
    frame = base_frame(run_dir)
    keys = [k for k in LABEL_KEYS if k in frame and frame[k].notna().any()]
    if RunLayout(run_dir).clusters_array(f"labels-{curation.DEFAULT_CLUSTERING}").is_file():
        keys.append("cluster")
    return keys


def group_counts(run_dir: str | Path, key: str) -> pd.DataFrame:
    """Per value of `key`: the pool rows that have it and how many of them are in the working selection (the
    rows an exclusion would take out of it), most in the working selection first."""
    c = working(run_dir)
    labels = curation.group_labels(c.pool, key)
    work = set(c.working)
    frame = pd.DataFrame({"value": [None if v is None else str(v) for v in labels], "id": c.pool.ids})
    frame = frame.dropna(subset=["value"])
    frame["in_working"] = frame["id"].isin(work)
    out = frame.groupby("value", sort=False).agg(pool_rows=("id", "size"), in_working=("in_working", "sum"))
    return out.reset_index().sort_values(["in_working", "pool_rows", "value"], ascending=[False, False, True],
                                         kind="stable").reset_index(drop=True)
