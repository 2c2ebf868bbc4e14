"""A run folder's working selection: the method's selection plus the hand edits kept in RUN/curation/edits.json.

The math (ops, replay, undo) is gist_core.methods.curation; this module reads the run (its pool ids, the method's
selection, the labels a group is excluded by) and reads and writes the edits file: one save/load/exists per
artefact, every write atomic (temp file + rename) and made under the run's writer lock (one writer per run
folder, gist_core.store.lock), so a curation survives a reload and never interleaves with a job writing the run.

The edits file:

    {"report": "curation", "version": 1,
     "base": {"rule": "global", "n": 100, "digest": "3f1c..."},   # the method's selection the edits were made over
     "ops": [{"action": "remove", "ids": ["pool-000012", ...], "view": "map lasso", "at": "2025-06-01T12:00:00+00:00"},
             {"action": "exclude", "group": {"by": "domain", "value": "math"}, "ids": [...], "view": "cli", "at": ...}]}

The method's selection is the run's own: scores.parquet's `selected_<rule>` flag at the run's rule (the rows of
selected.jsonl). When a rerun changes it, the edits still replay over the new one (`Curation.base_changed`).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from gist_core.data.domains import domain_labels
from gist_core.errors import CurationError, StoreError
from gist_core.methods import curation as cur
from gist_core.methods.curation import Op
from gist_core.store.artefacts import load_npy
from gist_core.store.atomic import atomic_write_json
from gist_core.store.layout import RunLayout
from gist_core.store.lock import refuse_if_held, writer_lock
from gist_core.store.reports import read_report

LABEL_COLUMNS = ("source", "skill", "subtask", "kind")
DEFAULT_CLUSTERING = "gradientspace"


# ----------------------------------------------------------------------------- the edits artefact
@dataclass(frozen=True)
class Edits:
    """The ops in the order they were made, and the method's selection they were first made over."""
    ops: tuple[Op, ...] = ()
    base: dict | None = None   # {"rule", "n", "digest"}; None before the first edit


def edits_exist(run_dir: str | os.PathLike) -> bool:
    return RunLayout(run_dir).curation_edits.is_file()


def save_edits(run_dir: str | os.PathLike, edits: Edits) -> None:
    """Write RUN/curation/edits.json atomically (callers hold the run's writer lock: `edit`, `undo`, `reset`)."""
    atomic_write_json(RunLayout(run_dir).curation_edits,
                      {"report": cur.EDITS_REPORT, "version": cur.EDITS_VERSION, "base": edits.base,
                       "ops": [op.to_json() for op in edits.ops]})


def load_edits(run_dir: str | os.PathLike) -> Edits:
    """The run's edits; Edits() when there are none. A file that is not an edits list raises StoreError."""
    path = RunLayout(run_dir).curation_edits
    if not path.is_file():
        return Edits()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise StoreError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or data.get("report") != cur.EDITS_REPORT or not isinstance(data.get("ops"), list):
        raise StoreError(f"{path}: not a curation edits file")
    if not isinstance(data.get("version"), int) or data["version"] > cur.EDITS_VERSION:
        raise StoreError(f"{path}: edits version {data.get('version')} is newer than this gist-lab reads "
                         f"({cur.EDITS_VERSION}); upgrade gist-lab")
    try:
        ops = tuple(Op.from_json(d, f"edit {n}") for n, d in enumerate(data["ops"], 1))
    except CurationError as e:
        raise StoreError(f"{path}: {e}") from None
    return Edits(ops, data.get("base"))


# ----------------------------------------------------------------------------- the run's pool and selection
@dataclass(frozen=True)
class RunPool:
    """What a curation needs of a run: its pool's row ids (pool order) and the method's selection."""
    run: Path
    ids: tuple[str, ...]
    base: tuple[str, ...]           # the method's selection, in pool order
    rule: str                       # the selection rule that made it
    summary: dict = field(repr=False)
    config: dict = field(repr=False)

    @cached_property
    def index(self) -> dict[str, int]:
        return cur.pool_index(self.ids)

    def base_record(self) -> dict:
        return {"rule": self.rule, "n": len(self.base), "digest": cur.digest(self.base)}

    def positions(self, ids) -> np.ndarray:
        """Pool row numbers of `ids` (the dashboard's `row`)."""
        return np.array([self.index[i] for i in ids], dtype=np.int64)


