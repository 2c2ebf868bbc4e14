"""Run: configure and launch a selection, follow its stages live, cancel it; state comes from the run folder."""
from __future__ import annotations

import re
from pathlib import Path

import streamlit as st

from gist_core import launcher, ui, views
from gist_core.corpus import DEFAULT_DEMO_TARGET
from gist_core.runs import runs_root

ui.page_setup("Run")
st.title("Run")
SAMPLE = Path(__file__).resolve().parent.parent / "sample_data"
TARGETS = sorted(p.name for p in (SAMPLE / "targets").iterdir()) if (SAMPLE / "targets").is_dir() else ["lookup"]
run_dir = ui.run_picker()


def start(name: str, args: list[str]) -> None:
    """Launch into runs_root()/name and make it the current run (errors shown, never raised)."""
    try:
        launcher.launch(runs_root() / name, args)
    except (launcher.LaunchError, OSError) as e:
        st.error(f"Could not launch: {e}")
        return
    ui.set_run(name)
    st.rerun()


# ----------------------------------------------------------------------------- status of the current run
def stage_bars(run_dir) -> None:
    prog = views.stage_progress(run_dir)
    for r in prog.itertuples():
        detail = f"{r.done}/{r.total}" if r.total else ""
        if r.status == "done" and r.wall_s is not None:
            detail = f"{r.wall_s:.1f} s"
        loss = f" · loss {r.loss:.3f}" if isinstance(r.loss, float) and r.status == "running" else ""
        st.progress(float(r.fraction or 0.0), text=f"**{r.stage}** — {r.status} {detail}{loss}")
        if r.status == "error" and r.error:
            st.caption(f"{r.stage}: {r.error}")


def summary_block(run_dir) -> None:
    summ = views.read_json(run_dir / "summary.json", {})
    if not summ:
        return
    c = st.columns(5)
    c[0].metric("selected", f"{summ.get('n_selected', 0):,}", help=f"of {summ.get('n_pool', 0):,} pool examples")
    c[1].metric("rank r", summ.get("rank"), help=f"r95 = {summ.get('r95')}, r99 = {summ.get('r99')}, "
                                                 f"stored {summ.get('r_max')}")
    if "precision" in summ:
        c[2].metric("precision", f"{summ['precision']:.3f}",
                    delta=f"{summ['precision'] - summ['random_precision']:+.3f} vs random")
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
    state = views.run_state(run_dir)
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
    elif status in ("failed", "cancelled", "stopped") and (run_dir / "config.json").exists():
        if st.button("Resume with the same config", icon=":material/replay:", key="resume_run",
                     help="finished stages are skipped; pool projection resumes from its done-mask"):
            start(ui.run_name_of(run_dir), ["select", "--config", str(run_dir / "config.json"),
                                            "--out", str(run_dir.resolve())])
    if status == "done":
        summary_block(run_dir)
    log = launcher.read_log_tail(run_dir, 6000)
    if log:
        with st.expander("launch.log (tail)"):
            st.code(log[-4000:], language=None)


if run_dir is not None and run_dir.exists():
    live = views.run_state(run_dir)["status"] == "running"
    st.fragment(run_every=2.0 if live else None)(status_panel)(run_dir, live)
    st.divider()

# ----------------------------------------------------------------------------- launching
st.subheader("Launch")
qc = st.columns([2, 3])
demo_target = qc[0].selectbox("Bundled target task", TARGETS, index=TARGETS.index(DEFAULT_DEMO_TARGET) if DEFAULT_DEMO_TARGET in TARGETS else 0,
                              key="demo_target")
with qc[1]:
    b1, b2 = st.columns(2)
    if b1.button("Quick demo (1 warm-up epoch)", icon=":material/bolt:", key="quick_demo", type="primary",
                 help="tiny model + synthetic pool; one warm-up epoch keeps it to a few minutes on 2 cores"):
        name = f"demo-{demo_target}-quick"
        start(name, launcher.demo_args(runs_root() / name, demo_target, epochs=1))
    if b2.button("Full demo (4 warm-up epochs)", icon=":material/rocket_launch:", key="full_demo"):
        name = f"demo-{demo_target}"
        start(name, launcher.demo_args(runs_root() / name, demo_target))

cfg = views.read_json(run_dir / "config.json", {}) if run_dir else {}
lora, warm = cfg.get("lora") or {}, cfg.get("warmup") or {}
with st.form("launch_form"):
    st.markdown("**Your own run** (`gist-lab select`); defaults come from the current run, else the bundled data.")
    c1, c2 = st.columns(2)
    name = c1.text_input("Run folder name", value="my-run", help=f"created under {runs_root()}")
    model = c2.text_input("Model (HF id or local folder)", value=cfg.get("model", str(SAMPLE / "tiny-lm")))
    pool = c1.text_input("Pool (JSONL/JSON/CSV/Parquet or datasets name)", value=cfg.get("train", str(SAMPLE / "pool.jsonl")))
    target = c2.text_input("Target validation examples", value=cfg.get("target", str(SAMPLE / "targets" / DEFAULT_DEMO_TARGET / "val.jsonl")))
    c3, c4, c5, c6 = st.columns(4)
    lora_r = c3.number_input("LoRA r", 1, 1024, int(lora.get("r", 8)))
    lora_alpha = c4.number_input("LoRA alpha", 0.1, 4096.0, float(lora.get("alpha", 16.0)))
    epochs = c5.number_input("Warm-up epochs", 1, 50, int(warm.get("epochs", 4)))
    lr = c6.number_input("Warm-up learning rate", 1e-7, 1.0, float(warm.get("lr", 1e-3)), format="%g")
    c7, c8, c9, c10 = st.columns(4)
    rank = c7.number_input("Rank r (0 = by tau)", 0, 1024, int(cfg.get("rank") or 0))
    tau = c8.number_input("tau (explained variance)", 0.01, 1.0, float(cfg.get("tau", 0.95)), step=0.01)
    budget = c9.text_input("Budget (0.05, 5% or a count)", value=str(cfg.get("budget", 0.05)))
    balance = c10.selectbox("Selection rule", ["global", "subtask"],
                            index=["global", "subtask"].index(cfg.get("balance", "global")))
    overwrite = st.checkbox("Replace a run with a different config in this folder (--overwrite)")
    submitted = st.form_submit_button("Launch", type="primary")
if submitted:
    if not re.fullmatch(r"[\w.-]+", name or ""):
        st.error("Run folder name: letters, digits, '.', '_' and '-' only.")
    elif not all([model.strip(), pool.strip(), target.strip()]):
        st.error("Model, pool and target are required.")
    else:
        start(name, launcher.select_args(runs_root() / name, model=model.strip(), train=pool.strip(),
                                         target=target.strip(), budget=budget.strip(), rank=int(rank) or None,
                                         tau=tau, balance=balance, lora_r=int(lora_r), lora_alpha=lora_alpha,
                                         epochs=int(epochs), lr=lr, overwrite=overwrite))
