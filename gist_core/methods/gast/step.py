"""One GAST step's gradients, in the paper's two implementations (App. A.3), on GIST's per-example engine.

* cached (compute-efficient): one forward/backward materialises every example's per-layer gradient
  (B × D floats); scores, selection and the per-layer aggregate are read from that cache.
* twopass (memory-efficient): the scoring pass keeps only the blocks' inputs x and output gradients δ (which the
  backward holds anyway) and scores by ⟨Σ_t δ_t x_tᵀ, ĝ⟩ = Σ_t δ_t · (ĝ x_t), never forming a per-example
  gradient; then one more forward/backward per group of layers that share a selection, over the selected
  examples only, with loss Σ_i w_i L_i, keeps that group's gradients.

Both return the same update for the same selection (tests/methods/gast/test_gast.py), so under one RNG they train alike.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from gist_core.grads.per_example import GradientEngine, causal_lm_losses
from gist_core.methods.gast.selection import weights

IMPLEMENTATIONS = ("cached", "twopass")


@dataclass
class StepResult:
    update: list[torch.Tensor]  # per block (out, in): the gradient the optimizer gets
    losses: torch.Tensor        # (B,) per-example losses of the batch
    scores: torch.Tensor        # (B, L) a_{i,ℓ} = ⟨g_{i,ℓ}, ĝ_ℓ⟩
    counts: torch.Tensor        # (B, L) selections
    held_bytes: int             # what the implementation holds for selection beyond a plain step
    sq_norms: torch.Tensor      # (B, L) ‖g_{i,ℓ}‖²: with ‖ĝ_ℓ‖, the cosines the Layers page shows

    def cosines(self, ghat, layer_index) -> torch.Tensor:
        """(B, L) cos(g_{i,ℓ}, ĝ_ℓ)."""
        gn = torch.zeros(self.scores.shape[1], dtype=torch.float64)
        for gh, li in zip(ghat, layer_index):
            gn[li] += float((gh.double() ** 2).sum())
        den = (self.sq_norms.cpu().clamp_min(0).sqrt() * gn.sqrt()).clamp_min(1e-30)
        return self.scores.cpu() / den


def params_of(engine: GradientEngine) -> list[torch.Tensor]:
    return [b.module.weight for b in engine.blocks]


def support_gradient(engine: GradientEngine, ids, lab, att) -> list[torch.Tensor]:
    """ĝ per block: the gradient of the support batch's mean per-example loss."""
    losses = causal_lm_losses(engine.model, ids, lab, att, engine.trim_logits)
    return [g.float() for g in torch.autograd.grad(losses.mean(), params_of(engine))]


def scores_from_grads(grads, ghat, layer_index, n_layers) -> torch.Tensor:
    a = torch.zeros(grads[0].shape[0], n_layers, dtype=torch.float64, device=grads[0].device)
    for g, gh, li in zip(grads, ghat, layer_index):
        a[:, li] += (g * gh).sum(dim=(1, 2)).double()
    return a


def scores_from_captures(xs, ds, ghat, layer_index, n_layers) -> torch.Tensor:
    a = torch.zeros(xs[0].shape[0], n_layers, dtype=torch.float64, device=xs[0].device)
    for x, d, gh, li in zip(xs, ds, ghat, layer_index):
        a[:, li] += (d * (x @ gh.T)).sum(dim=(1, 2)).double()
    return a


def _bytes(tensors) -> int:
    return int(sum(t.numel() * t.element_size() for t in tensors))


def cached_step(engine: GradientEngine, batch, ghat, layer_index, n_layers,
                pick: Callable[[torch.Tensor], torch.Tensor], aggregate: str = "mean") -> StepResult:
    grads, losses = engine.padded_module_grads(*batch)
    a = scores_from_grads(grads, ghat, layer_index, n_layers)
    sq = torch.zeros_like(a)
    for g, li in zip(grads, layer_index):
        sq[:, li] += (g.double() ** 2).sum(dim=(1, 2))
    counts = pick(a)
    W = weights(counts, aggregate).to(grads[0].device, torch.float32)
    update = [torch.einsum("b,boi->oi", W[:, li], g) for g, li in zip(grads, layer_index)]
    return StepResult(update, losses, a, counts, _bytes(grads), sq)


def twopass_step(engine: GradientEngine, batch, ghat, layer_index, n_layers,
                 pick: Callable[[torch.Tensor], torch.Tensor], aggregate: str = "mean") -> StepResult:
    ids, lab, att = batch
    xs, ds, losses = engine.captures(ids, lab, att)
    a = scores_from_captures(xs, ds, ghat, layer_index, n_layers)
    sq = torch.zeros_like(a)
    for x, d, li in zip(xs, ds, layer_index):  # ‖Σ_t δ_t x_tᵀ‖² = Σ_{t,s} (δ_t·δ_s)(x_t·x_s)
        sq[:, li] += ((d @ d.transpose(1, 2)) * (x @ x.transpose(1, 2))).sum(dim=(1, 2)).double()
    held = _bytes(xs) + _bytes(ds)
    del xs, ds
    counts = pick(a)
    W = weights(counts, aggregate)
    params = params_of(engine)
    update: list[torch.Tensor | None] = [None] * len(params)
    groups: dict[tuple, list[int]] = {}
    for layer in range(n_layers):  # layers with the same weights share one pass
        groups.setdefault(tuple(W[:, layer].tolist()), []).append(layer)
    for w, layers in groups.items():
        rows = [i for i, v in enumerate(w) if v]
        T = int(att[rows].sum(1).max())
        sub = causal_lm_losses(engine.model, ids[rows, :T], lab[rows, :T], att[rows, :T], engine.trim_logits)
        blocks = [j for j, li in enumerate(layer_index) if li in layers]
        wt = torch.tensor([w[i] for i in rows], dtype=sub.dtype, device=sub.device)
        for j, g in zip(blocks, torch.autograd.grad((wt * sub).sum(), [params[j] for j in blocks])):
            update[j] = g.float()
    return StepResult(update, losses, a, counts, held, sq)


STEPS = {"cached": cached_step, "twopass": twopass_step}
