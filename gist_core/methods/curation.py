"""A working selection: the method's selection edited by hand, as a list of operations over pool row ids.

Pure functions over row ids: no paths, no clock unless asked (the run-folder side, curation/edits.json, is
gist_core/runner/curation.py; the export is gist_core/runner/export.py).

An operation (`Op`) adds or removes rows, or excludes a whole group (a cluster, source, domain, ...: its rows
are resolved when the operation is made and kept in it, so a later change of the labeller cannot change what
it did). Each op records the rows, the view they came from ("map lasso", "examples table", "cli", ...) and
when. Replaying the ops in order over the method's selection gives the working selection:

    working = base;  add: working |= ids;  remove, exclude: working -= ids

so the same base and ops always give the same rows, returned in pool order. Undo drops the last op.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from gist_core.errors import CurationError

ACTIONS = ("add", "remove", "exclude")
GROUP_KEYS = ("source", "skill", "subtask", "kind", "domain", "cluster")  # `cluster` or `cluster:METHOD`
EDITS_REPORT, EDITS_VERSION = "curation", 1
SHOWN = 5  # unknown ids named in an error before "and N more"


@dataclass(frozen=True)
class Op:
    """One hand edit: `action` (add | remove | exclude) of the pool rows `ids`, made from `view` at `at` (ISO 8601,
    UTC); an exclusion also names its `group` as (key, value), e.g. ("domain", "math")."""
    action: str
    ids: tuple[str, ...]
    view: str
    at: str
    group: tuple[str, str] | None = None

    def __post_init__(self):
        if self.action not in ACTIONS:
            raise CurationError(f"unknown edit action {self.action!r} (use {', '.join(ACTIONS)})")
        if isinstance(self.ids, str) or not all(isinstance(i, str) for i in self.ids):
            raise CurationError(f"an edit's ids must be a list of row id strings (got {self.ids!r:.80})")
        object.__setattr__(self, "ids", tuple(self.ids))
        if not isinstance(self.view, str) or not self.view.strip():
            raise CurationError("an edit must name the view it was made from (e.g. 'map lasso', 'cli')")
        if not isinstance(self.at, str) or not self.at:
            raise CurationError("an edit must carry its time (ISO 8601)")
        if (self.action == "exclude") != (self.group is not None):
            raise CurationError("an exclusion names its group (key, value); adds and removes name none")
        if self.group is not None:
            if len(self.group) != 2 or not all(isinstance(g, str) and g for g in self.group):
                raise CurationError(f"an exclusion's group is (key, value), got {self.group!r}")
            object.__setattr__(self, "group", tuple(self.group))

    def to_json(self) -> dict:
        out = {"action": self.action, "ids": list(self.ids), "view": self.view, "at": self.at}
        if self.group is not None:
            out["group"] = {"by": self.group[0], "value": self.group[1]}
        return out

    @classmethod
    def from_json(cls, d: Mapping, where: str = "edit") -> Op:
        if not isinstance(d, Mapping):
            raise CurationError(f"{where}: not a JSON object")
        missing = [k for k in ("action", "ids", "view", "at") if k not in d]
        if missing:
            raise CurationError(f"{where}: no {', '.join(map(repr, missing))}")
        group = d.get("group")
        if group is not None and not (isinstance(group, Mapping) and {"by", "value"} <= set(group)):
            raise CurationError(f"{where}: 'group' must be {{\"by\": KEY, \"value\": VALUE}}")
        try:
            return cls(d["action"], tuple(d["ids"]) if isinstance(d["ids"], list) else d["ids"], d["view"], d["at"],
                       None if group is None else (group["by"], group["value"]))
        except CurationError as e:
            raise CurationError(f"{where}: {e}") from None

    def describe(self) -> str:
        what = f"{self.group[0]}={self.group[1]}: " if self.group else ""
        return f"{self.action} {what}{len(self.ids)} row(s) from {self.view} at {self.at}"


def now() -> str:
    """The time an op records: UTC, to the second, ISO 8601."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def pool_index(pool_ids: Sequence[str]) -> dict[str, int]:
    """Row id -> pool position; CurationError when an id repeats (a pool's ids are unique by construction)."""
    index = {rid: i for i, rid in enumerate(pool_ids)}
    if len(index) != len(pool_ids):
        raise CurationError("the pool's row ids are not unique")
    return index


