"""Run: configure and launch a selection, follow its stages live, cancel it; state comes from the run folder."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import streamlit as st

from gist_core.app import ui
from gist_core.data.corpus import DEFAULT_DEMO_TARGET, SAMPLE_DATA
from gist_core.methods import scoring
from gist_core.methods.scoring import DEFAULT_RANK_RULE, RANK_RULES
from gist_core.runner import launcher
from gist_core.store.atomic import atomic_write_bytes
from gist_core.store.layout import RunLayout
from gist_core.store.runs import NAME_RULE, RunNameError, run_path, runs_root, upload_path
from gist_core.viewer import labels, progress, rundir

ui.page_setup("Run")
st.title("Run")
SAMPLE = SAMPLE_DATA  # GIST_LAB_SAMPLE_DATA when set, as for the CLI
TARGETS = sorted(p.name for p in (SAMPLE / "targets").iterdir()) if (SAMPLE / "targets").is_dir() else ["lookup"]
UPLOAD_TYPES = ["jsonl", "json", "csv", "parquet"]
run_dir = ui.run_picker()


def start(name: str, args_for: Callable[[Path], list[str]]) -> None:
    """Launch `gist-lab args_for(run folder)` into runs_root()/name and make it the current run.

    The name is checked first (runs.run_path): a refused one is an error on the page and nothing is launched."""
    try:
        out = run_path(name)
        launcher.launch(out, args_for(out))
    except RunNameError as e:
        st.error(f"Run folder name: {e}")
        return
    except (launcher.LaunchError, OSError) as e:
        st.error(f"Could not launch: {e}")
        return
    ui.set_run(name)
    st.rerun()


def save_uploads(name: str, files: dict) -> dict[str, str] | None:
    """Write each uploaded file (role -> UploadedFile) atomically to RUN/inputs/<safe name>; role -> stored path.

    None (after an error on the page) when a name is refused, two uploads would land on the same file,
    or a run is going in the folder (its inputs must not change under it)."""
    files = {role: f for role, f in files.items() if f is not None}
    try:
        paths = {role: upload_path(name, f.name) for role, f in files.items()}
    except RunNameError as e:
        st.error(f"Upload: {e}")
        return None
    if len(set(paths.values())) < len(paths):
        st.error(f"The pool and the target uploads are both named `{next(iter(paths.values())).name}` once "
                 "stored; rename one of the files.")
        return None
    if paths and launcher.is_alive(run_path(name)):
        st.error(f"A run is going in `{run_path(name)}`; cancel it before uploading new inputs.")
        return None
    try:
        for role, f in files.items():
            atomic_write_bytes(paths[role], f.getvalue())
    except OSError as e:
        st.error(f"Could not store the upload: {e}")
        return None
    return {role: str(p.resolve()) for role, p in paths.items()}


# ----------------------------------------------------------------------------- status of the current run
def stage_bars(run_dir) -> None:
    prog = progress.stage_progress(run_dir)
    for r in prog.itertuples():
        detail = f"{r.done}/{r.total}" if r.total else ""
        if r.status == "done" and r.wall_s is not None:
            detail = f"{r.wall_s:.1f} s"
        loss = f" · loss {r.loss:.3f}" if isinstance(r.loss, float) and r.status == "running" else ""
        st.progress(float(r.fraction or 0.0), text=f"**{r.stage}** — {r.status} {detail}{loss}")
        if r.status == "error" and r.error:
            st.caption(f"{r.stage}: {r.error}")


def summary_block(run_dir) -> None:
    summ = rundir.run_summary(run_dir)
    if not summ:
        return
    c = st.columns(5)
    c[0].metric("selected", f"{summ.get('n_selected', 0):,}", help=f"of {summ.get('n_pool', 0):,} pool examples")
    c[1].metric("rank r", summ.get("rank"), help=f"r95 = {summ.get('r95')}, r99 = {summ.get('r99')}, "
                                                 f"stored {summ.get('r_max')}")
    if "precision" in summ:
        c[2].metric("precision", f"{summ['precision']:.3f}",
                    delta=f"{summ['precision'] - summ['base_rate']:+.3f} vs random",
                    help=labels.RANDOM_BASELINE_HELP)
        c[3].metric("wrong / look-alike selected", f"{summ['n_wrong_selected']} / {summ['n_distractor_selected']}")
    c[4].metric("wall time", f"{summ.get('wall_s', 0):.0f} s")
    for s in summ.get("starved_subtasks", []):
        st.warning(f"Subtask **{s}** got {summ['picked_for_subtask'][s]} of {summ['n_selected']} slots, less than a "
                   "third of its share under the global top-k; compare the per-subtask quota on the Scores page.")
    name = ui.run_name_of(run_dir)
    cols = st.columns(4)
    for col, page in zip(cols, ["spectrum", "scores", "examples", "map"]):
        col.page_link(ui.PAGES[page], label=f"Open {page.title()}", query_params={"run": name})


def status_panel(run_dir, live: bool) -> None:
    state = progress.run_state(run_dir)
    if live and state["status"] != "running":
        st.rerun()  # finished while we watched: a full rerun stops the timer and shows the results
    status = state["status"]
    st.markdown(f"### {ui.STATUS_ICON.get(status, '')} `{run_dir.name}` — {status}")
    if status == "done":
        st.success("Run finished.")
    elif status == "failed":
        st.error(f"Run failed: {state['message']}")
    elif status in ("cancelled", "stopped"):
        st.warning(state["message"])
    stage_bars(run_dir)
    if status == "running" and state["message"]:
        st.caption(state["message"])
    if status == "running" and state["launch"].alive:
        if st.button("Cancel run", icon=":material/stop_circle:", key="cancel_run"):
            launcher.cancel(run_dir)
            st.rerun()
    elif status in ("failed", "cancelled", "stopped") and RunLayout(run_dir).config.exists():
        if st.button("Resume with the same config", icon=":material/replay:", key="resume_run",
                     help="finished stages are skipped; pool projection resumes from its done-mask"):
            start(ui.run_name_of(run_dir), lambda d: ["select", "--config", str(RunLayout(d).config),
                                                      "--out", str(d.resolve())])
    if status == "done":
        summary_block(run_dir)
    log = launcher.read_log_tail(run_dir, 6000)
    if log:
        with st.expander(f"{RunLayout(run_dir).launch_log.name} (tail)"):
            st.code(log[-4000:], language=None)


if run_dir is not None and run_dir.exists():
    live = progress.run_state(run_dir)["status"] == "running"
    st.fragment(run_every=2.0 if live else None)(status_panel)(run_dir, live)
    st.divider()

# ----------------------------------------------------------------------------- launching
st.subheader("Launch")
qc = st.columns([2, 3])
demo_target = qc[0].selectbox("Bundled target task", TARGETS, key="demo_target",
                              index=TARGETS.index(DEFAULT_DEMO_TARGET) if DEFAULT_DEMO_TARGET in TARGETS else 0)
with qc[1]:
    b1, b2 = st.columns(2)
    if b1.button("Quick demo (1 warm-up epoch)", icon=":material/bolt:", key="quick_demo", type="primary",
                 help="tiny model + synthetic pool; one warm-up epoch keeps it to a few minutes on 2 cores"):
        name = f"demo-{demo_target}-quick"
        start(name, lambda d: launcher.demo_args(d, demo_target, epochs=1))
    if b2.button("Full demo (4 warm-up epochs)", icon=":material/rocket_launch:", key="full_demo"):
        name = f"demo-{demo_target}"
        start(name, lambda d: launcher.demo_args(d, demo_target))

cfg = rundir.run_config(run_dir) if run_dir else {}
lora, warm = cfg.get("lora") or {}, cfg.get("warmup") or {}
with st.form("launch_form"):
    st.markdown("**Your own run** (`gist-lab select`); defaults come from the current run, else the bundled data.")
    c1, c2 = st.columns(2)
    name = c1.text_input("Run folder name", value="my-run", key="run_name",
                         help=f"created under {runs_root()}; {NAME_RULE}")
    choices = launcher.model_choices(str(SAMPLE / "tiny-lm"))
    specs = [spec for _, spec in choices] + [None]
    current = cfg.get("model", str(SAMPLE / "tiny-lm"))
    picked = c2.selectbox("Model", range(len(specs)), index=specs.index(current) if current in specs else len(choices),
                          format_func=lambda i: choices[i][0] if i < len(choices) else "another model (below)",
                          key="model_choice", help="registry models run offline once fetched (README: A real model)")
    other = c2.text_input("…another model: HF id, local folder or .gguf file", key="model_other",
                          value="" if current in specs else current, help="used when 'another model' is picked")
    model = specs[picked] or other
    pool = c1.text_input("Pool (JSONL/JSON/CSV/Parquet or datasets name)", value=cfg.get("train", str(SAMPLE / "pool.jsonl")))
    target = c2.text_input("Target validation examples",
                           value=cfg.get("target", str(SAMPLE / "targets" / DEFAULT_DEMO_TARGET / "val.jsonl")))
    pool_file = c1.file_uploader("…or upload the pool", type=UPLOAD_TYPES, key="pool_upload",
                                 help="stored as RUN/inputs/<file name> and used instead of the pool field")
    target_file = c2.file_uploader("…or upload the target examples", type=UPLOAD_TYPES, key="target_upload",
                                   help="stored as RUN/inputs/<file name> and used instead of the target field")
    c3, c4, c5, c6 = st.columns(4)
    lora_r = c3.number_input("LoRA r", 1, 1024, int(lora.get("r", 8)))
    lora_alpha = c4.number_input("LoRA alpha", 0.1, 4096.0, float(lora.get("alpha", 16.0)))
    epochs = c5.number_input("Warm-up epochs", 1, 50, int(warm.get("epochs", 4)))
    lr = c6.number_input("Warm-up learning rate", 1e-7, 1.0, float(warm.get("lr", 1e-3)), format="%g")
    c7, c8, c9, c10 = st.columns(4)
    rank = c7.number_input("Rank r (0 = by the rank rule)", 0, 1024, int(cfg.get("rank") or 0))
    rank_rule = c8.selectbox("Rank rule", list(RANK_RULES), index=list(RANK_RULES).index(cfg.get("rank_rule", DEFAULT_RANK_RULE)),
                             key="rank_rule", help="tau: smallest r reaching tau explained variance (the GIST paper); "
                                                   "advisor: the held-out rank advisor (Spectrum page); full: every "
                                                   "stored direction")
    budget = c9.text_input("Budget (0.05, 5% or a count)", value=str(cfg.get("budget", 0.05)))
    balance = c10.selectbox("Selection rule", list(scoring.BALANCES), key="balance",
                            index=list(scoring.BALANCES).index(cfg.get("balance", scoring.DEFAULT_RULE)),
                            format_func=labels.RULE_NAMES.get, help=labels.RULE_HELP)
    c11, c12, c13, c14 = st.columns(4)
    tau = c14.number_input("tau (explained variance, tau rule)", 0.01, 1.0, float(cfg.get("tau", 0.95)), step=0.01)
    lora_layers = c11.number_input("LoRA on the last L layers (0 = all)", 0, 1000,
                                   int(lora.get("last_layers") or 0), key="lora_layers",
                                   help="a real model on a CPU: LoRA on the last few layers skips the backward "
                                        "pass through the frozen ones (README: A real model on a CPU)")
    max_length = c12.number_input("Tokens per example (max length)", 8, 32768, int(cfg.get("max_length", 256)),
                                  key="max_length")
    pool_size = c13.number_input("Pool rows to use (0 = all)", 0, 10**9, int(cfg.get("limit_train") or 0),
                                 help="the pool file's first N rows", key="pool_size")
    paper = st.checkbox("The GIST paper's exact rule instead (--paper: max over individual target examples, global "
                        "top-k, rank by τ = 0.95); the form's selection rule, rank rule and τ are then ignored",
                        key="paper_rule")
    overwrite = st.checkbox("Replace a run with a different config in this folder (--overwrite)")
    submitted = st.form_submit_button("Launch", type="primary")
if submitted:
    name = name.strip()
    try:
        run_path(name)
    except RunNameError as e:
        st.error(f"Run folder name: {e}")
    else:
        if not model.strip() or not (pool_file or pool.strip()) or not (target_file or target.strip()):
            st.error("Model, pool and target are required.")
        elif (stored := save_uploads(name, {"pool": pool_file, "target": target_file})) is not None:
            train, val = stored.get("pool", pool.strip()), stored.get("target", target.strip())
            start(name, lambda d: launcher.select_args(
                d, model=model.strip(), train=train, target=val, budget=budget.strip(), rank=int(rank) or None,
                tau=tau, rank_rule=rank_rule, balance=balance, lora_r=int(lora_r), lora_alpha=lora_alpha,
                epochs=int(epochs), lr=lr,
                lora_layers=int(lora_layers) or None, max_length=int(max_length), pool_size=int(pool_size) or None,
                paper=paper, overwrite=overwrite))
