"""Load instruction-tuning examples from files or `datasets` into one validated shape.

Every problem with the input becomes a one-line DataError naming the file, the line (or row)
and the field, so a user can fix the data without reading a traceback. JSONL positions read
"f.jsonl:7: ..." (a real line number); every other source reads "f.csv row 7: ...", because a
row of a JSON list, a CSV, a Parquet file or a dataset is not a line of the file.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from gist_core.data.readers import _open_rows, _plain, _type_name
from gist_core.errors import DataError
from gist_core.store.atomic import atomic_path

KINDS = ("correct", "wrong", "distractor")
ROLES = {"system": "system", "user": "user", "assistant": "assistant", "tool": "tool",
         "human": "user", "gpt": "assistant"}  # ShareGPT 'from' values map onto chat roles
NO_SCHEMA = "no instruction fields: expected 'instruction'+'output', 'prompt'+'response' or 'messages'"


@dataclass(frozen=True)
class Example:
    id: str
    prompt: str            # the user's request as plain text (alpaca: instruction + "\n\n" + input)
    response: str          # the text the model must learn to produce
    source: str = ""       # 'source'/'dataset' field, else the file's stem / dataset name
    skill: str | None = None     # optional ground-truth label ('skill' or 'task' field)
    subtask: str | None = None   # targets group their examples by it
    kind: str | None = None      # optional ground truth: 'correct' | 'wrong' | 'distractor'
    messages: tuple | None = None  # chat rows: (role, content) pairs before the final assistant turn
    line: int = 0          # 1-based line/row number in the input (for error messages)
    raw: dict = field(default_factory=dict, compare=False, hash=False)  # input row as read (for export)


# ----------------------------------------------------------------------------- loading

def load_examples(spec: str | os.PathLike, *, split: str = "train", limit: int | None = None) -> list[Example]:
    """Read, validate and return the examples of a file, a save_to_disk folder or a datasets name."""
    return list(iter_examples(spec, split=split, limit=limit))


def load_pool(spec: str | os.PathLike, *, split: str = "train", limit: int | None = None) -> ExampleTable:
    """Like load_examples, validated the same way, but held column-wise in Arrow: a 300,000-example pool
    takes about its file size in memory instead of ~1.3 KB of Python objects per example."""
    return ExampleTable.from_examples(iter_examples(spec, split=split, limit=limit))


def iter_examples(spec: str | os.PathLike, *, split: str = "train", limit: int | None = None) -> Iterator[Example]:
    """Validated examples one at a time; DataError for the first bad row, a duplicate id or no rows."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1 (got {limit})")
    name = os.fspath(spec)
    rows, unit, source = _open_rows(name, split)
    first_seen: dict[str, int] = {}
    count = 0
    for n, row in rows:  # rows are read lazily, so `limit` also bounds the parsing work for JSONL
        loc = f"{name}:{n}" if unit == "line" else f"{name} row {n}"
        ex = _parse_row(row, n, loc, source)
        if ex.id in first_seen:
            raise DataError(f"{loc}: duplicate id {ex.id!r} (first seen at {unit} {first_seen[ex.id]})")
        first_seen[ex.id] = n
        count += 1
        yield ex
        if limit is not None and count >= limit:
            break
    if not count:
        raise DataError(f"{name}: no examples")


