"""Per-example LoRA gradients at the cost of one batched forward + backward.

For a linear layer y = W x, the gradient of example b's loss is sum_t delta_bt x_bt^T, where
x_bt is the layer's input and delta_bt the gradient flowing into its output at token t. Forward
hooks capture x, tensor hooks capture delta; one einsum per module gives every example's
gradient. LoRA's A and B are plain nn.Linear modules inside peft, so this covers them exactly.

Loss per example = mean cross-entropy over that example's response tokens; the batch loss is
the *sum* of per-example losses, so each example's gradient is independent of the batch it is
in. Right padding is masked out of the loss, and causal attention never lets a real token see
a later pad token, so padding cannot leak into any example's gradient.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from gist_core.data.formatting import IGNORE
from gist_core.errors import GradientError


@dataclass(frozen=True)
class ParamBlock:
    """One trainable weight: where it sits in the flattened gradient."""
    name: str
    module: torch.nn.Linear
    offset: int
    size: int


def param_blocks(model) -> list[ParamBlock]:
    """Trainable weights in named_parameters order, each owned by an nn.Linear (LoRA A/B)."""
    owner = {f"{mn}.weight": m for mn, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    blocks, offset = [], 0
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name not in owner or owner[name].bias is not None and owner[name].bias.requires_grad:
            raise GradientError(f"trainable parameter '{name}' is not a bias-free Linear weight; "
                                "per-example gradients support LoRA weights only")
        blocks.append(ParamBlock(name, owner[name], offset, p.numel()))
        offset += p.numel()
    if not blocks:
        raise GradientError("the model has no trainable parameters (attach a LoRA adapter first)")
    return blocks


def gradient_dim(model) -> int:
    return sum(b.size for b in param_blocks(model))


def pad_batch(input_ids: Sequence[list[int]], labels: Sequence[list[int]], pad_id: int,
              device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad a batch; pads get label IGNORE and attention 0."""
    T = max(len(x) for x in input_ids)
    ids = torch.full((len(input_ids), T), pad_id, dtype=torch.long)
    lab = torch.full((len(input_ids), T), IGNORE, dtype=torch.long)
    att = torch.zeros((len(input_ids), T), dtype=torch.long)
    for i, (x, y) in enumerate(zip(input_ids, labels)):
        ids[i, : len(x)] = torch.tensor(x)
        lab[i, : len(y)] = torch.tensor(y)
        att[i, : len(x)] = 1
    return ids.to(device), lab.to(device), att.to(device)


def per_example_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B,) mean token cross-entropy over each example's response tokens (labels != IGNORE)."""
    logits = logits[:, :-1].float()
    target = labels[:, 1:]
    tok = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target.clamp_min(0), reduction="none")
    mask = (target != IGNORE).float()
    return (tok * mask).sum(1) / mask.sum(1).clamp_min(1.0)


class _Capture:
    """Hooks that keep each LoRA Linear's input and output-gradient for one backward pass."""

    def __init__(self, blocks: list[ParamBlock]):
        self.blocks = blocks
        self.inputs: dict[int, torch.Tensor] = {}
        self.grads: dict[int, torch.Tensor] = {}
        self.handles = []

    def __enter__(self):
        for i, b in enumerate(self.blocks):
            self.handles.append(b.module.register_forward_hook(self._hook(i)))
        return self

    def _hook(self, i: int):
        def fwd(module, inp, out):
            self.inputs[i] = inp[0].detach()
            out.register_hook(lambda g: self.grads.__setitem__(i, g.detach()))
        return fwd

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self.handles.clear()


