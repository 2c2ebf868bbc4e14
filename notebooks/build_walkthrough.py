"""Writes notebooks/walkthrough.ipynb (without outputs) from the cells below: `python notebooks/build_walkthrough.py`.

Edit the cells here, not in the notebook, so the stored notebook stays output-free and reviewable;
tests/test_notebook.py checks that the stored file is what this script writes.
"""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

OUT = Path(__file__).resolve().parent / "walkthrough.ipynb"

CELLS: list[tuple[str, str, list[str]]] = [
    ("md", """# GIST Lab walkthrough

Targeted data selection for LoRA instruction tuning through gradient geometry, from Python, on the bundled
default: the tiny model `sample_data/tiny-lm`, the synthetic pool `sample_data/pool.jsonl` and the target task
`transform` (`sample_data/targets/transform/val.jsonl`).

GIST warms up a LoRA adapter on a small share of the pool, takes the gradients of the target's validation
examples, keeps the top-r directions of their SVD (the *target subspace*) and scores every pool example by the
cosine between its projected gradient and each target subtask's direction. The sections below run a selection,
then read it back with `gist_core.viewer` (the numbers the dashboard shows) and draw it with
`gist_core.viewer.figures` (the dashboard's own figures):

1. run (or open) a selection
2. the singular-value spectrum per warm-up checkpoint
3. the rank r: precision and coverage as it moves
4. score histograms
5. the 2-D map of the pool
6. the selected examples
7. the curvature of one LoRA block (`run_geometry`)
8. GIST next to LESS and the baselines (`run_compare`, without downstream fine-tuning)
9. GradientSpace: clusters in LoRA-gradient space, one expert per cluster, a router (`run_cluster`, `run_experts`)
10. GAST: per-layer data selection inside LoRA training, against plain LoRA (`run_ablation`)
11. Iprox: a low-rank proxy of the model, and how far selection on it agrees with the model's own (`run_proxy`)

Everything runs on a CPU in a few minutes (2 cores). The run folder goes under `$GIST_LAB_RUNS` (the dashboard's
runs folder; default `runs/` at the repository root), so `streamlit run app.py` lists it too.""", []),
    ("code", """import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
from IPython.display import Markdown, display

import gist_core
from gist_core import CompareConfig, GeometryConfig, RunConfig, demo_config, rescore, run_compare, run_geometry, run_select
from gist_core.config import TrainConfig
from gist_core.methods.gast import figures as layer_figures
from gist_core.methods.gast import view as layers
from gist_core.methods.gast.config import TrainRunConfig
from gist_core.methods.gast.stages import run_ablation
from gist_core.methods.gradientspace import figures as cluster_figures
from gist_core.methods.gradientspace import view as clusters
from gist_core.methods.gradientspace.cluster_stage import run_cluster
from gist_core.methods.gradientspace.config import ClusterConfig, ExpertConfig
from gist_core.methods.gradientspace.experts_stage import run_experts
from gist_core.methods.iprox import figures as proxy_figures
from gist_core.methods.iprox import view as proxy
from gist_core.methods.iprox.config import ProxyConfig
from gist_core.methods.iprox.stages import run_proxy
from gist_core.methods.less.config import LessConfig
from gist_core.viewer import breakdowns, brushing, compare, curvature, labels, pool_map, rundir, spectrum
from gist_core.viewer import rescore as rescore_view  # (`rescore` above is the pipeline's own)
from gist_core.viewer.figures import compare as compare_figures
from gist_core.viewer.figures import curvature as curvature_figures
from gist_core.viewer.figures import pool_map as pool_map_figures
from gist_core.viewer.figures import scores as scores_figures
from gist_core.viewer.figures import spectrum as spectrum_figures

ROOT = Path(gist_core.__file__).resolve().parents[1]
RUNS = Path(os.environ.get("GIST_LAB_RUNS") or ROOT / "runs").resolve()
RUN = RUNS / "notebook-transform"
POOL_ROWS = 2000      # the pool file's first rows (the full pool is 12,000: about 4x longer)
WARMUP_EPOCHS = 2     # a checkpoint per epoch: two spectra to compare
pd.set_option("display.max_colwidth", 80)
display(Markdown(f"Run folder: `{RUN}`"))""", []),
    ("md", """## 1. Run (or open) a selection

`demo_config` is a `RunConfig` with the bundled paths filled in; any field can be overridden (here a smaller
pool and two warm-up epochs, to stay fast). `run_select` runs the stages (data, warm-up, validation gradients
and their SVD per checkpoint, the pool's projections, scores) and returns the summary; a folder that already
holds the results is opened instead, with its own `config.json`.

**How to read it.** *precision* is the share of selected examples that have a target skill **and** a correct
answer (the pool carries ground-truth labels); *random precision* is what a random selection of the same size
gets on average. The gap is what the gradient geometry buys.""", []),
    ("code", """t0 = time.perf_counter()
if rundir.has_scores(RUN) and rundir.stale_problem(RUN) is None:
    cfg = RunConfig.from_json(rundir.run_config(RUN))   # open: the folder's own settings
    summary, how = rundir.run_summary(RUN), "opened"
else:
    cfg = demo_config("transform", limit_train=POOL_ROWS, warmup={"epochs": WARMUP_EPOCHS})
    summary, how = run_select(cfg, RUN, quiet=True), "ran"
display(Markdown(f"{how} `{RUN.name}` in {time.perf_counter() - t0:.0f} s"))
pd.Series({k: summary.get(k) for k in ("n_pool", "n_selected", "rank", "r95", "r_max", "precision",
                                       "random_precision", "n_wrong_selected", "n_distractor_selected")},
          name="summary", dtype=object).to_frame()""", ["summary"]),
    ("md", """## 2. The singular-value spectrum per checkpoint

The validation gradients G (N_v × D: one row per target example) are decomposed per warm-up checkpoint.
**How to read it.** A steep drop means a few directions carry most of the target's gradient; the cumulative
explained variance shows how many directions reach τ (r95, r99). GIST scores with checkpoint 1 (the paper's);
later checkpoints usually concentrate further as the adapter learns the task.""", []),
    ("code", """specs = spectrum.spectra(RUN)
gist_epoch = int(cfg.checkpoint)
rank0 = int(summary["rank"])
spectrum_figures.singular_values(specs, rank0, gist_epoch)""", []),
    ("code", """spectrum_figures.explained_variance(specs, rank0, cfg.tau, gist_epoch)""", []),
    ("code", """curvature.spectrum_table(specs)""", []),
    ("md", """## 3. Move the rank: precision and coverage

Re-scoring at another rank r needs no gradients: the pool's projections on all stored directions are kept
(`train_proj.npy`), so a new rank is a slice plus a small matrix product (`rescore` is the API call; the viewer's
`rescored_frame` adds the selection under every rule and the ground-truth metrics).

**How to read it.** Too small an r misses some subtasks' directions (their coverage drops, the quota rule
*starves* them); too large an r lets noise directions in. *coverage* is, per target subtask, the correct
examples selected out of those in the pool. Drag the slider (live kernel), or read the static table below it.""",
     []),
    ("code", """BUDGET = float(cfg.budget)
BALANCE = cfg.balance
sc = rescore(RUN, rank0)                                  # the pipeline's own re-score
rs = rescore_view.rescored_frame(RUN, rank0, BALANCE, BUDGET)   # the same scores, plus selections and metrics
assert np.allclose(sc.score, rs.frame["score"], atol=1e-6)


def at_rank(rank: int) -> pd.DataFrame:
    r = rescore_view.rescored_frame(RUN, rank, BALANCE, BUDGET)
    m = r.metrics[BALANCE]
    display(Markdown(f"rank r = {rank}: precision **{m['precision']:.3f}** (random {m['base_rate']:.3f}), "
                     f"recall {m['recall']:.3f}, starved: {', '.join(r.starved[BALANCE]) or 'none'}"))
    return breakdowns.coverage_display(r)


try:
    from ipywidgets import IntSlider, interact
    interact(at_rank, rank=IntSlider(value=rank0, min=1, max=rundir.r_max(RUN), description="rank r"))
except ImportError:  # ipywidgets missing: the static table below says the same
    pass""", []),
    ("code", """ranks = sorted({1, 2, 4, 8, 16, rank0, rundir.r_max(RUN)} & set(range(1, rundir.r_max(RUN) + 1)))
rows = []
for r in ranks:
    x = rescore_view.rescored_frame(RUN, r, BALANCE, BUDGET)
    m = x.metrics[BALANCE]
    rows.append({"rank": r, "precision": round(m["precision"], 3), "random": round(m["base_rate"], 3),
                 "recall": round(m["recall"], 3),
                 **{f"coverage {s}": f"{c['selected']}/{c['in_pool']}" for s, c in m["coverage"].items()},
                 "starved": ", ".join(x.starved[BALANCE]) or "-"})
rank_table = pd.DataFrame(rows).set_index("rank")
rank_table""", ["rank-table"]),
    ("md", """**Which score.** GIST's reference code normalises the pool gradient *after* projecting it on the rank-r
subspace, so a gradient that lies mostly outside the subspace scores as high as one inside it. The norm-aware
score (the default) keeps the target side in the subspace but divides by the pool gradient's whole length
‖g‖, stored beside its coordinates. At r = N_v (every validation gradient spanned) it *is* raw-gradient cosine;
below that, the rank truncation denoises the target side only. The table puts both side by side at every rank
(a run folder made before ‖g‖ was stored has only the in-subspace score).""", []),
    ("code", """arrays = rundir.arrays(RUN)
rows = []
for r in ranks:
    row = {"rank": r}
    for kind in arrays.kinds:
        x = rescore_view.rescored_frame(RUN, r, BALANCE, BUDGET, kind)
        row[f"precision ({labels.SCORE_NAMES[kind]})"] = round(x.metrics[BALANCE]["precision"], 3)
    rows.append(row)
pd.DataFrame(rows).set_index("rank")""", ["score-kinds"]),
    ("md", """## 4. Score histograms

Every pool example's score at the run's rank, stacked by group, with the threshold of the global top-k.
**How to read it.** By ground truth: green (target skill, correct) should sit right of the threshold; red
(wrong answers) and amber (look-alikes: other skills phrased like the target's) to the right of it are the
mistakes. By source: whether one data source dominates the selection.""", []),
    ("code", """h = brushing.histogram_counts(rs.frame, "truth", rs.subtasks)
scores_figures.score_histogram(h, "truth", rs.threshold, rs.k, "Scores by ground truth")""", []),
    ("code", """h = brushing.histogram_counts(rs.frame, "source", rs.subtasks)
scores_figures.score_histogram(h, "source", rs.threshold, rs.k, "Scores by source")""", []),
    ("md", """## 5. The map

Each pool example's projected gradient on the first r directions, normalised (cosine geometry), on its top two
principal axes; the stars are the target examples on the same axes (`method="umap"` fits UMAP instead, cached in
the run folder). **How to read it.** Correct target-skill examples cluster around the stars of their subtask;
examples far from every star score low.""", []),
    ("code", """md = pool_map.map_coords(RUN, rank0, "pca")
pts = pool_map.map_frame(md, rs.frame, "truth", rs.subtasks)
pool_map_figures.pool_map(pts, md.targets, "truth", "pca")""", []),
    ("md", """## 6. The selected examples

The selection under the run's rule, best first, with its ground truth, and the per-subtask coverage under every
selection rule. **How to read it.** *kind* `wrong` / `distractor` rows are what slipped in; the coverage table
gives, per rule, correct selected / picked for each subtask.""", []),
    ("code", """cols = [c for c in ["rank", "score", "id", "skill", "kind", "prompt", "response"] if c in rs.selection]
rs.selection[cols].head(12)""", ["selection"]),
    ("code", """breakdowns.coverage_display(rs)""", []),
    ("md", """## 7. Curvature of one LoRA block

`run_geometry` measures, at every warm-up checkpoint, the exact Hessian, the Gauss–Newton matrix and the
empirical Fisher over a sample of one LoRA module's A and B coordinates (here 256), against Adam's diagonal.
**How to read it.** Bright off-diagonal cells are curvature a diagonal preconditioner (Adam) cannot see; the A–B
blocks come from LoRA's product B·A. The table gives the off-diagonal ratio per matrix and the overlap of the
top-r eigenspaces of GIST's F̂ and of the Hessian, next to the overlap of two random subspaces (r/P).""", []),
    ("code", """if curvature.load_geometry(RUN) is None:
    run_geometry(RUN, GeometryConfig(n_coords=256), quiet=True)
geo = curvature.load_geometry(RUN)
epoch = curvature.geometry_epochs(geo)[0]
mats = curvature.curvature_matrices(RUN, epoch)
dm = curvature.display_matrix(mats["hessian"], mats["n_a"], kind="abs")
curvature_figures.curvature_heatmap(dm, curvature.MATRICES["hessian"], epoch)""", []),
    ("code", """geometry = curvature.geometry_table(geo)
geometry[["epoch", "r95", "offdiag_hessian", "offdiag_fisher", "mass_AB_hessian", "adam_fit_error",
          "overlap_fisher_hessian", "overlap_random"]]""", ["geometry"]),
    ("md", """## 8. Compare: GIST next to LESS and the baselines

`run_compare` reuses this run's warm-up and stages and adds LESS (Adam-preconditioned, randomly projected
gradients), raw-gradient cosine, embedding similarity, length and random selections, plus an oracle row.
`downstream=False` skips fine-tuning a LoRA on each selection (the slow part), so the table holds selection
quality and cost only. **How to read it.** Precision per method and rule (the dashed line is random);
the cost chart is each method's wall time per stage on this machine, which is where GIST's small subspace pays.""",
     []),
    ("code", """if compare.load_compare(RUN) is None:
    run_compare(cfg, CompareConfig(methods=("gist", "less", "rawcos", "random", "length", "embedding"), seeds=1,
                                   less=LessConfig(dim=1024), downstream=False), RUN, quiet=True)
rep = compare.load_compare(RUN)
table = compare.compare_table(rep).dropna(axis=1, how="all")
table[[c for c in ["method", "label", "precision", "recall", "wrong", "look-alikes", "wall_s", "bytes"] if c in table]]""",
     ["compare"]),
    ("code", """refs = {"random": v} if (v := compare.compare_value(rep, "random", "precision")) is not None else {}
compare_figures.metric_bars(table, "precision", "Precision of the selection (target skill, correct answer)", refs)""", []),
    ("code", """compare_figures.cost_bars(compare.cost_frame(rep), list(table["method"]))""", []),
    ("code", """ratios = {compare.RATIO_LABELS[k]: v for k, v in compare.ratio_metrics(rep).items()}
pd.Series(ratios, name="GIST / LESS").to_frame()""", []),
    ("md", """## 9. GradientSpace: clusters in gradient space, one LoRA expert per cluster

A **reconstruction from the abstract** of GradientSpace (arXiv 2512.06678; its online SVD, assignment rule, cluster
count and router are not public). `run_cluster` streams every sampled pool row's full LoRA gradient at the warm-up
checkpoint into a Frequent Directions sketch, clusters the rows in the sketch's coordinates (k-means on unit
rows) and scores the clustering, next to ELREA-style, embedding and random clusters, against the pool's
ground-truth skills. `run_experts` trains one LoRA per cluster, a router on the prompt's base-model embedding,
and the ELREA ensemble, and evaluates them against one LoRA on everything. Small settings here (400 rows, k = 8,
one seed, 2 epochs) so the cell takes a couple of minutes; `gist-lab cluster` / `gist-lab experts` default to
3,000 rows, k by silhouette and 3 seeds. **How to read it.** ARI / NMI / purity: agreement with the skills (1 =
the skills exactly); test loss: lower is better; routing accuracy: the share of queries sent to a cluster whose
majority skill is the query's own.""", []),
    ("code", """if clusters.load_clusters(RUN) is None:
    run_cluster(RUN, ClusterConfig(n_clusters=8, pool_size=400, rank=16, sketch_size=32, elrea_dim=64), quiet=True)
crep = clusters.load_clusters(RUN)
clusters.table_frame(crep)""", ["clusters"]),
    ("code", """cluster_figures.composition_heatmap(clusters.composition_frame(crep, "gradientspace"),
                            "Cluster × skill composition (share of each cluster)")""", []),
    ("code", """if clusters.load_experts(RUN) is None:
    run_experts(RUN, ExpertConfig(seeds=1, train=TrainConfig(epochs=2, lr=1e-3, seed=0), per_skill=4, per_subtask=8,
                                  n_em=2, latency_queries=2), quiet=True)
erep = clusters.load_experts(RUN)
display(clusters.routing_frame(erep))
clusters.expert_table(erep)""", ["experts"]),
    ("code", """cluster_figures.confusion_heatmap(clusters.confusion_frame(erep, "gradientspace"),
                          "Router confusion: true skill → routed cluster (its majority skill)")""", []),
    ("md", """## 10. GAST: per-layer data selection inside LoRA training

GAST (Yao et al., EACL 2026) changes training, not the dataset: at every step, each transformer layer keeps its
own K of the batch's B examples, sampled by a softmax over the cosine between the example's gradient *at that
layer* and the batch's support gradient (here the mean gradient of K_s random batch examples), and only those
rows update that layer's LoRA weights. `run_ablation` trains GAST next to plain LoRA (every example, every
layer) with the same recipe and evaluates both on the target's test split. Small settings here (400 rows,
1 epoch, one seed); `gist-lab train --ablation` defaults to 2,000 rows, 3 epochs, 3 seeds and adds top-K and
random-K. **How to read it.** Test loss: lower is better; the heatmap: the share of an example's batches in
which a layer selected it (K/B = 0.5 is what random selection gives every cell).""", []),
    ("code", """GAST_DIR = RUNS / "notebook-gast"
gcfg = TrainRunConfig(pool_size=400, recipe=TrainConfig(epochs=1, lr=1e-3, batch_size=16, seed=0), n_em=2)
arep = run_ablation(gcfg, GAST_DIR, seeds=1, runs=(("lora", "cached"), ("gast", "cached")))
layers.ablation_frame(arep)[["run", "test loss", "exact match", "ms / step", "held MB / step"]]""", ["gast"]),
    ("code", """member = GAST_DIR / next(m for v in arep["table"].values() if v["method"] == "gast" for m in v["members"])
grep = layers.load_train(member)
freq = layers.frequency_frame(member, grep, "skill")
layer_figures.skill_heatmap(layers.frequency_by(freq, "skill"), "GAST: mean selection frequency per layer and skill")""", []),
    ("md", """## 11. Iprox: a low-rank proxy of the model for cheaper selection

Iprox (arXiv 2602.17835, ICLR 2026) builds the proxy *from the model itself*: every linear layer W becomes two
factors A·B (stage 1, IPSVD: the rank-r factors that change the layer's gradient influence least, weighted by
probe inputs and output gradients; r from the sparsity ρ), then stage 2 trains the factors so that their gradients
point where the model's own do. `run_proxy` builds the proxy (ρ = 0.5), a plain-SVD ablation and a sweep point
(ρ = 0.7), runs the same selection (GIST and LESS) on the model and on each proxy, and compares their pool scores.
On the tiny LM there is little to compress and nothing to save (a proxy's gradient costs about the same); the
Iprox page of the documentation (docs/methods/iprox.md) has SmolLM2-135M's table. **How to read it.** Spearman:
rank agreement of a proxy's scores with the model's over the pool (1 = the same order); top-5 % overlap: the
share of the model's top 5 % the proxy also puts in its top 5 %; grad time vs target: below 1 is a saving.""", []),
    ("code", """PROXY_DIR = RUNS / "notebook-proxy"
pcfg = ProxyConfig(rho=0.5, sweep=(0.7,), candidates=("svd",), eval_pool=400, less_dim=1024, warmup_epochs=2,
                   align_examples=64, align_epochs=2)
prep = run_proxy(pcfg, PROXY_DIR)
proxy.models_frame(prep)[["model", "how", "ρ", "share of target", "gist Spearman", "gist top-5% overlap",
                          "less Spearman", "less top-5% overlap", "grad time vs target"]]""", ["proxy"]),
    ("code", """proxy_figures.rho_sweep(proxy.sweep_frame(prep))""", []),
    ("code", """proxy_figures.stage2_curve(proxy.curve_frame(prep, "proxy"))""", []),
    ("md", """The same folders open in the dashboard (`streamlit run app.py`, with the same `GIST_LAB_RUNS`):
the Spectrum, Scores, Examples, Map, Curvature, Compare, Clusters, Layers and Proxy pages draw these figures with
their widgets.""", []),
]


def build() -> nbformat.NotebookNode:
    cells = []
    for kind, src, tags in CELLS:
        cell = new_markdown_cell(src) if kind == "md" else new_code_cell(src)
        if tags:
            cell.metadata["tags"] = tags
        cells.append(cell)
    nb = new_notebook(cells=cells, metadata={
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"}})
    for i, cell in enumerate(nb.cells):  # stable ids: the stored file only changes when a cell does
        cell["id"] = f"cell-{i:02d}"
    return nb


def render() -> str:
    return nbformat.writes(build()) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    sys.stdout.write(f"wrote {OUT}\n")
