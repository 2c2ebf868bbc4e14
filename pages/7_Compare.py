"""Compare: GIST vs LESS and baselines from `gist-lab compare` — selection quality, downstream test loss, cost."""
from __future__ import annotations

import streamlit as st

from gist_core.app import ui
from gist_core.runner import launcher
from gist_core.viewer import compare, labels, progress
from gist_core.viewer.figures import compare as compare_figures

ui.page_setup("Compare")
st.title("Compare")
run_dir = ui.require_run(ui.run_picker())
running = run_dir.exists() and progress.run_state(run_dir)["status"] == "running"


def watch(stamp: int) -> None:
    """While a run goes, rerun the page when compare.json is rewritten (a downstream row finished) or it ends."""
    if compare.compare_stamp(run_dir) != stamp or progress.run_state(run_dir)["status"] != "running":
        st.rerun()


def running_note() -> None:
    prog = progress.stage_progress(run_dir)
    stages = ", ".join(prog.loc[prog["status"] == "running", "stage"]) or "starting"
    st.info(f"A run is going in this folder (now: {stages}); this page refreshes when compare.json changes.")
    st.page_link(ui.PAGES["run"], label="Follow or cancel it on the Run page", icon=":material/play_arrow:",
                 query_params={"run": ui.run_name_of(run_dir)})
    st.fragment(run_every=3.0)(watch)(compare.compare_stamp(run_dir))


rep = ui.folder_view(compare.load_compare, run_dir)
if rep is None:
    if compare.has_compare(run_dir):
        st.warning(f"`{compare.compare_path(run_dir)}` could not be read (no method rows or invalid JSON).")
    st.info(f"Run `{run_dir.name}` has no comparison yet. From a terminal: `gist-lab compare --out {run_dir}` "
            "(it reuses this run's config and finished stages, then fine-tunes a LoRA per method and seed, "
            "so it takes much longer than the selection itself).")
    if running:
        running_note()
    elif st.button("Launch gist-lab compare here", icon=":material/compare_arrows:", type="primary",
                   key="launch_compare"):
        ui.launch_and_rerun(run_dir, launcher.compare_args(run_dir))
    st.stop()

# ----------------------------------------------------------------------------- header: what was run
table = compare.compare_table(rep)
rules = compare.compare_rules(rep)
if len(rules) > 2:  # every score-based method under every rule: let the reader thin the table and the charts
    shown = st.multiselect("Selection rules shown", rules, default=rules, key="compare_rules",
                           format_func=labels.RULE_NAMES.get, help=labels.RULE_HELP)
    table = compare.rows_with_rules(table, rep, shown)
recipe, seeds = rep.get("train_recipe") or {}, rep.get("seeds") or []
down = (f"downstream LoRA: {recipe.get('epochs')} epoch(s), lr {recipe.get('lr')}, batch {recipe.get('batch_size')}; "
        f"full pool {recipe.get('full_epochs')} epoch(s)") if recipe else "downstream: not measured"
budget = rep.get("budget")
budget = f"{budget * 100:g}%" if isinstance(budget, float) and budget < 1 else budget  # a fraction, else as given
st.caption(f"{rep.get('n_selected', '?')} of {rep.get('n_pool', '?')} pool examples selected "
           f"(budget {budget}) · {len(seeds)} seed(s) · {down} · target `{rep.get('target')}`")
gist, less = rep.get("gist") or {}, rep.get("less") or {}
st.caption(f"GIST: rank r = {gist.get('rank')}, checkpoint {gist.get('checkpoint')}, {gist.get('aggregation')}"
           + (f" · LESS: d = {less.get('d')}, {len(less.get('checkpoints') or [])} checkpoint(s), "
              f"weights = {less.get('weighting')}" if less else ""))
st.caption("Figures as measured in this run; lower test loss is better; seeds vary LoRA init, data order, "
           "and the random/oracle draws.")
if rep.get("downstream_note"):
    st.info(rep["downstream_note"])
if running:
    running_note()
n_done = int(table["test_loss"].notna().sum())
if recipe and n_done < len(table):
    st.info(f"Downstream results for {n_done} of {len(table)} methods so far.")

ratios = compare.ratio_metrics(rep)
if ratios:
    mc = st.columns(len(ratios))
    for col, (key, v) in zip(mc, ratios.items()):
        value = f"{v * 100:.2g}%" if key.startswith("storage") else f"{v:.2g}×"  # 2 significant digits: 0.065×, 0.12%
        col.metric(f"{compare.RATIO_LABELS[key]} GIST / LESS", value,
                   help="GIST's cost divided by LESS's in this run (below 1: GIST is cheaper); see cost notes")
else:
    st.caption("GIST / LESS cost ratios need both `gist` and `less` among the methods.")

