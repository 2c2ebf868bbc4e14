"""What the Proxy page and the notebook read from a `gist-lab proxy build` folder (Iprox): one row per model
(the target, the proxy, its ablations, the ρ sweep) with its size, build cost, selection cost, how far its
GIST / LESS scores agree with the target's and the precision of its own selection (where the pool has ground
truth); the per-layer ranks; the stage-2 loss curve."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from gist_core.errors import StoreError
from gist_core.methods.iprox.artefacts import is_proxy_run, load_proxy_report
from gist_core.methods.iprox.config import CANDIDATES
from gist_core.viewer.rundir import folders_under

INIT_LABELS = {"ipsvd": "IPSVD", "svd": "plain SVD", "random": "random", "layers": "layer extraction"}


def proxy_folders(root: Path) -> list[str]:
    """Names of the folders under `root` that `gist-lab proxy build` wrote."""
    return folders_under(root, is_proxy_run)


def load_report(folder: Path) -> dict | None:
    try:
        return load_proxy_report(folder) if is_proxy_run(folder) else None
    except StoreError:
        return None


def describe(meta: dict) -> str:
    """'IPSVD + alignment (λ 0.1)', 'plain SVD', 'layer extraction (15 of 30 layers)'."""
    text = INIT_LABELS.get(meta["init"], meta["init"])
    if meta.get("aligned"):
        text += f" + alignment (λ {meta.get('lambda_kd', 0):g})"
    if meta["init"] == "layers":
        text += f" ({len(meta['kept_layers'])} layers kept)"
    return text


def models_frame(rep: dict) -> pd.DataFrame:
    """One row per model: size, build seconds, agreement per method, gradient time and memory, against the target."""
    ev = rep.get("evaluation", {})
    target_grad = (ev.get("target") or {}).get("grad_s_per_example")
    rows = [_row("target", {"init": "target", "rho": 0.0}, rep["target_params"], rep, ev.get("target"), target_grad)]
    for name, meta in sorted(rep["models"].items(), key=lambda kv: _order(kv[0], kv[1])):
        rows.append(_row(name, meta, rep["target_params"], rep, ev.get(name), target_grad))
    return pd.DataFrame(rows)


def _order(name: str, meta: dict) -> tuple:
    """The proxy, then its ablations (as CANDIDATES lists them), then the ρ sweep by ρ (report keys come sorted)."""
    if name == "proxy":
        return (0, 0.0)
    return (1, float(CANDIDATES.index(name))) if name in CANDIDATES else (2, meta["rho"])


def _row(name: str, meta: dict, target_params: int, rep: dict, ev: dict | None, target_grad: float | None) -> dict:
    params = meta.get("params", target_params)
    row = {"model": name, "how": "the target itself" if name == "target" else describe(meta), "ρ": meta["rho"],
           "params": params, "share of target": params / target_params,
           "build s": meta.get("probe_s", 0.0) + meta.get("init_s", 0.0) + meta.get("align_s", 0.0)}
    for m in rep["config"]["methods"]:
        a = ((ev or {}).get("agreement") or {}).get(m, {})
        row[f"{m} Spearman"] = 1.0 if name == "target" else a.get("spearman")
        row[f"{m} top-5% overlap"] = 1.0 if name == "target" else a.get("top_overlap")
    grad = (ev or {}).get("grad_s_per_example")
    row["grad ms / example"] = None if grad is None else grad * 1e3
    row["grad time vs target"] = grad / target_grad if grad and target_grad else None
    peak = (ev or {}).get("peak_rss_bytes")
    row["selection peak RSS MB"] = None if peak is None else peak / 2**20
    for m in rep["config"]["methods"]:
        row[f"{m} precision"] = (ev or {}).get("methods", {}).get(m, {}).get("precision")
    for m in rep["config"]["methods"]:
        loss = (ev or {}).get("methods", {}).get(m, {}).get("test_loss")
        if loss is not None:
            row[f"{m} target test loss"] = loss
    return row


def sweep_frame(rep: dict) -> pd.DataFrame:
    """The aligned IPSVD proxies at every ρ (the proxy and the rho-* sweep points) plus the target at ρ = 0, long
    format: ρ, method, Spearman, top-5% overlap, parameter share, gradient time share."""
    frame = models_frame(rep)
    init = rep["config"]["init"]
    keep = [n for n, m in rep["models"].items() if m["init"] == init and m.get("aligned") == bool(
        rep["config"]["align_epochs"])]
    frame = frame[frame["model"].isin(["target", *keep])].sort_values("ρ")
    rows = []
    for _, r in frame.iterrows():
        for m in rep["config"]["methods"]:
            rows.append({"ρ": r["ρ"], "model": r["model"], "method": m, "Spearman": r[f"{m} Spearman"],
                         "top-5% overlap": r[f"{m} top-5% overlap"], "params share": r["share of target"],
                         "grad time share": r["grad time vs target"]})
    return pd.DataFrame(rows)


def ranks_frame(rep: dict, name: str) -> pd.DataFrame:
    """Per compressed layer of one proxy: its shape, the rank kept (dense: full), and the share of parameters."""
    rows = []
    for p in rep["models"][name].get("plan", []):
        m, n, r = p["out_features"], p["in_features"], p["rank"]
        kept = m * n if r is None else r * (m + n)
        rows.append({"layer": p["name"], "kind": p["name"].rsplit(".", 1)[-1], "shape": f"{m}×{n}",
                     "rank": min(m, n) if r is None else r, "full rank": min(m, n), "dense": r is None,
                     "params kept": kept / (m * n)})
    return pd.DataFrame(rows)


def rank_grid(rep: dict, name: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ranks as a kind × transformer-layer grid (q_proj … down_proj by layer index): the share of the full rank
    kept, and the rank itself (the full rank where a layer stayed dense)."""
    frame = ranks_frame(rep, name)
    frame["index"] = frame["layer"].str.extract(r"\.(\d+)\.", expand=False).astype(float).astype("Int64")
    frame["share"] = frame["rank"] / frame["full rank"]
    kinds = list(dict.fromkeys(frame["kind"]))
    share = frame.pivot_table(index="kind", columns="index", values="share", aggfunc="first").reindex(kinds)
    ranks = frame.pivot_table(index="kind", columns="index", values="rank", aggfunc="first").reindex(kinds)
    return share, ranks


def curve_frame(rep: dict, name: str) -> pd.DataFrame:
    """Stage-2 steps of one proxy: total loss, the alignment term 0.5·(1 − cos) and the KL anchor."""
    steps = rep["models"][name].get("align_curve", [])
    return pd.DataFrame({"step": range(1, len(steps) + 1), "loss": [s["loss"] for s in steps],
                         "alignment": [s["align"] for s in steps], "KL": [s["kd"] for s in steps]})
