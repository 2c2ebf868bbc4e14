"""Curvature: one LoRA block's exact Hessian, Gauss–Newton and empirical Fisher per warm-up checkpoint,
against Adam's diagonal and GIST's F̂ (from `gist-lab geometry`)."""
from __future__ import annotations

import streamlit as st

from gist_core.app import ui
from gist_core.runner import launcher
from gist_core.store.layout import RunLayout
from gist_core.viewer import curvature, progress, rundir
from gist_core.viewer.figures import curvature as curvature_figures

ui.page_setup("Curvature")
st.title("Curvature")
run_dir = ui.require_run(ui.run_picker())
job = curvature.geometry_job(run_dir)             # the folder's last dashboard launch, when it was gist-lab geometry
running = run_dir.exists() and progress.run_state(run_dir)["status"] == "running"
geo_running = curvature.geometry_running(run_dir)


def watch(stamp: int) -> None:
    """While geometry runs, rerun the page when geometry.json is rewritten (a checkpoint finished) or it ends."""
    if curvature.geometry_stamp(run_dir) != stamp or not curvature.geometry_running(run_dir):
        st.rerun()


def running_note() -> None:
    if geo_running:
        st.info("`gist-lab geometry` is running in this folder; this page refreshes when a checkpoint is written.")
        st.fragment(run_every=3.0)(watch)(curvature.geometry_stamp(run_dir))
    else:
        st.info("A run is going in this folder; launch geometry once it has finished.")
        st.page_link(ui.PAGES["run"], label="Follow it on the Run page", icon=":material/play_arrow:",
                     query_params={"run": ui.run_name_of(run_dir)})


def failed_note() -> None:
    if job and not job.alive and not job.cancelled and job.error:
        st.error(f"The last `gist-lab geometry` launch here failed: {job.error}")


rep = ui.folder_view(curvature.load_geometry, run_dir)
if rep is None:
    if curvature.has_geometry(run_dir):
        st.warning(f"`{curvature.geometry_path(run_dir)}` could not be read (no checkpoint entries or invalid JSON).")
    st.info(f"Run `{run_dir.name}` has no curvature measurements yet. From a terminal: "
            f"`gist-lab geometry --run {run_dir}` (exact Hessian, Gauss–Newton and empirical Fisher of one LoRA "
            "block at every warm-up checkpoint; P coordinates cost P Hessian-vector products per checkpoint).")
    failed_note()
    if running or geo_running:
        running_note()
        st.stop()
    epochs = curvature.warmup_epochs(run_dir)
    ready = RunLayout(run_dir).config.exists() and bool(epochs)
    c = st.columns([1, 2])
    coords = c[0].number_input("Coordinates (A and B together; 0 = all)", min_value=0, value=2048, step=256,
                               key="geo_coords", help="sampled half from lora_A, half from lora_B (seeded); "
                               "the matrices are P × P, so time grows with P (P Hessian-vector products)")
    module = c[1].text_input("LoRA module (name or suffix)", value="", key="geo_module",
                             placeholder="blank: the last LoRA module, e.g. layers.1.mlp.down_proj")
    if not ready:
        st.caption("This run has no warm-up checkpoints yet: finish it first (Run page).")
    if st.button("Launch gist-lab geometry here", icon=":material/grid_on:", type="primary", key="launch_geometry",
                 disabled=not ready):
        ui.launch_and_rerun(run_dir, launcher.geometry_args(run_dir, int(coords), module or None))
    st.stop()

# ----------------------------------------------------------------------------- header: what was measured
epochs = curvature.geometry_epochs(rep)
cfg = rep.get("config") or {}
gist_epoch = int(rundir.run_config(run_dir).get("checkpoint", 1))
first = rep["checkpoints"][str(epochs[0])]
st.caption(f"Block: `{first.get('module', cfg.get('module'))}`, {first.get('n_coords', '?')} coordinates "
           f"({first.get('n_a', '?')} from A, then the rest from B; sample seed {cfg.get('seed')}) · "
           f"loss over {rep.get('n_examples', '?')} target examples · top-{first.get('rank', cfg.get('rank'))} "
           f"eigenspaces compared · warm-up epoch(s) {', '.join(map(str, epochs))}.")
st.caption("Measured on this run's model; whatever the numbers are, they are reported as measured.")
failed_note()
if running or geo_running:
    running_note()

if st.session_state.get("geo_epoch") not in epochs:  # another run (other epochs) was shown before
    st.session_state.pop("geo_epoch", None)
c = st.columns([2, 2, 2])
epoch = c[0].radio("Checkpoint (warm-up epoch)", epochs, horizontal=True, key="geo_epoch",
                   index=epochs.index(gist_epoch) if gist_epoch in epochs else 0,
                   format_func=lambda e: f"{e} (GIST)" if e == gist_epoch else str(e))
matrix = c[1].radio("Matrix", list(curvature.MATRICES), horizontal=True, key="geo_matrix",
                    format_func=curvature.MATRICES.get)