show = table.dropna(axis=1, how="all")  # no labels / no downstream: hide the empty columns
fmt = {c: st.column_config.NumberColumn(format=f) for c, f in
       {"precision": "%.3f", "precision_std": "%.3f", "recall": "%.3f", "wrong": "%d", "look-alikes": "%d",
        "test_loss": "%.4f", "test_loss_std": "%.4f", "exact_match": "%.3f", "exact_match_std": "%.3f",
        "train_steps": "%d", "wall_s": "%.1f", "flops": "%.2e", "bytes": "bytes"}.items()}
st.dataframe(show, hide_index=True, width="stretch", key="compare_table", column_config=fmt)


# ----------------------------------------------------------------------------- charts
def bars(col: str, title: str, refs: dict[str, float], key: str, zoom: bool = False) -> None:
    """One bar per method with ± std error bars and dashed reference lines."""
    d = table.dropna(subset=[col])
    if d.empty:
        st.caption(f"No {title.lower()} yet.")
        return
    st.plotly_chart(compare_figures.metric_bars(d, col, title, refs, zoom=zoom), width="stretch", key=key)


def ref(row: str, col: str) -> dict[str, float]:
    """A reference line ({label: value}) from a method row or the base model, when it has the value."""
    v = compare.compare_value(rep, row, col)
    return {} if v is None else {"base model (no LoRA)" if row == "base" else row: v}


st.subheader("Downstream on the target's test split")
if recipe:
    c = st.columns(2)
    with c[0]:
        bars("test_loss", "Test loss (mean ± std over seeds)", {**ref("base", "test_loss"), **ref("oracle", "test_loss")},
             "loss_chart", zoom=True)
    with c[1]:
        bars("exact_match", "Exact match (mean ± std over seeds)",
             {**ref("base", "exact_match"), **ref("oracle", "exact_match")}, "em_chart")
else:
    skipped_on_purpose = not (rep.get("config") or {}).get("downstream", True) and not rep.get("downstream_note")
    why = "compare ran with --no-downstream" if skipped_on_purpose else "no test split"
    st.caption(f"Not measured in this run ({why}).")

st.subheader("Selection quality")
if table["precision"].notna().any():
    bars("precision", "Precision of the selection (target skill, correct answer)", ref("random", "precision"),
         "precision_chart")
else:
    st.caption("The pool has no ground-truth labels (skill / kind), so precision cannot be measured.")

st.subheader("Cost")
cost = compare.cost_frame(rep)
log_x = st.toggle("log scale", value=False, key="cost_log", help="zero-second stages are not drawn on a log axis")
if cost.empty:
    st.caption("No per-stage wall times recorded.")
else:
    st.plotly_chart(compare_figures.cost_bars(cost, list(table["method"]), log_x), width="stretch", key="cost_chart")


def heatmap(m, title: str, zmin: float, zmax: float, key: str) -> None:
    if m.empty:
        st.caption(f"No {title.lower()} in {compare.compare_path(run_dir).name}.")
        return
    st.plotly_chart(compare_figures.agreement_heatmap(m, title, zmin, zmax), width="stretch", key=key)


st.subheader("Agreement between methods")
c = st.columns(2)
with c[0]:
    heatmap(compare.matrix_frame(rep, "overlap"), "Selection overlap (Jaccard, first seed)", 0, 1, "overlap_heatmap")
with c[1]:
    heatmap(compare.matrix_frame(rep, "rank_correlation"), "Rank correlation of scores (Spearman)", -1, 1,
            "rankcorr_heatmap")

st.subheader("Per target subtask")
metric = st.radio("Metric", ["loss", "exact_match"], horizontal=True, key="subtask_metric")
sub = compare.per_subtask_frame(rep, metric)
if sub.empty:
    st.caption("No per-subtask downstream results yet.")
else:
    st.plotly_chart(compare_figures.per_subtask_heatmap(sub, metric), width="stretch", key="subtask_heatmap")

with st.expander("Per-seed results, cost notes and settings"):
    seeds_df = compare.per_seed_frame(rep)
    if seeds_df.empty:
        st.caption("No per-seed downstream results.")
    else:
        st.dataframe(seeds_df, hide_index=True, width="stretch", key="per_seed_table",
                     column_config={"test_loss": st.column_config.NumberColumn(format="%.4f"),
                                    "exact_match": st.column_config.NumberColumn(format="%.3f")})
    if rep.get("cost_notes"):
        st.markdown(f"**Cost notes.** {rep['cost_notes']}")
    st.json({"config": rep.get("config"), "gist": gist, "less": less, "train_recipe": recipe,
             "wall_s": rep.get("wall_s")}, expanded=False)
