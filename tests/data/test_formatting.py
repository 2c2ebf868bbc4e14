"""Prompt templates, response-only labels and truncation."""
from __future__ import annotations

from gist_core.data.examples import Example
from gist_core.data.formatting import IGNORE, PLAIN_TEMPLATE, encode_pair, prompt_text, tokenize_examples


def _tok(tokenizer_dir):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(tokenizer_dir)


def test_plain_template_and_response_only_labels(tokenizer_dir):
    tok = _tok(tokenizer_dir)
    assert prompt_text(tok, "say hi") == PLAIN_TEMPLATE.format(prompt="say hi")
    ids, labels, cut = encode_pair(tok, "copy the list: sun moon", "sun moon", 128)
    n_prompt = len(tok(prompt_text(tok, "copy the list: sun moon"), add_special_tokens=False)["input_ids"])
    assert not cut and len(ids) == len(labels)
    assert labels[:n_prompt] == [IGNORE] * n_prompt
    assert labels[n_prompt:] == ids[n_prompt:] and ids[-1] == tok.eos_token_id


def test_truncation_cuts_the_prompt_first_and_is_counted(tokenizer_dir):
    tok = _tok(tokenizer_dir)
    long_prompt = " ".join(["word"] * 200)
    exs = [Example(id="a", prompt=long_prompt, response="sun"), Example(id="b", prompt="hi", response="moon")]
    t = tokenize_examples(exs, tok, max_length=32)
    assert t.n_truncated == 1 and len(t.input_ids[0]) == 32
    assert t.input_ids[0][-1] == tok.eos_token_id and t.n_response_tokens[0] >= 2


def test_chat_template_used_when_the_tokenizer_has_one(tokenizer_dir):
    tok = _tok(tokenizer_dir)
    tok.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}" \
                        "{% if add_generation_prompt %}<assistant>{% endif %}"
    assert prompt_text(tok, "hello") == "<user>hello<assistant>"
    assert prompt_text(tok, "x", (("system", "be brief"), ("user", "hi"))) == "<system>be brief<user>hi<assistant>"


def test_batched_compact_tokenization_equals_one_example_at_a_time(tokenizer_dir, micro_corpus):
    """tokenize_examples (chunked tokenizer calls, flat int32 rows) = encode_pair per example, with a
    chat template too, across chunk boundaries."""
    from gist_core.data.examples import load_examples
    tok = _tok(tokenizer_dir)
    exs = load_examples(micro_corpus["pool"])[:50] + [Example(id="long", prompt=" ".join(["w"] * 300), response="x y")]
    for template in (None, "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}<assistant>"):
        tok.chat_template = template
        t = tokenize_examples(exs, tok, max_length=48, chunk=7)
        assert len(t.input_ids) == len(exs) == len(t.labels)
        for i, ex in enumerate(exs):
            ids, labels, _ = encode_pair(tok, ex.prompt, ex.response, 48, ex.messages)
            assert t.input_ids[i] == ids and t.labels[i] == labels
            assert t.n_response_tokens[i] == sum(x != IGNORE for x in labels)
        assert list(t.input_ids.lengths) == [len(x) for x in t.input_ids]
        assert t.input_ids[-1] == t.input_ids[len(exs) - 1] and t.input_ids[1:3] == [t.input_ids[1], t.input_ids[2]]


def test_example_table_round_trips_examples(micro_corpus, tmp_path):
    """The pool's columnar form gives back the same Examples (chat turns and input row included)."""
    import json

    from gist_core.data.examples import ExampleTable, examples_to_frame, load_examples, load_pool, subtask_groups
    exs = load_examples(micro_corpus["pool"])
    chat = Example(id="c", prompt="hi", response="yo", messages=(("system", "s"), ("user", "hi")), line=9,
                   raw={"messages": [{"role": "user", "content": "hi"}], "n": 3})
    table = ExampleTable.from_examples([*exs, chat])
    assert len(table) == len(exs) + 1 and list(table)[:len(exs)] == exs and table[-1] == chat
    assert table[-1].raw == chat.raw and table[5] == exs[5] and table[2:4] == exs[2:4]
    assert table.take([7, 2, len(exs)]) == [exs[7], exs[2], chat]
    pool = load_pool(micro_corpus["pool"])
    assert examples_to_frame(pool).equals(examples_to_frame(exs))
    assert subtask_groups(pool) == subtask_groups(exs)
    assert json.loads(json.dumps(table.column("id"))) == [e.id for e in table]
