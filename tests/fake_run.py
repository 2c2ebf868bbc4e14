"""A synthetic run directory with every artefact the dashboard reads (numpy/pandas/safetensors only).

Geometry: each target subtask has a direction in a small gradient space; validation gradients
scatter around it, pool examples of that skill point along it (wrong answers and look-alikes
less so), other skills are noise. The subspace and projections are computed exactly as the
pipeline defines them, so scores, ranks and precision behave like a real run's.
"""
from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from gist_core.methods import scoring
from gist_core.methods.gist import artefacts as gist_artefacts
from gist_core.methods.gist.subspace import Subspace
from gist_core.store import artefacts

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
                           "prompt": [f"in the list a b c, which word is number {i % 3 + 1}? ({s})"
                                      for i, s in enumerate(val_sub)],
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
        # through the project's checked writer: val_coords from U[:, :r] * S is Fortran-ordered
        gist_artefacts.save_subspace(ck / "subspace.safetensors", Subspace(ortho_error=1e-7, **sub))
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
               "base_rate": float(relevant.mean()),
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


COMPARE_ROWS = ["gist", "gist_subtask", "less", "less_subtask", "rawcos", "random", "length", "embedding", "full",
                "oracle"]
COMPARE_LABELS = {"gist": "GIST, global top-k", "gist_subtask": "GIST, per-subtask quota", "less": "LESS, global top-k",
                  "less_subtask": "LESS, per-subtask quota", "rawcos": "raw-gradient cosine", "random": "random",
                  "length": "longest responses", "embedding": "embedding similarity", "full": "full pool",
                  "oracle": "oracle (true target examples)"}
# seconds per stage as compare records them (the shared warm-up counted per method up to the checkpoint it uses)
FAKE_STAGES = {"gist": {"warmup": 12.0, "val_grads": 1.1, "subspace": 0.05, "pool_features": 20.3, "scoring": 0.02},
               "less": {"warmup": 24.0, "val_grads": 2.2, "val_features": 0.4, "pool_features": 61.5, "scoring": 0.3},
               "rawcos": {"warmup": 12.0, "val_grads": 1.1, "pool_features": 22.0, "scoring": 0.1},
               "embedding": {"pool_features": 3.2, "scoring": 0.01}}
FAKE_FLOPS = {"gist": 3.0e12, "less": 6.6e12, "rawcos": 3.0e12, "embedding": 8.0e11}