kind = c[2].radio("Value", ["abs", "corr"], horizontal=True, key="geo_value",
                  format_func={"abs": "|M| (log colour)", "corr": "correlation"}.get,
                  help="correlation: M_ij / √(|M_ii| |M_jj|), 1 on the diagonal of a positive semi-definite "
                       "matrix; an indefinite Hessian can exceed ±1 (the colour saturates)")
ck, label = rep["checkpoints"][str(epoch)], curvature.MATRICES[matrix]
blk = ck.get(matrix) or {}


def num(v, fmt: str = "{:.3f}") -> str:
    return fmt.format(v) if isinstance(v, (int, float)) else "–"


r, ref, P = ck.get("rank", cfg.get("rank")), ck.get("overlap_random_reference"), ck.get("n_coords")
m = st.columns(5)
m[0].metric(f"off-diagonal ratio · {label}", num(blk.get("offdiag_ratio")),
            help="‖M − diag(M)‖_F / ‖M‖_F: 0 = diagonal; also the relative error of M's best diagonal approximation. "
                 f"Within A–A: {num(blk.get('offdiag_ratio_AA'))}, within B–B: {num(blk.get('offdiag_ratio_BB'))}.")
m[1].metric(f"A–B mass share · {label}", num(blk.get("mass_AB"), "{:.1%}"),
            help="share of ‖M‖_F² in the two A–B cross blocks (A–A: "
                 f"{num(blk.get('mass_AA'), '{:.1%}')}, B–B: {num(blk.get('mass_BB'), '{:.1%}')}). Theorem 3.2: "
                 "LoRA's bilinear W0 + BA creates these even when the weight-space Hessian is diagonal.")
m[2].metric("Adam-diagonal fit error (H)", num(ck.get("adam_sqrt_v_fit_error")),
            help="relative Frobenius error of c·diag(√v) — Adam's preconditioner at its best scale c — as an "
                 f"approximation of the Hessian (with v instead of √v: {num(ck.get('adam_v_fit_error'))}); "
                 "never below the best-diagonal error")
m[3].metric("best-diagonal error (H)", num(ck.get("best_diagonal_fit_error")),
            help="relative error of the best diagonal approximation of the Hessian, diag(H) itself "
                 "(= H's off-diagonal ratio): the floor for any diagonal preconditioner")
m[4].metric(f"F̂/H top-{r} overlap", num(ck.get("overlap_fisher_hessian")),
            help=f"mean squared cosine of the principal angles between the top-{r} eigenvectors of "
                 "F̂ = G_valᵀG_val (GIST's matrix; same eigenvectors as the empirical Fisher) and of the Hessian, on "
                 f"this block. Random reference: two random {r}-dim subspaces of {P} dimensions give r/P = "
                 f"{num(ref, '{:.4f}')}. F̂ vs Gauss–Newton: {num(ck.get('overlap_fisher_gauss_newton'))}.")

# ----------------------------------------------------------------------------- heatmap and diagonals
left, right = st.columns([3, 2])
dm = ui.curvature_display(run_dir, epoch, matrix, kind)
if dm is None:
    left.warning(f"`{curvature.geometry_matrix_path(run_dir, epoch)}` is missing: run `gist-lab geometry --run "
                 f"{run_dir}` again to rewrite it.")
else:
    left.plotly_chart(curvature_figures.curvature_heatmap(dm, label, epoch), width="stretch", key="curvature_heatmap")

diag = ui.curvature_diagonals(run_dir, epoch)
if diag is not None:
    right.plotly_chart(curvature_figures.diagonals(diag), width="stretch", key="diagonal_chart")
    neg = int((diag["diag_H"] < 0).sum())
    right.caption(f"diag(H) is the best diagonal approximation of H; Adam preconditions with √v (scaled by the c that "
                  f"fits diag(H) best). {neg} of {len(diag)} diagonal entries of H are negative (drawn as |·|).")

# ----------------------------------------------------------------------------- over the checkpoints
st.subheader("Over the warm-up checkpoints")
table = curvature.geometry_table(rep)
st.dataframe(table, hide_index=True, width="stretch", key="geometry_table",
             column_config={**{c: st.column_config.NumberColumn(format="%.3f") for c in table.columns
                               if c.startswith(("offdiag", "mass", "adam", "best", "overlap_fisher"))},
                            "overlap_random": st.column_config.NumberColumn(format="%.4f"),
                            "r95": st.column_config.NumberColumn(format="%d"),
                            "r99": st.column_config.NumberColumn(format="%d"),
                            "wall_s": st.column_config.NumberColumn(format="%.1f")})
st.plotly_chart(curvature_figures.curvature_trend(table), width="stretch", key="geometry_trend_chart")

with st.expander("This checkpoint's raw numbers and the geometry settings"):
    st.json({"config": cfg, f"checkpoint {epoch}": {k: v for k, v in ck.items() if k != "key"}}, expanded=False)
