"""Downstream evaluation: LoRA-train on a selection, then test loss and exact match on the target.

Test loss is the mean cross-entropy over the answer tokens (end-of-sequence excluded, so the
metric measures content, not stopping), averaged per example, then per subtask, then over
subtasks: the per-token negative log-likelihood of the gold answer. Exact match: greedy decoding;
a gold answer that ends in a GSM8K-style final line `#### N` is matched on the final number (the
last number the model writes against N), any other on the stripped text.

    python -m gist_core.model.evaluate --oracle --target lookup   # the bundled default's learnability check
"""
from __future__ import annotations

import argparse
import json
import re
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from gist_core.config import LoraSettings, TrainConfig
from gist_core.data.corpus import SAMPLE_DATA
from gist_core.data.examples import load_examples
from gist_core.data.formatting import IGNORE, encode_pair, prompt_text, tokenize_examples
from gist_core.grads.per_example import (
    accepts_logits_to_keep,
    causal_lm_losses,
    length_sorted_batches,
    logit_token_cap,
    pad_batch,
)
from gist_core.model.load import attach_lora, load_base_model
from gist_core.model.training import train_lora


def answer_only_labels(tokenized_labels: list[list[int]], eos_id: int) -> list[list[int]]:
    out = []
    for lab in tokenized_labels:
        lab = list(lab)
        if lab and lab[-1] == eos_id:
            lab[-1] = IGNORE
        out.append(lab)
    return out


@torch.no_grad()
def test_losses(model, tok, examples, max_length: int = 256, batch_size: int = 32) -> np.ndarray:
    """(N,) float32 per-example mean cross-entropy over each answer's tokens (its final EOS excluded)."""
    model.eval()
    device = next(model.parameters()).device
    enc = [encode_pair(tok, ex.prompt, ex.response, max_length, ex.messages) for ex in examples]
    ids = [e[0] for e in enc]
    labels = answer_only_labels([e[1] for e in enc], tok.eos_token_id)
    trim = accepts_logits_to_keep(model)  # logits only where the answer is (a 49,152-word projection per token)
    # batches of similar length (less padding), few enough tokens that the logits and their log-softmax fit
    cap = logit_token_cap(model.config.vocab_size, copies=2)
    losses = np.zeros(len(ids), dtype=np.float32)
    for rows in length_sorted_batches([len(x) for x in ids], range(len(ids)), batch_size, cap):
        i, lab, att = pad_batch([ids[r] for r in rows], [labels[r] for r in rows], tok.pad_token_id, device)
        losses[rows] = causal_lm_losses(model, i, lab, att, trim).float().cpu().numpy()
    return losses


