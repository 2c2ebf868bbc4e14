"""LESS (Xia et al., ICML 2024), faithful to princeton-nlp/LESS (methods.md §5). Math only: no run paths.

Training features, per warm-up checkpoint i: one simulated Adam step from the stored moments,
    m' = 0.9 m + 0.1 g,  v' = 0.999 v + 0.001 g²,  Γ = m' / sqrt(v' + 1e-8)
(no bias correction, epsilon inside the square root), projected with a seeded Rademacher
matrix R (D × d) and L2-normalised. Validation features: the plain gradient, same R, normalised.
Score(z) = max over subtasks t of mean_{j in t} sum_i w_i <phi_i(z), psi_i(v_j)>, w_i proportional
to the mean learning rate of epoch i.

Optimizer moments come from our own checkpoints (`optimizer_moments.safetensors`, keyed by
parameter name) or from Hugging Face Trainer checkpoints (`optimizer.pt` / `optimizer.bin`, keyed
by index or by name, PEFT prefixes allowed); `read_moments` maps either onto the gradient order.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gist_core.errors import MomentsError
from gist_core.methods.scoring import group_means
from gist_core.store.artefacts import load_torch_tensors
from gist_core.store.layout import ckpt_meta, ckpt_moments

ADAM_BETA1, ADAM_BETA2, ADAM_EPS = 0.9, 0.999, 1e-8
BLOCK_ROWS = 4096  # rows of R generated from one seed: R is the same however the work is chunked


def adam_direction(g: torch.Tensor, m: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Γ for a batch of gradients g (B, D) from the stored first/second moments (D,)."""
    m2 = ADAM_BETA1 * m + (1 - ADAM_BETA1) * g
    v2 = ADAM_BETA2 * v + (1 - ADAM_BETA2) * g * g
    return m2 / torch.sqrt(v2 + ADAM_EPS)


