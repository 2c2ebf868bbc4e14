"""A run's working selection (or any list of its pool rows, e.g. a lasso) as a training file, with its provenance
written beside it as `<file>.provenance.json` (export_selection, for the CLI), or both as text (build_export, for the
dashboard's downloads: the same lines and record, no second formatter).

Rows are written in pool order (the pool file's order, which selected.jsonl keeps too), each once. Two formats:

- `rows`: the original pool row, every field it had, plus `score` (the run's score), exactly as selected.jsonl
  keeps it. The method's own rows are selected.jsonl's lines as they are; a row added by hand is read from the
  pool file named in the run's config.json (a local file or a fetched registry name, checked to still hold the
  run's rows in the run's order) and written the way selected.jsonl writes a row. Where that file is gone or
  no longer matches, the row is the fields the run kept in examples.parquet (id, prompt, response, source,
  skill, subtask, kind) plus `score`: the provenance counts the rows from each place (`rows_from`).
- `messages`: one `{"messages": [{"role": ..., "content": ...}, ...]}` per row, the chat turns the row holds
  (multi-turn rows keep every turn: gist_core.data.chat).

The provenance record: the run folder, method, score, rule, rank, the edits applied, counts, the rows' ids in the
file's order, the file's sha256, the time and the gist-lab version.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from gist_core import __version__
from gist_core.data.chat import messages_record, row_turns
from gist_core.data.examples import iter_examples, missing, selected_line
from gist_core.data.registry import registry_file
from gist_core.errors import CurationError, GistError, StoreError
from gist_core.methods import curation as cur
from gist_core.runner.curation import RunPool, check_run, pool_frame, read_run, working_selection
from gist_core.store import layout
from gist_core.store.atomic import atomic_path, atomic_write_text
from gist_core.store.layout import RunLayout

FORMATS = ("rows", "messages")
PROVENANCE_SUFFIX = ".provenance.json"
KEPT_FIELDS = ("id", "prompt", "response", "source", "skill", "subtask", "kind")  # examples.parquet's text and labels
FROM_SELECTED, FROM_POOL, FROM_EXAMPLES = layout.SELECTED, "pool file", layout.EXAMPLES  # where a row was read


def provenance_path(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.with_name(out.name + PROVENANCE_SUFFIX)


def check_out(run_dir: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False) -> Path:
    """The output file, when it may be written: not a folder, not inside the run folder, and neither it nor its
    provenance file already there unless `overwrite`."""
    out = Path(out)
    if out.is_dir():
        raise CurationError(f"{out} is a folder: name the file to write")
    run = Path(run_dir).resolve()
    if run == out.resolve().parent or run in out.resolve().parents:
        raise CurationError(f"{out} is inside the run folder {run_dir}: write exports outside it")
    if not overwrite:
        for p in (out, provenance_path(out)):
            if p.exists():
                raise CurationError(f"{p} exists; pass --overwrite to replace it")
    return out


@dataclass(frozen=True)
class SourceRow:
    id: str
    line: str       # the row as a JSON line (rows format), without its newline
    origin: str     # FROM_SELECTED | FROM_POOL | FROM_EXAMPLES

    @property
    def row(self) -> dict:
        return json.loads(self.line)


def _row_line(row: dict, score) -> str:
    score = float(score)
    return selected_line(row, score if math.isfinite(score) else None)


def selected_lines(pool: RunPool) -> dict[str, str]:
    """Row id -> its line of selected.jsonl; the lines are the method's selection in pool order (StoreError where
    they are not: a count or an id that disagrees with scores.parquet)."""
    path = RunLayout(pool.run).selected
    if not path.is_file():
        return {}
    lines = [ln for ln in path.read_text(encoding="utf-8").split("\n") if ln.strip()]  # not splitlines: U+2028
    if len(lines) != len(pool.base):
        raise StoreError(f"{path}: {len(lines)} rows, but scores.parquet selects {len(pool.base)} under rule "
                         f"{pool.rule!r}: the run folder is inconsistent (rerun its command)")
    out = {}
    for n, (rid, line) in enumerate(zip(pool.base, lines), 1):
        try:
            given = json.loads(line).get("id")
        except (json.JSONDecodeError, AttributeError):
            raise StoreError(f"{path}:{n}: not a JSON object") from None
        if given not in (None, "") and str(given) != rid:
            raise StoreError(f"{path}:{n}: row {given!r} where the run's selection has {rid!r}")
        out[rid] = line
    return out


def pool_file_rows(pool: RunPool, wanted: set[str]) -> tuple[dict[str, dict], str | None]:
    """(id -> original row) of the `wanted` ids read from the run's pool file, and a note when it cannot be used
    (gone, not local, or no longer the run's rows in the run's order)."""
    spec = pool.config.get("train")
    if not spec:
        return {}, "config.json names no pool file"
    if registry_file(spec) is None and not Path(spec).exists():
        return {}, f"the pool {spec!r} is not a local file here (run from the folder the run was started in)"
    found: dict[str, dict] = {}
    n = -1
    try:
        for n, ex in enumerate(iter_examples(spec, split=pool.config.get("train_split") or "train",
                                             limit=pool.config.get("limit_train"))):
            if n >= len(pool.ids) or ex.id != pool.ids[n]:
                return {}, f"the pool {spec!r} no longer holds the run's rows in its order (row {n + 1})"
            if ex.id in wanted:
                found[ex.id] = ex.raw
    except (GistError, OSError) as e:
        return {}, f"the pool {spec!r} cannot be read ({e})"
    if n + 1 != len(pool.ids):
        return {}, f"the pool {spec!r} has {n + 1} rows, the run {len(pool.ids)}"
    return found, None


def original_rows(pool: RunPool, ids: tuple[str, ...]) -> tuple[list[SourceRow], list[str]]:
    """The rows `ids` (pool order) as selected.jsonl keeps them, and notes on rows that could not be (see above)."""
    lay = RunLayout(pool.run)
    scores = pd.read_parquet(lay.scores, columns=["id", "score"])
    score = dict(zip(scores["id"].astype(str), scores["score"].to_numpy()))
    chosen = selected_lines(pool)
    not_selected = {i for i in ids if i not in chosen}
    raw, notes = pool_file_rows(pool, not_selected) if not_selected else ({}, None)
    kept = {}
    if not_selected - set(raw):
        frame = pool_frame(pool, [c for c in KEPT_FIELDS if c != "id"]).set_index("id", drop=False)
        kept = {i: {c: v for c, v in frame.loc[i, list(KEPT_FIELDS)].items() if not missing(v)}
                for i in not_selected - set(raw)}
    out = []
    for i in ids:
        if i in chosen:
            out.append(SourceRow(i, chosen[i], FROM_SELECTED))
        elif i in raw:
            out.append(SourceRow(i, _row_line(raw[i], score[i]), FROM_POOL))
        else:
            out.append(SourceRow(i, _row_line(kept[i], score[i]), FROM_EXAMPLES))
    return out, ([notes] if notes and kept else [])


def format_lines(rows: list[SourceRow], fmt: str) -> list[str]:
    if fmt == "rows":
        return [r.line for r in rows]
    out = []
    for r in rows:
        row = r.row
        if r.origin == FROM_EXAMPLES:  # only the last user turn and the response were kept
            turns = [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": row["response"]}]
        else:
            turns = row_turns(row, f"pool row {r.id!r}")
        out.append(json.dumps(messages_record(turns), ensure_ascii=False))
    return out


@dataclass(frozen=True)
class Export:
    """A training file's text and its provenance record, before (or without) any write: the CLI writes them to a
    file, the dashboard hands them to the browser as downloads."""
    text: str
    record: dict

    @property
    def data(self) -> bytes:
        return self.text.encode("utf-8")

    def provenance_json(self) -> str:
        """The record as FILE.provenance.json holds it (the CLI writes this text, the dashboard downloads it)."""
        return json.dumps(self.record, indent=2, sort_keys=True, default=str) + "\n"


def build_export(run_dir: str | os.PathLike, fmt: str = "rows", ids: list[str] | tuple[str, ...] | None = None,
                 file: str = "") -> Export:
    """The working selection (or the pool rows `ids`) in format `fmt`, one JSON line per row in pool order, and
    its provenance record (`file`: the name the record gives the file). Checks the run, the format and the ids."""
    if fmt not in FORMATS:
        raise CurationError(f"unknown export format {fmt!r} (use {', '.join(FORMATS)})")
    check_run(run_dir)
    pool = read_run(run_dir)
    curation = working_selection(pool.run, pool)
    if ids is None:
        chosen, selection = curation.working, "working selection"
    else:
        cur.check_ids(ids, pool.index)
        chosen, selection = cur.in_pool_order(ids, pool.index), "given rows"
    if not chosen:
        raise CurationError(f"nothing to export: the {selection} of {pool.run} is empty")
    rows, notes = original_rows(pool, chosen)
    text = "".join(line + "\n" for line in format_lines(rows, fmt))
    record = provenance(pool, curation, file, fmt, selection, rows, notes,
                        hashlib.sha256(text.encode("utf-8")).hexdigest())
    return Export(text, record)


def export_selection(run_dir: str | os.PathLike, out: str | os.PathLike, fmt: str = "rows",
                     ids: list[str] | None = None, overwrite: bool = False) -> dict:
    """Write the working selection (or the pool rows `ids`) to `out` in format `fmt`, and the provenance record
    beside it; returns the record. Every check (run folder, output file, row ids) comes before any write."""
    if fmt not in FORMATS:
        raise CurationError(f"unknown export format {fmt!r} (use {', '.join(FORMATS)})")
    check_run(run_dir)
    out = check_out(run_dir, out, overwrite)
    export = build_export(run_dir, fmt, ids, file=str(out.resolve()))
    with atomic_path(out) as tmp:
        tmp.write_text(export.text, encoding="utf-8")
    atomic_write_text(provenance_path(out), export.provenance_json())
    return export.record


def provenance(pool: RunPool, curation, file: str, fmt: str, selection: str, rows: list[SourceRow],
               notes: list[str], sha256: str) -> dict:
    s, c = pool.summary, pool.config
    ids = [r.id for r in rows]
    base = set(pool.base)
    return {
        "report": "export", "version": 1, "file": file, "format": fmt, "order": "pool order",
        "n_rows": len(rows), "sha256": sha256,
        "run": str(pool.run.resolve()), "method": "gist", "score": s.get("score", c.get("score")), "rule": pool.rule,
        "rank": s.get("rank"), "aggregation": s.get("aggregation", c.get("aggregation")),
        "checkpoint": s.get("checkpoint", c.get("checkpoint")), "budget": c.get("budget"), "model": c.get("model"),
        "pool": c.get("train"), "target": c.get("target"), "n_pool": len(pool.ids),
        "selection": selection,
        "method_selection": pool.base_record(),
        "edits": [op.to_json() for op in curation.edits.ops] if selection == "working selection" else [],
        "edits_made_over": curation.edits.base, "method_selection_changed_since_edits": curation.base_changed,
        "counts": {"method": len(base), "exported": len(rows), "of_them_in_method_selection": len(base & set(ids)),
                   "added": len(set(ids) - base), "left_out_of_method_selection": len(base - set(ids))},
        "rows_from": {o: sum(r.origin == o for r in rows) for o in (FROM_SELECTED, FROM_POOL, FROM_EXAMPLES)},
        "notes": notes, "ids": ids, "created_at": cur.now(), "gist_lab_version": __version__,
    }