def unknown_ids(ids: Iterable[str], index: Mapping[str, int]) -> list[str]:
    """The ids not in the pool, each once, in the order given."""
    return list(dict.fromkeys(i for i in ids if i not in index))


def check_ids(ids: Iterable[str], index: Mapping[str, int], where: str = "") -> None:
    """CurationError naming the ids that are not pool rows (the first few, and how many more)."""
    bad = unknown_ids(ids, index)
    if bad:
        shown = ", ".join(repr(b) for b in bad[:SHOWN]) + (f" and {len(bad) - SHOWN} more" if len(bad) > SHOWN else "")
        prefix = f"{where}: " if where else ""
        raise CurationError(f"{prefix}{len(bad)} row id(s) not in this run's pool: {shown}")


def in_pool_order(ids: Iterable[str], index: Mapping[str, int]) -> tuple[str, ...]:
    """Known ids, each once, sorted by pool position (check_ids first: an unknown id raises)."""
    ids = set(ids)
    check_ids(ids, index)
    return tuple(sorted(ids, key=index.__getitem__))


def make_op(action: str, ids: Iterable[str], view: str, index: Mapping[str, int], *,
            group: tuple[str, str] | None = None, at: str | None = None) -> Op:
    """An op over `ids` (checked against the pool, each once, in pool order); `at` defaults to now."""
    ids = list(ids)
    if not ids:
        raise CurationError(f"nothing to {action}: no row ids given")
    check_ids(ids, index)
    return Op(action, in_pool_order(ids, index), view, at or now(), group)


def replay(base: Iterable[str], ops: Sequence[Op], pool_ids: Sequence[str]) -> tuple[str, ...]:
    """The working selection: `ops` applied in order to the method's selection `base`, in pool order.

    Every id (base and ops) must be a pool row: an unknown one raises CurationError naming it."""
    index = pool_index(pool_ids)
    chosen = set(in_pool_order(base, index))
    for n, op in enumerate(ops, 1):
        check_ids(op.ids, index, where=f"edit {n} ({op.action} from {op.view})")
        if op.action == "add":
            chosen.update(op.ids)
        else:
            chosen.difference_update(op.ids)
    return tuple(sorted(chosen, key=index.__getitem__))


def undo(ops: Sequence[Op]) -> tuple[Op, ...]:
    """The ops without the last one; CurationError when there is none."""
    if not ops:
        raise CurationError("nothing to undo: the working selection is the method's selection")
    return tuple(ops[:-1])


def parse_group(text: str) -> tuple[str, str]:
    """'domain=math' -> ('domain', 'math'); keys: source, skill, subtask, kind, domain, cluster or cluster:METHOD."""
    key, sep, value = text.partition("=")
    key, value = key.strip(), value.strip()
    if not sep or not key or not value:
        raise CurationError(f"exclude {text!r}: write KEY=VALUE (e.g. domain=math, source=sharegpt, cluster=3)")
    if key.partition(":")[0] not in GROUP_KEYS:
        raise CurationError(f"exclude {text!r}: unknown key {key!r} (use {', '.join(GROUP_KEYS)} or cluster:METHOD)")
    return key, value


def group_ids(labels: Sequence, pool_ids: Sequence[str], value: str) -> tuple[str, ...]:
    """The ids of the rows whose label (compared as text) is `value`, in pool order (None labels match nothing)."""
    if len(labels) != len(pool_ids):
        raise ValueError(f"{len(labels)} labels for {len(pool_ids)} rows")
    return tuple(rid for rid, lab in zip(pool_ids, labels) if lab is not None and str(lab) == value)


def changes(base: Iterable[str], working: Iterable[str]) -> dict[str, int]:
    """Counts of the method's selection, the working selection, and the rows added and removed between them."""
    base, working = set(base), set(working)
    return {"method": len(base), "working": len(working), "added": len(working - base), "removed": len(base - working)}


def digest(ids: Iterable[str]) -> str:
    """A short content digest of a set of row ids (order-free): tells whether the method's selection changed."""
    h = hashlib.sha256()
    for rid in sorted(set(ids)):
        h.update(rid.encode("utf-8") + b"\0")
    return h.hexdigest()[:16]
