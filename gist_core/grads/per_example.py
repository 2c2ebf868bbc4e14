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
    # Rows of (tokens, vocabulary): on the CPU, cross_entropy over the (B, V, T) layout was measured up to 2.3e-4
    # per token off a float64 reference at SmolLM2's 49K words, this layout 1.6e-5 (and it is Bergson's).
    tok = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1).clamp_min(0),
                                            reduction="none").view(target.shape)
    mask = (target != IGNORE).float()
    return (tok * mask).sum(1) / mask.sum(1).clamp_min(1.0)


class _Capture:
    """Hooks that hand each LoRA Linear's input x (B, T, in) and output-gradient δ (B, T, out) to `on_block` while
    the backward pass runs, so one module's per-example gradient is made and used before the next arrives.

    The backward pass is asked only for zero-size probes added to the modules' outputs: autograd then computes no
    weight gradients (a training step's summed ones, which per-example work does not need) and keeps no output
    gradient past its hook, and each x is let go as soon as its module is done."""

    def __init__(self, blocks: list[ParamBlock], on_block: Callable[[int, torch.Tensor, torch.Tensor], None]):
        self.blocks = blocks
        self.on_block = on_block
        self.probes: list[torch.Tensor] = []
        self.handles = []
        self.calls = self.fired = 0

    def __enter__(self):
        for i, b in enumerate(self.blocks):
            self.handles.append(b.module.register_forward_hook(self._forward(i)))
        return self

    def _forward(self, i: int):
        def hook(module, inp, out):
            held = [inp[0].detach()]  # a cell, emptied by the backward hook: a module called twice keeps each call's x
            self.calls += 1

            def backward(d):
                self.fired += 1
                self.on_block(i, held.pop(), d.detach())
            if inp[0].requires_grad:
                # The input comes from an earlier (probed) block, so the backward pass reaches this output anyway.
                out.register_hook(backward)
                return out
            probe = torch.zeros((), dtype=out.dtype, device=out.device, requires_grad=True)
            self.probes.append(probe)
            probed = out + probe  # adding an exact zero: the forward values are unchanged
            # The hook sits on what the model goes on with: the gradient of `out` itself is not computed when no
            # probe lies before it, that of `probed` always is.
            probed.register_hook(backward)
            return probed
        return hook

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

    def backward(self, ids, lab, att, on_block: Callable[[int, torch.Tensor, torch.Tensor], None]) -> torch.Tensor:
        """One forward + backward of a padded batch; `on_block(i, x, δ)` is called as block i's output gradient
        arrives, with x (B, T, in) its input and δ (B, T, out) its output gradient: example b's gradient of block i
        is Σ_t δ_bt x_btᵀ. Returns the per-example losses (B,)."""
        with _Capture(self.blocks, on_block) as cap:
            losses = causal_lm_losses(self.model, ids, lab, att, self.trim_logits)
        if not cap.probes:
            raise GradientError("no LoRA module takes its input from frozen layers (inputs that require gradients, "
                                "e.g. after enable_input_require_grads?); per-example gradients cannot be told apart")
        torch.autograd.grad(losses.sum(), cap.probes)
        if cap.fired != cap.calls:  # a block whose gradient the backward pass never reached: its rows would be void
            raise GradientError(f"the backward pass reached {cap.fired} of {cap.calls} LoRA module calls; "
                                "per-example gradients need every LoRA input to come from frozen layers or LoRA modules")
        return losses.detach()

    def captures(self, ids, lab, att) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """Every block's inputs x (B, T, in) and output gradients δ (B, T, out) of one padded batch, held together
        (GAST's two-pass step needs them all), and the per-example losses (B,)."""
        xs: list = [None] * len(self.blocks)
        ds: list = [None] * len(self.blocks)

        def keep(i, x, d):
            xs[i], ds[i] = x.float(), d.float()
        losses = self.backward(ids, lab, att, keep)
        return xs, ds, losses

    def padded_module_grads(self, ids, lab, att) -> tuple[list[torch.Tensor], torch.Tensor]:
        grads, losses = self._module_grads(ids, lab, att)
        check_finite(losses, [g.reshape(g.shape[0], -1) for g in grads])
        return grads, losses

    def _module_grads(self, ids, lab, att) -> tuple[list[torch.Tensor], torch.Tensor]:
        """[(B, out, in)] per block, kept per module: writing each into a column slice of a (B, D) tensor (bmm's
        out=) was measured 2.8x slower than the products themselves."""
        grads: list = [None] * len(self.blocks)

        def keep(i, x, d):
            g = example_grads(x, d)
            grads[i] = g if grads[i] is None else grads[i] + g  # a module called twice: its gradient is the sum
        losses = self.backward(ids, lab, att, keep)
        return grads, losses

    def flat_grads(self, input_ids, labels) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, D) float32 gradients in param_blocks order."""
        ids, lab, att = pad_batch(input_ids, labels, self.pad_id, self.device)
        flat, losses = self._flat(ids, lab, att)
        check_finite(losses, [flat])
        return flat, losses

    def _flat(self, ids, lab, att) -> tuple[torch.Tensor, torch.Tensor]:
        grads, losses = self._module_grads(ids, lab, att)
        return torch.cat([g.reshape(g.shape[0], -1) for g in grads], dim=1), losses

    def projected_grads(self, input_ids, labels, basis: torch.Tensor,
                        with_norms: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, R) = g @ basis, with_norms: (B, R + 1), |g| in the last column. A bfloat16 basis gets bfloat16
        gradients (the GIST reference's projection; the sum is float32); the norm is always taken of the float32
        gradient. Small models: the (B, D) gradients are joined and projected at once (one product instead of one
        per module: per-call overhead is what a small model's time is made of). Large ones (B x D above
        FLAT_BUDGET_BYTES) and a bfloat16 basis (whose reference sums float32 products per module): each module's
        gradients are projected as the backward pass makes them, then let go, so the (B, D) matrix never exists."""
        ids, lab, att = pad_batch(input_ids, labels, self.pad_id, self.device)
        if basis.dtype == torch.float32 and len(input_ids) * self.dim * 4 <= FLAT_BUDGET_BYTES:
            flat, losses = self._flat(ids, lab, att)
            flat = flat.to(basis.device)
            # Column chunks: one float32 product over all D columns put the micro model's scores 1.1e-5 off the
            # float64 oracle (tests/methods/gist/test_oracle.py), 4,096-column sums keep the per-module accuracy.
            out = torch.zeros(len(input_ids), basis.shape[1], dtype=torch.float32, device=basis.device)
            for s in range(0, self.dim, PROJECT_CHUNK):
                out.add_(flat[:, s:s + PROJECT_CHUNK] @ basis[s:s + PROJECT_CHUNK])
            sq = squared_norms(flat).to(basis.device) if with_norms else None
        else:
            out = torch.zeros(len(input_ids), basis.shape[1], dtype=torch.float32, device=basis.device)
            sq = torch.zeros(len(input_ids), dtype=torch.float64, device=basis.device) if with_norms else None

            def project(i, x, d):
                b = self.blocks[i]
                g = example_grads(x, d).reshape(len(input_ids), -1)
                out.add_((g.to(basis.device, basis.dtype) @ basis[b.offset:b.offset + b.size]).float())
                if sq is not None:
                    sq.add_(squared_norms(g).to(basis.device))
            losses = self.backward(ids, lab, att, project)
        # A non-finite entry of any module's gradient reaches the projection (x·0 of an inf is a NaN too) and |g|.
        check_finite(losses, [out] if sq is None else [out, sq[:, None]])
        return (torch.cat([out, norms_from_squares(sq)[:, None]], dim=1) if with_norms else out), losses