def make_fake_compare(run_dir, with_downstream: bool = True, n_seeds: int = 3, seed: int = 0) -> Path:
    """Write compare.json and compare/scores.parquet, as `gist-lab compare` would, into a make_fake_run folder.

    The score-based methods are the run's GIST score plus noise of growing size (LESS close, raw cosine
    further, embedding mostly skill-level), so precision, overlap and rank correlation order like a real
    run's; downstream losses improve with precision. with_downstream=False: a run without a test split."""
    d = Path(run_dir)
    rng = np.random.default_rng(seed)
    sc = pd.read_parquet(d / "scores.parquet")
    n, k = len(sc), json.loads((d / "summary.json").read_text())["n_selected"]
    skill, kind = sc["skill"].to_numpy(), sc["kind"].to_numpy()
    on_target = np.isin(skill, SUBTASKS)
    relevant = on_target & (kind == "correct")
    g = sc["score"].to_numpy()
    scores = {"gist": g, "less": g + rng.normal(0, 0.1, n), "rawcos": g + rng.normal(0, 0.3, n),
              "embedding": on_target * 0.5 + rng.normal(0, 0.5, n), "length": sc["n_tokens"].to_numpy(float)}
    owner = np.where(on_target, skill, rng.choice(SUBTASKS, n))

    def top(s):
        return np.argsort(-s, kind="stable")[:k]

    def quota(s):  # round-robin over subtasks: each one's best, then each one's second best, ...
        within = pd.Series(-s).groupby(owner).rank(method="first").to_numpy()
        return np.lexsort((np.searchsorted(SUBTASKS, owner, sorter=np.argsort(SUBTASKS)), within))[:k]

    fixed = {"gist": top(g), "gist_subtask": np.flatnonzero(sc["selected_subtask"].to_numpy()),
             "less": top(scores["less"]), "less_subtask": quota(scores["less"]), "rawcos": top(scores["rawcos"]),
             "length": top(scores["length"]), "embedding": top(scores["embedding"]), "full": np.arange(n)}
    sel = {r: [fixed[r]] * n_seeds if r in fixed else
           [rng.choice(np.flatnonzero(relevant) if r == "oracle" else n, min(k, relevant.sum()) if r == "oracle" else k,
                       replace=False) for _ in range(n_seeds)] for r in COMPARE_ROWS}

    methods = {}
    for row in COMPARE_ROWS:
        fam, idx = row.removesuffix("_subtask"), sel[row]
        prec = [float(relevant[i].mean()) for i in idx]
        stages = FAKE_STAGES.get(fam, {"scoring": 0.0})
        methods[row] = {"label": COMPARE_LABELS[row], "family": fam, "rule": "subtask" if row.endswith("_subtask") else "global",
                        "n_selected": len(idx[0]), "precision": float(np.mean(prec)), "precision_std": float(np.std(prec)),
                        "recall": float(np.mean([relevant[i].sum() / relevant.sum() for i in idx])),
                        "coverage": {t: {"selected": int((relevant[idx[0]] & (skill[idx[0]] == t)).sum()),
                                         "in_pool": int((relevant & (skill == t)).sum())} for t in SUBTASKS},
                        "n_wrong_selected": int((on_target[idx[0]] & (kind[idx[0]] == "wrong")).sum()),
                        "n_distractor_selected": int((on_target[idx[0]] & (kind[idx[0]] == "distractor")).sum()),
                        "stage_wall_s": stages, "wall_s": round(sum(stages.values()), 3),
                        "flops": FAKE_FLOPS.get(fam, 0.0), "bytes": {"gist": n * 8 * 4, "less": n * 8192 * 2,
                                                                     "rawcos": n * 13 * 4, "embedding": n * 32 * 4}.get(fam, 0)}
    sim = pd.DataFrame(scores)
    rep = {"n_pool": n, "n_target": int(pd.read_parquet(d / "target.parquet").shape[0]), "n_selected": k,
           "budget": 0.05, "target": "fake/lookup/val.jsonl", "test": "fake/lookup/test.jsonl" if with_downstream else None,
           "seeds": list(range(n_seeds)),
           "config": {"methods": ["gist", "less", "rawcos", "random", "length", "embedding", "full", "oracle"],
                      "seeds": n_seeds, "test": None, "full_epochs": 1, "n_em": None,
                      "downstream": with_downstream,
                      "less": {"dim": 8192, "seed": 0, "checkpoints": [], "projection_batch": 128, "projector_cache_gb": 4.0},
                      "train": {"epochs": 4, "lr": 0.001, "batch_size": 8, "seed": 0}},
           "gist": {"rank": 3, "checkpoint": 1, "r_max": 8, "aggregation": "subtask_mean"},
           "less": {"d": 8192, "checkpoints": [str(d / "checkpoints" / "ckpt-1"), str(d / "checkpoints" / "ckpt-2")],
                    "mean_lr": [6.8e-4, 3.2e-4], "weights": [0.68, 0.32], "weighting": "mean learning rate of each epoch",
                    "projector_seed": 0},
           "methods": methods, "cost_notes": "wall_s: seconds measured on this machine, per stage (fake run)",
           "overlap": {a: {b: len(set(sel[a][0]) & set(sel[b][0])) / max(1, len(set(sel[a][0]) | set(sel[b][0])))
                           for b in COMPARE_ROWS} for a in COMPARE_ROWS},
           "rank_correlation": sim.rank().corr().round(4).to_dict(), "wall_s": 412.5}
    g_, l_ = methods["gist"], methods["less"]
    rep.update(compute_ratio_gist_over_less=g_["wall_s"] / l_["wall_s"], flops_ratio_gist_over_less=g_["flops"] / l_["flops"],
               storage_ratio_gist_over_less=g_["bytes"] / l_["bytes"],
               compute_ratio_gist_over_less_without_projection=(33.4 / 87.7))
    if with_downstream:
        _fake_downstream(rep, rng, n_seeds)
    else:
        rep["downstream_note"] = "no test split (pass --test): downstream loss and exact match not measured"
    (d / "compare").mkdir(exist_ok=True)
    cols = {f"col:{m}:{t}": sc[f"cos:{t}"].to_numpy() + rng.normal(0, noise, n)  # the columns every rule reads
            for m, noise in (("less", 0.1), ("rawcos", 0.3)) for t in SUBTASKS if f"cos:{t}" in sc}
    pd.DataFrame({"id": sc["id"], **{f"score:{m}": s for m, s in scores.items()}, **cols}).to_parquet(
        d / "compare" / "scores.parquet", index=False)
    (d / "compare.json").write_text(json.dumps(rep, indent=2))
    return d


