"""Scores: histograms by source and ground truth, threshold, budget, brushing, per-subtask coverage, wrong answers."""
from __future__ import annotations

import numpy as np
import streamlit as st

from gist_core.app import curation_ui, ui
from gist_core.methods import scoring
from gist_core.viewer import breakdowns, brushing, labels, rundir
from gist_core.viewer import curation as curation_view
from gist_core.viewer.figures import scores as scores_figures

ui.page_setup("Scores")
st.title("Scores")
run_dir = ui.require_scores(ui.run_picker())
run = ui.folder_view(rundir.load_run, run_dir)
ui.semantics_caption()

c = st.columns([3, 3, 2, 1])
budget = ui.budget_slider(run_dir, key="budget_scores", container=c[0])
balance = ui.balance_radio(run_dir, key="balance_scores", container=c[1])
kind = ui.score_radio(run_dir, key="score_scores", container=c[1])
by_options = {"ground truth": "truth", "skill": "skill", "domain": "domain", "selected": "selected"} if run.has_truth \
    else {"domain": "domain", "skill": "skill", "selected": "selected"}
second_by = c[2].selectbox("Second histogram by", list(by_options), key="hist_by")
log_y = c[3].toggle("log counts", value=False, key="logy_scores")
s = {**ui.settings(run_dir), "budget": budget, "balance": balance, "kind": kind}
rs = ui.rescored(run_dir, s)
ui.settings_caption(s, rs)
st.page_link(ui.PAGES["spectrum"], label="Change the rank on the Spectrum page", icon=":material/show_chart:")

m = rs.metrics[balance]
mc = st.columns(5)
mc[0].metric("selected", f"{rs.k:,}", help=f"{len(rs.frame):,} examples in the pool")
mc[1].metric("global top-k threshold", f"{rs.threshold:.3f}", help="lowest score that makes the global top-k")
if m:
    mc[2].metric("precision", f"{m['precision']:.3f}", delta=f"{m['precision'] - m['base_rate']:+.3f} vs random",
                 help=labels.RANDOM_BASELINE_HELP)
    mc[3].metric("recall", f"{m['recall']:.3f}")
    mc[4].metric("wrong / look-alike selected", f"{m['n_wrong_selected']} / {m['n_distractor_selected']}")


def histogram(by: str, title: str, key: str):
    counts = brushing.histogram_counts(rs.frame, by, rs.subtasks)
    fig = scores_figures.score_histogram(counts, by, rs.threshold, rs.k, title, log_y)
    return st.plotly_chart(fig, width="stretch", key=key, on_select="rerun", selection_mode=("box", "lasso", "points"))


hc = st.columns(2)
with hc[0]:
    ev_source = histogram("source", "Scores by source", "hist_source")
with hc[1]:
    ev_truth = histogram(by_options[second_by], f"Scores by {second_by}", "hist_truth")

brushed_on = next((ev.selection for ev in (ev_truth, ev_source) if brushing.score_range_from_selection(ev.selection)),
                  None)  # the second histogram's brush first, as before
brush = brushing.score_range_from_selection(brushed_on)
st.subheader("Brushed score range")
curated = curation_ui.working(run_dir)
if curated is not None:
    curation_ui.status(run_dir, curated, key="scores_cur")
    curation_ui.shown_selection(run_dir, curated, rs, key="scores_cur")
if brush is None:
    st.caption("Drag a box (or lasso) over either histogram to list the examples in that score range, then remove "
               "them from (or add them to) the working selection.")
else:
    rows = curation_view.mark_working(brushing.in_score_range(rs.frame, *brush),
                                      curated.working if curated is not None else ())
    b = brushing.brush_summary(rows, rs.subtasks)
    st.markdown(f"Scores **{brush[0]:.3f} … {brush[1]:.3f}**: {b['n']:,} examples, {b['n_selected']:,} selected, "
                f"{int(rows['working'].sum()):,} in the working selection"
                + (f", precision {b['precision']:.3f}" if "precision" in b else ""))
    cols = [c for c in ["rank", "score", "id", "source", "skill", "kind", "selected", "working", "prompt", "response"]
            if c in rows]
    st.dataframe(rows.sort_values("score", ascending=False)[cols].head(500), hide_index=True, width="stretch")
    if len(rows) > 500:
        st.caption(f"The 500 best of {len(rows):,} shown; the buttons below act on all {len(rows):,}.")
    if curated is not None:
        curation_ui.edit_buttons(run_dir, curated, rows["id"].astype(str).tolist(),
                                 f"histogram {brushing.selection_shape(brushed_on) or 'selection'}", key="scores_edit")

