"""Several LoRA adapters over one base model, and their logit mixtures: next-token logits Σ_j w_ij · logits_j
per example i (one-hot rows: one adapter per query; the ELREA ensemble: many), for answer-token losses and greedy
decoding. Used by `gist-lab experts`; tests/methods/gradientspace/test_experts.py checks both against naive unbatched loops.
"""
from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import torch
from peft import PeftModel, set_peft_model_state_dict
from peft.utils import load_peft_weights
from torch.func import functional_call

from gist_core.grads.per_example import length_sorted_batches, pad_batch, per_example_loss


class AdapterBank:
    """Every adapter of a seed over one base model: one PeftModel, each adapter's LoRA tensors kept aside and passed
    to the forward with torch.func.functional_call. (peft's own set_adapter walks every module and every loaded
    adapter: 90 ms a switch with 49 adapters on the tiny model, more than the forward itself.)"""

    def __init__(self, base_model, paths: dict[str, Path]):
        # transformers 5 renamed the KV-cache argument and output field (past_key_values → cache)
        self.cache_arg = "cache" if "cache" in inspect.signature(base_model.forward).parameters else "past_key_values"
        first = next(iter(paths.values()))
        self.model = PeftModel.from_pretrained(base_model, str(first)).eval()
        lora = [n for n, _ in self.model.named_parameters() if "lora_" in n]
        self.params = {}
        for name, path in paths.items():
            set_peft_model_state_dict(self.model, load_peft_weights(str(path), device="cpu"))
            state = dict(self.model.named_parameters())
            self.params[name] = {n: state[n].detach().clone() for n in lora}

    def __call__(self, name: str | None, **kw):
        """The model's output with adapter `name` (None: no adapter, the base model)."""
        if name is None:
            with self.model.disable_adapter():
                return self.model(**kw)
        return functional_call(self.model, self.params[name], args=(), kwargs=kw)


def rule_losses(bank: AdapterBank, order, rules, ids, labels, pad_id, batch_size) -> dict[str, np.ndarray]:
    """Per rule, per example the answer-token loss of Σ_j w_ij · logits_j (one forward per adapter per batch)."""
    device = next(bank.model.parameters()).device
    out = {r: np.zeros(len(ids)) for r in rules}
    with torch.no_grad():
        for batch in length_sorted_batches([len(x) for x in ids], range(len(ids)), batch_size):
            x, lab, att = pad_batch([ids[i] for i in batch], [labels[i] for i in batch], pad_id, device)
            acc = {r: None for r in rules}
            for j, name in enumerate(order):
                used = [r for r, M in rules.items() if M[batch, j].any()]
                if not used:
                    continue
                logits = bank(name, input_ids=x, attention_mask=att).logits.float()
                for r in used:
                    w = torch.as_tensor(rules[r][batch, j], dtype=logits.dtype, device=device)[:, None, None]
                    acc[r] = w * logits if acc[r] is None else acc[r] + w * logits
            for r in rules:
                out[r][batch] = per_example_loss(acc[r], lab).cpu().numpy()
    return out


def decode(bank: AdapterBank, order, weights, prompts, tok, max_new_tokens, batch_size) -> list[str]:
    """Greedy answers under combined next-token logits Σ_j w_ij · logits_j: left padding, positions from the mask
    as `generate` sets them, one KV cache per adapter in use."""
    device = next(bank.model.parameters()).device
    n = len(prompts)
    # rows with the same adapters in use go together (a routed batch then runs one or a few experts)
    idx = sorted(range(n), key=lambda i: (tuple(np.flatnonzero(weights[i])), len(prompts[i]), i))
    answers: list[str] = [""] * n
    with torch.no_grad():
        for s in range(0, n, batch_size):
            rows = idx[s:s + batch_size]
            T = max(len(prompts[i]) for i in rows)
            x = torch.full((len(rows), T), tok.pad_token_id, dtype=torch.long)
            att = torch.zeros_like(x)
            for b, i in enumerate(rows):
                x[b, T - len(prompts[i]):] = torch.tensor(prompts[i])
                att[b, T - len(prompts[i]):] = 1
            x, att = x.to(device), att.to(device)
            pos = (att.cumsum(-1) - 1).clamp_min(0)
            W = torch.as_tensor(weights[rows], dtype=torch.float32, device=device)
            active = [j for j in range(len(order)) if bool((W[:, j] != 0).any())]
            caches: dict[int, object] = {}
            done = torch.zeros(len(rows), dtype=torch.bool, device=device)
            out = []
            for _ in range(max_new_tokens):
                nxt = None
                for j in active:
                    o = bank(order[j], input_ids=x, attention_mask=att, position_ids=pos, use_cache=True,
                             **{bank.cache_arg: caches.get(j)})
                    caches[j] = getattr(o, bank.cache_arg)
                    last = o.logits[:, -1].float()
                    nxt = W[:, j:j + 1] * last if nxt is None else nxt + W[:, j:j + 1] * last
                tok_ids = torch.where(done, torch.full_like(done, tok.pad_token_id, dtype=torch.long), nxt.argmax(-1))
                out.append(tok_ids)
                done |= tok_ids == tok.eos_token_id
                if bool(done.all()):
                    break
                x = tok_ids[:, None]  # the caches hold the prefix: feed the new token only
                att = torch.cat([att, torch.ones_like(att[:, :1])], 1)  # a finished row's tail is never read
                pos = att.sum(-1, keepdim=True) - 1
            gen = torch.stack(out, 1).cpu().tolist()
            for b, i in enumerate(rows):
                g = gen[b]
                g = g[:g.index(tok.eos_token_id)] if tok.eos_token_id in g else g
                answers[i] = tok.decode(g, skip_special_tokens=True).strip()
    return answers
