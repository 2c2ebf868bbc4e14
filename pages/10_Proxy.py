"""Proxy: Iprox's low-rank proxy of the target model, its ablations and how far their selection agrees with the
target's (from `gist-lab proxy build`)."""
from __future__ import annotations

import streamlit as st

from gist_core.app import ui
from gist_core.methods.iprox import figures as proxy_figures
from gist_core.methods.iprox import view as proxy
from gist_core.store.runs import runs_root

ui.page_setup("Proxy")
st.title("Proxy")
names = proxy.proxy_folders(runs_root())
if not names:
    st.info(f"No `gist-lab proxy build` folder under `{runs_root()}` yet. Run `gist-lab proxy build --out "
            f"{runs_root()}/proxy` (the bundled tiny LM, a few minutes) or `gist-lab proxy build --model smollm2-135m "
            f"--rho 0.5 --sweep 0.7 --out {runs_root()}/proxy-smollm2` for a real model.")
    st.stop()
name = st.sidebar.selectbox("Proxy folder", names, key="proxy_folder")
rep = ui.folder_view(proxy.load_report, ui.run_dir_of(name))
if rep is None:
    st.warning(f"`{name}` has an unreadable proxy.json: rerun `gist-lab proxy build` with the same --out.")
    st.stop()
cfg = rep["config"]
methods = list(cfg["methods"])
st.caption(
    f"Iprox (arXiv 2602.17835): the target `{rep['target']}` compressed to rank-r factors per linear layer "
    f"(IPSVD from {cfg['max_probes']} probe tokens per layer out of {cfg['probe_examples']} pool rows; ranks rounded "
    f"up to a multiple of {cfg['rank_multiple']}), then stage 2 aligns the factor gradients with the target's "
    f"({cfg['align_examples']} rows × {cfg['align_epochs']} epochs, λ_KL {cfg['lambda_kd']:g}). Each model then runs "
    f"the same selection ({', '.join(methods)}; LoRA warm-up {cfg['warmup_epochs']} epochs) on the pool's first "
    f"{cfg['eval_pool']} rows; agreement compares its pool scores with the target's: Spearman's ρs over the pool and "
    f"the share of the target's top {rep.get('k_top', '?')} (5 %) it also ranks top (chance: 0.05). Precision (bundled "
    f"pools): the share of a model's own top 5 % with the target's skill and a correct answer.")
frame = proxy.models_frame(rep)
if "evaluation" not in rep:
    st.info("Built with --no-evaluate: sizes and build times only.")
formats = {"params": "%d", "share of target": "%.2f", "ρ": "%.2f", "build s": "%.1f", "grad ms / example": "%.1f",
           "grad time vs target": "%.2f", "selection peak RSS MB": "%.0f"}
st.dataframe(frame, hide_index=True, width="stretch", column_config={
    c: st.column_config.NumberColumn(format=formats.get(c, "%.3f")) for c in frame.columns if c not in ("model", "how")})
sweep = proxy.sweep_frame(rep)
if "evaluation" in rep:
    st.plotly_chart(proxy_figures.rho_sweep(sweep), width="stretch")
    if sweep["ρ"].nunique() <= 2:
        st.caption("One ρ so far: add points with `--sweep 0.3,0.7` (the built models are kept).")
    metric = st.radio("Agreement", ["Spearman", "top-5% overlap"], horizontal=True, key="proxy_metric")
    st.plotly_chart(proxy_figures.agreement_bars(frame, methods, metric), width="stretch")
built = [n for n in frame["model"] if rep["models"].get(n, {}).get("plan")]  # the table's order: the proxy first
if built:
    pick = st.selectbox("Model to inspect", built, key="proxy_model")
    meta = rep["models"][pick]
    ranks = proxy.ranks_frame(rep, pick)
    share, grid = proxy.rank_grid(rep, pick)
    st.plotly_chart(proxy_figures.rank_heatmap(share, grid, f"{pick}: rank kept per layer ({proxy.describe(meta)}, "
                                                      f"ρ {meta['rho']:g})"), width="stretch")
    st.caption(f"{int(ranks['dense'].sum())} of {len(ranks)} layers stay dense (rank ≥ min(m, n) after rounding); "
               f"{meta['params']:,} of {meta['target_params']:,} parameters ({meta['params'] / meta['target_params']:.0%}).")
    curve = proxy.curve_frame(rep, pick)
    if len(curve):
        st.plotly_chart(proxy_figures.stage2_curve(curve), width="stretch")
    else:
        st.caption("No stage 2 for this model.")
