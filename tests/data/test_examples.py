"""Tests for gist_core.data.examples: formats, row schemas, optional fields, every DataError, export."""
from __future__ import annotations

import gzip
import json
import os

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # before `datasets` is imported anywhere
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pandas as pd
import pytest

from gist_core.data.examples import Example, examples_to_frame, load_examples, subtask_groups, write_selected_jsonl
from gist_core.errors import DataError

ALPACA = {"instruction": "Add 2 and 3.", "output": "5"}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def error_of(spec, **kw) -> str:
    with pytest.raises(DataError) as info:
        load_examples(spec, **kw)
    msg = str(info.value)
    assert "\n" not in msg, "DataError messages must be one line"
    return msg


# ----------------------------------------------------------------------------- formats

def test_jsonl_basic_and_default_ids(tmp_path):
    p = write_jsonl(tmp_path / "pool.jsonl", [ALPACA, {"prompt": "Hi", "response": "Hello"}])
    exs = load_examples(p)
    assert [e.id for e in exs] == ["pool-1", "pool-2"]
    assert [e.line for e in exs] == [1, 2]
    assert exs[0] == Example(id="pool-1", prompt="Add 2 and 3.", response="5", source="pool", line=1)
    assert exs[0].raw == ALPACA


def test_jsonl_blank_lines_skipped_and_line_numbers_kept(tmp_path):
    p = tmp_path / "pool.jsonl"
    p.write_text("\n" + json.dumps(ALPACA) + "\n   \n\r\n" + json.dumps(ALPACA) + "\n\n", encoding="utf-8")
    assert [e.line for e in load_examples(p)] == [2, 5]


def test_jsonl_gz_and_bom(tmp_path):
    p = tmp_path / "pool.jsonl.gz"
    p.write_bytes(gzip.compress(b"\xef\xbb\xbf" + json.dumps(ALPACA).encode()))
    [ex] = load_examples(p)
    assert ex.source == "pool" and ex.response == "5"


def test_json_list_and_data_key(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps([ALPACA, ALPACA]), encoding="utf-8")
    (tmp_path / "b.json").write_text(json.dumps({"meta": {"v": 1}, "data": [ALPACA]}), encoding="utf-8")
    (tmp_path / "c.json").write_text(json.dumps({"tags": ["x"], "examples": [ALPACA]}), encoding="utf-8")
    assert [e.id for e in load_examples(tmp_path / "a.json")] == ["a-1", "a-2"]
    assert [e.prompt for e in load_examples(tmp_path / "b.json")] == ["Add 2 and 3."]
    assert len(load_examples(tmp_path / "c.json")) == 1  # several lists: the well-known key wins


def test_csv_strings_and_empty_optional_cells(tmp_path):
    p = tmp_path / "pool.csv"
    p.write_text("id,instruction,input,output,subtask\n007,Sum,1 2,3,\n8,Echo,,x,s1\n", encoding="utf-8")
    a, b = load_examples(p)
    assert (a.id, a.prompt, a.subtask, a.line) == ("007", "Sum\n\n1 2", None, 1)
    assert (b.id, b.prompt, b.subtask, b.line) == ("8", "Echo", "s1", 2)