def accepts_logits_to_keep(model) -> bool:
    """Whether the causal LM's forward takes `logits_to_keep` (transformers >= 4.50 models do)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def response_window(lab: torch.Tensor) -> int:
    """First position whose logits any loss needs: the token before the batch's earliest response token.
    Logits before it feed no loss, so they are never computed (the vocabulary projection is a fifth of a
    small model's forward pass, and most tokens are prompt)."""
    has = (lab != IGNORE).any(0)
    first = int(torch.nonzero(has)[0]) if bool(has.any()) else lab.shape[1] - 1
    return max(first - 1, 0)


def causal_lm_losses(model, ids, lab, att, trim: bool) -> torch.Tensor:
    """(B,) per-example losses; with `trim`, logits only from the response window on (same values)."""
    if not trim:
        return per_example_loss(model(input_ids=ids, attention_mask=att).logits, lab)
    lo = response_window(lab)
    keep = torch.arange(lo, ids.shape[1], device=ids.device)
    logits = model(input_ids=ids, attention_mask=att, logits_to_keep=keep).logits
    return per_example_loss(logits, lab[:, lo:])


class GradientEngine:
    """Batched per-example gradients of a LoRA-wrapped causal LM (model put in eval mode)."""

    def __init__(self, model, pad_id: int, device=None):
        self.model = model.eval()  # dropout off: gradients are a deterministic function of the example
        self.blocks = param_blocks(model)
        self.dim = sum(b.size for b in self.blocks)
        self.pad_id = pad_id
        self.device = device or next(model.parameters()).device
        self.trim_logits = accepts_logits_to_keep(model)
        vocab = getattr(model.config, "vocab_size", None)  # a model without one (a test double) batches by rows only
        self.max_batch_tokens = logit_token_cap(vocab) if vocab else None

    def module_grads(self, input_ids, labels) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Per-module per-example gradients [(B, out, in)] and the per-example losses (B,)."""
        return self.padded_module_grads(*pad_batch(input_ids, labels, self.pad_id, self.device))

    def captures(self, ids, lab, att) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """One forward + backward of a padded batch: every block's inputs x (B, T, in) and output gradients
        δ (B, T, out), from which example b's gradient is Σ_t δ_bt x_btᵀ, and the per-example losses (B,)."""
        params = [b.module.weight for b in self.blocks]
        with _Capture(self.blocks) as cap:
            losses = causal_lm_losses(self.model, ids, lab, att, self.trim_logits)
            torch.autograd.grad(losses.sum(), params)
        n = len(self.blocks)
        return [cap.inputs[i].float() for i in range(n)], [cap.grads[i].float() for i in range(n)], losses.detach()

    def padded_module_grads(self, ids, lab, att) -> tuple[list[torch.Tensor], torch.Tensor]:
        xs, ds, losses = self.captures(ids, lab, att)
        grads = [torch.einsum("bto,bti->boi", d, x) for x, d in zip(xs, ds)]
        finite = torch.isfinite(losses)
        for g in grads:
            finite &= torch.isfinite(g.reshape(g.shape[0], -1)).all(dim=1)
        if not finite.all():
            bad = torch.nonzero(~finite).flatten().tolist()
            raise GradientError(f"non-finite loss or gradient for {len(bad)} of {len(finite)} examples in a batch "
                                "(fp16/bf16 overflow or a broken model? try --dtype float32 or a shorter --max-length)",
                                positions=bad)
        return grads, losses.detach()

    def flat_grads(self, input_ids, labels) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, D) float32 gradients in param_blocks order."""
        grads, losses = self.module_grads(input_ids, labels)
        return torch.cat([g.reshape(g.shape[0], -1) for g in grads], dim=1), losses

    def projected_grads(self, input_ids, labels, basis: torch.Tensor,
                        with_norms: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, R) = g @ basis without materialising the (B, D) matrix: one module slice at a time; with_norms:
        (B, R + 1), |g| in the last column. A bfloat16 basis gets bfloat16 gradients (the GIST reference's
        projection; the sum is float32); the norm is always taken of the float32 gradient."""
        grads, losses = self.module_grads(input_ids, labels)
        out = torch.zeros(len(input_ids), basis.shape[1], dtype=torch.float32, device=basis.device)
        sq = torch.zeros(len(input_ids), dtype=torch.float64, device=basis.device)
        for b, g in zip(self.blocks, grads):
            flat = g.reshape(g.shape[0], -1)
            out += (flat.to(basis.device, basis.dtype) @ basis[b.offset:b.offset + b.size]).float()
            if with_norms:
                sq += squared_norms(flat).to(basis.device)
        return (torch.cat([out, norms_from_squares(sq)[:, None]], dim=1) if with_norms else out), losses


