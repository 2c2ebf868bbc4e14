"""The baselines people use, as scores over the pool. Math on arrays (and one forward pass): no paths.

Every score-based baseline returns a `scoring.Scores` (per-subtask columns, score = their max)
so the two selection rules (global top-k, per-subtask quota) apply to it exactly as to GIST.
- raw-gradient cosine: cos(g(z), c_t) with c_t the mean raw validation gradient of subtask t:
  GIST without the subspace (the ablation that says whether the subspace matters);
- embedding similarity (RDS in the LESS paper): mean-pooled last hidden state of the base model,
  subtask mean of cosines to the target examples, max over subtasks;
- RDS+ (Ivison et al., arXiv 2503.01807): the same hidden states pooled with weights that grow with the
  token's position (w_i proportional to i, as SGPT does), cosines to each target example; its own rule is the
  round-robin over target examples (`--balance examples`);
- MiniLM: all-MiniLM-L6-v2 sentence embeddings (gist_core.model.embedder) of prompt and response;
- length: longest responses first (a common, surprisingly strong heuristic);
- random and full data need no scores.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from gist_core.data.formatting import IGNORE
from gist_core.grads.per_example import norms_from_squares, pad_batch, squared_norms
from gist_core.methods import scoring


def random_selection(n: int, k: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))


def oracle_selection(relevant: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k true target examples (all of them when fewer), sampled with the seed."""
    idx = np.flatnonzero(relevant)
    if len(idx) <= k:
        return idx
    return np.sort(np.random.default_rng(seed).choice(idx, size=k, replace=False))


def length_scores(response_tokens: np.ndarray, groups: dict[str, list[int]]) -> scoring.Scores:
    """Response length in tokens, the same value in every column (it ignores the target)."""
    col = np.asarray(response_tokens, dtype=np.float32)[:, None]
    n_val = sum(len(idx) for idx in groups.values())
    return scoring.columns_as_scores(np.repeat(col, len(groups), axis=1), list(groups),
                                     np.repeat(col, n_val, axis=1), groups)


# ----------------------------------------------------------------------------- raw-gradient cosine
def rawcos_features(g: torch.Tensor, G_val: torch.Tensor) -> torch.Tensor:
    """(B, N_v + 1): dot products with every validation gradient, then the gradient's norm (the same definition
    as the norm GIST's projection store keeps)."""
    return torch.cat([g @ G_val.T, norms_from_squares(squared_norms(g))[:, None]], dim=1)


def rawcos_per_example(features: np.ndarray, val_gram: np.ndarray) -> np.ndarray:
    """(N, N_v) cos(g, g_j) with every validation gradient, from <g, g_j>, |g| and the validation Gram matrix."""
    F = np.asarray(features, dtype=np.float64)
    norms = F[:, -1:]
    val_norms = np.sqrt(np.clip(np.diag(val_gram), 0.0, None))[None, :]
    denom = np.where(norms > 0, norms, 1.0) * np.where(val_norms > 0, val_norms, 1e-30)
    return (F[:, :-1] / denom).astype(np.float32)


def rawcos_columns(features: np.ndarray, val_gram: np.ndarray, groups: dict[str, list[int]]) -> np.ndarray:
    """(N, T) cos(g, mean_{j in t} g_j), from <g, g_j> and |g| and the validation Gram matrix."""
    F = np.asarray(features, dtype=np.float64)
    dots, norms = F[:, :-1], F[:, -1]
    cols = np.empty((F.shape[0], len(groups)), dtype=np.float32)
    for t, idx in enumerate(groups.values()):
        c_norm = np.sqrt(max(val_gram[np.ix_(idx, idx)].mean(), 0.0))
        denom = np.where(norms > 0, norms, 1.0) * max(c_norm, 1e-30)
        cols[:, t] = dots[:, idx].mean(1) / denom
    return cols


# ----------------------------------------------------------------------------- embeddings
POOLINGS = ("mean", "position")


@torch.no_grad()
def mean_pooled_embeddings(model, input_ids: list[list[int]], pad_id: int, batch_size: int = 32,
                           pooling: str = "mean", on_batch: Callable[[int], None] | None = None) -> np.ndarray:
    """(N, H) the base model's last hidden state pooled over the real tokens (prompt and response): their mean, or
    (pooling 'position', RDS+) a weighted mean with weight i on the i-th real token (1-based)."""
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling '{pooling}' (use one of {', '.join(POOLINGS)})")
    model.eval()
    device = next(model.parameters()).device
    order = np.argsort([len(x) for x in input_ids], kind="stable")
    out = None
    for s in range(0, len(order), batch_size):
        rows = order[s:s + batch_size]
        ids, _, att = pad_batch([input_ids[i] for i in rows], [[IGNORE] * len(input_ids[i]) for i in rows],
                                pad_id, device)
        h = model(input_ids=ids, attention_mask=att, output_hidden_states=True).hidden_states[-1].float()
        mask = att.float()
        if pooling == "position":  # right padding: the real tokens are 1..len, the weights their positions
            mask = mask * torch.cumsum(mask, dim=1)
        w = mask.unsqueeze(-1)
        emb = ((h * w).sum(1) / w.sum(1).clamp_min(1.0)).cpu().numpy()
        if out is None:
            out = np.zeros((len(input_ids), emb.shape[1]), dtype=np.float32)
        out[rows] = emb
        if on_batch:  # the stage's progress bar: a 2,000-row pool is minutes of forward passes on a CPU
            on_batch(len(rows))
    return out


def embedding_per_example(pool_emb: np.ndarray, target_emb: np.ndarray, block_rows: int = 1 << 15) -> np.ndarray:
    """(N, N_v): cosine of every pool embedding with every target embedding."""
    T = scoring._unit_rows(np.asarray(target_emb, dtype=np.float64))
    out = np.empty((len(pool_emb), len(T)), dtype=np.float32)
    for s in range(0, len(pool_emb), block_rows):
        out[s:s + block_rows] = scoring._unit_rows(np.asarray(pool_emb[s:s + block_rows], dtype=np.float64)) @ T.T
    return out


def embedding_columns(pool_emb: np.ndarray, target_emb: np.ndarray, groups: dict[str, list[int]],
                      block_rows: int = 1 << 15) -> np.ndarray:
    """(N, T): per subtask, mean cosine of a pool embedding to the subtask's target embeddings."""
    return scoring.group_means(embedding_per_example(pool_emb, target_emb, block_rows), groups)
