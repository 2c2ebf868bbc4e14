"""The working selection's math: ops over pool row ids, replayed over the method's selection (no files here)."""
from __future__ import annotations

import random

import pytest

from gist_core.errors import CurationError
from gist_core.methods import curation as cur
from gist_core.methods.curation import Op

POOL = tuple(f"r{i:03d}" for i in range(40))
INDEX = cur.pool_index(POOL)
BASE = ("r001", "r005", "r010", "r020", "r030")
AT = "2025-01-01T00:00:00+00:00"


def op(action, ids, view="test", group=None):
    return cur.make_op(action, ids, view, INDEX, group=group, at=AT)


def naive(base, ops):
    """The definition, spelled out: a list walked op by op, then sorted by pool position."""
    chosen = list(base)
    for o in ops:
        for i in o.ids:
            if o.action == "add" and i not in chosen:
                chosen.append(i)
            if o.action in ("remove", "exclude") and i in chosen:
                chosen.remove(i)
    return tuple(i for i in POOL if i in chosen)


def test_replay_applies_the_ops_in_order_and_returns_pool_order():
    ops = [op("remove", ["r010", "r020"]), op("add", ["r039", "r002", "r010"]), op("remove", ["r002"])]
    assert cur.replay(BASE, ops, POOL) == ("r001", "r005", "r010", "r030", "r039")
    assert cur.replay(BASE, ops, POOL) == naive(BASE, ops)
    assert cur.replay(BASE, [], POOL) == BASE
    # order matters: the same ops the other way round give another selection
    assert cur.replay(BASE, ops[::-1], POOL) == naive(BASE, ops[::-1]) != cur.replay(BASE, ops, POOL)


def test_replay_is_deterministic_whatever_order_the_ids_come_in():
    rng = random.Random(0)
    for _trial in range(30):
        ops = []
        for _ in range(rng.randint(1, 6)):
            ids = rng.sample(POOL, rng.randint(1, 8))
            ops.append(op(rng.choice(["add", "remove"]), ids))
        base = rng.sample(POOL, 6)
        first = cur.replay(base, ops, POOL)
        shuffled = [Op(o.action, tuple(rng.sample(o.ids, len(o.ids))), o.view, o.at) for o in ops]
        assert cur.replay(list(reversed(base)), shuffled, POOL) == first == naive(base, ops)
        assert list(first) == sorted(first, key=POOL.index)


def test_make_op_keeps_each_id_once_in_pool_order():
    o = op("add", ["r007", "r003", "r007", "r001"])
    assert o.ids == ("r001", "r003", "r007") and o.at == AT and o.view == "test"


def test_unknown_ids_are_one_error_naming_them():
    with pytest.raises(CurationError, match=r"2 row id\(s\) not in this run's pool: 'nope', 'zzz'"):
        op("add", ["r001", "nope", "zzz", "nope"])
    many = [f"x{i}" for i in range(9)]
    with pytest.raises(CurationError, match=r"9 row id\(s\).*'x4' and 4 more$"):
        cur.check_ids(many, INDEX)
    bad = Op("remove", ("r001", "ghost"), "map lasso", AT)
    with pytest.raises(CurationError, match=r"edit 2 \(remove from map lasso\): 1 row id\(s\) .*'ghost'"):
        cur.replay(BASE, [op("add", ["r002"]), bad], POOL)
    with pytest.raises(CurationError, match="'gone'"):
        cur.replay(("r001", "gone"), [], POOL)


def test_undo_drops_the_last_op():
    ops = (op("remove", ["r001"]), op("add", ["r002"]))
    assert cur.undo(ops) == ops[:1]
    assert cur.replay(BASE, cur.undo(ops), POOL) == cur.replay(BASE, ops[:1], POOL)
    assert cur.replay(BASE, cur.undo(cur.undo(ops)), POOL) == BASE
    with pytest.raises(CurationError, match="nothing to undo"):
        cur.undo(())


def test_exclusion_removes_the_group_and_later_adds_come_back():
    labels = ["math" if i % 5 == 0 else "code" for i in range(len(POOL))]
    math = cur.group_ids(labels, POOL, "math")
    assert math == tuple(p for i, p in enumerate(POOL) if i % 5 == 0)
    ex = op("exclude", math, group=("domain", "math"))
    assert ex.group == ("domain", "math")
    assert cur.replay(BASE, [ex], POOL) == ("r001",)  # r005, r010, r020, r030 are 'math'
    assert cur.replay(BASE, [ex, op("add", ["r010"])], POOL) == ("r001", "r010")
    assert cur.replay(BASE, [op("add", ["r015"]), ex], POOL) == ("r001",)
    assert cur.group_ids([None, "x", 3] + [None] * 37, POOL, "3") == ("r002",)  # labels compared as text; None never


def test_parse_group():
    assert cur.parse_group("domain=math") == ("domain", "math")
    assert cur.parse_group(" cluster:elrea = 3 ") == ("cluster:elrea", "3")
    for bad, msg in (("domain", "KEY=VALUE"), ("=math", "KEY=VALUE"), ("colour=red", "unknown key 'colour'")):
        with pytest.raises(CurationError, match=msg):
            cur.parse_group(bad)


def test_an_op_round_trips_through_json_and_bad_ones_are_named():
    for o in (op("add", ["r003", "r001"], view="map lasso"), op("exclude", ["r004"], group=("source", "web"))):
        assert Op.from_json(o.to_json()) == o
    with pytest.raises(CurationError, match="edit 3: unknown edit action 'delete'"):
        Op.from_json({"action": "delete", "ids": [], "view": "x", "at": AT}, "edit 3")
    with pytest.raises(CurationError, match="no 'view'"):
        Op.from_json({"action": "add", "ids": ["r001"], "at": AT})
    with pytest.raises(CurationError, match="exclusion names its group"):
        Op("exclude", ("r001",), "cli", AT)
    with pytest.raises(CurationError, match="ids must be a list"):
        Op.from_json({"action": "add", "ids": "r001", "view": "x", "at": AT})
    with pytest.raises(CurationError, match="name the view"):
        Op("add", ("r001",), " ", AT)


def test_changes_and_digest():
    assert cur.changes(BASE, ("r001", "r002")) == {"method": 5, "working": 2, "added": 1, "removed": 4}
    assert cur.digest(["b", "a"]) == cur.digest(("a", "b", "a")) != cur.digest(["a"])
    assert cur.now().endswith("+00:00")
