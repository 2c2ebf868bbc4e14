"""Score x selection rule x aggregation x rank rule x model, on ground truth: the evidence behind the defaults.

    gist-lab models fetch smollm2-135m
    python bench/selection_rules.py            # resumes every stage; ~75 min on 2 cores from nothing

For each model (the bundled tiny LM on the whole pool; SmolLM2-135M-Instruct on the pool's first 1,000 rows,
LoRA on its last 4 layers) and each bundled target it runs (or resumes) one `gist-lab compare --no-downstream
--rules all` with GIST, LESS, raw-gradient cosine and embedding similarity, then re-scores GIST from the run's
stored projections under every score (norm-aware, in-subspace cosine) x aggregation (subtask means, example
max, and the contrastive subtask direction: a feature-level remedy for look-alike subtasks) x rank rule (tau =
0.95, the rank advisor, all stored directions, and fixed ranks 1, 2, 4, 8, 16) x selection rule (global, quota,
z-score, quantile, round-robin over target examples). LESS, raw cosine and embedding have no rank; they are
scored under every selection rule by the same `scoring.select`.

Reported per cell: precision (target skill and correct answer) and per-subtask coverage; a subtask is starved
when its correct selected examples are fewer than a third of its proportional share (scoring.starved_by_coverage,
the CLI's warning). It measures; it decides nothing and never passes or fails.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from gist_core.config import RunConfig
from gist_core.data.examples import groups_from_labels
from gist_core.data.truth import metrics_from, truth_masks
from gist_core.methods import scoring
from gist_core.methods.gist.advisor import choose_rank, rank_advice
from gist_core.methods.gist.artefacts import load_projections, load_subspace
from gist_core.methods.scoring import split_row
from gist_core.store.atomic import atomic_write_json
from gist_core.viewer import breakdowns, rescore, rundir

MODELS = {"tiny": {"model": None, "pool_size": None, "lora_layers": None, "prefix": "runs/compare"},
          "smollm2": {"model": "smollm2-135m", "pool_size": 1000, "lora_layers": 4, "prefix": "runs/real-smollm2"}}
TARGETS = ("transform", "lookup", "facts")
AGGREGATIONS = {"gist_mean": "subtask_mean", "gist_max": "example_max", "gist_contrast": "contrast"}
SCORE_KINDS = ("normaware", "subspace")
RANK_RULES = ("tau", "advisor", "full")
FIXED_RANKS = (1, 2, 4, 8, 16)
BASELINES = ("less", "rawcos", "embedding", "rds", "minilm")


def compare_command(model: str, target: str, out: Path, a) -> list[str]:
    m = MODELS[model]
    # the folders are made under the paper's rule and rank rule (their `gist` rows); the grid re-scores every other
    cmd = [sys.executable, "-m", "gist_core.cli", "compare", "--target", target, "--no-downstream", "--rules", "all",
           "--balance", "global", "--rank-rule", "tau",
           "--methods", "gist,gist_max,less,rawcos,embedding,rds,minilm,random", "--less-cache-gb", str(a.less_cache_gb),
           "--out", str(out), "--quiet"]
    if m["model"]:
        cmd += ["--model", m["model"], "--pool-size", str(m["pool_size"]), "--lora-layers", str(m["lora_layers"])]
    return cmd


def contrastive_scores(X, val_coords, groups, r, kind, norms):
    """GIST with each subtask's direction made contrastive: its subtask-mean direction minus its projection on
    the span of the other subtasks' directions (inside the rank-r subspace), so what a look-alike subtask
    shares with it no longer counts in its column."""
    names, dirs = scoring.target_directions(val_coords, groups, r, "subtask_mean")
    out = np.empty_like(dirs)
    for t in range(len(dirs)):
        others = np.delete(dirs, t, axis=0)
        q = np.linalg.qr(others.T)[0] if len(others) else np.zeros((r, 0))
        d = dirs[t] - q @ (q.T @ dirs[t])
        out[t] = d / max(np.linalg.norm(d), 1e-30)
    cols = scoring.cosine_matrix(X, out, r, norms if kind == "normaware" else None)
    return scoring.Scores(score=cols.max(1), columns=cols, column_names=names, rank=r, aggregation="subtask_mean",
                          kind=kind)


def stored_run(run_dir: Path):
    """(config, subspace, subtask groups, the pool's labels, the stored projections) of a finished run."""
    cfg = RunConfig.from_json(json.loads((run_dir / "config.json").read_text()))
    sub = load_subspace(run_dir / "checkpoints" / f"ckpt-{cfg.checkpoint}" / "subspace.safetensors",
                        ("sigma", "val_coords"))
    target = pd.read_parquet(run_dir / "target.parquet")
    groups = groups_from_labels(target["id"], target["subtask"])
    pool = pd.read_parquet(run_dir / "examples.parquet", columns=["skill", "kind"])
    return cfg, sub, groups, pool, load_projections(run_dir / "train_proj.npy")


def gist_grid(run_dir: Path) -> dict:
    """(family, score, rank rule, selection rule) -> metrics, from the run's stored projections."""
    cfg, sub, groups, pool, stored = stored_run(run_dir)
    truth = truth_masks(pool, list(groups))
    X = stored.coords
    k = scoring.budget_to_count(cfg.budget, len(X))
    out = {}
    for family, agg in AGGREGATIONS.items():
        for kind in SCORE_KINDS:
            for rank_rule in (*RANK_RULES, *(f"r{r}" for r in FIXED_RANKS if r <= sub.r_max)):
                c = replace(cfg, aggregation="subtask_mean" if agg == "contrast" else agg, score=kind,
                            rank_rule="full" if rank_rule.startswith("r") else rank_rule,
                            rank=int(rank_rule[1:]) if rank_rule.startswith("r") else None)
                r = choose_rank(c, sub, rank_advice(c, sub, stored, groups) if rank_rule == "advisor" else None)
                sc = contrastive_scores(X, sub.val_coords, groups, r, kind, stored.norms) if agg == "contrast" else \
                    scoring.gist_scores(X, sub.val_coords, groups, r, agg, kind, stored.norms)
                for rule in scoring.BALANCES:
                    if rule == "examples" and agg == "contrast":
                        continue  # per-example columns are not contrastive: the same cells as gist_mean's
                    idx, _ = scoring.select(sc, k, rule, groups)
                    mask = np.zeros(len(X), dtype=bool)
                    mask[idx] = True
                    m = metrics_from(truth, mask)
                    out[f"{family}|{kind}|{rank_rule}|{rule}"] = {
                        "rank": r, "precision": m["precision"], "coverage": m["coverage"],
                        "starved": scoring.starved_by_coverage(m["coverage"]), "base_rate": m["base_rate"]}
    return out


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(a positive outscores a negative), ties counted half."""
    if not len(pos) or not len(neg):
        return float("nan")
    ranks = rankdata(np.concatenate([pos, neg]))  # average ranks over ties
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def lookalike_aucs(run_dir: Path) -> dict:
    """Per target subtask t: its look-alike (the non-target skill whose pool rows score highest, by median, in
    t's own column at full rank), then AUC(t's correct rows vs the look-alike's rows) in t's column at every rank,
    for each family and score. Below 0.5 the column itself prefers the look-alike: no selection rule can fix it."""
    _, sub, groups, pool, stored = stored_run(run_dir)
    ranks = list(range(1, sub.r_max + 1))
    full = scoring.gist_scores(stored.coords, sub.val_coords, groups, sub.r_max, "subtask_mean", "subspace")
    out = {}
    for t, name in enumerate(full.column_names):
        others = pool.loc[~pool["skill"].isin(list(groups)), "skill"]
        med = pd.Series(full.columns[others.index, t]).groupby(others.to_numpy()).median()
        look = str(med.idxmax())
        pos = ((pool["skill"] == name) & (pool["kind"].fillna("correct") == "correct")).to_numpy()
        neg = (pool["skill"] == look).to_numpy()
        curves = {}
        for family in ("gist_mean", "gist_contrast"):
            for kind in SCORE_KINDS:
                vals = []
                for r in ranks:
                    sc = contrastive_scores(stored.coords, sub.val_coords, groups, r, kind, stored.norms) \
                        if family == "gist_contrast" else \
                        scoring.gist_scores(stored.coords, sub.val_coords, groups, r, "subtask_mean", kind, stored.norms)
                    vals.append(round(auc(sc.columns[pos, t], sc.columns[neg, t]), 4))
                curves[f"{family}|{kind}"] = vals
        out[name] = {"lookalike": look, "n_pos": int(pos.sum()), "n_neg": int(neg.sum()), "ranks": ranks, "auc": curves}
    return out


def baseline_cells(rep: dict) -> dict:
    out = {}
    for row, e in rep["methods"].items():
        family, rule = split_row(row)
        if family in BASELINES and "precision" in e:
            out[f"{family}|-|-|{rule}"] = {"rank": None, "precision": e["precision"], "coverage": e["coverage"],
                                         "starved": scoring.starved_by_coverage(e["coverage"])}
    return out


def who_wins(run_dir: Path, rank: int) -> dict:
    """Under the global rule, per method (GIST at the run's rank, LESS, raw cosine): each subtask column's pool
    median and top-edge, the selected examples' skills and the subtask column each wins, their median length
    against the pool's, Spearman(score, length); and for GIST the target-skill share at other ranks."""
    rs = rescore.rescored_frame(run_dir, rank, "global", json.loads((run_dir / "config.json").read_text())["budget"])
    sources = {"gist": breakdowns.gist_columns(rs), **breakdowns.compare_columns(run_dir)}
    out = {}
    for method, cols in sources.items():
        if method == "embedding":
            continue
        w = breakdowns.selection_winners(rs.frame, rs.subtasks, cols, "global", rs.k, "skill")
        q = breakdowns.column_quantiles(rs.subtasks, cols, rs.k)
        score = pd.Series(cols.max(1))
        out[method] = {"columns": q.round(4).to_dict("records"),
                       "winners": w.head(6).to_dict("records"),
                       "share_other_skill": float(w.loc[~w["target subtask"], "selected"].sum() / rs.k),
                       "median_tokens_selected": float(np.median(rs.frame["n_tokens"].to_numpy()[
                           np.argsort(-cols.max(1), kind="stable")[:rs.k]])),
                       "median_tokens_pool": float(rs.frame["n_tokens"].median()),
                       "spearman_score_tokens": float(score.corr(rs.frame["n_tokens"].reset_index(drop=True),
                                                                 method="spearman"))}
    r_max = rundir.r_max(run_dir)
    ranks = sorted({1, 2, 4, 8, rank, r_max} & set(range(1, r_max + 1)))
    wr = breakdowns.winners_by_rank(run_dir, ranks, "global", rs.k, "skill", top=50)
    wr["target"] = wr["group"].isin(rs.subtasks)
    out["gist_target_share_by_rank"] = {int(r): float(g.loc[g["target"], "count"].sum() / rs.k)
                                        for r, g in wr.groupby("rank")}
    return out


def table(results: dict) -> str:
    """One line per (method, rank rule, rule): precision per model x target, means, starved subtasks."""
    runs = [(m, t) for m in MODELS for t in TARGETS if t in results.get(m, {})]
    keys = list(dict.fromkeys(k for m, t in runs for k in results[m][t]["cells"]))
    head = " | ".join(f"{m} {t[:5]}" for m, t in runs)
    lines = [f"| method | score | rank rule | selection rule | {head} | tiny mean | SmolLM2 mean | starved (tiny / SmolLM2) |",
             "|" + "---|" * (7 + len(runs))]
    for key in keys:
        family, kind, rank_rule, rule = key.split("|")
        cells = [results[m][t]["cells"].get(key) for m, t in runs]
        vals = [f"{c['precision']:.3f}" + (f" (r{c['rank']})" if c and c["rank"] else "") if c else "–" for c in cells]
        means, starved = [], []
        for model in MODELS:
            ps = [results[model][t]["cells"][key] for t in TARGETS if key in results.get(model, {}).get(t, {}).get("cells", {})]
            means.append(f"{np.mean([c['precision'] for c in ps]):.3f}" if ps else "–")
            starved.append(str(sum(len(c["starved"]) for c in ps)) if ps else "–")
        lines.append(f"| {family} | {kind} | {rank_rule} | {rule} | {' | '.join(vals)} | {means[0]} | {means[1]} | "
                     f"{' / '.join(starved)} |")
    return "\n".join(lines)


def ranking(results: dict, top: int = 12) -> str:
    """The GIST configurations by the mean of the two models' mean precision, with starved subtasks per model."""
    keys = [k for k in next(iter(next(iter(results.values())).values()))["cells"] if k.startswith("gist")]
    rows = []
    for key in keys:
        per = {m: [results[m][t]["cells"][key] for t in TARGETS if t in results.get(m, {})] for m in MODELS if m in results}
        means = {m: float(np.mean([c["precision"] for c in cs])) for m, cs in per.items()}
        starved = {m: sum(len(c["starved"]) for c in cs) for m, cs in per.items()}
        rows.append((float(np.mean(list(means.values()))), key, means, starved))
    lines = ["| rank | configuration | " + " | ".join(f"{m} mean" for m in MODELS if m in results)
             + " | both | starved per model |", "|---|---|" + "---|" * (len(results) + 2)]
    for i, (both, key, means, starved) in enumerate(sorted(rows, key=lambda r: -r[0])[:top], start=1):
        lines.append(f"| {i} | {key.replace('|', ' · ')} | " + " | ".join(f"{v:.3f}" for v in means.values())
                     + f" | {both:.3f} | {' / '.join(str(v) for v in starved.values())} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="tiny,smollm2")
    p.add_argument("--targets", default=",".join(TARGETS))
    p.add_argument("--less-cache-gb", type=float, default=12.0)
    p.add_argument("--no-run", action="store_true", help="only read runs that exist (no compare commands)")
    p.add_argument("--json", default="bench/selection_rules.json", help="where the full results go")
    a = p.parse_args()
    results: dict = {}
    for model in a.models.split(","):
        for target in a.targets.split(","):
            out = Path(f"{MODELS[model]['prefix']}-{target}")
            cmd = compare_command(model, target, out, a)
            t0 = time.time()
            if not a.no_run:
                subprocess.run(cmd, check=True)
            if not (out / "compare.json").exists():
                print(f"{model} {target}: no compare.json in {out} (run without --no-run)", flush=True)
                continue
            rep = json.loads((out / "compare.json").read_text())
            cells = {**gist_grid(out), **baseline_cells(rep)}
            wins = who_wins(out, rep["gist"]["rank"])
            looks = lookalike_aucs(out)
            results.setdefault(model, {})[target] = {
                "command": " ".join(["gist-lab"] + cmd[3:]), "run": str(out), "n_pool": rep["n_pool"],
                "n_selected": rep["n_selected"], "wall_s": round(time.time() - t0, 1), "cells": cells,
                "base_rate": next(iter(cells.values()))["base_rate"], "who_wins": wins, "lookalikes": looks}
            print(f"{model} {target}: {len(cells)} cells, {time.time() - t0:.0f} s", flush=True)
    atomic_write_json(a.json, results)
    print(table(results))
    print()
    print(ranking(results))


if __name__ == "__main__":
    main()
