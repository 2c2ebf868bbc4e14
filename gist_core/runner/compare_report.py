"""compare.json: one row per method and selection rule (selection quality, cost, downstream), their agreement,
and the printed table. Versioned (runner/reports.py)."""
from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pandas as pd

from gist_core.data.domains import DOMAINS, domain_shares
from gist_core.data.truth import metrics_from
from gist_core.methods.registry import row_label
from gist_core.methods.scoring import split_row
from gist_core.runner.compare_context import CompareContext
from gist_core.runner.costs import COST_NOTES, cost_ratios

DOMAIN_NOTE = ("domains: a cheap keyword rule over prompt and response (code / math / writing / other; "
               "gist_core.data.domains), a reading aid, not ground truth")


def build_report(cc: CompareContext, rows: list[str], scores: dict, selections: dict, gist_summary: dict,
                 truth, domains: np.ndarray) -> dict:
    """compare.json's body: per row, selection quality against ground truth (where the pool has it), cost,
    peak memory and domain shares; the agreement between methods; the notes each method left."""
    book = cc.book
    methods = {}
    for row in rows:
        family, rule = split_row(row)
        sel = selections[row]
        entry = {"label": row_label(row), "family": family, "rule": rule, "n_selected": int(len(sel[0]))}
        quality = [truth_metrics(truth, len(cc.inputs.pool), s) for s in sel]
        if quality[0] is not None:
            entry["precision"] = float(np.mean([q["precision"] for q in quality]))
            entry["precision_std"] = float(np.std([q["precision"] for q in quality]))
            entry["recall"] = float(np.mean([q["recall"] for q in quality]))
            for key in ("coverage", "n_wrong_selected", "n_distractor_selected"):
                entry[key] = quality[0][key]
        stage_s = book.costs.get(family, {})
        entry["stage_wall_s"] = {k: round(v, 3) for k, v in stage_s.items()}
        entry["wall_s"] = round(sum(stage_s.values()), 3)
        entry["flops"] = float(book.flops.get(family, 0.0))
        entry["bytes"] = int(book.bytes.get(family, 0))
        entry["peak_rss_bytes"] = book.method_peak(family)
        entry["domains"] = {d: float(np.mean([domain_shares(domains[s])[d] for s in sel])) for d in DOMAINS}
        methods[row] = entry
    cfg = cc.cfg
    rep = {"n_pool": len(cc.inputs.pool), "n_target": len(cc.inputs.target), "n_selected": cc.k,
           "budget": cfg.budget, "target": cfg.target, "test": cc.test_spec,
           "seeds": list(range(cc.cmp.seeds)), "config": _jsonable(asdict(cc.cmp)),
           "gist": {"rank": cc.notes.get("gist_rank"), "checkpoint": cfg.checkpoint,
                    "r_max": gist_summary.get("r_max"), "aggregation": cfg.aggregation,
                    "score": gist_summary.get("score", cfg.score)},
           "less": cc.notes.get("less"), "rawcos_from": cc.notes.get("rawcos_from"),
           "pool_domains": domain_shares(domains), "domain_note": DOMAIN_NOTE,
           "methods": methods,
           "cost_notes": COST_NOTES}
    rep.update(cost_ratios(methods, book.costs.get("less", {})))
    rep["overlap"], rep["rank_correlation"] = agreement(selections, scores)
    return rep


def truth_metrics(truth, n: int, idx: np.ndarray) -> dict | None:
    mask = np.zeros(n, dtype=bool)
    mask[idx] = True
    return metrics_from(truth, mask)


def agreement(selections: dict, scores: dict) -> tuple[dict, dict]:
    """Jaccard overlap of first-seed selections; Spearman correlation of the score-based methods."""
    names = list(selections)
    overlap = {}
    for a in names:
        sa = set(selections[a][0].tolist())
        overlap[a] = {b: len(sa & set(selections[b][0].tolist())) / max(1, len(sa | set(selections[b][0].tolist())))
                      for b in names}
    frame = pd.DataFrame({m: sc.score for m, sc in scores.items()})
    corr = frame.rank().corr().round(4).to_dict() if len(frame.columns) > 1 else {}
    return overlap, corr


def _jsonable(d):
    return json.loads(json.dumps(d, default=str))


def format_table(rep: dict) -> str:
    """The printed table: one line per method."""
    lines = [f"{'method':16s} {'precision':>9s} {'test loss':>15s} {'exact match':>15s} {'wall s':>8s} {'bytes':>12s}"]
    for row, e in rep["methods"].items():
        prec = f"{e['precision']:.3f}" if "precision" in e else "-"
        loss = f"{e['test_loss']:.3f}±{e['test_loss_std']:.3f}" if "test_loss" in e else "-"
        em = f"{e['exact_match']:.3f}±{e['exact_match_std']:.3f}" if e.get("exact_match") is not None else "-"
        lines.append(f"{row:16s} {prec:>9s} {loss:>15s} {em:>15s} {e['wall_s']:>8.1f} {e['bytes']:>12,d}")
    if "base" in rep:
        base_em = rep["base"]["exact_match"]
        lines.append(f"{'base (no LoRA)':16s} {'-':>9s} {rep['base']['test_loss']:>15.3f} "
                     f"{'-' if base_em is None else format(base_em, '.3f'):>15s}")
    for key in ("compute_ratio_gist_over_less", "storage_ratio_gist_over_less", "flops_ratio_gist_over_less",
                "compute_ratio_gist_over_less_without_projection"):
        if key in rep:
            lines.append(f"{key}: {rep[key]:.4f}")
    return "\n".join(lines)
