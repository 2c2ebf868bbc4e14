"""Pool rows as chat turns: every schema the pool reads, multi-turn rows kept as their turns."""
from __future__ import annotations

import json

import pytest

from gist_core.data.chat import example_turns, messages_record, row_turns
from gist_core.data.examples import load_examples
from gist_core.errors import DataError

ROWS = [
    {"id": "p", "prompt": "Add 2 and 3.", "response": "5", "meta": {"k": 1}},
    {"id": "a", "instruction": "Translate to French", "input": "cat", "output": "chat"},
    {"id": "c", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                             {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "A colour?"},
                             {"role": "assistant", "content": "Blue"}]},
    {"id": "s", "conversations": [{"from": "human", "value": "2+2?"}, {"from": "gpt", "value": "4"}]},
    {"id": "q", "question": "Capital of France?", "answer": "Paris"},
]
EXPECTED = [
    [("user", "Add 2 and 3."), ("assistant", "5")],
    [("user", "Translate to French\n\ncat"), ("assistant", "chat")],
    [("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello!"), ("user", "A colour?"), ("assistant", "Blue")],
    [("user", "2+2?"), ("assistant", "4")],
    [("user", "Capital of France?"), ("assistant", "Paris")],
]


def pairs(turns):
    return [(t["role"], t["content"]) for t in turns]


def test_every_schema_gives_its_turns(tmp_path):
    path = tmp_path / "pool.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    for ex, want in zip(load_examples(path), EXPECTED):
        assert pairs(example_turns(ex)) == want
    for row, want in zip(ROWS, EXPECTED):  # a stored row (a line of selected.jsonl carries a score too)
        assert pairs(row_turns({**row, "score": 0.5})) == want
    assert messages_record([{"role": "user", "content": "x"}]) == {"messages": [{"role": "user", "content": "x"}]}


def test_a_row_that_is_not_a_pool_row_is_named():
    with pytest.raises(DataError, match="pool row 'x': field 'response' is missing"):
        row_turns({"prompt": "hi"}, "pool row 'x'")
