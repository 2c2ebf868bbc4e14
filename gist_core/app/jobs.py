"""Streamlit glue for the jobs the method pages start (`gist-lab cluster`, `experts`, `train`, `proxy build`): what
stands in the way of a launch (a job already running, followed with its progress and a cancel button; another
process writing the folder; the last launch's error), the terminal command a form amounts to, the Launch button,
and the model picker. State from gist_core.viewer.jobs, argument lists from gist_core.runner.launcher."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import streamlit as st

from gist_core.app import ui
from gist_core.runner import launcher
from gist_core.store.layout import LAUNCH_LOG
from gist_core.store.runs import NAME_RULE, runs_root
from gist_core.viewer import jobs

FOLLOW_EVERY_S = 2.0


def blocked(folder: Path, command: str, name: str | None = None) -> bool:
    """Draw what stands in the way of launching `gist-lab <command>` in `folder`; True when nothing may be launched
    there now (a job of it runs: followed here; another process writes the folder). A failed or cancelled last
    launch is said and does not block. `name` replaces the folder's name in the notes."""
    name = name or folder.name
    if jobs.running(folder, command):
        st.fragment(run_every=FOLLOW_EVERY_S)(_follow)(folder, command, name)
        return True
    if who := jobs.other_writer(folder, command):
        st.warning(f"`{name}` is being written by {who}. One writer per folder: launch here once it has finished, "
                   "or stop it where it was started.", icon=":material/lock:")
        return True
    ls = jobs.job(folder, command)
    if ls is not None and ls.cancelled:
        st.warning(f"The last `gist-lab {command}` in `{name}` was cancelled; launch it again to resume "
                   "(finished passes are kept).", icon=":material/stop_circle:")
    elif error := jobs.failure(folder, command):
        st.error(f"The last `gist-lab {command}` in `{name}` failed: {error}", icon=":material/error:")
        log_expander(folder)
    return False


def _follow(folder: Path, command: str, name: str) -> None:
    """A running job, redrawn every FOLLOW_EVERY_S: elapsed time, its stages, its log's last lines, cancel. When it
    has ended the whole page reruns (and shows the results, or the error)."""
    ls = jobs.job(folder, command)
    if ls is None or not ls.alive:
        st.rerun()
    st.info(f"`gist-lab {command}` is running in `{name}` ({jobs.elapsed(ls)} so far); this page shows its results "
            "when it finishes.", icon=":material/hourglass_top:")
    for r in jobs.stages(folder, command).itertuples():
        detail = f"{r.wall_s:.1f} s" if r.status == "done" and r.wall_s is not None else \
            (f"{r.done}/{r.total}" if r.total else "")
        st.progress(float(r.fraction or 0.0), text=f"**{r.stage}** — {r.status} {detail}")
    if log := jobs.log_lines(folder):
        st.code(log, language=None)
    if st.button("Cancel", icon=":material/stop_circle:", key=f"cancel_{command}_{name}"):
        launcher.cancel(folder)
        st.rerun()


def log_expander(folder: Path) -> None:
    if log := jobs.log_lines(folder, 40):
        with st.expander(f"{LAUNCH_LOG} (last lines)"):
            st.code(log, language=None)


def launch_block(folder: Path, args: list[str], what: str, problem: str | None = None, key: str = "launch",
                 on_launch: Callable[[], None] | None = None) -> None:
    """The terminal command the settings above amount to, and the button that runs exactly it, detached, in
    `folder` (`on_launch` first); `problem` (a refused setting) is shown instead and disables the button."""
    st.caption("The same from a terminal:")
    st.code(launcher.shell_command(args), language="bash", wrap_lines=True)
    if problem:
        st.error(problem)
    if st.button(f"Launch {what}", icon=":material/play_arrow:", type="primary", key=key, disabled=bool(problem)):
        if on_launch:
            on_launch()
        ui.launch_and_rerun(folder, args)


def model_picker(default: str, key: str, container=st) -> str:
    """The model: the bundled tiny LM, a registry model (fetched or not), or any id / folder / .gguf typed in."""
    choices = launcher.model_choices(default)
    specs = [spec for _, spec in choices] + [None]
    picked = container.selectbox("Model", range(len(specs)), key=f"{key}_choice",
                                 format_func=lambda i: choices[i][0] if i < len(choices) else "another model (below)",
                                 help="registry models run offline once fetched (README: A real model)")
    if specs[picked] is not None:
        if "not fetched" in choices[picked][0]:
            container.caption(f"`{specs[picked]}` is not in the local cache: `gist-lab models fetch {specs[picked]}` "
                              "first, or the job stops with that advice.")
        return specs[picked]
    return container.text_input("…another model: HF id, local folder or .gguf file", key=f"{key}_other").strip()


def folder_jobs(command: str, has_report: Callable[[Path], bool]) -> None:
    """Every `command` folder under the runs root launched from the dashboard that has no results to show yet:
    followed while it runs, its error when it failed, a note when it was cancelled."""
    for name in jobs.unfinished(runs_root(), command, has_report):
        blocked(runs_root() / name, command)


def folder_picker(names: list[str], command: str, has_report: Callable[[Path], bool], intro: str, what: str,
                  form: Callable[[], None], launched_key: str, label: str, key: str) -> str:
    """The sidebar's choice of a `command` folder under the runs root (Layers: train, Proxy: proxy build). With
    none yet: `intro`, the folders still running, and the launch `form` of `what` (its command line), then the page
    stops. Otherwise the running ones first, and the folder launched last (`launched_key`) is picked once it has
    results."""
    if not names:
        st.info(intro)
        folder_jobs(command, has_report)
        with st.container(border=True):
            st.markdown(f"**Launch `{what}`** (into a new folder under the runs root)")
            form()
        st.stop()
    folder_jobs(command, has_report)
    if st.session_state.get(launched_key) in names:  # the folder just launched has its results: show them
        st.session_state[key] = st.session_state.pop(launched_key)
    return st.sidebar.selectbox(label, names, key=key)


def out_folder(command: str, is_own: Callable[[Path], bool], default: str, key: str) -> tuple[Path, str | None]:
    """The output folder's name and overwrite inputs (for a command that writes a folder of its own under the runs
    root); returns (the folder, why it may not be used, or None)."""
    c = st.columns([2, 3])
    name = c[0].text_input("Folder name", default, key=f"{key}_name",
                           help=f"created under {runs_root()}; {NAME_RULE}").strip()
    c[1].markdown("")  # level with the input beside it
    overwrite = c[1].checkbox("Overwrite an existing folder of this name", key=f"{key}_overwrite",
                              help=f"only a `gist-lab {command}` folder: its results are replaced (the same settings "
                                   "resume); a run's or another command's folder is never written into")
    return runs_root() / name, jobs.out_folder_problem(name, command, is_own, overwrite)
