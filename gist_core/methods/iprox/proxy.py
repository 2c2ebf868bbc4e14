"""The proxy as a model: factor layers in place of the target's linear layers, the probes IPSVD needs, and the
layer-extraction baseline.

A `FactorLinear` is an `nn.Linear` whose weight is the product A·B (y = A(Bx) + b, never formed): transformers
runs it like the dense layer, and peft wraps it with LoRA like any Linear (its LoRA path runs beside the
factors, with the same shapes as on the target, so the proxy's LoRA gradients live in the target's space).
No paths here: saving and loading are in gist_core.methods.iprox.store.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from gist_core.methods.iprox.ipsvd import estimate_rank, ipsvd_factors, random_factors, svd_factors


class FactorLinear(nn.Linear):
    """y = A (B x) + bias with A (out × r) and B (r × in) trainable; no dense weight exists."""

    def __init__(self, A: torch.Tensor, B: torch.Tensor, bias: torch.Tensor | None = None):
        nn.Module.__init__(self)  # not nn.Linear.__init__: it would allocate the dense weight
        self.out_features, self.in_features = A.shape[0], B.shape[1]
        self.rank = A.shape[1]
        self.A = nn.Parameter(A.contiguous())
        self.B = nn.Parameter(B.contiguous())
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)

    @classmethod
    def empty(cls, out_features: int, in_features: int, rank: int, bias: bool, dtype=torch.float32):
        return cls(torch.zeros(out_features, rank, dtype=dtype), torch.zeros(rank, in_features, dtype=dtype),
                   torch.zeros(out_features, dtype=dtype) if bias else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(nn.functional.linear(x, self.B), self.A, self.bias)

    @property
    def weight(self) -> torch.Tensor:
        """The dense product A·B, detached: what peft and transformers read for shapes, dtype and device. It is
        a fresh tensor, so an in-place merge into it would be lost: merge LoRA into a proxy through the factors."""
        return (self.A @ self.B).detach()

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"


def target_linears(model, suffixes: Iterable[str]) -> dict[str, nn.Linear]:
    """The dense nn.Linear layers whose name ends with one of `suffixes` (q_proj, ..., down_proj), in order."""
    suffixes = tuple(suffixes)
    return {name: m for name, m in model.named_modules()
            if type(m) is nn.Linear and name.rsplit(".", 1)[-1] in suffixes}


def factor_layers(model) -> dict[str, FactorLinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, FactorLinear)}


def replace_module(model, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


@dataclass
class Probes:
    """Per layer: input columns H (n × N) and output-gradient columns D (m × N) at the same probe tokens."""
    H: dict[str, torch.Tensor]
    D: dict[str, torch.Tensor]

    @property
    def n_columns(self) -> int:
        return min((h.shape[1] for h in self.H.values()), default=0)


def collect_probes(model, sequences: list[list[int]], layers: dict[str, nn.Linear], max_probes: int = 1024,
                   seed: int = 0) -> Probes:
    """Hooks on each layer keep its input and output gradient at `max(1, max_probes // len(sequences))` random
    token positions of every probe sequence, one sequence at a time (no padding), under the loss over all of
    the sequence's tokens (as the reference: prompt tokens included). Columns are truncated to max_probes."""
    if not sequences:
        raise ValueError("no probe sequences")
    g = torch.Generator().manual_seed(seed)
    per_seq = max(1, max_probes // len(sequences))
    H = {n: [] for n in layers}
    D = {n: [] for n in layers}
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    for ids in sequences:
        pos = torch.randperm(len(ids), generator=g)[:per_seq].sort().values.to(device)

        def hook(name, pos):
            def fwd(module, inp, out):
                H[name].append(inp[0][0, pos].detach().T.to("cpu", torch.float32))
                out.register_hook(lambda grad: D[name].append(grad[0, pos].detach().T.to("cpu", torch.float32)))
            return fwd

        handles = [m.register_forward_hook(hook(n, pos)) for n, m in layers.items()]
        try:
            x = torch.tensor([ids], device=device)
            with torch.enable_grad():
                emb = model.get_input_embeddings()(x).detach().requires_grad_(True)  # frozen weights: grads still flow
                loss = model(inputs_embeds=emb, labels=x).loss
                loss.backward(inputs=[emb])
        finally:
            for h in handles:
                h.remove()
    model.train(was_training)
    cat = {n: (torch.cat(H[n], 1)[:, :max_probes], torch.cat(D[n], 1)[:, :max_probes]) for n in layers}
    return Probes({n: h for n, (h, _) in cat.items()}, {n: d for n, (_, d) in cat.items()})


@dataclass
class LayerPlan:
    name: str
    out_features: int
    in_features: int
    rank: int | None  # None: stays dense

    @property
    def params(self) -> int:
        return self.out_features * self.in_features if self.rank is None else self.rank * (self.out_features
                                                                                            + self.in_features)


def plan_ranks(layers: dict[str, nn.Linear], rho: float, multiple: int) -> list[LayerPlan]:
    return [LayerPlan(n, m.out_features, m.in_features, estimate_rank(m.out_features, m.in_features, rho, multiple))
            for n, m in layers.items()]


def compress(model, plan: list[LayerPlan], init: str, probes: Probes | None = None, seed: int = 0) -> None:
    """Replace every planned layer of `model` (in place) by its factors under `init` (ipsvd | svd | random)."""
    for i, p in enumerate(plan):
        if p.rank is None:
            continue
        dense = model.get_submodule(p.name)
        W = dense.weight.detach()
        if init == "ipsvd":
            A, B = ipsvd_factors(W.cpu(), probes.H[p.name], probes.D[p.name], p.rank)
        elif init == "svd":
            A, B = svd_factors(W.cpu(), p.rank)
        elif init == "random":
            A, B = random_factors(p.out_features, p.in_features, p.rank, seed + i, W.dtype)
        else:
            raise ValueError(f"unknown init '{init}'")
        new = FactorLinear(A.to(W.device, W.dtype), B.to(W.device, W.dtype), dense.bias)
        replace_module(model, p.name, new)


def skeleton(model, plan: list[LayerPlan]) -> None:
    """Empty factor layers of the planned shapes (a stored proxy's state dict then fills them)."""
    for p in plan:
        if p.rank is not None:
            dense = model.get_submodule(p.name)
            replace_module(model, p.name, FactorLinear.empty(p.out_features, p.in_features, p.rank,
                                                             dense.bias is not None, dense.weight.dtype))


def kept_layers(n_layers: int, keep: int) -> list[int]:
    """The first layer of each of `keep` equal buckets of the stack (so the first layer is always kept)."""
    keep = min(max(keep, 1), n_layers)
    return [int(i * n_layers / keep) for i in range(keep)]


def extract_layers(model, keep: list[int]) -> None:
    """The layer-extraction baseline, in place: only the transformer layers `keep` remain (same embeddings,
    norm and head); the config says so, so the model saves and reloads as an ordinary one."""
    stack = model.model.layers
    model.model.layers = nn.ModuleList([stack[i] for i in keep])
    for new_idx, layer in enumerate(model.model.layers):
        if hasattr(layer, "self_attn") and hasattr(layer.self_attn, "layer_idx"):
            layer.self_attn.layer_idx = new_idx  # the KV cache is indexed by position in the stack
    cfg = model.config
    if getattr(cfg, "layer_types", None):
        cfg.layer_types = [cfg.layer_types[i] for i in keep]
    cfg.num_hidden_layers = len(keep)


def count_params(model) -> int:
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) not in seen:  # tied embeddings count once
            seen.add(id(p))
            total += p.numel()
    return total
