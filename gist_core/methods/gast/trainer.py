"""LoRA training with GAST's per-layer selection: a transformers.Trainer whose training_step sets each LoRA
weight's gradient from the examples its layer selected (`step.py`), then lets the Trainer's optimizer,
scheduler and clipping act as for plain LoRA. method='lora' is the same Trainer with one ordinary backward of
the batch's mean per-example loss, so every ablation shares data order, optimizer and schedule.
"""
from __future__ import annotations

import tempfile
import time
from collections.abc import Callable

import numpy as np
import torch
from transformers import PrinterCallback, Trainer, TrainingArguments

from gist_core import memory
from gist_core.config import TrainConfig
from gist_core.grads.per_example import GradientEngine, causal_lm_losses, pad_batch
from gist_core.methods.gast.config import GastConfig
from gist_core.methods.gast.selection import layer_groups, select_counts
from gist_core.methods.gast.step import STEPS, params_of, support_gradient
from gist_core.model.training import TokenRows

RULE_OF = {"gast": "stochastic", "topk": "topk", "random": "random"}


class _IndexedRows(TokenRows):
    """The training rows with their index, so the selection log knows which example each batch row is."""

    def __getitem__(self, i):
        return {**super().__getitem__(i), "idx": i}


def indexed_collator(pad_id: int):
    def collate(rows):
        ids, lab, att = pad_batch([r["input_ids"] for r in rows], [r["labels"] for r in rows], pad_id, "cpu")
        return {"input_ids": ids, "labels": lab, "attention_mask": att,
                "idx": torch.tensor([r["idx"] for r in rows], dtype=torch.long)}
    return collate


class SelectionLog:
    """What was selected: per layer × training example counts (and how often each example was in a batch),
    per step the batch's cosines to the support gradient and its mean loss."""

    def __init__(self, n_layers: int, n_examples: int):
        self.selected = np.zeros((n_layers, n_examples), np.int64)
        self.seen = np.zeros(n_examples, np.int64)
        self.cosines: list[np.ndarray] = []  # per step (B, L)
        self.batch_idx: list[np.ndarray] = []
        self.losses: list[float] = []
        self.step_s: list[float] = []
        self.held_bytes: list[int] = []

    def arrays(self) -> dict[str, np.ndarray]:
        B = max((len(b) for b in self.batch_idx), default=0)
        L = self.selected.shape[0]
        cos = np.full((len(self.cosines), B, L), np.nan, np.float32)
        idx = np.full((len(self.batch_idx), B), -1, np.int64)
        for s, (c, i) in enumerate(zip(self.cosines, self.batch_idx)):
            cos[s, :len(c)], idx[s, :len(i)] = c, i
        return {"selected": self.selected, "seen": self.seen, "cosines": cos, "batch_idx": idx,
                "loss": np.asarray(self.losses, np.float64), "step_s": np.asarray(self.step_s, np.float64)}


def make_trainer_class():
    class GastTrainer(Trainer):
        def setup_gast(self, gast: GastConfig, pad_id: int, support_rows, log: SelectionLog, seed: int):
            self.gast, self.pad_id, self.support_rows, self.log_ = gast, pad_id, support_rows, log
            self.engine = GradientEngine(self.model, pad_id)
            self.layers, self.layer_index = layer_groups([b.name for b in self.engine.blocks])
            self.gen = torch.Generator().manual_seed(seed)  # support draws and selections: one seeded stream

        def training_step(self, model, inputs, num_items_in_batch=None):
            t0 = time.perf_counter()
            model.train()
            ids, lab, att, idx = inputs["input_ids"], inputs["labels"], inputs["attention_mask"], inputs["idx"]
            if self.gast.method == "lora":
                losses = causal_lm_losses(model, ids, lab, att, self.engine.trim_logits)
                losses.mean().backward()
                self._record(idx, losses.detach(), None, None, 0, t0)
                return losses.mean().detach()
            res, ghat = self.gast_step(ids, lab, att)
            for p, g in zip(params_of(self.engine), res.update):
                p.grad = g.to(p.dtype)
            self._record(idx, res.losses, res, ghat, res.held_bytes, t0)
            return res.losses.mean().detach()

        def gast_step(self, ids, lab, att):
            g = self.gast
            pick = lambda a: select_counts(a, g.k_select, RULE_OF[g.method], self.gen, g.temperature,  # noqa: E731
                                           g.replacement)
            rows = torch.randperm(len(self.support_rows[0]), generator=self.gen)[:g.k_support].tolist()
            sup = pad_batch([self.support_rows[0][r] for r in rows], [self.support_rows[1][r] for r in rows],
                            self.pad_id, ids.device)
            ghat = support_gradient(self.engine, *sup)
            res = STEPS[g.implementation](self.engine, (ids, lab, att), ghat, self.layer_index, len(self.layers),
                                          pick, g.aggregate)
            return res, ghat

        def _record(self, idx, losses, res, ghat, held, t0):
            log, i = self.log_, idx.cpu().numpy()
            log.seen[i] += 1
            if res is not None:
                log.selected[:, i] += res.counts.cpu().numpy().T.astype(np.int64)
                log.cosines.append(res.cosines(ghat, self.layer_index).numpy().astype(np.float32))
            else:
                log.selected[:, i] += 1
            log.batch_idx.append(i)
            log.losses.append(float(losses.mean()))
            log.held_bytes.append(int(held))
            log.step_s.append(time.perf_counter() - t0)

    return GastTrainer


def train_gast(model, input_ids, labels, pad_id: int, recipe: TrainConfig, gast: GastConfig,
               support_rows: tuple[list, list], on_step: Callable[[int, int], None] | None = None,
               max_steps: int = -1) -> tuple[dict, SelectionLog]:
    """Train the peft `model` in place; returns (summary, what was selected)."""
    Trainer = make_trainer_class()
    layers, _ = layer_groups([n for n, p in model.named_parameters() if p.requires_grad])
    log = SelectionLog(len(layers), len(input_ids))
    with tempfile.TemporaryDirectory(prefix="gist-gast-") as out:
        args = TrainingArguments(
            output_dir=out, num_train_epochs=recipe.epochs, max_steps=max_steps, learning_rate=recipe.lr,
            per_device_train_batch_size=recipe.batch_size, gradient_accumulation_steps=1,
            warmup_steps=recipe.warmup_ratio, lr_scheduler_type="linear", weight_decay=recipe.weight_decay,
            optim="adamw_torch", seed=recipe.seed, data_seed=recipe.seed, use_cpu=not torch.cuda.is_available(),
            save_strategy="no", report_to="none", logging_steps=1, disable_tqdm=True, remove_unused_columns=False,
            log_level="error", dataloader_num_workers=0)
        trainer = Trainer(model=model, args=args, train_dataset=_IndexedRows(input_ids, labels),
                          data_collator=indexed_collator(pad_id))
        trainer.remove_callback(PrinterCallback)
        trainer.setup_gast(gast, pad_id, support_rows, log, recipe.seed)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        rss_start = memory.reset_peak()
        t0 = time.perf_counter()
        result = trainer.train()
        wall = time.perf_counter() - t0
        rss_peak = memory.peak_since(rss_start)
    model.eval()
    peak = int(torch.cuda.max_memory_allocated()) if torch.cuda.is_available() else None
    return {"steps": int(result.global_step), "train_loss": float(result.training_loss), "wall_s": wall,
            "layers": layers, "cuda_peak_bytes": peak, "cpu_peak_rss_bytes": rss_peak,
            "held_bytes_per_step": int(np.median(log.held_bytes)) if log.held_bytes else 0}, log