def _fake_downstream(rep: dict, rng, n_seeds: int) -> None:
    """Test loss falls and exact match rises with a selection's precision, plus per-seed noise."""
    base = {"test_loss": 2.9, "exact_match": 0.05, "steps": 0, "train_s": 0.0,
            "per_subtask": {t: {"loss": 2.9 + 0.05 * i, "exact_match": 0.05} for i, t in enumerate(SUBTASKS)}}
    rep["base"] = base
    rep["train_recipe"] = {"epochs": 4, "lr": 0.001, "batch_size": 8, "full_epochs": 1, "grad_accum": 1, "seed": 0,
                           "warmup_ratio": 0.03, "weight_decay": 0.0, "bf16": False, "max_length": 256,
                           "lora": {"r": 8, "alpha": 16.0, "dropout": 0.0, "target_modules": None},
                           "seeds": list(range(n_seeds))}
    for e in rep["methods"].values():
        loss = 2.4 - 0.8 * e["precision"] + rng.normal(0, 0.02, n_seeds)
        em = np.clip(0.1 + 0.6 * e["precision"] + rng.normal(0, 0.02, n_seeds), 0, 1)
        e.update({"test_loss": float(loss.mean()), "test_loss_std": float(loss.std()), "exact_match": float(em.mean()),
                  "exact_match_std": float(em.std()), "train_steps": -(-e["n_selected"] // 8) * 4, "train_s": 3.0,
                  "per_seed": [{"seed": s, "test_loss": float(loss[s]), "exact_match": float(em[s])}
                               for s in range(n_seeds)],
                  "per_subtask": {t: {"loss": float(loss.mean() + 0.05 * i), "exact_match": float(em.mean())}
                                  for i, t in enumerate(SUBTASKS)}})


# ----------------------------------------------------------------------------- geometry (gist-lab geometry)
FAKE_MODULE = "base_model.model.model.layers.1.mlp.down_proj"


def make_fake_geometry(run_dir, epochs=(1, 2), P: int = 64, n_examples: int = 24, rank: int = 8,
                       seed: int = 0) -> Path:
    """Write RUN/geometry/geometry.json and ckpt-E.safetensors as `gist-lab geometry` would (numpy only).

    H = a diagonal (log-normal) + small within-block noise + a visible low-rank A-B cross block
    (indefinite: some negative eigenvalues); GN = H's positive part; F = G^T G / N with G drawn so that
    E[F] = GN; Adam's v = diag(F) times noise. Every number in geometry.json is computed from them with
    gist_core.analysis.curvature, as the real stage does; the spectrum comes from the run's own subspaces when present."""
    from safetensors import safe_open

    from gist_core.analysis.curvature import curvature_numbers
    from gist_core.methods.gist.subspace import rank_for_variance
    d = Path(run_dir)
    out = d / "geometry"
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_a = P // 2
    n_b = P - n_a
    shape_a, shape_b = [8, 48], [48, 8]
    idx_a = np.sort(rng.choice(shape_a[0] * shape_a[1], n_a, replace=False)).astype(np.int64)
    idx_b = np.sort(rng.choice(shape_b[0] * shape_b[1], n_b, replace=False)).astype(np.int64)
    cfg = {"module": None, "n_coords": P, "n_examples": None, "rank": rank, "seed": seed, "checkpoints": None}
    spectrum = []
    for ck in sorted((d / "checkpoints").glob("ckpt-*/subspace.safetensors")):
        with safe_open(str(ck), "np") as f:
            sigma = f.get_tensor("sigma")
        spectrum.append({"epoch": int(ck.parent.name.split("-")[1]), "r95": rank_for_variance(sigma, 0.95),
                         "r99": rank_for_variance(sigma, 0.99), "n": int(len(sigma)), "sigma_1": float(sigma[0])})
    if not spectrum:
        spectrum = [{"epoch": e, "r95": 3 + e, "r99": 6 + e, "n": 20, "sigma_1": 10.0 + e} for e in epochs]
    report = {"config": cfg, "n_examples": n_examples, "checkpoints": {},
              "spectrum": sorted(spectrum, key=lambda s: s["epoch"])}
    for e in epochs:
        diag = np.exp(rng.normal(0.0, 1.0, P)) * (1 + 0.3 * e)
        S = rng.normal(0.0, 0.05, (P, P))
        U, V = rng.normal(size=(n_a, 2)), rng.normal(size=(n_b, 2))
        C = U @ V.T * 0.4 * (1 + 0.2 * e) * min(1.0, 8 / np.sqrt(P))
        H = np.diag(diag) + (S + S.T) / 2
        H[:n_a, n_a:] += C
        H[n_a:, :n_a] += C.T
        w, Q = np.linalg.eigh(H)
        GN = (Q * np.maximum(w, 0)) @ Q.T
        G = rng.normal(size=(n_examples, P)) @ ((Q * np.sqrt(np.maximum(w, 0))) @ Q.T) + rng.normal(0, 0.02, (n_examples, P))
        F = G.T @ G / n_examples
        v = np.diag(F) * np.exp(rng.normal(0.0, 0.3, P)) + 1e-12
        report["checkpoints"][str(e)] = {
            **curvature_numbers(H, GN, F, v, n_a, rank),
            "key": f"fake-{e}", "module": FAKE_MODULE, "n_coords": P, "n_a": n_a, "wall_s": 3.5 * e, "hessian_s": 2.0 * e}
        artefacts.save_tensors(out / f"ckpt-{e}.safetensors",
                               {"hessian": H.astype(np.float32), "gauss_newton": GN.astype(np.float32),
                                "fisher": F.astype(np.float32), "adam_v": v.astype(np.float32), "idx_a": idx_a,
                                "idx_b": idx_b},
                               {"module": FAKE_MODULE, "n_a": str(n_a), "shape_a": json.dumps(shape_a),
                                "shape_b": json.dumps(shape_b)})
    (out / "geometry.json").write_text(json.dumps(report, indent=2))
    return d


def plotly_array(v) -> np.ndarray:
    """A plotly spec array: a list, or plotly's {dtype, bdata, shape} base64 encoding of a numpy array."""
    if isinstance(v, dict) and "bdata" in v:
        a = np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
        return a.reshape([int(n) for n in str(v.get("shape", len(a))).split(",")])
    return np.asarray(v)
