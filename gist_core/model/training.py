"""LoRA training with transformers.Trainer: the warm-up (per-epoch checkpoints) and downstream runs.

A warm-up checkpoint `ckpt-E/` holds the PEFT adapter, the AdamW moments keyed by parameter
name (`optimizer_moments.safetensors`: `<name>.exp_avg`, `<name>.exp_avg_sq`), and
`meta.json` with the epoch, global step and the epoch's mean learning rate (LESS weights
checkpoints by it). Keying moments by name here, once, spares every reader the index mapping.
"""
from __future__ import annotations

import contextlib
import json
import math
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
from torch.utils.checkpoint import checkpoint
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from gist_core.config import TrainConfig
from gist_core.data.formatting import IGNORE
from gist_core.errors import GradientError
from gist_core.grads.per_example import pad_batch
from gist_core.store.artefacts import load_torch_tensors, save_torch_tensors
from gist_core.store.atomic import atomic_folder, atomic_write_text
from gist_core.store.layout import ckpt_meta, ckpt_moments, ckpt_name, ckpt_trainer_state


class TokenRows(torch.utils.data.Dataset):
    def __init__(self, input_ids, labels):
        self.input_ids, self.labels = input_ids, labels

    def __len__(self):
        return len(self.input_ids)

    def __getitem__(self, i):
        return {"input_ids": self.input_ids[i], "labels": self.labels[i]}


def pad_collator(pad_id: int):
    def collate(rows):
        ids, lab, att = pad_batch([r["input_ids"] for r in rows], [r["labels"] for r in rows], pad_id, "cpu")
        return {"input_ids": ids, "labels": lab, "attention_mask": att}
    return collate


def _moments(model, optimizer) -> dict[str, torch.Tensor]:
    state = getattr(optimizer, "optimizer", optimizer).state
    out = {}
    for name, p in model.named_parameters():
        if p.requires_grad and p in state:
            out[f"{name}.exp_avg"] = state[p]["exp_avg"].detach().float().cpu().contiguous()
            out[f"{name}.exp_avg_sq"] = state[p]["exp_avg_sq"].detach().float().cpu().contiguous()
    return out


def save_checkpoint(path: Path, model, optimizer, meta: dict) -> None:
    """Write ckpt folder atomically: build it beside, then rename into place."""
    with atomic_folder(path) as tmp:
        model.save_pretrained(tmp)
        save_torch_tensors(ckpt_moments(tmp), _moments(model, optimizer))
        ckpt_meta(tmp).write_text(json.dumps(meta, indent=2) + "\n")


def checkpoint_exists(path: Path) -> bool:
    return ckpt_meta(path).exists() and ckpt_moments(path).exists()


def load_checkpoint_meta(path: Path) -> dict:
    return json.loads(ckpt_meta(path).read_text())


def load_moments(path: Path) -> dict[str, torch.Tensor]:
    return load_torch_tensors(ckpt_moments(path))


STATE_KEY = "warmup.key"


def last_trainer_state(ckpt_dir: Path, key: str | None = None) -> str | None:
    """The newest complete Trainer checkpoint of an interrupted warm-up (made with `key`, when given)
    whose epoch checkpoint exists too."""
    trainer_dir = ckpt_trainer_state(ckpt_dir)
    if key is not None and (not (trainer_dir / STATE_KEY).exists() or (trainer_dir / STATE_KEY).read_text() != key):
        return None
    last = get_last_checkpoint(str(trainer_dir)) if trainer_dir.is_dir() else None
    if last is None or not (Path(last) / "trainer_state.json").exists():
        return None
    epoch = round(json.loads((Path(last) / "trainer_state.json").read_text()).get("epoch") or 0)
    return last if checkpoint_exists(ckpt_dir / ckpt_name(epoch)) else None


def _callback(ckpt_dir: Path | None, n_epochs: int, on_step: Callable[[int, int, float], None] | None,
              state_key: str | None = None):
    class EpochCheckpoints(TrainerCallback):
        """Logs the LR of every step; after each epoch saves adapter + moments + mean LR."""

        def __init__(self):
            self.lrs: list[float] = []
            self.epoch_start = 0

        def on_step_begin(self, args, state, control, lr_scheduler=None, **kw):
            self.lrs.append(float(lr_scheduler.get_last_lr()[0]))

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs and not math.isfinite(float(logs["loss"])):
                raise GradientError(f"training loss became {logs['loss']} at step {state.global_step} (fp16/bf16 "
                                    "overflow, too high a learning rate, or a broken model; try --dtype float32 or a lower --lr)")
            if on_step and logs and "loss" in logs:
                on_step(state.global_step, state.max_steps, float(logs["loss"]))

        def on_save(self, args, state, control, **kw):
            if state_key is not None:  # which warm-up this Trainer state belongs to (resume only the same one)
                atomic_write_text(Path(args.output_dir) / STATE_KEY, state_key)

        def on_epoch_end(self, args, state, control, model=None, optimizer=None, **kw):
            epoch = int(round(state.epoch or 0))
            lrs = self.lrs[self.epoch_start:]
            self.epoch_start = len(self.lrs)
            if ckpt_dir is not None:
                meta = {"epoch": epoch, "global_step": state.global_step, "mean_lr": sum(lrs) / max(1, len(lrs)),
                        "n_steps": len(lrs), "n_epochs": n_epochs}
                save_checkpoint(ckpt_dir / ckpt_name(epoch), model, optimizer, meta)

    return EpochCheckpoints()


