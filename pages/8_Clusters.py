"""Clusters: GradientSpace (a reconstruction from the abstract) against ELREA-style, embedding and random clusters
(from `gist-lab cluster`)."""
from __future__ import annotations

import streamlit as st

from gist_core.app import jobs, ui
from gist_core.methods.gradientspace import figures as cluster_figures
from gist_core.methods.gradientspace import view as clusters
from gist_core.methods.gradientspace.config import CLUSTER_RULES, EXPERT_CLUSTERINGS, EXPERT_ROUTERS, ClusterConfig, ExpertConfig
from gist_core.runner import launcher
from gist_core.store.layout import RunLayout
from gist_core.viewer import rundir

ui.page_setup("Clusters")
st.title("Clusters")
run_dir = ui.require_run(ui.run_picker())


def cluster_form() -> None:
    """`gist-lab cluster`'s settings (the CLI's defaults), the command they make and its Launch button."""
    d = ClusterConfig()
    ready = RunLayout(run_dir).config.exists() and bool(rundir.checkpoint_epochs(run_dir))
    with st.container(border=True):
        st.markdown("**Launch `gist-lab cluster` on this run**")
        c = st.columns(4)
        k = c[0].number_input("Clusters k (0 = pick by silhouette)", 0, 512, d.n_clusters, key="cl_k")
        grid = c[1].text_input("k candidates (silhouette sweep)", ",".join(map(str, d.k_grid)), key="cl_grid",
                               disabled=k > 0, help="comma-separated cluster counts, each ≥ 2")
        rule = c[2].radio("Assignment", CLUSTER_RULES, horizontal=True, key="cl_rule",
                          help="kmeans: k-means on the unit sketch coordinates | dominant: argmax |v_k·g| (k ≤ rank)")
        pool = c[3].number_input("Pool rows clustered (0 = all)", 0, 10**7, d.pool_size, step=500, key="cl_pool",
                                 help="a seeded sample of the run's pool; time grows with it (four gradient passes)")
        c = st.columns(4)
        rank = c[0].number_input("Sketch rank K", 1, 4096, d.rank, key="cl_rank")
        sketch = c[1].number_input("Sketch buffer ℓ (≥ K)", 1, 8192, d.sketch_size, key="cl_sketch",
                                   help="Frequent Directions keeps 2ℓ gradient rows in memory")
        batch = c[2].number_input("Examples per gradient batch", 1, 1024, d.batch_size, key="cl_batch")
        seed = c[3].number_input("Seed", 0, 2**31 - 1, d.seed, key="cl_seed")
        with st.expander("ELREA baseline"):
            e = st.columns(2)
            elrea_dim = e[0].number_input("Random-projection dimension", 1, 65536, d.elrea_dim, key="cl_elrea_dim")
            birch = e[1].number_input("BIRCH threshold", 0.001, 10.0, d.birch_threshold, format="%g", key="cl_birch")
        try:
            k_grid = None if k else tuple(int(x) for x in grid.split(",") if x.strip())
            problem = None
        except ValueError:
            k_grid, problem = None, f"k candidates: '{grid}' is not a comma-separated list of whole numbers."
        if sketch < rank:
            problem = f"The sketch buffer ℓ ({sketch}) must be at least the rank K ({rank})."
        if not ready:
            problem = "This run has no finished warm-up yet (no checkpoint): finish it first (Run page)."
        args = launcher.cluster_args(run_dir, clusters=int(k), k_grid=k_grid, rank=int(rank), sketch_size=int(sketch),
                                     rule=rule, pool_size=int(pool), elrea_dim=int(elrea_dim), birch_threshold=birch,
                                     batch_size=int(batch), seed=int(seed))
        jobs.launch_block(run_dir, args, "gist-lab cluster", problem, key="launch_cluster")


