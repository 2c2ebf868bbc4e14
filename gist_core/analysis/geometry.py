"""Curvature of one LoRA block: exact Hessian, Gauss-Newton, empirical Fisher, Adam's diagonal.

GIST's argument (methods.md §1.1): for W = W0 + B A the LoRA-parameter Hessian has A-B cross blocks
even when the weight-space Hessian is diagonal (Theorem 3.2), so a diagonal preconditioner such
as Adam's v is the wrong geometry; and the top eigenspace of F = G_val^T G_val tracks the
Hessian's (Theorem 3.3). This module measures both on a block of coordinates: one module's A and B
(or a seeded subsample of them), with the rest of the model fixed. Math only: no paths.

All matrices are over the same coordinates, A's first, then B's. Loss = mean over the examples of
each example's mean response-token cross-entropy (the loss GIST's gradients are of).
- Hessian: rows are Hessian-vector products, double backward through one retained gradient graph.
- Gauss-Newton: J^T H_out J with H_out the softmax cross-entropy Hessian per response token.
- Empirical Fisher: mean of per-example g g^T (= F_hat / N, same eigenvectors as GIST's F_hat).
- Adam: the second moment v of the checkpoint (a diagonal).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.func import functional_call, grad

from gist_core.errors import GeometryError
from gist_core.grads.per_example import pad_batch, per_example_loss


@dataclass
class Block:
    """The coordinates measured: flat indices into one module's lora_A and lora_B weights."""
    module: str
    name_a: str
    name_b: str
    shape_a: tuple[int, int]
    shape_b: tuple[int, int]
    idx_a: np.ndarray
    idx_b: np.ndarray

    @property
    def n_a(self) -> int:
        return len(self.idx_a)

    @property
    def size(self) -> int:
        return len(self.idx_a) + len(self.idx_b)

    @property
    def labels(self) -> np.ndarray:
        return np.array(["A"] * len(self.idx_a) + ["B"] * len(self.idx_b))


def lora_modules(model) -> list[str]:
    """Names of the modules that carry a LoRA pair, in model order."""
    names = [n for n, _ in model.named_parameters() if ".lora_A." in n]
    return [n.split(".lora_A.")[0] for n in names]