def squared_norms(g: torch.Tensor) -> torch.Tensor:
    """(B,) float64 sum of squares of each row of g (B, ...): summed per module, then over modules, these make
    the one definition of a pool gradient's norm |g| (GIST's projection store and compare's raw cosine)."""
    return g.reshape(g.shape[0], -1).double().pow(2).sum(1)


def norms_from_squares(sq: torch.Tensor) -> torch.Tensor:
    return sq.sqrt().float()


def loop_grads(model, input_ids, labels, pad_id: int) -> torch.Tensor:
    """Reference: one example at a time with autograd (what LESS and the GIST code do). (B, D)."""
    model.eval()
    params = [b.module.weight for b in param_blocks(model)]
    device = next(model.parameters()).device
    rows = []
    for x, y in zip(input_ids, labels):
        ids, lab, att = pad_batch([x], [y], pad_id, device)
        loss = per_example_loss(model(input_ids=ids, attention_mask=att).logits, lab).sum()
        rows.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]).float())
    return torch.stack(rows)


# One batch's float32 logits over the vocabulary, their log-softmax and (with a backward pass) their gradient must
# fit in this. SmolLM2's defaults (16 rows x 256 tokens x 49,152 words, three copies: 2.4 GB) fit unchanged; Gemma 3's
# 262,144-word vocabulary would need 12.9 GB for the same batch, so its batches get fewer rows instead.
LOGITS_BUDGET_BYTES = 3 * 2 ** 30


def logit_token_cap(vocab_size: int, copies: int = 3, budget: int = LOGITS_BUDGET_BYTES) -> int:
    """Most padded tokens a batch may hold so that `copies` float32 logit tensors fit in `budget`."""
    return max(1, budget // (int(vocab_size) * 4 * copies))


def length_sorted_batches(lengths: Sequence[int], indices: Sequence[int], batch_size: int,
                          max_tokens: int | None = None) -> Iterator[list[int]]:
    """Batches of similar length (less padding), in a deterministic order; with `max_tokens`, a batch also ends
    before its rows x longest row would pass it (a row longer than that alone is a batch of its own)."""
    batch: list[int] = []
    for i in sorted(indices, key=lambda i: (lengths[i], i)):  # ascending: the row added is the batch's longest
        if batch and (len(batch) == batch_size or (max_tokens and (len(batch) + 1) * lengths[i] > max_tokens)):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


def stream(engine: GradientEngine, tokenized, indices: Sequence[int], batch_size: int,
           consume: Callable[[list[int], torch.Tensor], None], project: torch.Tensor | None = None,
           on_batch: Callable[[int], None] | None = None, with_norms: bool = False) -> None:
    """Compute gradients (or their projections, with |g| last when `with_norms`) batch by batch and hand each
    to `consume`."""
    lengths = [len(x) for x in tokenized.input_ids]
    for batch in length_sorted_batches(lengths, indices, batch_size, engine.max_batch_tokens):
        ids = [tokenized.input_ids[i] for i in batch]
        lab = [tokenized.labels[i] for i in batch]
        try:
            out, _ = engine.projected_grads(ids, lab, project, with_norms) if project is not None \
                else engine.flat_grads(ids, lab)
        except GradientError as e:
            if e.positions is None:
                raise
            rows = [batch[p] for p in e.positions]
            raise GradientError(f"{e} at row(s) {', '.join(map(str, rows[:5]))}{' ...' if len(rows) > 5 else ''}") from None
        consume(batch, out)
        if on_batch:
            on_batch(len(batch))


def collect_flat(engine: GradientEngine, tokenized, indices: Sequence[int], batch_size: int) -> np.ndarray:
    """(len(indices), D) float32 gradients, rows in the order of `indices` (small sets only)."""
    out = np.zeros((len(indices), engine.dim), dtype=np.float32)
    pos = {i: k for k, i in enumerate(indices)}

    def put(batch, g):
        out[[pos[i] for i in batch]] = g.cpu().numpy()

    stream(engine, tokenized, indices, batch_size, put)
    return out
