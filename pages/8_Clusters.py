"""Clusters: GradientSpace (a reconstruction from the abstract) against ELREA-style, embedding and random clusters
(from `gist-lab cluster`)."""
from __future__ import annotations

import streamlit as st

from gist_core.app import ui
from gist_core.methods.gradientspace import figures as cluster_figures
from gist_core.methods.gradientspace import view as clusters
from gist_core.viewer import rundir

ui.page_setup("Clusters")
st.title("Clusters")
run_dir = ui.require_run(ui.run_picker())
rep = ui.folder_view(clusters.load_clusters, run_dir)
if rep is None:
    st.info(f"No clustering in this run yet. Run `gist-lab cluster --run {run_dir}` (a finished warm-up is enough).")
    st.stop()

st.caption("GradientSpace here is a **reconstruction from the abstract** (arXiv 2512.06678): its online-SVD variant, "
           "assignment rule, cluster count and router are not public. Frequent Directions sketch of the full "
           f"LoRA gradients at warm-up checkpoint {rep['checkpoint']}, rank {rep['config']['rank']}, "
           f"rule `{rep['config']['rule']}`, {rep['n_rows']:,} pool rows, k = {rep['k']}.")
table = clusters.table_frame(rep)
st.subheader("Agreement with the ground-truth skills")
st.dataframe(table, hide_index=True, width="stretch",
             column_config={c: st.column_config.NumberColumn(format="%.3f") for c in
                            ("ARI", "NMI", "purity", "within-cluster variance / total")})
st.caption("Within-cluster variance is measured on the unit-normalised gradient-sketch coordinates for every method "
           "(the paper's argument: clustering by gradient lowers the gradient variance inside a cluster).")
left, right = st.columns(2)
left.plotly_chart(cluster_figures.agreement_bars(table), width="stretch")
if rep["k_curve"]:
    right.plotly_chart(cluster_figures.k_curve(rep["k_curve"], rep["k"]), width="stretch")
else:
    right.info(f"k = {rep['k']} was given (`--clusters`); no silhouette sweep.")

method = st.radio("Clustering", clusters.methods(rep), horizontal=True, format_func=lambda m: clusters.METHOD_LABELS.get(m, m),
                  key="clusters_method")
st.plotly_chart(cluster_figures.composition_heatmap(clusters.composition_frame(rep, method),
                                            "Cluster × skill composition (share of each cluster)"), width="stretch")
st.subheader("Examples per cluster")
frame = ui.folder_view(rundir.load_run, run_dir).frame
members = ui.folder_view(clusters.cluster_members, run_dir, method, frame)
pick = st.selectbox("Cluster", sorted(members["cluster"].unique()), format_func=lambda c: f"c{c} "
                    f"({(members['cluster'] == c).sum()} examples)", key="clusters_pick")
st.dataframe(members[members["cluster"] == pick], hide_index=True, width="stretch")
st.subheader("Map coloured by cluster")
st.plotly_chart(cluster_figures.cluster_scatter(ui.folder_view(clusters.cluster_map, run_dir, method, frame),
                                        "Pool rows on the top-2 principal axes of their unit gradient-sketch coordinates"),
                width="stretch")
st.caption("The same 2-D picture for every clustering (the gradient sketch's axes), coloured by the chosen "
           "clustering's labels; hover for the ground-truth skill.")

st.header("Experts")
ex = ui.folder_view(clusters.load_experts, run_dir)
if ex is None:
    st.info(f"No experts in this run yet. Run `gist-lab experts --run {run_dir}` (after `gist-lab cluster`): one "
            "LoRA per cluster, a router, the ELREA ensemble, evaluated over 3 seeds.")
    st.stop()
cfg = ex["config"]
st.caption(f"One LoRA expert per cluster ({', '.join(cfg['clusterings'])}; k = {ex['clusters_k']}), each trained "
           f"with the downstream recipe ({cfg['train']['epochs']} epochs, lr {cfg['train']['lr']}); a `{cfg['router']}` "
           "router on the prompt's base-model embedding picks one expert (**routed**, the GradientSpace rule); the "
           "ELREA **ensemble** mixes the logits of all experts with softmax weights from the query's instruction "
           f"gradient's cosine to each cluster centroid (τ = {cfg['temperature']}) and the all-data adapter with "
           f"weight β = {cfg['base_weight']}. Evaluated on {ex['n_tests']:,} test examples "
           f"({', '.join(ex['test_sets'])}), {ex['seeds_done']} seed(s); latency on one query at a time, "
           "median, this machine's CPU.")
ui.number_table(clusters.expert_table(ex), "rule")
st.caption("Test loss: mean token cross-entropy on the answer tokens, per test group (set/skill), then over groups "
           "(lower is better); exact match: greedy decode equals the reference answer; ± is the standard deviation "
           "over seeds. Oracle: each query sent to the cluster with most rows of its true skill (a perfect router).")
if steps := clusters.steps_line(ex):
    st.caption(steps)
st.subheader("Routing against the ground truth")
ui.number_table(clusters.routing_frame(ex), "clustering")
st.caption("A query is routed correctly when the chosen cluster's majority skill is the query's true skill "
           "(every bundled target's test example carries the pool skill it exercises).")
routed = st.radio("Router of", clusters.routed_methods(ex), horizontal=True, key="experts_router",
                  format_func=lambda m: clusters.METHOD_LABELS.get(m, m))
st.plotly_chart(cluster_figures.confusion_heatmap(clusters.confusion_frame(ex, routed),
                                          "Router confusion: true skill → routed cluster (its majority skill)"),
                width="stretch")
metric = st.radio("Per-skill metric", ["loss", "exact_match"], horizontal=True, key="experts_metric",
                  format_func=lambda m: {"loss": "test loss", "exact_match": "exact match"}[m])
st.plotly_chart(cluster_figures.per_group_bars(clusters.per_group_frame(ex, metric, base=False), metric), width="stretch")
st.caption("The base model (no adapter) is in the table above and left out here: its losses dwarf the others.")