LOSS_CHUNK_TOKENS = 256  # positions whose vocabulary logits exist at once in the warm-up's loss


def _chunk_ce_sum(hidden, target, head, softcap):
    logits = head(hidden).float()
    if softcap is not None:  # as the model's own forward does (Gemma 2)
        logits = torch.tanh(logits / softcap) * softcap
    return torch.nn.functional.cross_entropy(logits, target, reduction="sum")


def chunked_causal_lm_loss(model, input_ids, attention_mask, labels, num_items=None,
                           chunk: int = LOSS_CHUNK_TOKENS) -> torch.Tensor:
    """The causal-LM loss (mean token cross-entropy over the labelled tokens, or their sum / num_items as the
    Trainer asks under gradient accumulation) without a (batch, length, vocabulary) logits tensor: the decoder's
    hidden states at the labelled positions go through the output projection `chunk` positions at a time, each
    chunk recomputed in the backward pass instead of kept (on Gemma 3's 262K words one warm-up batch's logits
    were most of an 11 GB peak)."""
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = lm.get_decoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    target = labels[:, 1:]
    keep = target != IGNORE
    hidden, target = hidden[:, :-1][keep], target[keep]
    head, softcap = lm.get_output_embeddings(), getattr(lm.config, "final_logit_softcapping", None)
    total = hidden.sum().float() * 0.0  # a zero that keeps the graph: a batch without labels still backpropagates
    for s in range(0, len(target), chunk):
        total = total + checkpoint(_chunk_ce_sum, hidden[s:s + chunk], target[s:s + chunk], head, softcap,
                                   use_reentrant=False)
    return total / (num_items if num_items is not None else keep.sum().clamp_min(1))


class ChunkedLossTrainer(Trainer):
    """The Trainer with chunked_causal_lm_loss in place of the model's own full-logit loss (the same value)."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # the loss is divided by num_items_in_batch exactly when the Trainer would hand it to the model's own loss
        items = num_items_in_batch if self.model_accepts_loss_kwargs else None
        loss = chunked_causal_lm_loss(model, inputs["input_ids"], inputs["attention_mask"], inputs["labels"], items)
        return (loss, {}) if return_outputs else loss


# Architectures whose decoder output, fed to the output projection, is exactly what their forward projects (checked:
# the chunked loss equals the model's own on the micro Llama in the tests, on SmolLM2 and on Gemma 3 270M to 1e-6).
# Others keep the model's own loss until checked.
CHUNKED_LOSS_TYPES = ("llama", "gemma3_text")


def has_chunked_loss(model) -> bool:
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(lm.config, "model_type", None) in CHUNKED_LOSS_TYPES


def train_lora(model, input_ids, labels, pad_id: int, cfg: TrainConfig, ckpt_dir: Path | None = None,
               on_step: Callable[[int, int, float], None] | None = None, state_key: str | None = None,
               chunked_loss: bool = True) -> dict:
    """Train the (peft) model in place on the tokenized rows; per-epoch checkpoints into ckpt_dir. chunked_loss: the
    loss without full-vocabulary logits (ChunkedLossTrainer; False: the model's own loss, the same value)."""
    if ckpt_dir is not None:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
    # With a checkpoint folder the Trainer's own per-epoch state (optimizer, scheduler, RNG) is kept in
    # ckpt_dir/.trainer, so a killed warm-up resumes at its last finished epoch; it is deleted at the end.
    resumable = ckpt_dir is not None
    trainer_dir = ckpt_trainer_state(ckpt_dir) if resumable else None
    with contextlib.ExitStack() as stack:
        out_dir = str(trainer_dir) if resumable else stack.enter_context(tempfile.TemporaryDirectory(prefix="gist-trainer-"))
        args = TrainingArguments(
            output_dir=out_dir, num_train_epochs=cfg.epochs, learning_rate=cfg.lr,
            per_device_train_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
            warmup_steps=cfg.warmup_ratio, lr_scheduler_type="linear", weight_decay=cfg.weight_decay,
            optim="adamw_torch", seed=cfg.seed, data_seed=cfg.seed, bf16=cfg.bf16,
            use_cpu=not torch.cuda.is_available(), save_strategy="epoch" if resumable else "no", save_total_limit=1,
            report_to="none", logging_steps=1, logging_nan_inf_filter=False, disable_tqdm=True,
            remove_unused_columns=False, log_level="error", dataloader_num_workers=0)
        trainer_class = ChunkedLossTrainer if chunked_loss and has_chunked_loss(model) else Trainer
        trainer = trainer_class(model=model, args=args, train_dataset=TokenRows(input_ids, labels),
                          data_collator=pad_collator(pad_id), callbacks=[_callback(ckpt_dir, cfg.epochs, on_step, state_key)])
        trainer.remove_callback(PrinterCallback)  # it prints every log line; progress goes to our events
        last = last_trainer_state(ckpt_dir, state_key) if resumable else None
        result = trainer.train(resume_from_checkpoint=last)
    if resumable:
        shutil.rmtree(trainer_dir, ignore_errors=True)
    model.eval()
    return {"train_loss": float(result.training_loss), "steps": int(result.global_step),
            "config": asdict(cfg)}