@torch.no_grad()
def greedy_answers(model, tok, examples, max_new_tokens: int = 16, batch_size: int = 32) -> list[str]:
    model.eval()
    device = next(model.parameters()).device
    answers = []
    for s in range(0, len(examples), batch_size):
        prompts = [tok(prompt_text(tok, ex.prompt, ex.messages), add_special_tokens=False)["input_ids"]
                   for ex in examples[s:s + batch_size]]
        T = max(map(len, prompts))
        ids = torch.full((len(prompts), T), tok.pad_token_id, dtype=torch.long)
        att = torch.zeros_like(ids)
        for i, p in enumerate(prompts):  # left padding: generation continues from the true last token
            ids[i, T - len(p):] = torch.tensor(p)
            att[i, T - len(p):] = 1
        gen = model.generate(input_ids=ids.to(device), attention_mask=att.to(device), max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        answers += [tok.decode(g[T:], skip_special_tokens=True).strip() for g in gen]
    return answers


FINAL_LINE = re.compile(r"####\s*(.+?)\s*$")
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def final_number(text: str) -> str | None:
    """The last number in `text`, without thousands separators or a trailing '.0' ('1,234.50' -> '1234.5')."""
    found = NUMBER.findall(text)
    if not found:
        return None
    n = found[-1].replace(",", "")
    return n.rstrip("0").rstrip(".") if "." in n else n


def answer_matches(pred: str, gold: str) -> bool:
    """A gold answer ending in '#### N' (GSM8K) matches when the prediction's last number is N; any other when
    the stripped texts are equal."""
    line = FINAL_LINE.search(gold.strip())
    if line and final_number(line.group(1)) is not None:
        return final_number(pred) == final_number(line.group(1))
    return pred.strip() == gold.strip()


def evaluate_on_target(model, tok, examples, max_length: int = 256, n_em: int | None = None,
                       max_new_tokens: int = 16) -> dict:
    """Per-subtask and mean test loss and exact match (greedy answers of up to `max_new_tokens` tokens)."""
    losses = test_losses(model, tok, examples, max_length)
    em_set = examples if n_em is None else _first_per_subtask(examples, n_em)
    answers = greedy_answers(model, tok, em_set, max_new_tokens)
    by_sub = defaultdict(lambda: {"loss": [], "em": []})
    for ex, loss in zip(examples, losses):
        by_sub[ex.subtask or "all"]["loss"].append(float(loss))
    for ex, a in zip(em_set, answers):
        by_sub[ex.subtask or "all"]["em"].append(float(answer_matches(a, ex.response)))
    per = {s: {"loss": float(np.mean(v["loss"])), "exact_match": float(np.mean(v["em"])) if v["em"] else None}
           for s, v in by_sub.items()}
    ems = [v["exact_match"] for v in per.values() if v["exact_match"] is not None]
    return {"test_loss": float(np.mean([v["loss"] for v in per.values()])),
            "exact_match": float(np.mean(ems)) if ems else None,
            "per_subtask": per, "examples": [{"prompt": ex.prompt, "gold": ex.response, "pred": a}
                                             for ex, a in list(zip(em_set, answers))[:6]]}


def _first_per_subtask(examples, n: int):
    seen: dict = defaultdict(int)
    out = []
    for ex in examples:
        if seen[ex.subtask] < n:
            out.append(ex)
            seen[ex.subtask] += 1
    return out


def finetune_and_evaluate(model_spec: str, train_examples, test_examples, cfg, lora, max_length: int = 256,
                          n_em: int | None = None, max_new_tokens: int = 16, eval_length: int | None = None) -> dict:
    """Fresh LoRA from the base model on `train_examples` (cut to `max_length` tokens), then evaluate on the
    target test split (cut to `eval_length`, default the same)."""
    peft_model, tok, facts = finetune(model_spec, train_examples, cfg, lora, max_length)
    metrics = evaluate_on_target(peft_model, tok, test_examples, eval_length or max_length, n_em, max_new_tokens)
    return {**metrics, **facts}


def finetune(model_spec: str, train_examples, cfg, lora, max_length: int = 256):
    """(LoRA model, tokenizer, {train_loss, steps, train_s}): a fresh adapter on the base model, trained on
    `train_examples` cut to `max_length` tokens."""
    model, tok = load_base_model(model_spec)
    t0 = time.time()
    peft_model = attach_lora(model, lora, seed=cfg.seed)
    toks = tokenize_examples(train_examples, tok, max_length)
    result = train_lora(peft_model, toks.input_ids, toks.labels, tok.pad_token_id, cfg)
    return peft_model, tok, {"train_loss": result["train_loss"], "steps": result["steps"], "train_s": time.time() - t0}


def oracle_check(target: str, epochs: int, lr: float, seed: int = 0, budget: float = 0.05) -> dict:
    """Base model vs LoRA on a budget's worth of the target's own correct pool examples."""
    pool = load_examples(SAMPLE_DATA / "pool.jsonl")
    subs = {ex.subtask for ex in load_examples(SAMPLE_DATA / "targets" / target / "val.jsonl")}
    test = load_examples(SAMPLE_DATA / "targets" / target / "test.jsonl")
    relevant = [ex for ex in pool if ex.skill in subs and ex.kind == "correct"]
    k = int(round(budget * len(pool)))
    rng = np.random.default_rng(seed)
    oracle = [relevant[i] for i in sorted(rng.choice(len(relevant), size=min(k, len(relevant)), replace=False))]
    model, tok = load_base_model(str(SAMPLE_DATA / "tiny-lm"))
    base = evaluate_on_target(model, tok, test)
    tuned = finetune_and_evaluate(str(SAMPLE_DATA / "tiny-lm"), oracle, test,
                                  TrainConfig(epochs=epochs, lr=lr, seed=seed), LoraSettings())
    return {"target": target, "n_train": len(oracle), "epochs": epochs, "lr": lr, "base": base, "oracle": tuned,
            "loss_ratio": tuned["test_loss"] / base["test_loss"]}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="Downstream checks on the bundled default.")
    p.add_argument("--oracle", action="store_true", help="LoRA on the target's own pool examples vs the base model")
    p.add_argument("--target", default="lookup")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--out", type=Path)
    a = p.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    res = oracle_check(a.target, a.epochs, a.lr)
    text = json.dumps(res, indent=2)
    print(text)
    if a.out:
        a.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
