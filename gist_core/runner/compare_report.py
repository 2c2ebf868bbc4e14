"""compare.json: one row per method and selection rule (selection quality, cost, downstream), their agreement,
and the printed table. Versioned (runner/reports.py)."""
from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np

from gist_core.data.domains import DOMAINS, domain_shares
from gist_core.data.truth import metrics_from
from gist_core.methods.registry import row_label
from gist_core.methods.scoring import split_row
from gist_core.runner.costs import COST_NOTES, cost_ratios

DOMAIN_NOTE = ("domains: a cheap keyword rule over prompt and response (code / math / writing / other; "
               "gist_core.data.domains), a reading aid, not ground truth")


class CompareReport:
    """Mixed into Compare: builds the report from its selections, scores and cost book."""

    def report(self, rows, scores, selections, gist_summary) -> dict:
        methods = {}
        for row in rows:
            family, rule = split_row(row)
            sel = selections[row]
            entry = {"label": row_label(row), "family": family, "rule": rule, "n_selected": int(len(sel[0]))}
            quality = [self._truth_metrics(s) for s in sel]
            if quality[0] is not None:
                entry["precision"] = float(np.mean([q["precision"] for q in quality]))
                entry["precision_std"] = float(np.std([q["precision"] for q in quality]))
                entry["recall"] = float(np.mean([q["recall"] for q in quality]))
                for key in ("coverage", "n_wrong_selected", "n_distractor_selected"):
                    entry[key] = quality[0][key]
            stage_s = self.costs.get(family, {})
            entry["stage_wall_s"] = {k: round(v, 3) for k, v in stage_s.items()}
            entry["wall_s"] = round(sum(stage_s.values()), 3)
            entry["flops"] = float(self.flops.get(family, 0.0))
            entry["bytes"] = int(self.bytes.get(family, 0))
            entry["peak_rss_bytes"] = self.method_peak(family)
            entry["domains"] = {d: float(np.mean([domain_shares(self.domains[s])[d] for s in sel])) for d in DOMAINS}
            methods[row] = entry
        rep = {"n_pool": len(self.run.inputs.pool), "n_target": len(self.run.inputs.target), "n_selected": self.k,
               "budget": self.cfg.budget, "target": self.cfg.target, "test": self.test_spec,
               "seeds": list(range(self.cmp.seeds)), "config": _jsonable(asdict(self.cmp)),
               "gist": {"rank": getattr(self, "gist_rank", None), "checkpoint": self.cfg.checkpoint,
                        "r_max": gist_summary.get("r_max"), "aggregation": self.cfg.aggregation,
                        "score": gist_summary.get("score", self.cfg.score)},
               "less": getattr(self, "less_info", None), "rawcos_from": getattr(self, "rawcos_source", None),
               "pool_domains": domain_shares(self.domains), "domain_note": DOMAIN_NOTE,
               "methods": methods,
               "cost_notes": COST_NOTES}
        rep.update(cost_ratios(methods, self.costs.get("less", {})))
        rep["overlap"], rep["rank_correlation"] = agreement(selections, scores)
        return rep

    def _truth_metrics(self, idx: np.ndarray) -> dict | None:
        mask = np.zeros(len(self.run.inputs.pool), dtype=bool)
        mask[idx] = True
        return metrics_from(self.truth, mask)


def agreement(selections: dict, scores: dict) -> tuple[dict, dict]:
    """Jaccard overlap of first-seed selections; Spearman correlation of the score-based methods."""
    import pandas as pd
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