class ExampleTable(Sequence):
    """Examples held column-wise in a pyarrow Table; indexing builds an Example on demand.

    Text lives in Arrow buffers (no per-string Python object), chat turns and the input row are
    kept as JSON strings, so memory is close to the data's own size however large the pool is.
    """
    COLUMNS = ("id", "prompt", "response", "source", "skill", "subtask", "kind", "messages", "line", "raw")
    CHUNK = 8192

    def __init__(self, table):
        self.table = table
        self._cache: dict[str, list] = {}

    @classmethod
    def from_examples(cls, examples) -> ExampleTable:
        batches, chunk = [], []

        def flush():
            if chunk:
                cols = {c: [cls._cell(ex, c) for ex in chunk] for c in cls.COLUMNS}
                batches.append(pa.RecordBatch.from_pydict(cols, schema=cls._schema()))
                chunk.clear()
        for ex in examples:
            chunk.append(ex)
            if len(chunk) >= cls.CHUNK:
                flush()
        flush()
        return cls(pa.Table.from_batches(batches, schema=cls._schema()).combine_chunks())

    @staticmethod
    def _schema():
        return pa.schema([(c, pa.int64() if c == "line" else pa.large_string() if c in ("prompt", "response", "raw")
                           else pa.string()) for c in ExampleTable.COLUMNS])

    @staticmethod
    def _cell(ex: Example, c: str):
        if c == "messages":
            return None if ex.messages is None else json.dumps([list(m) for m in ex.messages], ensure_ascii=False)
        if c == "raw":
            return json.dumps(_plain(ex.raw), ensure_ascii=False, default=str)
        return getattr(ex, c)

    def __len__(self) -> int:
        return self.table.num_rows

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        row = {c: self.table.column(c)[i % len(self)].as_py() for c in self.COLUMNS}
        return self._example(row)

    @staticmethod
    def _example(row: dict) -> Example:
        msgs = row.pop("messages")
        return Example(**{**row, "raw": json.loads(row["raw"]),
                          "messages": None if msgs is None else tuple(tuple(m) for m in json.loads(msgs))})

    def take(self, indices) -> list[Example]:
        """Examples at many row indices in one Arrow call (the selection's rows, for export)."""
        rows = self.table.take(pa.array(np.asarray(indices, dtype=np.int64))).to_pylist()
        return [self._example(r) for r in rows]

    def __iter__(self) -> Iterator[Example]:
        for batch in self.table.to_batches(self.CHUNK):
            for row in batch.to_pylist():
                yield self._example(row)

    def column(self, name: str) -> list:
        """A column as a Python list (cached: ids and labels are asked for more than once)."""
        if name not in self._cache:
            self._cache[name] = self.table.column(name).to_pylist()
        return self._cache[name]

    def frame(self, columns: Sequence[str] | None = None) -> pd.DataFrame:
        cols = list(columns or ("id", "prompt", "response", "source", "skill", "subtask", "kind", "line"))
        return self.table.select(cols).to_pandas()


# ----------------------------------------------------------------------------- row parsing

def _parse_row(row: Any, n: int, loc: str, default_source: str) -> Example:
    if not isinstance(row, dict):
        raise DataError(f"{loc}: row is not a JSON object (got {_type_name(row)})")
    schema = _schema(row)
    messages = None
    if schema == "chat":
        prompt, response, messages = _chat(row, loc)
    elif schema == "alpaca":
        prompt, response = _required(row, "instruction", loc), _required(row, "output", loc)
        extra = _optional(row, ("input",), loc)
        if extra is not None:
            prompt += "\n\n" + extra
    elif schema in ("prompt", "question"):
        answers = ("response", "completion") if schema == "prompt" else ("answer",)
        answer = next((k for k in answers if not _blank(row.get(k))), next((k for k in answers if k in row), answers[0]))
        prompt, response = _required(row, schema, loc), _required(row, answer, loc)
    else:
        raise DataError(f"{loc}: {NO_SCHEMA}")
    kind = _optional(row, ("kind",), loc)
    if kind is not None and kind not in KINDS:
        raise DataError(f"{loc}: field 'kind' must be one of {', '.join(map(repr, KINDS))} (got {kind!r})")
    return Example(
        # Generated ids use the file-level name so they stay stable whatever a row's 'source' says.
        id=_optional(row, ("id",), loc) or f"{default_source}-{n}",
        prompt=prompt, response=response,
        source=_optional(row, ("source", "dataset"), loc) or default_source,
        skill=_optional(row, ("skill", "task"), loc), subtask=_optional(row, ("subtask",), loc),
        kind=kind, messages=messages, line=n, raw=row)


def _schema(row: dict) -> str | None:
    # First pass: fields with a value. Second pass: fields merely present (an empty CSV cell, a
    # None filled in by `datasets` for ragged rows), so the error names the field that is empty.
    for has in (lambda k: not _blank(row.get(k)), lambda k: k in row):
        if has("messages") or has("conversations"):
            return "chat"
        for key, schema in (("instruction", "alpaca"), ("prompt", "prompt"), ("question", "question")):
            if has(key):
                return schema
    return None


def _chat(row: dict, loc: str) -> tuple[str, str, tuple]:
    key = next((k for k in ("messages", "conversations") if not _blank(row.get(k))),
               "messages" if "messages" in row else "conversations")
    msgs = row.get(key)
    if not isinstance(msgs, list) or not msgs:
        raise DataError(f"{loc}: field {key!r} must be a non-empty list of messages (got {_type_name(msgs)})")
    turns = [_message(m, i, f"{loc}: field {key!r}: message {i}") for i, m in enumerate(msgs, 1)]
    if turns[-1][0] != "assistant":
        raise DataError(f"{loc}: field {key!r}: last message is from {turns[-1][0]!r}, expected 'assistant'")
    if not turns[-1][1].strip():
        raise DataError(f"{loc}: field {key!r}: final assistant message is empty")
    prompt = next((c for r, c in reversed(turns[:-1]) if r == "user"), None)
    if prompt is None:
        raise DataError(f"{loc}: field {key!r}: no user message before the final assistant message")
    if not prompt.strip():
        raise DataError(f"{loc}: field {key!r}: last user message is empty")
    return prompt, turns[-1][1], tuple(turns[:-1])