def test_parquet_with_chat_column(tmp_path):
    p = tmp_path / "pool.parquet"
    pd.DataFrame({
        "id": [1, 2],
        "messages": [[{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"}],
                     [{"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}]],
        "skill": ["math", None],
    }).to_parquet(p)
    a, b = load_examples(p)
    assert (a.id, a.prompt, a.response, a.skill, a.line) == ("1", "q1", "a1", "math", 1)
    assert (b.id, b.skill, b.messages) == ("2", None, (("user", "q2"),))


def test_save_to_disk_dataset_and_dict(tmp_path):
    import datasets
    rows = [ALPACA, {"instruction": "B", "output": "b"}]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    exs = load_examples(tmp_path / "ds")
    assert [e.id for e in exs] == ["ds-1", "ds-2"] and exs[1].response == "b"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows),
                          "test": datasets.Dataset.from_list(rows[:1])}).save_to_disk(str(tmp_path / "dd"))
    assert len(load_examples(tmp_path / "dd")) == 2
    assert len(load_examples(tmp_path / "dd", split="test")) == 1
    msg = error_of(tmp_path / "dd", split="validation")
    assert "dd" in msg and "'validation'" in msg and "train" in msg


def test_limit(tmp_path):
    # The broken line after the limit is never parsed.
    p = tmp_path / "pool.jsonl"
    p.write_text(json.dumps(ALPACA) + "\n" + json.dumps(ALPACA) + "\n{broken\n", encoding="utf-8")
    assert len(load_examples(p, limit=2)) == 2
    with pytest.raises(ValueError):
        load_examples(p, limit=0)


# ----------------------------------------------------------------------------- schemas

@pytest.mark.parametrize("row, prompt, response", [
    ({"instruction": "Do", "output": "done"}, "Do", "done"),
    ({"instruction": "Do", "input": "", "output": "done"}, "Do", "done"),
    ({"instruction": "Do", "input": "this", "output": "done"}, "Do\n\nthis", "done"),
    ({"prompt": "P", "response": "R"}, "P", "R"),
    ({"prompt": "P", "completion": "C"}, "P", "C"),
    ({"question": "Q", "answer": "A"}, "Q", "A"),
])
def test_flat_schemas(tmp_path, row, prompt, response):
    [ex] = load_examples(write_jsonl(tmp_path / "f.jsonl", [row]))
    assert (ex.prompt, ex.response, ex.messages) == (prompt, response, None)


def test_chat_messages(tmp_path):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4"}]
    [ex] = load_examples(write_jsonl(tmp_path / "chat.jsonl", [{"messages": msgs}]))
    assert (ex.prompt, ex.response) == ("2+2?", "4")
    assert ex.messages == (("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello"), ("user", "2+2?"))


def test_sharegpt_conversations(tmp_path):
    conv = [{"from": "human", "value": "Name a color"}, {"from": "gpt", "value": "Blue"}]
    [ex] = load_examples(write_jsonl(tmp_path / "sg.jsonl", [{"conversations": conv}]))
    assert (ex.prompt, ex.response, ex.messages) == ("Name a color", "Blue", (("user", "Name a color"),))


def test_optional_fields(tmp_path):
    rows = [{**ALPACA, "id": 17, "subtask": "add", "skill": "math", "kind": "correct", "source": "gsm"},
            {**ALPACA, "id": "x", "task": "arith", "kind": "distractor", "dataset": "mix"},
            {**ALPACA, "kind": "wrong"}]
    a, b, c = load_examples(write_jsonl(tmp_path / "t.jsonl", rows))
    assert (a.id, a.subtask, a.skill, a.kind, a.source) == ("17", "add", "math", "correct", "gsm")
    assert (b.id, b.subtask, b.skill, b.kind, b.source) == ("x", None, "arith", "distractor", "mix")
    assert (c.id, c.subtask, c.skill, c.kind, c.source) == ("t-3", None, None, "wrong", "t")


# ----------------------------------------------------------------------------- errors

def test_invalid_json_line(tmp_path):
    p = tmp_path / "pool.jsonl"
    p.write_text(json.dumps(ALPACA) + "\n" + json.dumps(ALPACA) + '\n{"a": 1 "b": 2}\n', encoding="utf-8")
    msg = error_of(p)
    assert msg.startswith(f"{p}:3: invalid JSON (") and "delimiter" in msg and "column" in msg


def test_invalid_json_file(tmp_path):
    p = tmp_path / "pool.json"
    p.write_text('[{"instruction": "x",}]', encoding="utf-8")
    assert error_of(p).startswith(f"{p}: invalid JSON (")


@pytest.mark.parametrize("content, got", [("[1, 2]", "array"), ('"text"', "string"), ("7", "number")])
def test_row_not_object(tmp_path, content, got):
    p = tmp_path / "pool.jsonl"
    p.write_text(json.dumps(ALPACA) + "\n" + content + "\n", encoding="utf-8")
    assert error_of(p) == f"{p}:2: row is not a JSON object (got {got})"


def test_json_row_not_object_says_row(tmp_path):
    p = tmp_path / "pool.json"
    p.write_text(json.dumps([ALPACA, ALPACA, "oops"]), encoding="utf-8")
    assert error_of(p) == f"{p} row 3: row is not a JSON object (got string)"


def test_json_object_without_list(tmp_path):
    p = tmp_path / "pool.json"
    p.write_text(json.dumps({"a": [ALPACA], "b": [ALPACA]}), encoding="utf-8")
    msg = error_of(p)
    assert msg.startswith(f"{p}: expected a list of rows") and "'a', 'b'" in msg
    p.write_text(json.dumps(5), encoding="utf-8")
    assert error_of(p) == f"{p}: expected a list of rows, got a JSON number"


def test_no_schema(tmp_path):
    p = write_jsonl(tmp_path / "f.jsonl", [ALPACA, ALPACA, ALPACA, {"text": "hello", "output": "x"}])
    assert error_of(p) == (f"{p}:4: no instruction fields: expected 'instruction'+'output', "
                           "'prompt'+'response' or 'messages'")


@pytest.mark.parametrize("row, message", [
    ({"instruction": "Do"}, "field 'output' is missing"),
    ({"instruction": "Do", "output": None}, "field 'output' is missing"),
    ({"instruction": "Do", "output": ""}, "field 'output' is empty"),
    ({"instruction": "Do", "output": " \n\t"}, "field 'output' is empty"),
    ({"instruction": "Do", "output": 5}, "field 'output' is not a string (got number)"),
    ({"instruction": ["Do"], "output": "x"}, "field 'instruction' is not a string (got array)"),
    ({"instruction": "", "output": "x"}, "field 'instruction' is empty"),
    ({"instruction": "Do", "input": 3.5, "output": "x"}, "field 'input' is not a string (got number)"),
    ({"prompt": "P"}, "field 'response' is missing"),
    ({"prompt": "P", "completion": ""}, "field 'completion' is empty"),
    ({"question": "Q", "answer": {"a": 1}}, "field 'answer' is not a string (got object)"),
    ({**ALPACA, "id": [1]}, "field 'id' is not a string (got array)"),
    ({**ALPACA, "subtask": True}, "field 'subtask' is not a string (got boolean)"),
    ({**ALPACA, "kind": "right"}, "field 'kind' must be one of 'correct', 'wrong', 'distractor' (got 'right')"),
])
def test_field_errors(tmp_path, row, message):
    p = write_jsonl(tmp_path / "f.jsonl", [ALPACA] * 6 + [row])
    assert error_of(p) == f"{p}:7: {message}"


@pytest.mark.parametrize("msgs, message", [
    ([{"role": "user", "content": "q"}], "field 'messages': last message is from 'user', expected 'assistant'"),
    ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}, {"role": "user", "content": "q2"}],
     "field 'messages': last message is from 'user', expected 'assistant'"),
    ([{"role": "user", "content": "q"}, {"role": "bot", "content": "a"}],
     "field 'messages': message 2 has unknown role 'bot'"),
    ([{"content": "q"}, {"role": "assistant", "content": "a"}], "field 'messages': message 1 has no 'role'"),
    ([{"role": "user"}, {"role": "assistant", "content": "a"}], "field 'messages': message 1 has no 'content'"),
    ([{"role": "user", "content": ["q"]}, {"role": "assistant", "content": "a"}],
     "field 'messages': message 1: 'content' is not a string (got array)"),
    (["hi", {"role": "assistant", "content": "a"}], "field 'messages': message 1 is not an object (got string)"),
    ([{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}],
     "field 'messages': no user message before the final assistant message"),
    ([{"role": "user", "content": "q"}, {"role": "assistant", "content": " "}],
     "field 'messages': final assistant message is empty"),
    ([{"role": "user", "content": ""}, {"role": "assistant", "content": "a"}],
     "field 'messages': last user message is empty"),
    ([], "field 'messages' must be a non-empty list of messages (got array)"),
    ("hello", "field 'messages' must be a non-empty list of messages (got string)"),
])
def test_chat_errors(tmp_path, msgs, message):
    p = write_jsonl(tmp_path / "c.jsonl", [ALPACA, {"messages": msgs}])
    assert error_of(p).startswith(f"{p}:2: {message}")