def check_run(run_dir: str | os.PathLike) -> Path:
    """The run folder, when it holds a finished selection; else a one-line StoreError naming what is missing."""
    d, lay = Path(run_dir), RunLayout(run_dir)
    if not d.is_dir():
        raise StoreError(f"{d}: no such run folder")
    if not lay.scores.is_file():
        raise StoreError(f"{d}: no {lay.scores.name} (not a run folder, or its scores stage has not run)")
    return d


def read_run(run_dir: str | os.PathLike) -> RunPool:
    d = check_run(run_dir)
    lay = RunLayout(d)
    summary = read_report(lay.summary, "summary") or {}
    config = json.loads(lay.config.read_text()) if lay.config.is_file() else {}
    rule = summary.get("balance") or config.get("balance")
    if not rule:
        raise StoreError(f"{d}: no selection rule in {lay.summary.name} or {lay.config.name}")
    flag = f"selected_{rule}"
    scores = pd.read_parquet(lay.scores, columns=["id", flag]) if flag in _columns(lay.scores) else None
    if scores is None:
        raise StoreError(f"{lay.scores}: no column {flag!r} (the method's selection under rule {rule!r})")
    ids = tuple(str(i) for i in scores["id"])
    base = tuple(i for i, s in zip(ids, scores[flag].to_numpy()) if s)
    return RunPool(d, ids, base, rule, summary, config)


def _columns(path: Path) -> list[str]:
    return list(pq.read_schema(path).names)


def pool_frame(pool: RunPool, columns: list[str]) -> pd.DataFrame:
    """examples.parquet's `columns` in the run's pool order (joined on id when its rows are in another order)."""
    ex = pd.read_parquet(RunLayout(pool.run).examples, columns=["id", *[c for c in columns if c != "id"]])
    ex["id"] = ex["id"].astype(str)
    if len(ex) == len(pool.ids) and tuple(ex["id"]) == pool.ids:
        return ex.reset_index(drop=True)
    return pd.DataFrame({"id": list(pool.ids)}).merge(ex, on="id", how="left")


def group_labels(pool: RunPool, key: str) -> list:
    """One label per pool row (pool order) for an exclusion by `key`; None where a row has none."""
    name, _, method = key.partition(":")
    if name == "domain":
        return domain_labels(pool_frame(pool, ["prompt", "response"]))
    if name == "cluster":
        return _cluster_labels(pool, method or DEFAULT_CLUSTERING)
    lay = RunLayout(pool.run)
    if name in _columns(lay.scores):
        values = pd.read_parquet(lay.scores, columns=[name])[name]
    else:
        values = pool_frame(pool, [name])[name]
    return [None if pd.isna(v) else v for v in values]


def _cluster_labels(pool: RunPool, method: str) -> list:
    lay = RunLayout(pool.run)
    labels_path = lay.clusters_array(f"labels-{method}")
    if not labels_path.is_file():
        raise CurationError(f"{pool.run}: no {method} clusters ({labels_path.name} under {lay.clusters_dir.name}/: "
                            f"run `gist-lab cluster --run {pool.run}` first)")
    rows = load_npy(lay.clusters_array("rows"), np.int64, ndim=1)
    labels = load_npy(labels_path, np.int64, shape=(len(rows),))
    if len(rows) and (rows.min() < 0 or rows.max() >= len(pool.ids)):
        raise StoreError(f"{lay.clusters_array('rows')}: rows outside the pool of {len(pool.ids)} (clusters of another "
                         f"run: rerun `gist-lab cluster --run {pool.run}`)")
    out: list = [None] * len(pool.ids)
    for r, c in zip(rows.tolist(), labels.tolist()):
        out[r] = str(c)
    return out


def resolve_group(pool: RunPool, key: str, value: str) -> tuple[str, ...]:
    """The pool rows of a group (pool order); CurationError when none has that value."""
    labels = group_labels(pool, key)
    if key.partition(":")[0] == "cluster":
        value = value.removeprefix("c")  # the Clusters page names cluster 3 "c3"
    ids = cur.group_ids(labels, pool.ids, value)
    if not ids:
        seen = sorted({str(v) for v in labels if v is not None})
        shown = ", ".join(seen[:12]) + (f" and {len(seen) - 12} more" if len(seen) > 12 else "")
        raise CurationError(f"no pool row has {key}={value} (values: {shown or 'none'})")
    return ids


# ----------------------------------------------------------------------------- the working selection
@dataclass(frozen=True)
class Curation:
    pool: RunPool
    edits: Edits
    working: tuple[str, ...]   # the working selection, in pool order

    @property
    def base_changed(self) -> bool:
        """The method's selection differs from the one the edits were first made over (the run was rerun)."""
        return self.edits.base is not None and self.edits.base.get("digest") != cur.digest(self.pool.base)

    @property
    def counts(self) -> dict[str, int]:
        return {**cur.changes(self.pool.base, self.working), "edits": len(self.edits.ops)}


