"""Spectrum: singular values of the validation gradients per warm-up checkpoint, explained variance, rank slider."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from gist_core.app import ui
from gist_core.viewer import curvature, labels, rundir, spectrum
from gist_core.viewer.figures import spectrum as spectrum_figures

ui.page_setup("Spectrum")
st.title("Spectrum")
run_dir = ui.require_scores(ui.run_picker())
run = ui.folder_view(rundir.load_run, run_dir)
specs = ui.folder_view(spectrum.spectra, run_dir)
tau = float(run.config.get("tau", 0.95))
gist_epoch = int(run.config.get("checkpoint", 1))
st.caption("Singular values σ of the validation-gradient matrix G (N_v × D) at each warm-up checkpoint. "
           f"GIST scores with checkpoint {gist_epoch}; the rank r is how many of its top directions the cosine uses.")

sc = st.columns([3, 2])
rank = ui.rank_slider(run_dir, key="rank_spectrum", container=sc[0])
kind = ui.score_radio(run_dir, key="score_spectrum", container=sc[1])
s = {**ui.settings(run_dir), "rank": rank, "kind": kind}
rs = ui.rescored(run_dir, s)

left, right = st.columns(2)
left.plotly_chart(spectrum_figures.singular_values(specs, rank, gist_epoch), width="stretch", key="sigma_chart")
right.plotly_chart(spectrum_figures.explained_variance(specs, rank, tau, gist_epoch), width="stretch", key="explained_chart")
main = spectrum.main_spectrum(specs, gist_epoch)

if specs:
    st.dataframe(pd.DataFrame([{"checkpoint": sp.epoch, "N_v": len(sp.sigma), "σ₁": sp.sigma[0],
                                      "r95": sp.r95, "r99": sp.r99,
                                      f"explained at r={rank}": sp.explained[min(rank, len(sp.explained)) - 1]}
                                     for sp in specs]), hide_index=True, width="stretch")

st.subheader("Rank advisor: do unseen target examples rise to the top?")
adv = ui.folder_view(spectrum.advisor_curve, run_dir, kind)
if adv is None:
    st.caption("No subtask has two validation examples: the advisor holds one out and needs another to aim at.")
else:
    ac = st.columns([3, 2])
    ac[0].plotly_chart(spectrum_figures.advisor_chart(adv, rank, main.r95 if main is not None else None), width="stretch",
                       key="advisor_chart")
    ac[1].markdown(f"**Suggested r = {adv.suggested}**" + (f" (τ = 0.95 gives r = {main.r95})" if main else "")
                   + f"; this page shows r = {rank}.")
    close = adv.within_one_se
    ac[1].markdown(f"Ranks within one standard error of the best: **{spectrum.rank_ranges(close)}** "
                   f"({len(close)} of {len(adv.ranks)}): " + ("the curve cannot tell these apart, so the suggestion "
                                                           "is weak." if len(close) > 2 else "a clear optimum."))
    ac[1].caption(f"Each of the {len(adv.held_out)} validation examples in a subtask with another example is held "
                  "out in turn; the subspace is refitted on the rest, and the held-out example is scored against its "
                  f"subtask's direction beside {adv.n_ref:,} pool examples. The curve is the mean share of those pool "
                  "examples it outscores: high where the subspace generalises to target examples it has not seen. "
                  "The suggestion is the curve's maximum. " + " ".join(adv.notes))

st.subheader("Intrinsic dimension over training")
dims = curvature.spectrum_table(specs)
if len(dims) < 2:
    st.caption("One warm-up checkpoint: nothing to follow over training.")
else:
    st.plotly_chart(spectrum_figures.intrinsic_dimension(dims), width="stretch", key="intrinsic_dim_chart")
st.caption(f"Smallest r whose cumulative explained variance reaches 95 % / 99 % at each checkpoint, out of "
           f"{int(dims['N_v'].max()) if len(dims) else 0} directions (N_v); the table above has the same numbers.")

st.subheader(f"Selection at rank r = {rank}")
ui.settings_caption(s, rs)
m = rs.metrics[s["balance"]]
c = st.columns(4)
c[0].metric("re-score time", f"{rs.ms:.0f} ms", help="from the stored projections: no gradients recomputed")
c[1].metric("selected", f"{rs.k:,}")
c[2].metric("lowest selected score (global top-k)", f"{rs.threshold:.3f}")
if m:
    c[3].metric(f"precision at r = {rank}", f"{m['precision']:.3f}", delta=f"{m['precision'] - m['base_rate']:+.3f} vs random",
                help="share of selected examples with a target skill and a correct answer; "
                     + labels.RANDOM_BASELINE_HELP)
ui.semantics_caption()
top = rs.frame.nsmallest(20, "rank")
cols = [c for c in ["rank", "score", "id", "source", "skill", "kind", "selected", "prompt", "response"] if c in top]
st.dataframe(top[cols], hide_index=True, width="stretch", key="top_table",
             column_config={"score": st.column_config.NumberColumn(format="%.4f")})
