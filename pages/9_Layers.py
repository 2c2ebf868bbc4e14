"""Layers: GAST's per-layer data selection inside LoRA training (from `gist-lab train`)."""
from __future__ import annotations

import streamlit as st

from gist_core.app import jobs, ui
from gist_core.methods.gast import figures as layer_figures
from gist_core.methods.gast import view as layers
from gist_core.methods.gast.artefacts import is_train_folder
from gist_core.methods.gast.config import GAST_METHODS, TrainRunConfig
from gist_core.methods.gradientspace import figures as cluster_figures
from gist_core.runner import launcher
from gist_core.store.runs import runs_root

ui.page_setup("Layers")
st.title("Layers")
names = layers.train_folders(runs_root())
LAUNCHED = "layers_launched"  # the folder launched last: shown once it has results


def train_form() -> None:
    """`gist-lab train`'s settings (the CLI's defaults) into a new folder, the command they make and its button."""
    d = TrainRunConfig()
    out, problem = jobs.out_folder("train", is_train_folder, "gast", "tr")
    c = st.columns(4)
    ablation = c[0].toggle("Ablation", key="tr_ablation",
                           help="GAST, top-K, random K and plain LoRA (cached) and GAST (twopass), each over the seeds, "
                                "one folder per run and ablation.json (--ablation)")
    seeds = c[1].number_input("Ablation seeds", 1, 20, 3, key="tr_seeds", disabled=not ablation)
    method = c[2].selectbox("Method", GAST_METHODS, key="tr_method", disabled=ablation,
                            help="gast: softmax sampling (the paper) | topk: the top K | random: K uniformly | lora: "
                                 "plain LoRA (every example)")
    impl = c[3].radio("Implementation", ["cached", "twopass"], horizontal=True, key="tr_impl", disabled=ablation,
                      help="cached: per-example per-layer gradients in memory | twopass: less memory, two passes")
    c = st.columns(4)
    model = jobs.model_picker(d.model, "tr_model", c[0])
    train = c[1].text_input("Training examples", d.train, key="tr_train")
    target = c[2].text_input("Target validation examples", d.target, key="tr_target",
                             help="its test.jsonl is the test split; the support set under support = target")
    pool = c[3].number_input("Training rows (0 = all)", 0, 10**7, d.pool_size, key="tr_pool",
                             help="a seeded sample of the training file")
    c = st.columns(4)
    k_select = c[0].number_input("K_select (examples per layer update)", 1, 4096, d.gast.k_select, key="tr_k_select")
    k_support = c[1].number_input("K_sup (support mini-batch)", 1, 4096, d.gast.k_support, key="tr_k_support")
    support = c[2].radio("Support set", ["train", "target"], horizontal=True, key="tr_support")
    batch = c[3].number_input("Batch size", 1, 4096, d.recipe.batch_size, key="tr_batch")
    c = st.columns(4)
    epochs = c[0].number_input("Epochs", 1, 100, d.recipe.epochs, key="tr_epochs")
    lr = c[1].number_input("Learning rate", 1e-7, 1.0, d.recipe.lr, format="%g", key="tr_lr")
    seed = c[2].number_input("Seed", 0, 2**31 - 1, d.recipe.seed, key="tr_seed", disabled=ablation)
    lora_r = c[3].number_input("LoRA r", 1, 1024, d.lora.r, key="tr_lora_r")
    with st.expander("Evaluation and the selection's open choices"):
        e = st.columns(4)
        max_length = e[0].number_input("Tokens per example", 8, 32768, d.max_length, key="tr_max_length")
        n_em = e[1].number_input("Exact-match prompts per test subtask", 0, 10_000, d.n_em, key="tr_n_em")
        test = e[2].text_input("Test split (blank: test.jsonl beside the target)", key="tr_test")
        device = e[3].selectbox("Device", ["auto", "cpu", "cuda"], key="tr_device")
        temperature = e[0].number_input("Softmax temperature", 0.01, 100.0, d.gast.temperature, key="tr_temperature")
        aggregate = e[1].radio("Aggregate", ["mean", "sum"], horizontal=True, key="tr_aggregate")
        replacement = e[2].checkbox("Sample with replacement", d.gast.replacement, key="tr_replacement")
    if not model:
        problem = problem or "Name the model."
    args = launcher.train_args(out, ablation=ablation, seeds=int(seeds), model=model, train=train.strip(),
                               target=target.strip(), test=test.strip() or None, pool_size=int(pool),
                               max_length=int(max_length), n_em=int(n_em), device=device,
                               method=None if ablation else method, implementation=None if ablation else impl,
                               k_select=int(k_select), k_support=int(k_support), support=support,
                               temperature=temperature, replacement=replacement, aggregate=aggregate,
                               epochs=int(epochs), lr=lr, batch_size=int(batch),
                               seed=None if ablation else int(seed), lora_r=int(lora_r))
    jobs.launch_block(out, args, "gist-lab train", problem, key="launch_train",
                      on_launch=lambda: st.session_state.update({LAUNCHED: out.name}))


name = jobs.folder_picker(
    names, "train", is_train_folder, what="gist-lab train", form=train_form,
    launched_key=LAUNCHED, label="Training folder", key="layers_folder",
    intro=f"No `gist-lab train` folder under `{runs_root()}` yet: launch one below. GAST picks, per layer and step, "
          "which batch examples each LoRA update uses; the ablation runs it beside top-K, random K and plain LoRA. "
          "On the bundled tiny LM one run (2,000 rows, 3 epochs) takes a little over a minute on 2 cores.")
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

with st.expander("Launch another `gist-lab train`"):
    train_form()
