"""Proxy: Iprox's low-rank proxy of the target model, its ablations and how far their selection agrees with the
target's (from `gist-lab proxy build`)."""
from __future__ import annotations

from argparse import ArgumentTypeError

import streamlit as st

from gist_core.app import jobs, ui
from gist_core.flags import floats_list
from gist_core.methods.iprox import figures as proxy_figures
from gist_core.methods.iprox import view as proxy
from gist_core.methods.iprox.artefacts import is_proxy_run
from gist_core.methods.iprox.config import CANDIDATES, INITS, ProxyConfig
from gist_core.runner import launcher
from gist_core.store.runs import runs_root

ui.page_setup("Proxy")
st.title("Proxy")
names = proxy.proxy_folders(runs_root())
LAUNCHED = "proxy_launched"  # the folder launched last: shown once it has results
SELECTION_METHODS = ("gist", "less", "rawcos")  # what a proxy evaluation can compare (ProxyConfig's check)


def proxy_form() -> None:
    """`gist-lab proxy build`'s settings (the CLI's defaults) into a new folder, the command and its button."""
    d = ProxyConfig()
    out, problem = jobs.out_folder("proxy", is_proxy_run, "proxy", "px")
    c = st.columns(4)
    model = jobs.model_picker(d.model, "px_model", c[0])
    train = c[1].text_input("Pool (probe, alignment and scored rows)", d.train, key="px_train")
    target = c[2].text_input("Target validation examples", d.target, key="px_target")
    rho = c[3].number_input("ρ (share of each compressed layer's parameters removed)", 0.01, 0.99, d.rho,
                            key="px_rho")
    c = st.columns(4)
    sweep = c[0].text_input("Further ρ values (comma-separated)", "", key="px_sweep",
                            help="each is built (IPSVD + stage 2) and evaluated too")
    candidates = c[1].multiselect("Ablations beside the proxy", CANDIDATES, list(d.candidates), key="px_candidates")
    init = c[2].selectbox("Factor initialisation", INITS, key="px_init")
    rank_multiple = c[3].number_input("Ranks rounded up to a multiple of", 1, 4096, d.rank_multiple, key="px_rank_mult")
    c = st.columns(4)
    align_epochs = c[0].number_input("Stage-2 epochs (0 = IPSVD only)", 0, 100, d.align_epochs, key="px_align_epochs")
    align_examples = c[1].number_input("Stage-2 rows", 0, 10**6, d.align_examples, key="px_align_examples")
    lambda_kd = c[2].number_input("λ_KL (logit anchor)", 0.0, 100.0, d.lambda_kd, format="%g", key="px_lambda")
    probes = c[3].number_input("Probe rows (IPSVD)", 1, 10**5, d.probe_examples, key="px_probes")
    c = st.columns(4)
    c[0].markdown("")  # level with the inputs beside it
    evaluate = c[0].checkbox("Evaluate against the model", d.evaluate, key="px_evaluate",
                             help="score the pool with the model and with every proxy, and compare (off: build only, "
                                  "--no-evaluate)")
    methods = c[1].multiselect("Selection methods compared", SELECTION_METHODS, list(d.methods), key="px_methods",
                               disabled=not evaluate)
    eval_pool = c[2].number_input("Pool rows scored", 1, 10**7, d.eval_pool, key="px_eval_pool", disabled=not evaluate)
    warmup = c[3].number_input("Warm-up epochs of the selection runs", 1, 100, d.warmup_epochs, key="px_warmup",
                               disabled=not evaluate)
    with st.expander("More: probes, stage 2, the selection runs, downstream"):
        e = st.columns(4)
        max_probes = e[0].number_input("Probe tokens per layer", 1, 10**6, d.max_probes, key="px_max_probes")
        align_batch = e[1].number_input("Stage-2 batch", 1, 4096, d.align_batch, key="px_align_batch")
        align_lr = e[2].number_input("Stage-2 learning rate", 1e-8, 1.0, d.align_lr, format="%g", key="px_align_lr")
        tau = e[3].number_input("Distillation temperature", 0.01, 100.0, d.tau, key="px_tau")
        less_dim = e[0].number_input("LESS projection dimension", 1, 10**6, d.less_dim, key="px_less_dim")
        lora_r = e[1].number_input("LoRA r (selection runs)", 1, 1024, d.lora.r, key="px_lora_r")
        lora_layers = e[2].number_input("LoRA on the last L layers (0 = all)", 0, 1000, 0, key="px_lora_layers")
        max_length = e[3].number_input("Tokens per example", 8, 32768, d.max_length, key="px_max_length")
        seed = e[0].number_input("Seed", 0, 2**31 - 1, d.seed, key="px_seed")
        device = e[1].selectbox("Device", ["auto", "cpu", "cuda"], key="px_device")
        dtype = e[2].selectbox("dtype", ["float32", "bfloat16", "float16"], key="px_dtype")
        downstream = e[3].checkbox("Downstream: fine-tune the target on each model's selection", d.downstream,
                                   key="px_downstream", disabled=not evaluate)
    try:
        rhos = floats_list(sweep)
    except ArgumentTypeError as e:
        rhos, problem = (), problem or f"Further ρ values: {e}."
    if not model:
        problem = problem or "Name the model."
    if evaluate and not methods:
        problem = problem or "Choose at least one selection method to compare."
    args = launcher.proxy_args(out, model=model, train=train.strip(), target=target.strip(), rho=rho, sweep=rhos,
                               candidates=candidates, init=init, rank_multiple=int(rank_multiple),
                               align_epochs=int(align_epochs), align_examples=int(align_examples), lambda_kd=lambda_kd,
                               probe_examples=int(probes), no_evaluate=not evaluate,
                               methods=methods if evaluate else None, eval_pool=int(eval_pool) if evaluate else None,
                               warmup_epochs=int(warmup) if evaluate else None, max_probes=int(max_probes),
                               align_batch=int(align_batch), align_lr=align_lr, tau=tau, less_dim=int(less_dim),
                               lora_r=int(lora_r), lora_layers=int(lora_layers) or None, max_length=int(max_length),
                               seed=int(seed), device=device, dtype=dtype, downstream=evaluate and downstream)
    jobs.launch_block(out, args, "gist-lab proxy build", problem, key="launch_proxy",
                      on_launch=lambda: st.session_state.update({LAUNCHED: out.name}))


name = jobs.folder_picker(
    names, "proxy", is_proxy_run, what="gist-lab proxy build", form=proxy_form,
    launched_key=LAUNCHED, label="Proxy folder", key="proxy_folder",
    intro=f"No `gist-lab proxy build` folder under `{runs_root()}` yet: launch one below. Iprox compresses the "
          "model to a low-rank proxy, aligns its gradients with the model's, then runs the same selection on both "
          "and compares their pool scores. On the bundled tiny LM the defaults take 6 to 9 minutes on 2 cores.")
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

with st.expander("Launch another `gist-lab proxy build`"):
    proxy_form()