def working_selection(run_dir: str | os.PathLike, pool: RunPool | None = None) -> Curation:
    """The method's selection with the run's edits replayed over it (CurationError naming unknown row ids)."""
    pool = pool or read_run(run_dir)
    edits = load_edits(pool.run)
    return Curation(pool, edits, replay_stored(pool, edits))


def replay_stored(pool: RunPool, edits: Edits) -> tuple[str, ...]:
    """cur.replay of the run's stored edits; an edit naming rows the pool no longer has (the run was redone on
    another pool) says how to start over."""
    try:
        return cur.replay(pool.base, edits.ops, pool.ids)
    except CurationError as e:
        raise CurationError(f"{RunLayout(pool.run).curation_edits}: {e}; `gist-lab curate --run {pool.run} --reset` "
                            "drops the edits") from None


def edit(run_dir: str | os.PathLike, *, add=(), remove=(), exclude=(), view: str = "cli",
         at: str | None = None) -> Curation:
    """Record hand edits: each `exclude` group (KEY=VALUE or (key, value)), then `remove`, then `add`, one op each,
    in that order (so rows added by hand stay in although their group is excluded). Every id and group is
    checked before anything is written; the write holds the run's writer lock."""
    groups = [cur.parse_group(g) if isinstance(g, str) else tuple(g) for g in exclude]
    if not (groups or add or remove):
        raise CurationError("no edit given (add, remove or exclude rows)")
    pool = read_run(run_dir)
    refuse_if_held(pool.run)
    for ids in (remove, add):  # the cheap checks first: ids before the groups' labels are computed
        cur.check_ids(ids, pool.index)
    at = at or cur.now()
    ops = [cur.make_op("exclude", resolve_group(pool, key, value), view, pool.index, group=(key, value), at=at)
           for key, value in groups]
    ops += [cur.make_op(action, ids, view, pool.index, at=at) for action, ids in (("remove", remove), ("add", add))
            if ids]
    with writer_lock(pool.run):
        edits = load_edits(pool.run)
        replay_stored(pool, edits)  # the stored edits still fit this pool
        new = Edits(edits.ops + tuple(ops), edits.base or pool.base_record())
        save_edits(pool.run, new)
    return Curation(pool, new, cur.replay(pool.base, new.ops, pool.ids))


def undo(run_dir: str | os.PathLike) -> tuple[Op, Curation]:
    """Drop the last edit; (the op dropped, the working selection after)."""
    pool = read_run(run_dir)
    cur.undo(load_edits(pool.run).ops)  # nothing to undo: said before the lock is taken
    refuse_if_held(pool.run)
    with writer_lock(pool.run):
        edits = load_edits(pool.run)
        ops = cur.undo(edits.ops)
        new = Edits(ops, edits.base if ops else None)
        save_edits(pool.run, new)
    return edits.ops[-1], Curation(pool, new, cur.replay(pool.base, new.ops, pool.ids))


def reset(run_dir: str | os.PathLike) -> Curation:
    """Drop every edit: the working selection is the method's selection again."""
    pool = read_run(run_dir)
    refuse_if_held(pool.run)
    with writer_lock(pool.run):
        save_edits(pool.run, Edits())
    return Curation(pool, Edits(), pool.base)


def selection_view(rank: int, rule: str, n: int, kind: str | None = None) -> str:
    """The view a taken rank selection records, the same from the dashboard and the CLI: 'rank r=8 selection
    (global, 40 rows)'; the score kind is named when given."""
    return f"rank r={rank} selection ({rule}{f', {kind} score' if kind else ''}, {n} rows)"


def take(run_dir: str | os.PathLike, ids, view: str) -> Curation:
    """Make the rows `ids` the working selection, as ordinary edits: one remove op (working rows not in `ids`) and
    one add op (`ids` not yet in it), from `view`, so the edits file stays the one record and replays as before.
    CurationError when the working selection already is those rows."""
    pool = read_run(run_dir)
    cur.check_ids(ids, pool.index)
    working, wanted = set(working_selection(pool.run, pool).working), set(ids)
    remove, add = cur.in_pool_order(working - wanted, pool.index), cur.in_pool_order(wanted - working, pool.index)
    if not (remove or add):
        raise CurationError(f"the working selection already is these {len(wanted)} rows: nothing to change")
    return edit(run_dir, add=add, remove=remove, view=view)