def _message(m: Any, i: int, where: str) -> tuple[str, str]:
    if not isinstance(m, dict):
        raise DataError(f"{where} is not an object (got {_type_name(m)})")
    # Check 'role' before 'from': `datasets` fills absent keys of ragged rows with None.
    role = m.get("role") if m.get("role") is not None else m.get("from")
    content = m.get("content") if m.get("content") is not None else m.get("value")
    if role is None:
        raise DataError(f"{where} has no 'role'")
    if not isinstance(role, str) or role.lower() not in ROLES:
        raise DataError(f"{where} has unknown role {role!r} (expected system, user, assistant, tool; or human, gpt)")
    if content is None:
        raise DataError(f"{where} has no 'content'")
    if not isinstance(content, str):
        raise DataError(f"{where}: 'content' is not a string (got {_type_name(content)})")
    return ROLES[role.lower()], content


def _required(row: dict, key: str, loc: str) -> str:
    value = row.get(key)
    if value is None:
        raise DataError(f"{loc}: field {key!r} is missing")
    if not isinstance(value, str):
        raise DataError(f"{loc}: field {key!r} is not a string (got {_type_name(value)})")
    if not value.strip():
        raise DataError(f"{loc}: field {key!r} is empty")
    return value


def _optional(row: dict, keys: tuple[str, ...], loc: str) -> str | None:
    """First non-blank field among `keys` as text; integers (ids, numeric labels) are accepted."""
    for key in keys:
        value = row.get(key)
        if _blank(value):
            continue
        if isinstance(value, str):
            return value
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # Parquet turns an int column holding a null into floats
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        raise DataError(f"{loc}: field {key!r} is not a string (got {_type_name(value)})")
    return None


def _blank(value: Any) -> bool:
    """Missing for our purposes: None, NaN, or a whitespace-only string (empty CSV cell)."""
    return (value is None or (isinstance(value, float) and math.isnan(value))
            or (isinstance(value, str) and not value.strip()))


# ----------------------------------------------------------------------------- views and export

def examples_to_frame(examples: list[Example] | ExampleTable, columns=None) -> pd.DataFrame:
    cols = list(columns or ["id", "prompt", "response", "source", "skill", "subtask", "kind", "line"])
    if isinstance(examples, ExampleTable):
        return examples.frame(cols)
    return pd.DataFrame([[getattr(ex, c) for c in cols] for ex in examples], columns=cols)


def write_selected_jsonl(examples: list[Example], scores: Sequence[float], path: str | os.PathLike,
                         *, score_field: str = "score") -> None:
    """One line per example: its input row unchanged (fields in order) plus `score_field`."""
    scores = [float(s) for s in scores]
    if len(scores) != len(examples):
        raise ValueError(f"{len(examples)} examples but {len(scores)} scores")
    lines = []
    for ex, score in zip(examples, scores):
        if not math.isfinite(score):  # NaN/inf would make the file invalid JSON for most readers
            raise ValueError(f"score for example {ex.id!r} is not finite ({score})")
        lines.append(selected_line(ex.raw, score, score_field) + "\n")
    with atomic_path(path) as tmp:
        tmp.write_text("".join(lines), encoding="utf-8")


def selected_line(raw: dict, score: float | None, score_field: str = "score") -> str:
    """One line of selected.jsonl, without its newline: the input row unchanged (fields in order) plus the score."""
    return json.dumps({**_plain(raw), score_field: score}, ensure_ascii=False, default=str)


def missing(v) -> bool:
    """A field the row does not have: None, NaN (of any float type) or pd.NA; the one test the dashboard's
    labels and the exports share."""
    return v is None or v is pd.NA or (isinstance(v, (float, np.floating)) and bool(np.isnan(v)))


def groups_from_labels(ids, subtasks) -> dict[str, list[int]]:
    """Subtask name -> row indices, first-seen order. GIST convention: a row without a subtask
    (None or NaN) is a subtask of its own, named by its id."""
    groups: dict[str, list[int]] = {}
    for i, (rid, sub) in enumerate(zip(ids, subtasks)):
        groups.setdefault(sub if isinstance(sub, str) else str(rid), []).append(i)
    return groups


def subtask_groups(examples: list[Example]) -> dict[str, list[int]]:
    """Subtask name -> example indices, in first-seen order.

    GIST convention: a target without subtasks treats every example as its own subtask, so an
    example with no subtask gets a group of its own, named by its id.
    """
    if isinstance(examples, ExampleTable):
        return groups_from_labels(examples.column("id"), examples.column("subtask"))
    return groups_from_labels([ex.id for ex in examples], [ex.subtask for ex in examples])
