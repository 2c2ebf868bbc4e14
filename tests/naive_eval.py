"""A plain evaluation loop that shares none of gist_core/model/evaluate.py's code, for the tests that check the
pipeline's downstream numbers (tests/model/test_evaluate.py, tests/runner/test_compare.py).

The loop follows the documented conventions, written out here again: the plain prompt template
(formatting.py; the bundled tokenizer has no chat template and adds no BOS), the response after one
space, then EOS; test loss = mean cross-entropy over the response tokens with the final EOS left
out, per example, then per subtask, then over subtasks. Exact match = greedy `model.generate` on one
prompt at a time (no padding at all), stripped text equal to the reference.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

TEMPLATE = "### Instruction:\n{prompt}\n\n### Response:"  # formatting.PLAIN_TEMPLATE, as documented
TOL = 1e-5  # float32 batched (right-padded) forward vs one unpadded float32 forward, log-softmax in float64


def naive_ids(tok, ex) -> tuple[list[int], int]:
    """(ids, index of the first response token) for one example, built by hand."""
    assert not getattr(tok, "chat_template", None) and not getattr(tok, "add_bos_token", False), \
        "the plain loop writes out the plain template only"
    p = tok(TEMPLATE.format(prompt=ex.prompt), add_special_tokens=False)["input_ids"]
    r = tok(" " + ex.response, add_special_tokens=False)["input_ids"]
    ids = p + r + [tok.eos_token_id]
    assert len(ids) <= 256, "no truncation in the plain loop"
    return ids, len(p)


@torch.no_grad()
def naive_token_nll(model, tok, ex, include_eos: bool = False) -> list[float]:
    """Negative log-likelihood of each response token (and of the final EOS when `include_eos`)."""
    ids, start = naive_ids(tok, ex)
    logits = model(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long)).logits[0]
    logp = torch.log_softmax(logits.double(), dim=-1)
    end = len(ids) if include_eos else len(ids) - 1
    return [-float(logp[t - 1, ids[t]]) for t in range(start, end)]


def naive_test_loss(model, tok, examples, include_eos: bool = False, pooling: str = "subtask") -> tuple[float, dict]:
    """(test loss, {subtask: loss}). pooling: 'subtask' (the documented one), or the mutations 'examples'
    (mean over all examples) and 'tokens' (mean over all response tokens)."""
    model.eval()
    nll = [(ex.subtask or "all", naive_token_nll(model, tok, ex, include_eos)) for ex in examples]
    if pooling == "tokens":
        return float(np.mean([x for _, xs in nll for x in xs])), {}
    if pooling == "examples":
        return float(np.mean([np.mean(xs) for _, xs in nll])), {}
    by_sub: dict = defaultdict(list)
    for sub, xs in nll:
        by_sub[sub].append(float(np.mean(xs)))
    per = {s: float(np.mean(v)) for s, v in by_sub.items()}
    return float(np.mean(list(per.values()))), per


@torch.no_grad()
def naive_greedy(model, tok, ex, max_new_tokens: int = 16) -> str:
    """Greedy answer to one prompt, unbatched, unpadded."""
    model.eval()
    p = tok(TEMPLATE.format(prompt=ex.prompt), add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p])
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                         do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    return tok.decode(out[0, len(p):], skip_special_tokens=True).strip()