# A batch's (B, D) float32 gradients are held whole up to this size (SmolLM2's 2.4M-entry LoRA at 16 rows: 156 MB);
# above it (a 7B model's 134M entries: 8.6 GB) they are projected module by module instead.
FLAT_BUDGET_BYTES = 512 * 2 ** 20
PROJECT_CHUNK = 1 << 12


def example_grads(x: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """(B, out, in) float32 per-example gradients Σ_t δ_bt x_btᵀ of one Linear from x (B, T, in), δ (B, T, out)."""
    return torch.bmm(d.float().transpose(1, 2), x.float())


def check_finite(losses: torch.Tensor, per_example: Sequence[torch.Tensor]) -> None:
    """Raise GradientError naming the batch positions whose loss or any (B, ...) row is not finite."""
    finite = torch.isfinite(losses)
    for t in per_example:
        finite &= torch.isfinite(t.reshape(t.shape[0], -1)).all(dim=1).to(finite.device)
    if not finite.all():
        bad = torch.nonzero(~finite).flatten().tolist()
        raise GradientError(f"non-finite loss or gradient for {len(bad)} of {len(finite)} examples in a batch "
                            "(fp16/bf16 overflow or a broken model? try --dtype float32 or a shorter --max-length)",
                            positions=bad)


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


def collect_flat(engine: GradientEngine, tokenized, indices: Sequence[int], batch_size: int,
                 out: np.ndarray | None = None) -> np.ndarray:
    """(len(indices), D) float32 gradients, rows in the order of `indices`, written into `out` when given (a memmap:
    then only one batch of rows is ever in memory)."""
    if out is None:
        out = np.zeros((len(indices), engine.dim), dtype=np.float32)
    if out.shape != (len(indices), engine.dim):
        raise ValueError(f"out has shape {out.shape}, the gradients ({len(indices)}, {engine.dim})")
    pos = {i: k for k, i in enumerate(indices)}

    def put(batch, g):
        out[[pos[i] for i in batch]] = g.cpu().numpy()

    stream(engine, tokenized, indices, batch_size, put)
    return out
