"""Export: the working selection as the original pool rows and as chat messages, checked row for row against the
pool file read independently (json.loads of its lines), with the provenance record beside the file.

The run folder is written by hand with the pipeline's own writers (examples.parquet through examples_to_frame,
selected.jsonl through write_selected_jsonl) over a pool that mixes every schema: extra fields, alpaca, multi-turn
chat with a system turn, ShareGPT, question/answer, a row without an id, a U+2028 inside a text."""
from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from gist_core.data.examples import examples_to_frame, load_pool, write_selected_jsonl
from gist_core.errors import CurationError, StoreError
from gist_core.runner import curation
from gist_core.runner.export import build_export, export_selection, provenance_path
from gist_core.store.layout import RunLayout

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Name a colour"},
        {"role": "assistant", "content": "Blue"}]
SPECIAL = [
    {"id": "a1", "prompt": "Add 2 and 3.", "response": "5", "source": "arith", "meta": {"level": 2, "tags": ["easy"]},
     "weight": 0.5},
    {"id": "a2", "instruction": "Translate to French", "input": "cat", "output": "chat", "source": "alpaca"},
    {"id": "c1", "messages": CHAT, "source": "chat"},
    {"id": "s1", "conversations": [{"from": "human", "value": "What is 2+2?"}, {"from": "gpt", "value": "4"}],
     "source": "sharegpt"},
    {"id": "q1", "question": "Capital of France?", "answer": "Paris", "subtask": "facts"},
    {"prompt": "Write a haiku\u2028about rain", "response": "Drops fall \u2014 caf\u00e9 \u2614", "source": "poems"},
    {"id": 77, "prompt": "An integer id", "response": "ok"},
]
N_PLAIN = 13
SELECTED = ["a2", "c1", "p0", "p3", "p4", "p8", "77"]  # the method's selection


def pool_rows() -> list[dict]:
    plain = [{"id": f"p{i}", "prompt": f"task {i}: the {i % 3 + 1}th word of a b c", "response": "abc"[i % 3],
              "skill": "kth_word", "kind": "wrong" if i % 4 == 0 else "correct", "line_no": i} for i in range(N_PLAIN)]
    return SPECIAL[:3] + plain[:6] + SPECIAL[3:] + plain[6:]


def build_run(base) -> tuple:
    """(run folder, pool file): a finished run as far as curation and export read it."""
    base.mkdir(parents=True, exist_ok=True)
    pool_file = base / "pool.jsonl"
    pool_file.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in pool_rows()), encoding="utf-8")
    run = base / "run"
    run.mkdir()
    lay = RunLayout(run)
    pool = load_pool(pool_file)
    examples_to_frame(pool).to_parquet(lay.examples, index=False)
    ids = pool.column("id")
    score = np.random.default_rng(0).uniform(-0.5, 0.3, len(ids))
    chosen = np.array(sorted(ids.index(i) for i in SELECTED))
    score[chosen] += 1.0
    frame = examples_to_frame(pool, ["id", "source", "skill", "subtask", "kind"])
    frame["score"] = score
    frame["rank"] = (-score).argsort().argsort() + 1
    frame["selected_global"] = np.isin(np.arange(len(ids)), chosen)
    frame["selected_subtask"] = np.isin(np.arange(len(ids)), chosen[:3])
    frame.to_parquet(lay.scores, index=False)
    write_selected_jsonl(pool.take(chosen), score[chosen], lay.selected)
    lay.summary.write_text(json.dumps({"balance": "global", "rank": 4, "score": "normaware", "n_selected": len(chosen),
                                       "aggregation": "subtask_mean", "checkpoint": 1}))
    lay.config.write_text(json.dumps({"model": "tiny", "train": str(pool_file), "target": "val.jsonl", "budget": 7,
                                      "balance": "global", "train_split": "train", "limit_train": None}))
    return run, pool_file


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_run(tmp_path_factory.mktemp("export") / "case")


