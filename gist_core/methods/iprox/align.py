"""Stage 2 of Iprox: align the proxy's factor gradients with the target's, in factor space.

For a target layer W and its proxy factors A·B, the chain rule maps the target's batch gradient G_W to the
factors: dL/dA = G_W Bᵀ and dL/dB = Aᵀ G_W. The alignment loss per layer is 0.5·[(1 − cos(∇_A L_proxy, G_W Bᵀ))
+ (1 − cos(∇_B L_proxy, Aᵀ G_W))], averaged over layers, with G_W held fixed (stop-gradient) but A and B left
in the mapping (as the reference: the loss also moves the factors through the projection). Minimising it
needs the proxy's gradient as a function of A and B: a double backward (create_graph=True). An optional logit
anchor adds λ·τ²·KL(target ‖ proxy) at temperature τ over the response tokens. No paths here.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from gist_core.data.formatting import IGNORE
from gist_core.methods.iprox.proxy import FactorLinear


def factor_space(G: torch.Tensor, A: torch.Tensor, B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The target gradient G (m × n) mapped onto factors A (m × r), B (r × n): (G Bᵀ, Aᵀ G)."""
    return G @ B.T, A.T @ G


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 1.0 - torch.nn.functional.cosine_similarity(a.reshape(1, -1), b.reshape(1, -1), eps=1e-12)[0]


def kd_loss(target_logits: torch.Tensor, proxy_logits: torch.Tensor, labels: torch.Tensor, tau: float) -> torch.Tensor:
    """τ² · mean over response tokens of KL(softmax(target/τ) ‖ softmax(proxy/τ)) (logits at t predict t + 1)."""
    mask = labels[:, 1:] != IGNORE
    t = torch.log_softmax(target_logits[:, :-1][mask].float() / tau, -1)
    p = torch.log_softmax(proxy_logits[:, :-1][mask].float() / tau, -1)
    return tau**2 * (t.exp() * (t - p)).sum(-1).mean()


@dataclass
class AlignStep:
    loss: float
    align: float
    kd: float
    seconds: float


@dataclass
class Alignment:
    """The pairs of (target dense weight, proxy factor layer) that stage 2 aligns."""
    target: torch.nn.Module
    proxy: torch.nn.Module
    pairs: list[tuple[torch.nn.Parameter, FactorLinear]] = field(default_factory=list)

    @classmethod
    def of(cls, target, proxy) -> Alignment:
        dense = dict(target.named_modules())
        pairs = [(dense[name].weight, m) for name, m in proxy.named_modules() if isinstance(m, FactorLinear)]
        return cls(target, proxy, pairs)

    def factors(self) -> list[torch.nn.Parameter]:
        return [f.A for _, f in self.pairs] + [f.B for _, f in self.pairs]

    def loss(self, ids, lab, att, lambda_kd: float = 0.0, tau: float = 2.0) -> tuple[torch.Tensor, dict]:
        weights = [w for w, _ in self.pairs]
        t_out = self.target(input_ids=ids, attention_mask=att, labels=lab)
        G = torch.autograd.grad(t_out.loss, weights)
        p_out = self.proxy(input_ids=ids, attention_mask=att, labels=lab)
        grads = torch.autograd.grad(p_out.loss, self.factors(), create_graph=True)
        n = len(self.pairs)
        terms = []
        for i, (_, f) in enumerate(self.pairs):
            gA, gB = factor_space(G[i].detach(), f.A, f.B)
            terms.append(0.5 * (cosine_distance(grads[i], gA) + cosine_distance(grads[n + i], gB)))
        align = torch.stack(terms).mean()
        kd = kd_loss(t_out.logits.detach(), p_out.logits, lab, tau) if lambda_kd else torch.zeros((), device=align.device)
        return align + lambda_kd * kd, {"align": float(align.detach()), "kd": float(kd.detach())}


@contextlib.contextmanager
def trainable_only(module: torch.nn.Module, params: Iterable[torch.nn.Parameter]):
    """Gradients for `params` alone inside the block (the rest frozen), restored after."""
    keep = {id(p) for p in params}
    before = {p: p.requires_grad for p in module.parameters()}
    for p in module.parameters():
        p.requires_grad_(id(p) in keep)
    try:
        yield
    finally:
        for p, flag in before.items():
            p.requires_grad_(flag)


def align(target, proxy, batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], epochs: int = 5,
          lr: float = 1e-4, weight_decay: float = 0.01, lambda_kd: float = 0.0, tau: float = 2.0,
          seed: int = 0) -> list[AlignStep]:
    """AdamW on the proxy's factors over `batches` (ids, labels, attention) for `epochs`; the loss per step.
    The proxy runs eager attention here: the double backward needs attention written in differentiable ops."""
    pairing = Alignment.of(target, proxy)
    opt = torch.optim.AdamW(pairing.factors(), lr=lr, weight_decay=weight_decay)
    g = torch.Generator().manual_seed(seed)
    steps: list[AlignStep] = []
    was = proxy.config._attn_implementation
    proxy.set_attn_implementation("eager")
    target.eval()
    proxy.eval()  # no dropout: the gradients compared are the models' own
    try:
        with trainable_only(target, [w for w, _ in pairing.pairs]), trainable_only(proxy, pairing.factors()):
            for _ in range(epochs):
                for b in torch.randperm(len(batches), generator=g).tolist():
                    t0 = time.perf_counter()
                    loss, parts = pairing.loss(*batches[b], lambda_kd=lambda_kd, tau=tau)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    steps.append(AlignStep(float(loss.detach()), parts["align"], parts["kd"], time.perf_counter() - t0))
    finally:
        proxy.set_attn_implementation(was)
    return steps