rep = ui.folder_view(clusters.load_clusters, run_dir)
if rep is None:
    st.info("No clustering in this run yet: `gist-lab cluster` clusters a seeded sample of its pool in "
            "LoRA-gradient space (a finished warm-up is enough), beside ELREA, embedding and random clusters. On the "
            "bundled tiny LM, 3,000 rows take about 4 minutes on 2 cores.")
    if not jobs.blocked(run_dir, "cluster"):
        cluster_form()
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


def experts_form() -> None:
    """`gist-lab experts`' settings (the CLI's defaults; clusterings among those clustered), command and button."""
    d = ExpertConfig()
    have = [m for m in EXPERT_CLUSTERINGS if m in rep["table"]]
    with st.container(border=True):
        st.markdown("**Launch `gist-lab experts` on these clusters**")
        c = st.columns(4)
        chosen = c[0].multiselect("Clusterings (one expert per cluster)", have, [m for m in d.clusterings if m in have],
                                  key="ex_clusterings", help="; ".join(f"{m}: {clusters.METHOD_LABELS[m]}" for m in have))
        ensembles = c[1].multiselect("…also scored as an ELREA ensemble", chosen,
                                     [m for m in d.ensembles if m in chosen], key="ex_ensembles",
                                     help="each costs k + 1 forwards per token")
        seeds = c[2].number_input("Seeds", 1, 20, d.seeds, key="ex_seeds")
        router = c[3].radio("Router", EXPERT_ROUTERS, horizontal=True, key="ex_router")
        c = st.columns(4)
        epochs = c[0].number_input("Epochs (every adapter)", 1, 100, d.train.epochs, key="ex_epochs")
        lr = c[1].number_input("Learning rate (every adapter)", 1e-7, 1.0, d.train.lr, format="%g", key="ex_lr")
        steps = c[2].radio("Expert steps", ["epochs", "match"], horizontal=True, key="ex_steps",
                           help="epochs: the recipe's epochs over each cluster's rows | match: about as many optimizer "
                                "steps as the single LoRA (equal compute; k times the training time)")
        n_em = c[3].number_input("Exact-match prompts per test group", 0, 10_000, d.n_em, key="ex_n_em")
        with st.expander("Evaluation and ensemble"):
            e = st.columns(4)
            per_subtask = e[0].number_input("Test examples per subtask (0 = all)", 0, 10**6, d.per_subtask,
                                            key="ex_per_subtask")
            per_skill = e[1].number_input("Held-out pool examples per skill", 0, 10**6, d.per_skill, key="ex_per_skill")
            latency = e[2].number_input("Latency queries per rule", 0, 1000, d.latency_queries, key="ex_latency")
            oracle = e[3].checkbox("Oracle routing too", d.oracle_routing, key="ex_oracle")
            base_weight = e[0].number_input("Ensemble: base adapter weight β", 0.0, 0.99, d.base_weight, key="ex_beta")
            temperature = e[1].number_input("Ensemble: temperature τ", 0.01, 100.0, d.temperature, key="ex_tau")
            tests = e[2].text_input("Test splits (comma-separated JSONL; blank = the default)", key="ex_tests")
        problem = None if chosen else "Choose at least one clustering."
        args = launcher.experts_args(run_dir, clusterings=chosen, ensembles=ensembles, seeds=int(seeds), router=router,
                                     train_epochs=int(epochs), train_lr=lr, expert_steps=steps, n_em=int(n_em),
                                     per_subtask=int(per_subtask), per_skill=int(per_skill),
                                     latency_queries=int(latency), no_oracle_routing=not oracle,
                                     base_weight=base_weight, temperature=temperature,
                                     test=[t.strip() for t in tests.split(",") if t.strip()] or None)
        jobs.launch_block(run_dir, args, "gist-lab experts", problem, key="launch_experts")


ex = ui.folder_view(clusters.load_experts, run_dir)
if ex is None:
    st.info("No experts in this run yet: `gist-lab experts` trains one LoRA per cluster, a router and the "
            "ELREA ensemble, evaluated over 3 seeds by default (much longer than the clustering).")
    if not jobs.blocked(run_dir, "experts"):
        experts_form()
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
