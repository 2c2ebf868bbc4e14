"""What the Clusters page shows, read from RUN/clusters/ (written by `gist-lab cluster`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from gist_core.errors import StoreError
from gist_core.store.artefacts import load_npy
from gist_core.store.layout import RunLayout
from gist_core.store.reports import read_report, readable_report

METHOD_LABELS = {"gradientspace": "GradientSpace (gradient sketch, reconstruction)",
                 "elrea": "ELREA-style (instruction-token gradients, random projection, BIRCH)",
                 "embedding": "embedding (base-model mean-pooled hidden states, k-means)", "random": "random"}


def load_clusters(run_dir: Path) -> dict | None:
    try:
        return readable_report(read_report(RunLayout(run_dir).clusters_report, "clusters"), "clusters")
    except StoreError:  # an unreadable report shows as absent, like the other reports
        return None


def methods(rep: dict) -> list[str]:
    """The report's methods, GradientSpace first (JSON reports are written with sorted keys)."""
    return [m for m in METHOD_LABELS if m in rep["table"]] + sorted(set(rep["table"]) - set(METHOD_LABELS))


def table_frame(rep: dict) -> pd.DataFrame:
    rows = [{"method": METHOD_LABELS.get(m, m), "ARI": r["ari"], "NMI": r["nmi"], "purity": r["purity"],
             "clusters": r["n_clusters"], "smallest": r["size_min"], "largest": r["size_max"],
             "within-cluster variance / total": r["within_var_coords"]} for m, r in
            ((m, rep["table"][m]) for m in methods(rep))]
    return pd.DataFrame(rows)


def composition_frame(rep: dict, method: str) -> pd.DataFrame:
    """cluster × skill counts, clusters ordered by their largest skill (a block diagonal when clusters are skills)."""
    M = np.asarray(rep["composition"][method])
    order = sorted(range(len(M)), key=lambda c: (int(M[c].argmax()), -int(M[c].max())))
    return pd.DataFrame(M[order], index=[f"c{c}" for c in order], columns=rep["skills"])


def cluster_members(run_dir: Path, method: str, frame: pd.DataFrame | None) -> pd.DataFrame:
    """The clustered pool rows with their cluster, joined with the run's example frame (row-indexed) when there is one."""
    lay = RunLayout(run_dir)
    rows = load_npy(lay.clusters_array("rows"), np.int64, ndim=1)
    labels = load_npy(lay.clusters_array(f"labels-{method}"), np.int64, shape=(len(rows),))
    out = pd.DataFrame({"row": rows, "cluster": labels})
    if frame is not None:
        keep = [c for c in ("skill", "prompt", "response") if c in frame.columns]
        out = out.join(frame[keep], on="row")
    return out


# ----------------------------------------------------------------------------- experts (gist-lab experts)
RULE_LABELS = {"base": "base model (no adapter)", "single": "one LoRA on everything",
               "gradientspace-routed": "GradientSpace experts, routed (one expert per query)",
               "gradientspace-oracle": "GradientSpace experts, routed by the true skill (oracle)",
               "gradientspace-ensemble": "GradientSpace experts, ELREA-weighted ensemble",
               "elrea-routed": "ELREA experts, routed", "elrea-oracle": "ELREA experts, routed by the true skill (oracle)",
               "elrea-ensemble": "ELREA ensemble (all experts + base adapter)",
               "embedding-routed": "embedding-cluster experts, routed", "random-routed": "random-cluster experts, routed",
               "embedding-oracle": "embedding-cluster experts, oracle routing",
               "random-oracle": "random-cluster experts, oracle routing"}


def load_experts(run_dir: Path) -> dict | None:
    try:
        return readable_report(read_report(RunLayout(run_dir).experts_report, "experts"), "experts")
    except StoreError:
        return None


def rule_label(rule: str) -> str:
    return RULE_LABELS.get(rule, rule)


