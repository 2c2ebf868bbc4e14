"""Prompt templates, response-only labels and truncation."""
from __future__ import annotations

from gist_core.data import Example
from gist_core.formatting import IGNORE, PLAIN_TEMPLATE, encode_pair, prompt_text, tokenize_examples


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