@pytest.fixture
def case(built, tmp_path):
    run, pool_file = built
    shutil.copytree(pool_file.parent, tmp_path / "case")
    run, pool_file = tmp_path / "case" / "run", tmp_path / "case" / "pool.jsonl"
    cfg = json.loads(RunLayout(run).config.read_text())
    RunLayout(run).config.write_text(json.dumps({**cfg, "train": str(pool_file)}))
    return run, pool_file


# ----------------------------------------------------------------------------- the independent reading
def raw_pool(pool_file) -> list[tuple[str, dict]]:
    """(id, row) per pool line, read with json alone: an id is the row's own (as text) or pool-<line>."""
    out = []
    for n, line in enumerate(pool_file.read_text(encoding="utf-8").split("\n"), 1):
        if line.strip():
            row = json.loads(line)
            out.append((str(row["id"]) if "id" in row else f"pool-{n}", row))
    return out


def naive_working(run, pool_file) -> list[str]:
    lay = RunLayout(run)
    chosen = set(pd.read_parquet(lay.scores).query("selected_global")["id"])
    for op in json.loads(lay.curation_edits.read_text())["ops"] if lay.curation_edits.exists() else []:
        chosen = chosen | set(op["ids"]) if op["action"] == "add" else chosen - set(op["ids"])
    return [i for i, _ in raw_pool(pool_file) if i in chosen]


def expected_rows(run, pool_file, ids) -> list[dict]:
    score = dict(pd.read_parquet(RunLayout(run).scores, columns=["id", "score"]).itertuples(index=False))
    rows = dict(raw_pool(pool_file))
    return [{**rows[i], "score": float(score[i])} for i in ids]


def expected_turns(row: dict) -> list[tuple[str, str]]:
    if "messages" in row:
        return [(m["role"], m["content"]) for m in row["messages"]]
    if "conversations" in row:
        return [({"human": "user", "gpt": "assistant"}[m["from"]], m["value"]) for m in row["conversations"]]
    if "instruction" in row:
        return [("user", row["instruction"] + "\n\n" + row["input"]), ("assistant", row["output"])]
    if "question" in row:
        return [("user", row["question"]), ("assistant", row["answer"])]
    return [("user", row["prompt"]), ("assistant", row["response"])]