def rules(rep: dict) -> list[str]:
    """The report's inference rules, baselines first (the order of RULE_LABELS), unknown ones last."""
    return [r for r in RULE_LABELS if r in rep["table"]] + sorted(set(rep["table"]) - set(RULE_LABELS))


def routed_methods(rep: dict) -> list[str]:
    return [m for m in METHOD_LABELS if m in rep["routing"]] + sorted(set(rep["routing"]) - set(METHOD_LABELS))


def expert_table(rep: dict) -> pd.DataFrame:
    """One row per inference rule: mean ± std over seeds, per test set, latency."""
    rows = []
    for r in rules(rep):
        v = rep["table"][r]
        row = {"rule": rule_label(r), "test loss": v["test_loss"], "± loss": v["test_loss_std"],
               "exact match": v["exact_match"], "± EM": v["exact_match_std"]}
        row.update({f"loss · {s}": x["loss"] for s, x in v["per_set"].items()})
        row["ms / query"] = rep.get("latency_ms", {}).get(r)
        rows.append(row)
    return pd.DataFrame(rows)


def per_group_frame(rep: dict, metric: str = "loss", base: bool = True) -> pd.DataFrame:
    """Test groups (SET/skill) × inference rules: mean over seeds of `metric` (loss | exact_match); `base=False`
    leaves out the adapter-free model, whose losses dwarf the rest."""
    data = {rule_label(r): {g: x[metric] for g, x in rep["table"][r]["per_group"].items()} for r in rules(rep)
            if base or r != "base"}
    return pd.DataFrame(data)


def steps_line(rep: dict) -> str | None:
    """How much training the adapters got (seed 0), or None for a report without it."""
    st = rep.get("steps")
    if not st:
        return None
    parts = [f"{METHOD_LABELS.get(m, m).split(' (')[0]} experts {v['min']}–{v['max']} (median {v['median']:g})"
             for m, v in st.items() if m != "single" and v]
    mode = rep["config"].get("expert_steps", "epochs")
    return (f"Optimizer steps per adapter: single LoRA {st['single']}; " + "; ".join(parts) +
            (" (each expert's epochs scaled to match the single LoRA's steps)." if mode == "match"
             else " (the same epochs over fewer rows; `--expert-steps match` gives every expert the single LoRA's steps)."))


def routing_frame(rep: dict) -> pd.DataFrame:
    return pd.DataFrame([{"clustering": METHOD_LABELS.get(m, m), "router accuracy": v["router_accuracy"],
                          "ensemble's top weight": v["ensemble_top_accuracy"],
                          **{f"router · {s}": a for s, a in v["router_accuracy_by_set"].items()}}
                         for m, v in ((m, rep["routing"][m]) for m in routed_methods(rep))])


def confusion_frame(rep: dict, method: str) -> pd.DataFrame:
    """True skill × the cluster the router chose, clusters labelled by their majority skill and ordered by it."""
    r = rep["routing"][method]
    M = np.asarray(r["confusion"])
    names = [f"c{c} ({r['cluster_skill'][str(c)]})" for c in r["clusters"]]
    order = sorted(range(len(names)), key=lambda j: (r["cluster_skill"][str(r["clusters"][j])], j))
    return pd.DataFrame(M[:, order], index=rep["skills"], columns=[names[j] for j in order])


def cluster_map(run_dir: Path, method: str, frame: pd.DataFrame | None) -> pd.DataFrame:
    """The clustered rows on the top-2 principal axes of their unit gradient-sketch coordinates, with cluster and skill."""
    lay = RunLayout(run_dir)
    coords = load_npy(lay.clusters_array("coords"), np.float32, ndim=2)
    U = coords / np.maximum(np.linalg.norm(coords, axis=1, keepdims=True), 1e-30)
    U = U - U.mean(0)
    _, _, vt = np.linalg.svd(U, full_matrices=False)
    xy = U @ vt[:2].T
    out = cluster_members(run_dir, method, frame)
    out["x"], out["y"] = xy[:, 0], xy[:, 1]
    return out
