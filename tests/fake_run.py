"""A synthetic run directory with every artefact the dashboard reads (numpy/pandas/safetensors only).

Geometry: each target subtask has a direction in a small gradient space; validation gradients
scatter around it, pool examples of that skill point along it (wrong answers and look-alikes
less so), other skills are noise. The subspace and projections are computed exactly as the
pipeline defines them, so scores, ranks and precision behave like a real run's.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from safetensors.numpy import save_file

from gist_core import scoring

SUBTASKS = ["kth_word", "key_lookup", "last_word", "word_after"]
OTHER_SKILLS = ["uppercase_word", "reverse_list", "count_words", "first_letter"]


def _config(n_epochs: int, r: int, budget: float) -> dict:
    return {"model": "sample_data/tiny-lm", "train": "fake/pool.jsonl", "target": "fake/lookup/val.jsonl",
            "budget": budget, "rank": None, "tau": 0.95, "r_max": r, "aggregation": "subtask_mean",
            "balance": "global", "checkpoint": 1, "warmup_fraction": 0.05, "max_length": 256, "grad_batch_size": 16,
            "lora": {"r": 8, "alpha": 16.0, "dropout": 0.0, "target_modules": None},
            "warmup": {"epochs": n_epochs, "lr": 0.001, "batch_size": 16, "grad_accum": 1, "warmup_ratio": 0.03,
                       "weight_decay": 0.0, "seed": 3, "bf16": False},
            "target_split": "train", "train_split": "train", "limit_train": None, "device": "auto",
            "dtype": "float32", "trust_remote_code": False, "seed": 0}


def _subspace(G: np.ndarray, r: int) -> dict:
    U, S, Vt = np.linalg.svd(G.astype(np.float64), full_matrices=False)
    return {"basis": Vt[:r].T.astype(np.float32), "sigma": S.astype(np.float64),
            "val_coords": (U[:, :r] * S[:r]).astype(np.float32)}


def make_fake_run(run_dir, n_pool: int = 2000, n_val: int = 20, r: int = 8, n_epochs: int = 2,
                  dim: int = 48, budget: float = 0.05, seed: int = 0) -> Path:
    """Write a complete, consistent run directory and return its path (r <= n_val <= dim)."""
    d = Path(run_dir)
    (d / "checkpoints").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    T = len(SUBTASKS)
    dirs = rng.normal(size=(T, dim))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)

    # target (validation) examples: n_val spread round-robin over the subtasks
    val_sub = [SUBTASKS[i % T] for i in range(n_val)]
    target = pd.DataFrame({"id": [f"val-{s}-{i}" for i, s in enumerate(val_sub)],
                           "prompt": [f"in the list a b c, which word is number {i % 3 + 1}? ({s})" for i, s in enumerate(val_sub)],
                           "response": [["a", "b", "c"][i % 3] for i in range(n_val)], "source": "target-lookup",
                           "skill": val_sub, "subtask": val_sub, "kind": "correct", "line": np.arange(1, n_val + 1)})

    # pool: 40% target skills (10% of those wrong, 6% look-alikes), the rest other skills
    skills = np.where(rng.random(n_pool) < 0.4, rng.choice(SUBTASKS, n_pool), rng.choice(OTHER_SKILLS, n_pool))
    kinds = rng.choice(["correct", "wrong", "distractor"], size=n_pool, p=[0.84, 0.10, 0.06])
    sources = np.where(np.isin(skills, SUBTASKS[:2] + OTHER_SKILLS[:2]), "synthetic-list", "synthetic-word")
    ids = [f"pool-{i:06d}" for i in range(n_pool)]
    examples = pd.DataFrame({"id": ids, "prompt": [f"task {i}: do {s} on the list x y z" for i, s in enumerate(skills)],
                             "response": [f"answer {i % 7}" for i in range(n_pool)], "source": sources,
                             "skill": skills, "subtask": skills, "kind": kinds, "line": np.arange(1, n_pool + 1)})
    strength = np.where(np.isin(skills, SUBTASKS), np.select([kinds == "correct", kinds == "wrong"], [1.0, 0.3], 0.5), 0.0)
    sub_idx = np.array([SUBTASKS.index(s) if s in SUBTASKS else 0 for s in skills])
    G_pool = strength[:, None] * dirs[sub_idx] * 2.0 + rng.normal(size=(n_pool, dim)) * 0.6

    # per checkpoint: validation gradients sharpen a little with each epoch
    vi = np.array([SUBTASKS.index(s) for s in val_sub])
    for epoch in range(1, n_epochs + 1):
        scale = np.array([3.0, 2.0, 1.5, 1.0])[vi][:, None] * (1 + 0.2 * epoch)
        G_val = dirs[vi] * scale + rng.normal(size=(n_val, dim)) * 0.15
        sub = _subspace(G_val, r)
        ck = d / "checkpoints" / f"ckpt-{epoch}"
        ck.mkdir(parents=True, exist_ok=True)
        np.save(ck / "val_grads.npy", G_val.astype(np.float32))
        save_file(sub, str(ck / "subspace.safetensors"), metadata={"ortho_error": "1e-7"})
        if epoch == 1:
            sub1 = sub

    X = (G_pool @ sub1["basis"]).astype(np.float32)
    proj = np.lib.format.open_memmap(d / "train_proj.npy", mode="w+", dtype=np.float32, shape=X.shape)
    proj[:] = X
    proj.flush()
    del proj
    np.save(d / "train_proj.done.npy", np.ones(n_pool, dtype=bool))
    examples.to_parquet(d / "examples.parquet", index=False)
    target.to_parquet(d / "target.parquet", index=False)

    # scores + selection exactly as the pipeline computes them
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(val_sub):
        groups.setdefault(s, []).append(i)
    s2 = sub1["sigma"] ** 2
    r95 = int(np.searchsorted(np.cumsum(s2) / s2.sum(), 0.95 - 1e-12) + 1)
    rank = min(r95, r)
    sc = scoring.gist_scores(X, sub1["val_coords"], groups, rank)
    k = scoring.budget_to_count(budget, n_pool)
    picked = {b: scoring.select(sc, k, b, groups) for b in scoring.BALANCES}
    order = np.lexsort((np.arange(n_pool), -sc.score))
    ranks = np.empty(n_pool, dtype=np.int64)
    ranks[order] = np.arange(1, n_pool + 1)
    frame = examples[["id", "source", "skill", "subtask", "kind"]].copy()
    frame["score"], frame["rank"] = sc.score, ranks
    frame["n_tokens"] = rng.integers(8, 60, n_pool)
    for b, (idx, _) in picked.items():
        frame[f"selected_{b}"] = np.isin(np.arange(n_pool), idx)
    for t, name in enumerate(sc.column_names):
        frame[f"cos:{name}"] = sc.columns[:, t]
    frame.to_parquet(d / "scores.parquet", index=False)
    chosen = picked["global"][0]
    with open(d / "selected.jsonl", "w") as fh:
        for i in chosen:
            fh.write(json.dumps({"id": ids[i], "prompt": examples.prompt[i], "response": examples.response[i],
                                 "skill": skills[i], "kind": kinds[i], "score": float(sc.score[i])}) + "\n")

    relevant = np.isin(skills, SUBTASKS) & (kinds == "correct")
    sel = np.zeros(n_pool, dtype=bool)
    sel[chosen] = True
    by_balance = {b: {"picked_for_subtask": share, "starved_subtasks": scoring.starved(share, k),
                      "precision": float(relevant[idx].mean())} for b, (idx, share) in picked.items()}
    summary = {"n_pool": n_pool, "n_target": n_val, "n_subtasks": T, "n_selected": k, "rank": rank, "r_max": r,
               "r95": r95, "r99": int(np.searchsorted(np.cumsum(s2) / s2.sum(), 0.99 - 1e-12) + 1),
               "sigma": sub1["sigma"].tolist(), "aggregation": "subtask_mean", "balance": "global", "checkpoint": 1,
               "starved_subtasks": by_balance["global"]["starved_subtasks"],
               "picked_for_subtask": by_balance["global"]["picked_for_subtask"], "by_balance": by_balance,
               "precision": float(relevant[sel].mean()), "random_precision": float(relevant.mean()),
               "coverage": {s: {"selected": int((relevant & sel & (skills == s)).sum()),
                                "in_pool": int((relevant & (skills == s)).sum())} for s in SUBTASKS},
               "n_wrong_selected": int((sel & (kinds == "wrong") & np.isin(skills, SUBTASKS)).sum()),
               "n_distractor_selected": int((sel & (kinds == "distractor") & np.isin(skills, SUBTASKS)).sum()),
               "wall_s": 1.0, "score_semantics": "cosine in [-1, 1]; higher = better aligned with the target"}
    (d / "summary.json").write_text(json.dumps(summary, indent=2))
    (d / "config.json").write_text(json.dumps(_config(n_epochs, r, budget), indent=2))

    stages = ["data", "warmup", *[f"val_grads/ckpt-{e}" for e in range(1, n_epochs + 1)], "train_proj", "scores"]
    t0 = time.time() - 60
    events = []
    for i, s in enumerate(stages):
        events.append({"t": t0 + 2 * i, "stage": s, "status": "start", "total": 10})
        events.append({"t": t0 + 2 * i + 1, "stage": s, "status": "progress", "done": 10, "total": 10})
        events.append({"t": t0 + 2 * i + 1.5, "stage": s, "status": "end", "wall_s": 1.5})
    (d / "progress.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    manifest = {"stages": {s: {"key": "fake", "done": True, "files": [], "wall_s": 1.5, "bytes": 0} for s in stages}}
    (d / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return d
