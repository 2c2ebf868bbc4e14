"""How an Example becomes token ids: prompt template, response-only labels, truncation.

A tokenizer's chat template is used when it has one (instruction-tuned models expect it);
otherwise a plain template. Labels are -100 on prompt tokens so every loss and gradient is
over the response tokens only (plus the end-of-sequence token, which teaches stopping).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

PLAIN_TEMPLATE = "### Instruction:\n{prompt}\n\n### Response:"
# With the plain template the response starts after one space, as in most LM evaluation
# harnesses: byte-level BPE then sees the same word tokens in the answer as in the prompt.
PLAIN_RESPONSE_PREFIX = " "
IGNORE = -100


class TokenRows(Sequence):
    """Token-id rows of different lengths in one flat int32 array (plus offsets): a list of lists
    costs ~36 bytes per token in Python objects, this costs 4. Rows come back as lists."""

    def __init__(self, flat: np.ndarray, offsets: np.ndarray):
        self.flat, self.offsets = flat, offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = range(len(self))[i]
        return self.flat[self.offsets[i]:self.offsets[i + 1]].tolist()

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


class LabelRows(Sequence):
    """Labels derived on demand: IGNORE on the first `starts[i]` tokens (prompt), the ids after."""

    def __init__(self, ids: TokenRows, starts: np.ndarray):
        self.ids, self.starts = ids, starts

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        row, s = self.ids[i], int(self.starts[range(len(self))[i]])
        return [IGNORE] * s + row[s:]


@dataclass
class Tokenized:
    input_ids: Sequence[list[int]]
    labels: Sequence[list[int]]
    n_truncated: int        # examples whose prompt or response was cut to fit max_length
    n_response_tokens: Sequence[int]


def prompt_text(tokenizer, prompt: str, messages: tuple | None = None) -> str:
    """The text that precedes the response, in the model's own chat format where it has one."""
    if getattr(tokenizer, "chat_template", None):
        turns = [{"role": r, "content": c} for r, c in messages] if messages else [{"role": "user", "content": prompt}]
        return tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    return PLAIN_TEMPLATE.format(prompt=prompt)


def encode_pair(tokenizer, prompt: str, response: str, max_length: int, messages=None,
                eos: bool = True) -> tuple[list, list, bool]:
    """Token ids and labels for one example; keeps the response whole when it can (cuts the prompt's start).
    `eos=False` ends the example at the answer (the GIST/LESS reference code's validation examples)."""
    p_ids = tokenizer(prompt_text(tokenizer, prompt, messages), add_special_tokens=False)["input_ids"]
    r_ids = tokenizer(_response_text(tokenizer, response), add_special_tokens=False)["input_ids"]
    ids, start, truncated = _assemble(tokenizer, p_ids, r_ids, max_length, eos)
    return ids, [IGNORE] * start + ids[start:], truncated


def _response_text(tokenizer, response: str) -> str:
    return ("" if getattr(tokenizer, "chat_template", None) else PLAIN_RESPONSE_PREFIX) + response


def _assemble(tokenizer, p_ids: list[int], r_ids: list[int], max_length: int,
              eos: bool = True) -> tuple[list[int], int, bool]:
    """(ids, index of the first response token, truncated?) from prompt and response token ids."""
    bos = [tokenizer.bos_token_id] if getattr(tokenizer, "add_bos_token", False) and tokenizer.bos_token_id is not None else []
    r_ids = r_ids + [tokenizer.eos_token_id] if eos else list(r_ids)
    truncated = False
    if len(r_ids) > max_length // 2 and len(bos) + len(p_ids) + len(r_ids) > max_length:
        r_ids, truncated = r_ids[: max(1, max_length // 2)], True
    room = max_length - len(bos) - len(r_ids)
    if len(p_ids) > room:
        p_ids, truncated = p_ids[len(p_ids) - room:], True
    return bos + p_ids + r_ids, len(bos) + len(p_ids), truncated


def tokenize_examples(examples, tokenizer, max_length: int, chunk: int = 2048, eos: bool = True) -> Tokenized:
    """Every example's ids, in compact rows; the tokenizer is called on chunks of texts (fast tokenizers
    encode a batch in parallel), the same ids as encode_pair one at a time (with the same `eos`)."""
    flat, offsets, starts, n_resp, n_trunc = [], [0], [], [], 0
    buf: list = []

    def encode(rows):
        nonlocal n_trunc
        p_all = tokenizer([prompt_text(tokenizer, ex.prompt, getattr(ex, "messages", None)) for ex in rows],
                          add_special_tokens=False)["input_ids"]
        r_all = tokenizer([_response_text(tokenizer, ex.response) for ex in rows], add_special_tokens=False)["input_ids"]
        chunk_ids: list[int] = []
        for p_ids, r_ids in zip(p_all, r_all):
            ids, start, cut = _assemble(tokenizer, p_ids, r_ids, max_length, eos)
            chunk_ids.extend(ids)
            offsets.append(offsets[-1] + len(ids))
            starts.append(start)
            n_resp.append(len(ids) - start)
            n_trunc += cut
        flat.append(np.asarray(chunk_ids, dtype=np.int32))

    for ex in examples:
        buf.append(ex)
        if len(buf) >= chunk:
            encode(buf)
            buf.clear()
    if buf:
        encode(buf)
    ids = TokenRows(np.concatenate(flat) if flat else np.zeros(0, np.int32), np.asarray(offsets, dtype=np.int64))
    return Tokenized(ids, LabelRows(ids, np.asarray(starts, dtype=np.int32)), n_trunc,
                     np.asarray(n_resp, dtype=np.int32))
