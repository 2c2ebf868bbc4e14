"""Clusters: GradientSpace (a reconstruction from the abstract) against ELREA-style, embedding and random clusters
(from `gist-lab cluster`)."""
from __future__ import annotations

import streamlit as st

from gist_core.app import ui
from gist_core.viewer import clusters, figures

ui.page_setup("Clusters")
st.title("Clusters")
run_dir = ui.require_run(ui.run_picker())
rep = clusters.load_clusters(run_dir)
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
left.plotly_chart(figures.agreement_bars(table), width="stretch")
if rep["k_curve"]:
    right.plotly_chart(figures.k_curve(rep["k_curve"], rep["k"]), width="stretch")
else:
    right.info(f"k = {rep['k']} was given (`--clusters`); no silhouette sweep.")

method = st.radio("Clustering", clusters.methods(rep), horizontal=True, format_func=lambda m: clusters.METHOD_LABELS.get(m, m),
                  key="clusters_method")
st.plotly_chart(figures.composition_heatmap(clusters.composition_frame(rep, method),
                                            "Cluster × skill composition (share of each cluster)"), width="stretch")
st.subheader("Examples per cluster")
members = clusters.cluster_members(run_dir, method, ui.load_run(run_dir).frame)
pick = st.selectbox("Cluster", sorted(members["cluster"].unique()), format_func=lambda c: f"c{c} "
                    f"({(members['cluster'] == c).sum()} examples)", key="clusters_pick")
st.dataframe(members[members["cluster"] == pick], hide_index=True, width="stretch")
st.caption("Not built yet: one LoRA expert per cluster, the router and its confusion matrix, per-skill loss of "
           "single LoRA / ELREA ensemble / routed experts.")