class RademacherProjector:
    """x -> x R / sqrt(d) with R a seeded ±1 matrix (D × d), generated in fixed blocks of rows.

    Blocks are cached while their total stays under `cache_bytes` (then every batch is one pass of
    matmuls); beyond that each block is regenerated per call, so a D × d matrix is never built in
    one piece unless it fits."""

    def __init__(self, dim: int, d: int, seed: int = 0, cache_bytes: int = 4 << 30, device="cpu"):
        if d < 1 or dim < 1:
            raise ValueError(f"projection needs dim >= 1 and d >= 1, got {dim}, {d}")
        self.dim, self.d, self.seed, self.device = dim, d, seed, torch.device(device)
        self.cache = dim * d * 4 <= cache_bytes
        self._blocks: dict[int, torch.Tensor] = {}

    def block(self, b: int) -> torch.Tensor:
        if b in self._blocks:
            return self._blocks[b]
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + b)
        rows = min(BLOCK_ROWS, self.dim - b * BLOCK_ROWS)
        R = torch.empty(rows, self.d).bernoulli_(0.5, generator=g).mul_(2).sub_(1).to(self.device)
        if self.cache:
            self._blocks[b] = R
        return R

    def matrix(self) -> torch.Tensor:
        """The whole R (tests and small dims only)."""
        return torch.cat([self.block(b) for b in range(self.n_blocks)])

    @property
    def n_blocks(self) -> int:
        return -(-self.dim // BLOCK_ROWS)

    def project(self, X: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, d) float32."""
        if X.shape[1] != self.dim:
            raise ValueError(f"projector built for dim {self.dim}, got rows of {X.shape[1]}")
        X = X.to(self.device, torch.float32)
        out = torch.zeros(X.shape[0], self.d, device=self.device)
        for b in range(self.n_blocks):
            s = b * BLOCK_ROWS
            out += X[:, s:s + BLOCK_ROWS] @ self.block(b)
        return out / self.d ** 0.5


def unit_rows(X: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    if isinstance(X, np.ndarray):
        n = np.linalg.norm(X, axis=1, keepdims=True)
        return X / np.where(n > 0, n, 1.0)
    return X / X.norm(dim=1, keepdim=True).clamp_min(1e-30)


# ----------------------------------------------------------------------------- scores
def less_per_example(train_feats: list[np.ndarray], val_feats: list[np.ndarray], weights: list[float],
                     block_rows: int = 2048) -> np.ndarray:
    """(N, N_v): the weighted cosine sum of every pool row with every validation example."""
    w = np.asarray(weights, dtype=np.float64)
    if len(train_feats) != len(val_feats) or len(train_feats) != len(w):
        raise ValueError("one train feature set, one val feature set and one weight per checkpoint")
    w = w / w.sum()
    n = train_feats[0].shape[0]
    out = np.zeros((n, val_feats[0].shape[0]), dtype=np.float64)
    for Xi, Vi, wi in zip(train_feats, val_feats, w):
        V = unit_rows(np.asarray(Vi, dtype=np.float64))
        for s in range(0, n, block_rows):
            out[s:s + block_rows] += wi * (unit_rows(np.asarray(Xi[s:s + block_rows], dtype=np.float64)) @ V.T)
    return out.astype(np.float32)


def less_columns(train_feats: list[np.ndarray], val_feats: list[np.ndarray], weights: list[float],
                 groups: dict[str, list[int]], block_rows: int = 2048) -> np.ndarray:
    """(N, T): per subtask t, mean over its validation examples of the weighted cosine sum."""
    return group_means(less_per_example(train_feats, val_feats, weights, block_rows), groups)


def lr_weights(mean_lrs: list[float | None]) -> tuple[list[float], str]:
    """Checkpoint weights proportional to the epoch's mean LR; equal weights when any is unknown."""
    if any(lr is None or not lr > 0 for lr in mean_lrs):
        return [1.0 / len(mean_lrs)] * len(mean_lrs), "equal (a checkpoint had no learning-rate log)"
    total = sum(mean_lrs)
    return [lr / total for lr in mean_lrs], "mean learning rate of each epoch"


# ----------------------------------------------------------------------------- checkpoints
def canonical_name(name: str) -> str:
    """Parameter name without PEFT's wrappers: 'base_model.model.' prefixes and the adapter name."""
    while name.startswith("base_model.model."):
        name = name[len("base_model.model."):]
    name = name.removeprefix("module.")
    return re.sub(r"\.(lora_[AB])\.[^.]+\.weight$", r".\1.weight", name)


def _trainer_order(names: list[str]) -> list[str]:
    """The order transformers.Trainer puts parameters into AdamW's index-keyed state: the
    weight-decay group (no bias, no norm) first, then the rest, each in named_parameters order."""
    nodecay = [n for n in names if "bias" in n or "norm" in n.lower()]
    return [n for n in names if n not in nodecay] + nodecay


@dataclass
class Moments:
    m: torch.Tensor   # (D,) exp_avg in gradient order
    v: torch.Tensor   # (D,) exp_avg_sq
    source: str       # which file and how it was keyed


def _flatten(per_name: dict[str, tuple[torch.Tensor, torch.Tensor]], names: list[str], sizes: list[int],
             where: str) -> tuple[torch.Tensor, torch.Tensor]:
    ms, vs = [], []
    for n, size in zip(names, sizes):
        if n not in per_name:
            raise MomentsError(f"{where}: no optimizer moments for parameter '{n}'")
        m, v = per_name[n]
        if m.numel() != size or v.numel() != size:
            raise MomentsError(f"{where}: moments of '{n}' have {m.numel()} values, the parameter has {size}")
        ms.append(m.reshape(-1).float())
        vs.append(v.reshape(-1).float())
    return torch.cat(ms), torch.cat(vs)


def read_moments(ckpt_dir: str | Path, names: list[str], sizes: list[int]) -> Moments:
    """Adam moments of the trainable parameters `names` (gradient order, sizes given) from a checkpoint."""
    ckpt = Path(ckpt_dir)
    canon = [canonical_name(n) for n in names]
    ours = ckpt_moments(ckpt)
    if ours.exists():
        raw = load_torch_tensors(ours)
        per = {}
        for key in raw:
            if key.endswith(".exp_avg"):
                base = key[: -len(".exp_avg")]
                per[canonical_name(base)] = (raw[key], raw.get(base + ".exp_avg_sq"))
        if any(v is None for _, v in per.values()):
            raise MomentsError(f"{ours}: an exp_avg without its exp_avg_sq")
        m, v = _flatten(per, canon, sizes, str(ours))
        return Moments(m, v, f"{ours.name} (by name)")
    for fname in ("optimizer.pt", "optimizer.bin"):
        path = ckpt / fname
        if path.exists():
            return _read_torch_optimizer(path, names, canon, sizes)
    raise MomentsError(f"{ckpt}: no optimizer state (expected optimizer_moments.safetensors, optimizer.pt or "
                       "optimizer.bin); LESS needs the warm-up's Adam moments")


def _read_torch_optimizer(path: Path, names: list[str], canon: list[str], sizes: list[int]) -> Moments:
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is the same user problem
        raise MomentsError(f"{path}: cannot read optimizer state ({type(e).__name__}: {e})") from None
    state = sd.get("state") if isinstance(sd, dict) else None
    if not isinstance(state, dict) or not state:
        raise MomentsError(f"{path}: no 'state' with Adam moments (is this an AdamW optimizer state_dict?)")
    entries = {}
    for key, st in state.items():
        if not isinstance(st, dict) or "exp_avg" not in st or "exp_avg_sq" not in st:
            raise MomentsError(f"{path}: state entry {key!r} has no exp_avg/exp_avg_sq (not Adam?)")
        entries[key] = (st["exp_avg"], st["exp_avg_sq"])
    if all(isinstance(k, str) for k in entries):
        per = {canonical_name(k.removesuffix(".exp_avg")): v for k, v in entries.items()}
        m, v = _flatten(per, canon, sizes, str(path))
        return Moments(m, v, f"{path.name} (by name)")
    order = [i for g in sd.get("param_groups", [{"params": sorted(entries)}]) for i in g["params"]]
    if len(order) != len(names):
        raise MomentsError(f"{path}: optimizer holds {len(order)} parameters, the model has {len(names)} trainable "
                           "ones (a different LoRA configuration?)")
    by_name = dict(zip(_trainer_order(canon), order))
    per = {n: entries[i] for n, i in by_name.items() if i in entries}
    m, v = _flatten(per, canon, sizes, str(path))
    return Moments(m, v, f"{path.name} (by index, Trainer parameter order)")


def checkpoint_mean_lr(ckpt_dir: str | Path) -> float | None:
    """The epoch's mean LR: our meta.json, or a Trainer checkpoint's trainer_state.json log."""
    ckpt = Path(ckpt_dir)
    meta = ckpt_meta(ckpt)
    if meta.exists():
        return json.loads(meta.read_text()).get("mean_lr")
    state = ckpt / "trainer_state.json"
    if not state.exists():
        return None
    st = json.loads(state.read_text())
    epoch = float(st.get("epoch") or 0)
    lrs = [h["learning_rate"] for h in st.get("log_history", [])
           if "learning_rate" in h and epoch - 1 < float(h.get("epoch", -1)) <= epoch + 1e-9]
    return float(np.mean(lrs)) if lrs else None