def test_sharegpt_bad_role_names_field(tmp_path):
    conv = [{"from": "human", "value": "q"}, {"from": "robot", "value": "a"}]
    p = write_jsonl(tmp_path / "sg.jsonl", [{"conversations": conv}])
    assert error_of(p).startswith(f"{p}:1: field 'conversations': message 2 has unknown role 'robot'")


def test_duplicate_ids(tmp_path):
    rows = [{**ALPACA, "id": "a"}, {**ALPACA, "id": "abc"}] + [{**ALPACA, "id": f"u{i}"} for i in range(6)]
    p = write_jsonl(tmp_path / "f.jsonl", rows + [{**ALPACA, "id": "abc"}])
    assert error_of(p) == f"{p}:9: duplicate id 'abc' (first seen at line 2)"
    q = tmp_path / "f.json"
    q.write_text(json.dumps([{**ALPACA, "id": 3}, {**ALPACA, "id": "3"}]), encoding="utf-8")
    assert error_of(q) == f"{q} row 2: duplicate id '3' (first seen at row 1)"


@pytest.mark.parametrize("name, content", [
    ("e.jsonl", ""), ("e.jsonl", "\n  \n\n"), ("e.json", ""), ("e.json", "[]"),
    ("e.json", '{"data": []}'), ("e.csv", ""), ("e.csv", "instruction,output\n"),
])
def test_no_examples(tmp_path, name, content):
    p = tmp_path / name
    p.write_text(content, encoding="utf-8")
    assert error_of(p) == f"{p}: no examples"


@pytest.mark.parametrize("name", ["bad.jsonl", "bad.csv", "bad.json"])
def test_invalid_utf8_reports_byte_offset(tmp_path, name):
    p = tmp_path / name
    good = b'[{"instruction": "x", "output": "y"}]\n' if name.endswith(".json") else b"instruction,output\n"
    p.write_bytes(b"\xef\xbb\xbf" + good + b"caf\xe9\n")
    assert error_of(p) == f"{p}: not valid UTF-8 text (byte offset {3 + len(good) + 3})"


