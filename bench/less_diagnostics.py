"""Why LESS ranks the way it does on a finished compare run: how much of its Adam-preconditioned feature is the
example's own gradient, and how far its features and scores are from one constant vector.

    python bench/less_diagnostics.py runs/real-smollm2-lookup [--sample 64]

LESS scores an example by Γ = m' / sqrt(v' + ε) with m' = 0.9 m + 0.1 g and v' = 0.999 v + 0.001 g² from the
warm-up's optimizer moments. When |0.1 g| is small against |0.9 m| the feature is the moments' direction for
every example, the scores differ only by noise, and selection is close to random. Printed per checkpoint: the
median of |0.1 g| / |0.9 m| over a sample of pool rows (recomputed with the run's own engine), the median
cosine of a stored pool feature with the mean feature (1.0 = all the same), and the spread of the LESS score
columns (std over the pool / the columns' mean absolute value) beside GIST's. It measures; it decides nothing.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from gist_core.config import RunConfig
from gist_core.grads.per_example import GradientEngine, collect_flat
from gist_core.methods.less.features import read_moments
from gist_core.runner.pipeline import Run


def feature_spread(run: Path) -> dict:
    scores = pd.read_parquet(run / "compare" / "scores.parquet")
    out = {}
    for family in ("less", "gist", "rawcos"):
        cols = scores[[c for c in scores.columns if c.startswith(f"col:{family}:")]].to_numpy(np.float64)
        if cols.size:
            out[family] = float(np.median(cols.std(0) / np.maximum(np.abs(cols).mean(0), 1e-12)))
    return out


def stored_feature_coherence(run: Path, epoch: int) -> float:
    F = np.load(run / "compare" / "less" / f"ckpt-{epoch}.npy").astype(np.float64)
    mean = F.mean(0)
    cos = F @ mean / (np.linalg.norm(F, axis=1) * np.linalg.norm(mean) + 1e-30)
    return float(np.median(cos))


def gradient_share(run: Path, epoch: int, sample: int) -> float:
    """median |0.1 g| / |0.9 m| over `sample` pool rows at warm-up checkpoint `epoch`."""
    cfg = RunConfig.from_json(json.loads((run / "config.json").read_text()))
    r = Run(cfg, run, quiet=True)
    inputs = r.inputs  # first: its preflight wraps and unwraps the model, which would drop an adapter put on before
    tok, _ = r.tokenizer_and_model()
    engine = GradientEngine(r.adapter_model(epoch), tok.pad_token_id)
    rows = sorted(np.random.default_rng(0).choice(len(inputs.pool), size=min(sample, len(inputs.pool)),
                                                  replace=False).tolist())
    G = torch.from_numpy(collect_flat(engine, inputs.pool_tok, rows, cfg.grad_batch_size))
    mom = read_moments(run / "checkpoints" / f"ckpt-{epoch}", [b.name for b in engine.blocks],
                       [b.size for b in engine.blocks])
    return float(np.median((0.1 * G.norm(dim=1) / (0.9 * mom.m.norm())).numpy()))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path)
    p.add_argument("--sample", type=int, default=64)
    a = p.parse_args(argv)
    epochs = sorted(int(f.stem.split("-")[1]) for f in (a.run / "compare" / "less").glob("ckpt-*.npy")
                    if not f.stem.endswith("done"))
    out = {"run": str(a.run), "score_spread": feature_spread(a.run), "checkpoints": {}}
    for e in epochs:
        out["checkpoints"][e] = {"gradient_over_moment": round(gradient_share(a.run, e, a.sample), 4),
                                 "feature_cosine_to_mean": round(stored_feature_coherence(a.run, e), 4)}
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