def pick_block(model, module: str | None, n_coords: int, seed: int = 0) -> Block:
    """One module's A and B; n_coords > 0 samples that many coordinates (half from each, seeded)."""
    mods = lora_modules(model)
    if not mods:
        raise GeometryError("the model has no LoRA modules (attach or load an adapter first)")
    if module is None:
        module = mods[-1]  # the last LoRA module: nearest the loss, cheapest to differentiate through
    match = [m for m in mods if m == module or m.endswith("." + module) or m.endswith(module)]
    if not match:
        raise GeometryError(f"no LoRA module '{module}' (choose from: {', '.join(m.split('model.', 1)[-1] for m in mods[:6])}"
                            f"{', ...' if len(mods) > 6 else ''})")
    module = match[-1]
    params = dict(model.named_parameters())
    name_a = next(n for n in params if n.startswith(module + ".lora_A."))
    name_b = next(n for n in params if n.startswith(module + ".lora_B."))
    na, nb = params[name_a].numel(), params[name_b].numel()
    rng = np.random.default_rng(seed)
    if n_coords and n_coords < na + nb:
        ka = min(na, n_coords // 2)
        kb = min(nb, n_coords - ka)
        idx_a, idx_b = np.sort(rng.choice(na, ka, replace=False)), np.sort(rng.choice(nb, kb, replace=False))
    else:
        idx_a, idx_b = np.arange(na), np.arange(nb)
    return Block(module, name_a, name_b, tuple(params[name_a].shape), tuple(params[name_b].shape), idx_a, idx_b)


class BlockFunction:
    """The loss (and logits) as a function of the block's coordinates, everything else fixed."""

    def __init__(self, model, block: Block, input_ids, labels, pad_id: int):
        self.model = model.eval()
        self.block = block
        params = dict(model.named_parameters())
        device = params[block.name_a].device
        self.base_a = params[block.name_a].detach().reshape(-1)
        self.base_b = params[block.name_b].detach().reshape(-1)
        dtype = self.base_a.dtype
        self.ia = torch.as_tensor(block.idx_a, device=device)
        self.ib = torch.as_tensor(block.idx_b, device=device)
        self.theta0 = torch.cat([self.base_a[self.ia], self.base_b[self.ib]])
        # one-hot embeddings (dense: tiny) keep the map theta -> (A, B) a plain matmul under vmap/jvp
        self.sa = torch.zeros(len(self.base_a), block.n_a, device=device, dtype=dtype)
        self.sa[self.ia, torch.arange(block.n_a, device=device)] = 1
        nb = block.size - block.n_a
        self.sb = torch.zeros(len(self.base_b), nb, device=device, dtype=dtype)
        self.sb[self.ib, torch.arange(nb, device=device)] = 1
        # every other trainable weight enters detached: only the block's coordinates carry gradients
        self.frozen = {n: p.detach() for n, p in params.items()
                       if p.requires_grad and n not in (block.name_a, block.name_b)}
        self.input_ids, self.labels, self.pad_id = input_ids, labels, pad_id
        self.batch = pad_batch(input_ids, labels, pad_id, device)

    def weights(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        d = theta - self.theta0
        a = self.base_a + self.sa @ d[: self.block.n_a]
        b = self.base_b + self.sb @ d[self.block.n_a:]
        return {**self.frozen, self.block.name_a: a.reshape(self.block.shape_a),
                self.block.name_b: b.reshape(self.block.shape_b)}

    def logits(self, theta: torch.Tensor, batch=None) -> torch.Tensor:
        ids, _, att = batch or self.batch
        return functional_call(self.model, self.weights(theta), (ids,), {"attention_mask": att}).logits.float()

    def loss(self, theta: torch.Tensor, batch=None) -> torch.Tensor:
        lab = (batch or self.batch)[1]
        return per_example_loss(self.logits(theta, batch), lab).mean()

    def response_logits(self, theta: torch.Tensor) -> torch.Tensor:
        """(L, V) logits at the positions that predict response tokens."""
        _, lab, _ = self.batch
        return self.logits(theta)[:, :-1][lab[:, 1:] != -100]

    def token_weights(self) -> torch.Tensor:
        """Each response token's weight in the loss: 1 / (N * that example's response tokens)."""
        mask = (self.batch[1][:, 1:] != -100).float()
        per = 1.0 / (mask.shape[0] * mask.sum(1).clamp_min(1))
        return (mask * per[:, None])[mask.bool()]


def exact_hessian(fn: BlockFunction) -> torch.Tensor:
    """(P, P) Hessian of the loss in the block's coordinates: one double-backward per row, all through
    a single retained graph of the gradient (cheaper and far leaner than vmapped forward-over-reverse)."""
    theta = fn.theta0.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(fn.loss(theta), theta, create_graph=True)
    P = fn.block.size
    H = torch.empty(P, P, dtype=theta.dtype, device=theta.device)
    e = torch.zeros(P, dtype=theta.dtype, device=theta.device)
    for j in range(P):
        e[j] = 1
        H[j] = torch.autograd.grad(g, theta, grad_outputs=e, retain_graph=True)[0].detach()
        e[j] = 0
    return (H + H.T) / 2  # symmetric up to rounding; symmetrise once


def gauss_newton(fn: BlockFunction) -> torch.Tensor:
    """(P, P) J^T H_out J: the positive semi-definite part of the Hessian (softmax curvature).
    J e_j comes from the double-backward trick (J^T u is linear in u), J^T w from one more backward."""
    theta = fn.theta0.clone().requires_grad_(True)
    z = fn.response_logits(theta)
    p = torch.softmax(z.detach(), dim=-1)
    w = fn.token_weights()[:, None].to(z.dtype)
    u = torch.zeros_like(z, requires_grad=True)
    (jt_u,) = torch.autograd.grad(z, theta, grad_outputs=u, create_graph=True)
    P = fn.block.size
    G = torch.empty(P, P, dtype=theta.dtype, device=theta.device)
    e = torch.zeros(P, dtype=theta.dtype, device=theta.device)
    for j in range(P):
        e[j] = 1
        jv = torch.autograd.grad(jt_u, u, grad_outputs=e, retain_graph=True)[0]
        hjv = w * (p * jv - p * (p * jv).sum(-1, keepdim=True))
        G[j] = torch.autograd.grad(z, theta, grad_outputs=hjv, retain_graph=True)[0].detach()
        e[j] = 0
    return (G + G.T) / 2


def per_example_gradients(fn: BlockFunction) -> torch.Tensor:
    """(N, P) gradients of each example's own loss in the block's coordinates."""
    rows = []
    for i in range(len(fn.input_ids)):
        batch = pad_batch(fn.input_ids[i:i + 1], fn.labels[i:i + 1], fn.pad_id, fn.theta0.device)
        rows.append(grad(lambda t: fn.loss(t, batch))(fn.theta0))  # noqa: B023  (called at once)
    return torch.stack(rows).detach()