st.subheader("Per target subtask")
if rs.starved_basis == "ground-truth coverage":
    st.caption("'picked': the subtask each example aligns with best (global top-k; its calibrated column for "
               "z-score and quantile) or whose turn took it (quota). "
               "'starved' (as in the CLI's warning): the subtask's correct selected examples are fewer than a third "
               "of its proportional share of all correct selected examples.")
else:
    st.caption("An example counts for the subtask it aligns with best (global top-k) or whose turn took it (quota). "
               "A subtask is starved when it gets less than a third of its proportional share.")
for rule in scoring.BALANCES:
    if rs.starved[rule] and rs.starved_basis == "ground-truth coverage":
        cov = rs.metrics[rule]["coverage"]
        st.warning(f"**{rule}** rule starves: " + ", ".join(f"{t} ({cov[t]['selected']} correct selected)"
                                                              for t in rs.starved[rule]))
    elif rs.starved[rule]:
        st.warning(f"**{rule}** rule starves: " + ", ".join(f"{t} ({rs.picked[rule][t]} of {rs.k})"
                                                              for t in rs.starved[rule]))
if not any(rs.starved.values()):
    st.success("No subtask is starved under any rule at this rank and budget.")
st.dataframe(breakdowns.coverage_display(rs), hide_index=True, width="stretch")
st.caption("Per rule: correct target examples selected for the subtask / examples picked for it"
           if rs.metrics["global"] else "Per rule: examples picked for the subtask")
bd = breakdowns.subtask_breakdown(rs)
st.plotly_chart(scores_figures.subtask_cosine_bars(bd, f"selected ({balance})"), width="stretch", key="breakdown")

st.subheader("Per-subtask columns: one scale or many?")
st.caption("The global rule takes the max over subtask columns, which assumes they share one scale. Each column's "
           "distribution over the pool says whether they do: a column whose whole pool sits high wins the max for "
           "examples of every kind. The quota, z-score and quantile rules give each column its own scale.")
dc = st.columns([1, 1, 1])
others = ui.compare_columns(run_dir)
sources = {f"GIST (r = {s['rank']})": breakdowns.gist_columns(rs),
           **{labels.METHOD_NAMES[m]: c for m, c in others.items()}}
source = dc[0].selectbox("Columns of", list(sources), key="col_source",
                         help="LESS, raw cosine and embedding appear once `compare` has run on this folder")
scale = dc[1].radio("Column values", ["cosine", "z-score", "quantile"], horizontal=True, key="col_scale")
winners_by = dc[2].selectbox("Who is selected, by", [c for c in ("skill", "source", "kind") if c in rs.frame],
                             key="winners_by")
cols = sources[source]
dist = breakdowns.column_distributions(rs.subtasks, cols,
                                  {"cosine": "global", "z-score": "zscore", "quantile": "quantile"}[scale])
wc = st.columns([3, 2])
wc[0].plotly_chart(scores_figures.column_violins(dist, f"{source}: each subtask column over the pool ({scale})", scale),
                   width="stretch", key="col_violin")
quant = breakdowns.column_quantiles(rs.subtasks, cols, rs.k)
wc[1].dataframe(quant, hide_index=True, width="stretch",
                column_config={c: st.column_config.NumberColumn(format="%.3f") for c in quant.columns[1:]})
wc[1].caption("top-n edge: the value a column's own n-th best example has (n = k / subtasks); columns with "
              "high edges win the global max.")
st.markdown(f"**Who the {labels.RULE_NAMES[balance]} rule selects from {source}'s columns** (k = {rs.k}), by "
            f"{winners_by}; 'picked for' is the subtask each was taken for")
st.dataframe(breakdowns.selection_winners(rs.frame, rs.subtasks, cols, balance, rs.k, winners_by), hide_index=True,
             width="stretch")
ranks = sorted({max(1, round(x)) for x in np.linspace(1, rundir.r_max(run_dir), min(8, rundir.r_max(run_dir)))}
               | {s["rank"]})
wr = ui.folder_view(breakdowns.winners_by_rank, run_dir, ranks, balance, budget, winners_by)
st.plotly_chart(scores_figures.winners_by_rank_bars(
    wr, s["rank"], ranks, f"The {labels.RULE_NAMES[balance]} rule's selection at other ranks, by {winners_by}"),
    width="stretch", key="winners_by_rank")

st.subheader("Wrong answers and look-alikes in the selection")
wrong = breakdowns.wrong_in_selection(rs)
if not run.has_truth:
    st.caption("The pool has no ground-truth labels (skill / kind).")
elif wrong.empty:
    st.success("None selected.")
else:
    st.dataframe(wrong[["rank", "score", "id", "skill", "kind", "prompt", "response"]], hide_index=True, width="stretch")
