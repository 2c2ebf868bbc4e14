"""The reports a run writes beside its artefacts: the scores frame, the summary and its ground-truth figures.

Reports are typed and versioned: gist_core/store/reports.py.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from gist_core.data.examples import ExampleTable, examples_to_frame
from gist_core.data.formatting import Tokenized
from gist_core.data.truth import metrics_from, truth_masks
from gist_core.methods import scoring
from gist_core.methods.gist.subspace import rank_for_variance
from gist_core.store.reports import SummaryReport


def scores_frame(pool: ExampleTable, sc: scoring.Scores, selections: dict, pool_tok: Tokenized,
                 groups: dict) -> pd.DataFrame:
    order = np.lexsort((np.arange(len(sc.score)), -sc.score))
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(1, len(order) + 1)
    df = examples_to_frame(pool, ["id", "source", "skill", "subtask", "kind"])
    df["score"] = sc.score
    df["rank"] = rank
    df["n_tokens"] = [len(x) for x in pool_tok.input_ids]
    for b, idx in selections.items():
        mask = np.zeros(len(pool), dtype=bool)
        mask[idx] = True
        df[f"selected_{b}"] = mask
    if sc.aggregation == "subtask_mean":
        for t, name in enumerate(sc.column_names):
            df[f"cos:{name}"] = sc.columns[:, t]
    for rule in scoring.CALIBRATED:  # what the calibrated rules rank by (score stays the raw max cosine)
        df[f"score_{rule}"] = scoring.rule_scores(sc, groups, rule)
    return pd.DataFrame(df)


def ground_truth_metrics(truth, n: int, selected: np.ndarray) -> dict | None:
    """gist_core.data.truth metrics of a selection given as row indices (None without labels)."""
    mask = np.zeros(n, dtype=bool)
    mask[selected] = True
    return metrics_from(truth, mask)


def build_summary(cfg, pool, target, picked, sub, rank, k, groups) -> SummaryReport:
    truth = truth_masks(examples_to_frame(pool, ["skill", "kind"]), list(groups))
    per_rule = {}
    for rule, (idx, share) in picked.items():
        # starvation: by ground truth where the pool has it (the coverage figures), else by the column each
        # selected example aligns best with (no labels needed); `starved_basis` says which
        entry = {"picked_for_subtask": share, "starved_subtasks": scoring.starved(share, k),
                 "starved_basis": "best-aligned subtask column"}
        gt = ground_truth_metrics(truth, len(pool), idx)
        if gt:
            entry.update(gt)
            entry.update(starved_subtasks=scoring.starved_by_coverage(gt["coverage"]),
                         starved_basis="ground-truth coverage")
        per_rule[rule] = entry
    rng = np.random.default_rng(cfg.seed)
    rand = np.sort(rng.choice(len(pool), size=k, replace=False))
    rand_gt = ground_truth_metrics(truth, len(pool), rand)
    main = per_rule[cfg.balance]
    summary = {"n_pool": len(pool), "n_target": len(target), "n_subtasks": len(groups), "n_selected": k,
               "rank": rank, "r_max": sub.r_max, "r95": rank_for_variance(sub.sigma, 0.95),
               "r99": rank_for_variance(sub.sigma, 0.99), "sigma": [float(s) for s in sub.sigma],
               "aggregation": cfg.aggregation, "balance": cfg.balance, "checkpoint": cfg.checkpoint,
               "starved_subtasks": main["starved_subtasks"], "starved_basis": main["starved_basis"],
               "picked_for_subtask": main["picked_for_subtask"],
               "by_balance": per_rule, "score_semantics": "cosine in [-1, 1]; higher = better aligned with the target"}
    if rand_gt:
        summary.update({key: main[key] for key in ("precision", "recall", "coverage", "n_wrong_selected",
                                                      "n_distractor_selected", "base_rate")})
        # one random baseline everywhere: the expected precision of a random selection (the base rate);
        # one seeded draw is kept beside it for reference
        summary["random_precision"] = main["base_rate"]
        summary["random_draw_precision"] = rand_gt["precision"]
        summary["precision_over_random"] = main["precision"] / max(main["base_rate"], 1e-12)
    return summary
