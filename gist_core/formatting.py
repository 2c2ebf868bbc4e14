"""How an Example becomes token ids: prompt template, response-only labels, truncation.

A tokenizer's chat template is used when it has one (instruction-tuned models expect it);
otherwise a plain template. Labels are -100 on prompt tokens so every loss and gradient is
over the response tokens only (plus the end-of-sequence token, which teaches stopping).
"""
from __future__ import annotations

from dataclasses import dataclass

PLAIN_TEMPLATE = "### Instruction:\n{prompt}\n\n### Response:"
# With the plain template the response starts after one space, as in most LM evaluation
# harnesses: byte-level BPE then sees the same word tokens in the answer as in the prompt.
PLAIN_RESPONSE_PREFIX = " "
IGNORE = -100


@dataclass
class Tokenized:
    input_ids: list[list[int]]
    labels: list[list[int]]
    n_truncated: int        # examples whose prompt or response was cut to fit max_length
    n_response_tokens: list[int]


def prompt_text(tokenizer, prompt: str, messages: tuple | None = None) -> str:
    """The text that precedes the response, in the model's own chat format where it has one."""
    if getattr(tokenizer, "chat_template", None):
        turns = [{"role": r, "content": c} for r, c in messages] if messages else [{"role": "user", "content": prompt}]
        return tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    return PLAIN_TEMPLATE.format(prompt=prompt)


def encode_pair(tokenizer, prompt: str, response: str, max_length: int, messages=None) -> tuple[list, list, bool]:
    """Token ids and labels for one example; keeps the response whole when it can (cuts the prompt's start)."""
    p_ids = tokenizer(prompt_text(tokenizer, prompt, messages), add_special_tokens=False)["input_ids"]
    bos = [tokenizer.bos_token_id] if getattr(tokenizer, "add_bos_token", False) and tokenizer.bos_token_id is not None else []
    prefix = "" if getattr(tokenizer, "chat_template", None) else PLAIN_RESPONSE_PREFIX
    r_ids = tokenizer(prefix + response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    truncated = False
    if len(r_ids) > max_length // 2 and len(bos) + len(p_ids) + len(r_ids) > max_length:
        r_ids, truncated = r_ids[: max(1, max_length // 2)], True
    room = max_length - len(bos) - len(r_ids)
    if len(p_ids) > room:
        p_ids, truncated = p_ids[len(p_ids) - room:], True
    ids = bos + p_ids + r_ids
    return ids, [IGNORE] * (len(bos) + len(p_ids)) + r_ids, truncated


def tokenize_examples(examples, tokenizer, max_length: int) -> Tokenized:
    ids, labels, n_resp, n_trunc = [], [], [], 0
    for ex in examples:
        i, lab, cut = encode_pair(tokenizer, ex.prompt, ex.response, max_length, getattr(ex, "messages", None))
        ids.append(i)
        labels.append(lab)
        n_resp.append(sum(x != IGNORE for x in lab))
        n_trunc += cut
    return Tokenized(ids, labels, n_trunc, n_resp)
