"""Layers: GAST's per-layer data selection inside LoRA training (from `gist-lab train`)."""
from __future__ import annotations

import streamlit as st

from gist_core.app import ui
from gist_core.methods.gast import figures as layer_figures
from gist_core.methods.gast import view as layers
from gist_core.methods.gradientspace import figures as cluster_figures
from gist_core.store.runs import runs_root

ui.page_setup("Layers")
st.title("Layers")
names = layers.train_folders(runs_root())
if not names:
    st.info(f"No `gist-lab train` folder under `{runs_root()}` yet. Run `gist-lab train --ablation --out "
            f"{runs_root()}/gast-ablation` (GAST, top-K, random K and plain LoRA, 3 seeds) or "
            "`gist-lab train --out DIR` for one run.")
    st.stop()
name = st.sidebar.selectbox("Training folder", names, key="layers_folder")
folder = ui.run_dir_of(name)
st.caption("GAST (arXiv 2603.09865): each step, every layer's LoRA update uses only the K_select batch examples "
           "drawn from a softmax of their standardised gradient alignment with a support mini-batch's gradient. "
           "The paper leaves the softmax temperature, with/without replacement and mean/sum open; the settings used "
           "are in each run's train.json.")
abl = ui.folder_view(layers.load_ablation, folder)
member = folder
if abl is not None:
    cfg = abl["config"]
    st.subheader("Ablation: equal steps, equal batches")
    st.caption(f"{abl['seeds']} seeds; {cfg['pool_size']} training examples, {cfg['recipe']['epochs']} epochs, batch "
               f"{cfg['recipe']['batch_size']}, K_select {cfg['gast']['k_select']}, K_sup {cfg['gast']['k_support']} "
               f"(support: {cfg['gast']['support']}); test: the target's test split, per subtask. Device: "
               f"{abl['device']}. Held MB / step: what the implementation keeps for the selection beyond a plain "
               "step (cached: every example's per-layer gradient; twopass: the blocks' inputs and output gradients).")
    ui.number_table(layers.ablation_frame(abl), "run")
    left, right = st.columns(2)
    left.plotly_chart(layer_figures.loss_curves(ui.folder_view(layers.loss_curves, folder, abl)), width="stretch")
    metric = right.radio("Per-subtask", ["loss", "exact_match"], horizontal=True, key="layers_metric")
    right.plotly_chart(cluster_figures.per_group_bars(layers.per_subtask_frame(abl, metric), metric), width="stretch")
    runs = [m for v in abl["table"].values() for m in v["members"]]
    member = folder / st.selectbox("Run to inspect", runs, key="layers_member")

rep = ui.folder_view(layers.load_train, member)
if rep is None:
    st.warning(f"`{member}` has no train.json.")
    st.stop()
st.subheader(f"What {layers.label(rep['method'], rep['implementation'])} selected (seed {rep['seed']})")
peak = rep.get("cpu_peak_rss_bytes")
st.caption(f"{rep['steps']} steps on {rep['n_train']} examples (support set: {rep['config']['gast']['support']}); test "
           f"loss {rep['test_loss']:.3f}, exact match {rep['exact_match']:.3f}; {rep['step_ms_median']:.0f} ms a step"
           + ("." if peak is None else f"; peak resident memory during training {peak / 2**20:.0f} MB above its start."))
sort_by = st.radio("Sort examples by", ["skill", "kind", "frequency"], horizontal=True, key="layers_sort")
freq = ui.folder_view(layers.frequency_frame, member, rep, sort_by)
st.plotly_chart(layer_figures.frequency_heatmap(freq, "Selection frequency: layer × training example"), width="stretch")
by = st.radio("Mean per", ["skill", "kind"], horizontal=True, key="layers_by")
st.plotly_chart(layer_figures.skill_heatmap(layers.frequency_by(freq, by), f"Mean selection frequency per layer and {by}"),
                width="stretch")
cos = ui.folder_view(layers.cosine_frame, member)
if len(cos):
    st.plotly_chart(layer_figures.cosine_histograms(cos), width="stretch")
else:
    st.caption("Plain LoRA selects every example: no alignment to show.")