def read_jsonl(path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").split("\n") if x.strip()]


def assert_same_rows(got: list[dict], want: list[dict]) -> None:
    """Row for row: the same number of rows, and row i of the file is row i of the expectation."""
    assert len(got) == len(want), f"{len(got)} rows exported, {len(want)} expected"
    for n, (g, w) in enumerate(zip(got, want), 1):
        assert g == w, f"row {n}: {g} != {w}"


def curate(run):
    base = list(curation.read_run(run).base)
    curation.edit(run, remove=["p3", "a2"], add=["s1", "pool-12", "q1", "p12"], view="map lasso")
    curation.edit(run, remove=["p12"], view="examples table")
    return base


# ----------------------------------------------------------------------------- tests
def test_the_rows_file_is_the_pool_rows_of_the_working_selection(case, tmp_path):
    run, pool_file = case
    curate(run)
    out = tmp_path / "train.jsonl"
    rec = export_selection(run, out, "rows")
    want_ids = naive_working(run, pool_file)
    assert want_ids == ["c1", "p0", "p4", "s1", "q1", "pool-12", "77", "p8"]  # the edits, by hand
    assert_same_rows(read_jsonl(out), expected_rows(run, pool_file, want_ids))
    assert rec["ids"] == want_ids and rec["rows_from"] == {"selected.jsonl": 5, "pool file": 3, "examples.parquet": 0}
    # the method's own rows are selected.jsonl's lines as they are
    kept = set(RunLayout(run).selected.read_text(encoding="utf-8").split("\n"))
    lines = out.read_text(encoding="utf-8").split("\n")
    assert [ln in kept for ln in lines if ln] == [i not in ("s1", "q1", "pool-12") for i in want_ids]
    assert "\u2028" in out.read_text(encoding="utf-8")  # kept inside its JSON string, the line not split


def test_the_messages_file_holds_each_rows_turns(case, tmp_path):
    run, pool_file = case
    curate(run)
    out = tmp_path / "chat.jsonl"
    export_selection(run, out, "messages")
    got = read_jsonl(out)
    want = [r for i, r in raw_pool(pool_file) if i in naive_working(run, pool_file)]
    assert len(got) == len(want) and all(set(g) == {"messages"} for g in got)
    for g, row in zip(got, want):
        assert [(t["role"], t["content"]) for t in g["messages"]] == expected_turns(row)
        assert all(set(t) == {"role", "content"} for t in g["messages"])
    assert [(t["role"], t["content"]) for t in got[0]["messages"]] == [(m["role"], m["content"]) for m in CHAT]


def test_given_rows_come_out_once_each_in_pool_order(case, tmp_path):
    run, pool_file = case
    given = ["p12", "a1", "pool-12", "p12", "c1", "p0", "77"]
    rec = export_selection(run, tmp_path / "lasso.jsonl", "rows", ids=given)
    order = [i for i, _ in raw_pool(pool_file) if i in set(given)]
    assert order == ["a1", "c1", "p0", "pool-12", "77", "p12"]
    assert_same_rows(read_jsonl(tmp_path / "lasso.jsonl"), expected_rows(run, pool_file, order))
    assert rec["selection"] == "given rows" and rec["edits"] == [] and rec["ids"] == order


def test_the_row_check_would_catch_a_dropped_or_a_swapped_row():
    """assert_same_rows is not vacuous: a file missing a row, or with two rows swapped, fails it."""
    want = [{"id": "a", "score": 1.0}, {"id": "b", "score": 2.0}, {"id": "c", "score": 3.0}]
    for bad in (want[:2], [want[0], want[2], want[1]], [want[0], {**want[1], "score": 2.5}, want[2]]):
        with pytest.raises(AssertionError):
            assert_same_rows(bad, want)
    assert_same_rows(list(want), want)


def test_the_provenance_record(case, tmp_path):
    run, pool_file = case
    curate(run)
    out = tmp_path / "train.jsonl"
    rec = export_selection(run, out, "rows")
    on_disk = json.loads(provenance_path(out).read_text())
    assert on_disk == rec and provenance_path(out).name == "train.jsonl.provenance.json"
    assert rec["run"] == str(run.resolve()) and rec["file"] == str(out.resolve())
    assert (rec["method"], rec["rule"], rec["rank"], rec["score"], rec["format"]) == ("gist", "global", 4, "normaware",
                                                                                       "rows")
    assert rec["edits"] == json.loads(RunLayout(run).curation_edits.read_text())["ops"]
    assert rec["counts"] == {"method": 7, "exported": 8, "of_them_in_method_selection": 5, "added": 3,
                             "left_out_of_method_selection": 2}
    assert rec["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest() and rec["n_rows"] == 8
    assert rec["pool"] == str(pool_file) and rec["gist_lab_version"] and rec["created_at"].endswith("+00:00")
    assert not rec["method_selection_changed_since_edits"] and rec["notes"] == []


def test_without_the_pool_file_added_rows_are_the_fields_the_run_kept(case, tmp_path):
    run, pool_file = case
    curate(run)
    raw = raw_pool(pool_file)
    pool_file.unlink()
    rec = export_selection(run, tmp_path / "train.jsonl", "rows")
    assert rec["rows_from"] == {"selected.jsonl": 5, "pool file": 0, "examples.parquet": 3}
    assert len(rec["notes"]) == 1 and "not a local file" in rec["notes"][0]
    got = {r["id"]: r for r in read_jsonl(tmp_path / "train.jsonl")}
    ex = pd.read_parquet(RunLayout(run).examples).set_index("id")
    score = dict(pd.read_parquet(RunLayout(run).scores, columns=["id", "score"]).itertuples(index=False))
    for i in ("s1", "q1", "pool-12"):
        want = {k: v for k, v in ex.loc[i].items() if k != "line" and v is not None and v == v}
        assert got[i] == {"id": i, **want, "score": float(score[i])}
    assert got["c1"] == {**dict(raw)["c1"], "score": got["c1"]["score"]}  # still selected.jsonl's line
    export_selection(run, tmp_path / "chat.jsonl", "messages")
    s1 = read_jsonl(tmp_path / "chat.jsonl")[rec["ids"].index("s1")]
    assert s1 == {"messages": [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}]}


def test_a_pool_file_that_changed_is_not_trusted(case, tmp_path):
    run, pool_file = case
    curation.edit(run, add=["q1"])
    lines = pool_file.read_text(encoding="utf-8").split("\n")
    lines[0], lines[1] = lines[1], lines[0]
    pool_file.write_text("\n".join(lines), encoding="utf-8")
    rec = export_selection(run, tmp_path / "train.jsonl")
    assert rec["rows_from"]["examples.parquet"] == 1 and "no longer holds the run's rows" in rec["notes"][0]


def test_every_check_comes_before_any_write(case, tmp_path):
    run, pool_file = case
    out = tmp_path / "train.jsonl"
    out.write_text("keep me\n")
    with pytest.raises(CurationError, match="train.jsonl exists; pass --overwrite"):
        export_selection(run, out)
    with pytest.raises(CurationError, match=r"3 row id\(s\) not in this run's pool: 'x', 'y', 'z'"):
        export_selection(run, tmp_path / "other.jsonl", ids=["a1", "x", "y", "z"])
    with pytest.raises(CurationError, match="inside the run folder"):
        export_selection(run, run / "mine.jsonl")
    with pytest.raises(StoreError, match="no such run folder"):
        export_selection(tmp_path / "nope", tmp_path / "other.jsonl")
    with pytest.raises(CurationError, match="unknown export format 'csv'"):
        export_selection(run, tmp_path / "other.jsonl", "csv")
    curation.edit(run, remove=SELECTED)
    with pytest.raises(CurationError, match="nothing to export: the working selection .* is empty"):
        export_selection(run, tmp_path / "other.jsonl")
    assert out.read_text() == "keep me\n" and sorted(p.name for p in tmp_path.iterdir()) == ["case", "train.jsonl"]
    provenance_path(out).write_text("{}")
    rec = export_selection(run, out, overwrite=True, ids=["a1"])
    assert read_jsonl(out)[0]["id"] == "a1" and json.loads(provenance_path(out).read_text()) == rec


def test_a_selected_jsonl_that_disagrees_with_the_scores_is_refused(case, tmp_path):
    run, _ = case
    lay = RunLayout(run)
    lines = lay.selected.read_text(encoding="utf-8").split("\n")
    lines[0], lines[1] = lines[1], lines[0]
    lay.selected.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(StoreError, match=r"selected.jsonl:1: row 'c1' where the run's selection has 'a2'"):
        export_selection(run, tmp_path / "train.jsonl")
    lay.selected.write_text("\n".join(lines[1:]), encoding="utf-8")
    with pytest.raises(StoreError, match="6 rows, but scores.parquet selects 7"):
        export_selection(run, tmp_path / "train.jsonl")


def test_the_dashboards_bytes_are_the_files_the_cli_writes(case, tmp_path):
    """build_export (the dashboard's downloads) and export_selection (the CLI) give the same lines and record: one
    formatter."""
    run, pool_file = case
    curate(run)
    for fmt in ("rows", "messages"):
        out = tmp_path / f"train-{fmt}.jsonl"
        rec = export_selection(run, out, fmt)
        ex = build_export(run, fmt, file="train.jsonl")
        assert ex.data == out.read_bytes() and ex.text.count("\n") == len(naive_working(run, pool_file))
        got = json.loads(ex.provenance_json())
        assert got["file"] == "train.jsonl" and got["sha256"] == hashlib.sha256(ex.data).hexdigest() == rec["sha256"]
        drop = ("file", "created_at")
        assert {k: v for k, v in got.items() if k not in drop} == {k: v for k, v in rec.items() if k not in drop}
        assert provenance_path(out).read_text() == json.dumps(rec, indent=2, sort_keys=True) + "\n"
    lasso = build_export(run, "rows", ids=["p12", "a1", "p12"], file="lasso.jsonl")
    assert_same_rows([json.loads(x) for x in lasso.text.splitlines()], expected_rows(run, pool_file, ["a1", "p12"]))
    with pytest.raises(CurationError, match="not in this run's pool"):
        build_export(run, "rows", ids=["nope"])
