"""The experts table: per test group (SET/skill), per set and overall loss and exact match of one seed, and
their mean ± std over seeds (what experts.json holds)."""
from __future__ import annotations

from collections import defaultdict

import numpy as np


def first_per_group(groups: list[str], n: int) -> list[int]:
    """Indices of the first `n` examples of every group (the exact-match prompts)."""
    seen: dict[str, int] = defaultdict(int)
    out = []
    for i, g in enumerate(groups):
        if seen[g] < n:
            out.append(i)
            seen[g] += 1
    return out


def summarise(tests, losses: np.ndarray, hit: dict[int, float]) -> dict:
    """Per group (SET/skill) mean loss and exact match; per set and overall the mean over its groups."""
    by = defaultdict(lambda: {"loss": [], "em": []})
    for i, ex in enumerate(tests):
        by[ex.subtask]["loss"].append(float(losses[i]))
        if i in hit:
            by[ex.subtask]["em"].append(hit[i])
    per = {g: {"loss": float(np.mean(v["loss"])), "exact_match": float(np.mean(v["em"])) if v["em"] else None}
           for g, v in sorted(by.items())}
    sets = sorted({g.split("/", 1)[0] for g in per})

    def mean(groups, k):
        vals = [per[g][k] for g in groups if per[g][k] is not None]
        return float(np.mean(vals)) if vals else None
    return {"test_loss": mean(per, "loss"), "exact_match": mean(per, "exact_match"), "per_group": per,
            "per_set": {s: {"loss": mean([g for g in per if g.startswith(s + "/")], "loss"),
                            "exact_match": mean([g for g in per if g.startswith(s + "/")], "exact_match")} for s in sets}}


def aggregate(per_seed: list[dict]) -> dict:
    """Per rule: mean and std over seeds of the overall, per-set and per-group figures."""
    if not per_seed:
        return {}
    out = {}
    for r in per_seed[0]["rules"]:
        runs = [s["rules"][r] for s in per_seed]

        def ms(vals):
            vals = [v for v in vals if v is not None]
            return (float(np.mean(vals)), float(np.std(vals))) if vals else (None, None)
        loss, loss_sd = ms([x["test_loss"] for x in runs])
        em, em_sd = ms([x["exact_match"] for x in runs])
        out[r] = {"test_loss": loss, "test_loss_std": loss_sd, "exact_match": em, "exact_match_std": em_sd,
                  "per_seed": [{"seed": s["seed"], "test_loss": s["rules"][r]["test_loss"],
                                "exact_match": s["rules"][r]["exact_match"]} for s in per_seed],
                  "per_set": {k: {"loss": ms([x["per_set"][k]["loss"] for x in runs])[0],
                                  "exact_match": ms([x["per_set"][k]["exact_match"] for x in runs])[0]}
                              for k in runs[0]["per_set"]},
                  "per_group": {g: {"loss": ms([x["per_group"][g]["loss"] for x in runs])[0],
                                    "exact_match": ms([x["per_group"][g]["exact_match"] for x in runs])[0]}
                                for g in runs[0]["per_group"]}}
    return out


def train_steps(train: dict[str, dict], clusterings) -> dict:
    """Optimizer steps of seed 0's adapters: the single LoRA's, and per clustering its experts' min / median / max
    (how much training an expert got next to the single LoRA: the table's first confounder)."""
    out = {"single": train["single"]["steps"]}
    for m in clusterings:
        st = [v["steps"] for k, v in train.items() if k.startswith(f"{m}-c")]
        out[m] = {"min": int(min(st)), "median": float(np.median(st)), "max": int(max(st))} if st else None
    return out
