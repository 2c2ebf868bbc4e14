"""Build the bundled tiny causal LM: a byte-level BPE tokenizer and a small Llama, pretrained on CPU.

The pretraining text (gist_core.data.corpus.pretraining_text) is plain prose that exercises the
pool's operations, dense in copy-from-context lines; it never uses the instruction format, so
the instruction-following itself has to come from LoRA fine-tuning on the selected data.

    python -m gist_core.model.tiny --out sample_data/tiny-lm --minutes 13

takes about 13 minutes on 2 CPU cores and writes a folder that loads with
`AutoModelForCausalLM.from_pretrained` / `AutoTokenizer.from_pretrained`, fully offline.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, pre_tokenizers, trainers
from tokenizers import models as tokenizer_models
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from gist_core.data.corpus import SKILLS, pretraining_text, repetition_line
from gist_core.data.formatting import PLAIN_TEMPLATE

EOS, PAD = "<|endoftext|>", "<|pad|>"


@dataclass(frozen=True)
class TinyModelConfig:
    """Shape and pretraining budget of the bundled tiny model."""
    vocab_size: int = 2048
    hidden_size: int = 192
    intermediate_size: int = 512
    num_layers: int = 4
    num_heads: int = 4
    max_positions: int = 256
    n_lines: int = 400_000        # pretraining lines (~6 M tokens; the time budget usually stops first)
    seq_len: int = 128
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 50
    copy_phase_steps: int = 400   # first steps on pure repetitions, so induction (copy) heads form
    minutes: float = 13.0         # wall-clock budget for pretraining
    seed: int = 0

    def __post_init__(self):
        if self.hidden_size % self.num_heads:
            raise ValueError("hidden_size must be divisible by num_heads")
        if self.minutes <= 0:
            raise ValueError("minutes must be positive")


def build_tokenizer(lines: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    tok = Tokenizer(tokenizer_models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS, PAD],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    # The templates' words go in too so instructions tokenise as words, not bytes.
    extra = [PLAIN_TEMPLATE] + [t for s in SKILLS.values() for t in s.templates]
    tok.train_from_iterator(lines + extra * 50, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS, pad_token=PAD,
                                   unk_token=None, model_max_length=1024)


def token_blocks(lines: list[str], tokenizer, seq_len: int) -> torch.Tensor:
    ids: list[int] = []
    for enc in tokenizer(lines, add_special_tokens=False)["input_ids"]:
        ids.extend(enc + [tokenizer.eos_token_id])
    n = len(ids) // seq_len
    return torch.tensor(ids[: n * seq_len]).view(n, seq_len)


@torch.no_grad()
def copy_accuracy(model, tokenizer, n: int = 64, seed: int = 12345) -> float:
    """Share of tokens of a repeated random sequence predicted right (first token of the copy excluded)."""
    rng = random.Random(seed)
    hits = total = 0
    model.eval()
    for _ in range(n):
        line = repetition_line(rng)
        first = line[: line.index(" |")]
        ids = tokenizer(line, return_tensors="pt", add_special_tokens=False).input_ids
        start = len(tokenizer(first + " |", add_special_tokens=False).input_ids)
        pred = model(input_ids=ids).logits.argmax(-1)[0]
        target, guess = ids[0, start + 1:-1], pred[start:-2]
        hits += int((target == guess).sum())
        total += len(target)
    model.train()
    return hits / max(1, total)


def pretrain(cfg: TinyModelConfig, out: Path, log=print) -> dict:
    torch.manual_seed(cfg.seed)
    lines = pretraining_text(cfg.n_lines, seed=cfg.seed)
    tokenizer = build_tokenizer(lines[:50_000], cfg.vocab_size)
    blocks = token_blocks(lines, tokenizer, cfg.seq_len)
    held_out, blocks = blocks[:64], blocks[64:]
    rng = random.Random(f"copy-{cfg.seed}")
    copy_blocks = token_blocks([repetition_line(rng) for _ in range(cfg.copy_phase_steps * cfg.batch_size * 8)],
                               tokenizer, cfg.seq_len)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_positions, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01, betas=(0.9, 0.98))
    # Cosine schedule over the steps the time budget allows (estimated after the first steps).
    gen = torch.Generator().manual_seed(cfg.seed)
    order = torch.randperm(len(blocks), generator=gen)
    max_steps = cfg.copy_phase_steps + len(blocks) // cfg.batch_size
    est_steps, t0, step, losses, copy_log = max_steps, time.time(), 0, [], []
    model.train()
    while step < max_steps and time.time() - t0 < cfg.minutes * 60:
        if step >= 20 and step % 20 == 0:  # re-estimate how many steps fit in the budget (load varies)
            per_step = (time.time() - t0) / step
            est_steps = min(max_steps, step + int((cfg.minutes * 60 - (time.time() - t0)) / per_step))
        frac = min(1.0, step / max(1, est_steps))
        lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        if step < cfg.copy_phase_steps:
            batch = copy_blocks[step * cfg.batch_size:(step + 1) * cfg.batch_size]
        else:
            j = step - cfg.copy_phase_steps
            batch = blocks[order[j * cfg.batch_size:(j + 1) * cfg.batch_size]]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        step += 1
        if step % 50 == 0:
            msg = f"step {step}/{est_steps} loss {sum(losses[-50:]) / 50:.3f} lr {lr:.2e} {time.time() - t0:.0f}s"
            if step % 200 == 0:
                copy_log.append((step, copy_accuracy(model, tokenizer)))
                msg += f" copy accuracy {copy_log[-1][1]:.2f}"
            log(msg)
    model.eval()
    with torch.no_grad():
        held = model(input_ids=held_out, labels=held_out).loss.item()
    final_copy = copy_accuracy(model, tokenizer)
    out.mkdir(parents=True, exist_ok=True)
    model.half().save_pretrained(out, safe_serialization=True)  # fp16 on disk: half the size, loads as fp32
    tokenizer.save_pretrained(out)
    report = {"config": asdict(cfg), "steps": step, "tokens": step * cfg.batch_size * cfg.seq_len,
              "wall_s": round(time.time() - t0, 1), "final_train_loss": sum(losses[-50:]) / min(50, len(losses)),
              "held_out_loss": held, "n_params": sum(p.numel() for p in model.parameters()),
              "copy_accuracy": final_copy, "copy_accuracy_log": copy_log}
    (out / "pretrain_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Pretrain the bundled tiny causal LM on CPU.")
    p.add_argument("--out", type=Path, default=Path("sample_data/tiny-lm"))
    p.add_argument("--minutes", type=float, default=TinyModelConfig.minutes)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(json.dumps(pretrain(TinyModelConfig(minutes=a.minutes, seed=a.seed), a.out), indent=2))


if __name__ == "__main__":
    main()