def test_unsupported_extension(tmp_path):
    p = tmp_path / "f.txt"
    p.write_text("hello", encoding="utf-8")
    assert error_of(p) == (f"{p}: unsupported format '.txt' "
                           "(use .jsonl, .json, .csv, .parquet or a datasets name/path)")


@pytest.mark.parametrize("spec", ["missing.jsonl", "data/pool.parquet", "./pool", "/no/such/folder/x"])
def test_file_not_found(spec):
    assert error_of(spec) == f"{spec}: file not found"


def test_csv_empty_required_cell(tmp_path):
    p = tmp_path / "pool.csv"
    p.write_text("instruction,output\nA,a\nB,\n", encoding="utf-8")
    assert error_of(p) == f"{p} row 2: field 'output' is empty"


def test_parquet_row_error_says_row(tmp_path):
    p = tmp_path / "pool.parquet"
    pd.DataFrame({"prompt": ["p1", "p2"], "response": ["r1", None]}).to_parquet(p)
    assert error_of(p) == f"{p} row 2: field 'response' is missing"


def test_damaged_parquet(tmp_path):
    p = tmp_path / "pool.parquet"
    p.write_bytes(b"not parquet at all")
    assert error_of(p).startswith(f"{p}: cannot read Parquet (")


# ----------------------------------------------------------------------------- views and export

def test_examples_to_frame(tmp_path):
    exs = load_examples(write_jsonl(tmp_path / "f.jsonl", [{**ALPACA, "subtask": "s"}, ALPACA]))
    df = examples_to_frame(exs)
    assert list(df.columns) == ["id", "prompt", "response", "source", "skill", "subtask", "kind", "line"]
    assert df["id"].tolist() == ["f-1", "f-2"] and df["line"].tolist() == [1, 2]
    assert df["subtask"].iloc[0] == "s" and pd.isna(df["subtask"].iloc[1])
    assert list(examples_to_frame([]).columns) == list(df.columns)


def test_write_selected_jsonl_round_trip(tmp_path):
    rows = [{"zeta": 1, "instruction": "A", "output": "a", "extra": {"k": [1, 2]}},
            {"id": 5, "prompt": "P", "response": "R", "note": "café"}]
    exs = load_examples(write_jsonl(tmp_path / "in.jsonl", rows))
    out = tmp_path / "sel" / "out.jsonl"
    write_selected_jsonl(exs, [0.5, 2], out)
    back = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert back == [{**rows[0], "score": 0.5}, {**rows[1], "score": 2.0}]
    assert list(back[0]) == ["zeta", "instruction", "output", "extra", "score"]  # order kept
    assert sorted(os.listdir(out.parent)) == ["out.jsonl"]  # no temp file left behind
    # The written file is itself a valid pool with the same examples.
    again = load_examples(out)
    assert [(e.prompt, e.response) for e in again] == [(e.prompt, e.response) for e in exs]
    write_selected_jsonl(exs[:1], [1.0], out, score_field="gist")
    assert json.loads(out.read_text())["gist"] == 1.0


def test_write_selected_jsonl_from_parquet_is_plain_json(tmp_path):
    p = tmp_path / "pool.parquet"
    pd.DataFrame({"id": [1, 2], "prompt": ["p1", "p2"], "response": ["r1", "r2"],
                  "weight": [0.5, float("nan")], "tags": [["a"], ["b", "c"]]}).to_parquet(p)
    out = tmp_path / "out.jsonl"
    write_selected_jsonl(load_examples(p), [1, 2], out)
    back = [json.loads(line) for line in out.read_text().splitlines()]
    assert back[0] == {"id": 1, "prompt": "p1", "response": "r1", "weight": 0.5, "tags": ["a"], "score": 1.0}
    assert back[1]["weight"] is None and back[1]["tags"] == ["b", "c"]


def test_write_selected_jsonl_rejects_bad_scores(tmp_path):
    exs = load_examples(write_jsonl(tmp_path / "f.jsonl", [ALPACA]))
    out = tmp_path / "out.jsonl"
    with pytest.raises(ValueError, match="1 examples but 2 scores"):
        write_selected_jsonl(exs, [1.0, 2.0], out)
    with pytest.raises(ValueError, match="not finite"):
        write_selected_jsonl(exs, [float("nan")], out)
    assert not out.exists()


def test_subtask_groups():
    exs = [Example(id=i, prompt="p", response="r", subtask=s)
           for i, s in [("a", "x"), ("b", None), ("c", "y"), ("d", "x"), ("e", None)]]
    assert subtask_groups(exs) == {"x": [0, 3], "b": [1], "y": [2], "e": [4]}
    assert list(subtask_groups(exs)) == ["x", "b", "y", "e"]
    assert subtask_groups([]) == {}
