"""GAST's per-layer selection rule (paper Eq. 9–11, as far as the sources go; names ours).

For a batch of B examples and L layers, a (B, L) holds a_{i,ℓ} = ⟨g_{i,ℓ}, ĝ_ℓ⟩: example i's adapter gradient in
layer ℓ against the support gradient. Per layer the scores are standardised within the batch and
p_{·,ℓ} = softmax(ã_{·,ℓ} / τ); K_select indices are drawn from p (the paper's *stochastic* rule), or taken as the
top K (*topk*), or uniformly (*random*); *all* keeps the whole batch (plain LoRA). The paper does not state τ, with
or without replacement, or mean vs sum: they are options (defaults τ = 1, without replacement, mean).

The result is a (B, L) weight matrix: layer ℓ's update is Σ_i w_{i,ℓ} g_{i,ℓ}. With `mean`, w = counts / K, so
the learning rate keeps its meaning next to plain LoRA on a batch of K.
"""
from __future__ import annotations

import re

import torch

RULES = ("stochastic", "topk", "random", "all")
_LAYER = re.compile(r"\.layers\.(\d+)\.")


def layer_of(param_name: str) -> str:
    """The transformer layer a parameter belongs to ('layers.3'), or its own name outside the layer stack."""
    m = _LAYER.search(param_name)
    return f"layers.{m.group(1)}" if m else param_name


def layer_groups(param_names: list[str]) -> tuple[list[str], list[int]]:
    """(layer names in order of first appearance, the layer index of every parameter)."""
    names: list[str] = []
    index = []
    for n in param_names:
        layer = layer_of(n)
        if layer not in names:
            names.append(layer)
        index.append(names.index(layer))
    return names, index


def standardise(a: torch.Tensor) -> torch.Tensor:
    """Per column (layer): (a − mean) / std over the batch; a constant column becomes 0."""
    a = a.double()
    sd = a.std(dim=0, unbiased=False)
    return (a - a.mean(dim=0)) / torch.where(sd > 0, sd, torch.ones_like(sd))


def probabilities(a: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """(B, L) per-layer selection probabilities: softmax over the batch of the standardised scores / τ."""
    return torch.softmax(standardise(a) / temperature, dim=0)


def select_counts(a: torch.Tensor, k: int, rule: str, generator: torch.Generator, temperature: float = 1.0,
                  replacement: bool = False) -> torch.Tensor:
    """(B, L) how many times each example is selected for each layer (0/1 without replacement)."""
    if rule not in RULES:
        raise ValueError(f"selection rule must be one of {', '.join(RULES)}, got '{rule}'")
    B, L = a.shape
    counts = torch.zeros(B, L, dtype=torch.float64)
    if rule == "all" or k >= B and not replacement:
        counts[:] = 1.0
        return counts
    p = probabilities(a, temperature)
    for layer in range(L):
        if rule == "stochastic":
            idx = torch.multinomial(p[:, layer], k, replacement=replacement, generator=generator)
        elif rule == "topk":
            idx = torch.argsort(a[:, layer].double(), descending=True, stable=True)[:k]
        else:
            idx = (torch.randint(B, (k,), generator=generator) if replacement
                   else torch.randperm(B, generator=generator)[:k])
        counts[:, layer].index_add_(0, idx, torch.ones(len(idx), dtype=torch.float64))
    return counts


def weights(counts: torch.Tensor, aggregate: str = "mean") -> torch.Tensor:
    """(B, L) update weights: mean over the selected (counts / K per layer) or their sum (counts)."""
    if aggregate == "sum":
        return counts
    return counts / counts.sum(dim=0, keepdim=True).clamp_min(1.0)
