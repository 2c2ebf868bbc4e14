"""Streamlit glue shared by the dashboard pages: run picker, shared settings, the one cached loader.

The selected run lives in st.session_state["run"] and in the URL (?run=NAME), so a reload or a
shared link opens the same run. Rank, budget and balance are kept per run in session_state so
that moving the rank slider on one page changes what every other page shows.
All math is in gist_core.viewer, every figure in gist_core.viewer.figures; this module only wires
them to widgets.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import streamlit as st

from gist_core.methods import registry, scoring
from gist_core.runner import launcher
from gist_core.store.layout import RunLayout
from gist_core.store.runs import RunNameError, run_path, runs_root
from gist_core.viewer import breakdowns, curvature, examples, labels, pool_map, progress, rescore, rundir

PAGES = {page.key: page.file for page in registry.pages()}  # key -> file, for page links
STATUS_ICON = {"done": ":material/check_circle:", "running": ":material/hourglass_top:", "failed": ":material/error:",
               "cancelled": ":material/stop_circle:", "stopped": ":material/pause_circle:", "empty": ""}


def page_setup(title: str) -> None:
    st.set_page_config(page_title=f"{title} · GIST Lab", layout="wide")


def number_table(frame, label_column: str, container=st) -> None:
    """A table whose numeric columns show 3 decimals; `label_column` stays text."""
    container.dataframe(frame, hide_index=True, width="stretch",
                        column_config={c: st.column_config.NumberColumn(format="%.3f") for c in frame.columns
                                       if c != label_column})


# ----------------------------------------------------------------------------- run selection
def run_dir_of(name: str) -> Path:
    """A run's folder: runs_root()/name; RunNameError for anything that is not a plain run name
    (absolute paths, '..', '/', a symlink out of the runs folder)."""
    return run_path(name)


def run_problem(name: str) -> str | None:
    """Why the dashboard refuses to open run `name` (one line), or None when it may."""
    try:
        run_dir_of(name)
    except RunNameError as e:
        return str(e)
    return None


def run_name_of(path: Path) -> str:
    """The name of a run folder (every folder the dashboard opens is directly under runs_root())."""
    return Path(path).name


def set_run(name: str | None) -> None:
    st.session_state["run"] = name
    if name:
        st.query_params["run"] = name
    elif "run" in st.query_params:
        del st.query_params["run"]


def run_names() -> list[str]:
    return [n for n in progress.runs_table(runs_root())["run"].tolist() if run_problem(n) is None]


def current_run_name() -> str | None:
    """URL first (links and reloads), then this session's choice, then the newest run.

    A ?run= that is not a plain run name is refused with an error and dropped from the URL, never followed."""
    names = run_names()
    link = st.query_params.get("run")
    if link and (problem := run_problem(link)):
        st.error(f"Ignored the run in the link: {problem}", icon=":material/block:")
        del st.query_params["run"]
        link = None
    for cand in (link, st.session_state.get("run")):
        if cand and run_problem(cand) is None and (cand in names or run_dir_of(cand).is_dir()):
            return cand
    return names[0] if names else None


def run_picker() -> Path | None:
    """Sidebar select box of the runs; returns the chosen run folder (None when there is none)."""
    names = run_names()
    current = current_run_name()
    if current and current not in names:
        names = [current, *names]
    if not names:
        st.sidebar.info("No runs yet.")
        return None
    choice = st.sidebar.selectbox("Run", names, index=names.index(current), key=None,
                                  help=f"run folders under {runs_root()}")
    set_run(choice)
    st.sidebar.caption(f"`{run_dir_of(choice)}`")
    return run_dir_of(choice)


def require_run(run_dir: Path | None) -> Path:
    """Stop the page with a pointer to the Run page when there is no run at all."""
    if run_dir is None:
        st.info("No run yet: launch one on the Run page.")
        st.page_link(PAGES["run"], label="Go to the Run page", icon=":material/play_arrow:")
        st.stop()
    return run_dir


def require_scores(run_dir: Path | None) -> Path:
    """Stop the page with a pointer to the Run page unless the run has scores."""
    run_dir = require_run(run_dir)
    if problem := rundir.stale_problem(run_dir):  # never draw scores from scrambled target directions
        st.error(problem, icon=":material/warning:")
        st.stop()
    if not rundir.has_scores(run_dir):
        state = progress.run_state(run_dir)
        st.info(f"Run `{run_dir.name}` has no scores yet (status: {state['status']}).")
        st.page_link(PAGES["run"], label="Follow it on the Run page", icon=":material/play_arrow:",
                     query_params={"run": run_name_of(run_dir)})
        st.stop()
    return run_dir


# ----------------------------------------------------------------------------- the one cached loader
# Every page loads its data through folder_view: this is the dashboard's only st.cache_data (pages keep no cache of
# their own; tests/app/test_page_pattern.py). st.cache_data does not hash a parameter whose name starts with "_",
# so none here may.
@st.cache_data(max_entries=128, show_spinner=False)
def _folder_view(ref: str, folder: str, stamp: tuple, args: tuple):
    return registry.load(ref)(Path(folder), *args)


def folder_view(fn, folder: Path, *args, files: Iterable[Path] = ()):
    """`fn(folder, *args)`, a viewer function of a run (or method) folder, through Streamlit's cache: the one way a
    page loads. The key holds the function's name, the folder, the arguments (hashable by Streamlit: numbers,
    strings, lists, dicts, frames) and the folder's stamp: rundir.tree_stamp (every JSON file under the folder, the
    manifest, config and reports among them) and the mtime of each of `files`, what `fn` reads that no JSON write
    announces (a matrices file, a parquet). A finished stage, a rewritten report or a rewritten listed file
    invalidates the entry."""
    stamp = (rundir.tree_stamp(folder), *(rundir.file_stamp(f) for f in files))
    return _folder_view(f"{fn.__module__}:{fn.__qualname__}", str(folder), stamp, tuple(args))


# What a page loads through folder_view with more than the folder and plain arguments: a settings dict, a spinner,
# a file outside the JSON stamp, a call that must not run.
def rescored(run_dir: Path, s: dict) -> rescore.Rescored:
    """GIST re-scored at the settings `s` (rank, balance, budget, kind)."""
    return folder_view(rescore.rescored_frame, run_dir, s["rank"], s["balance"], s["budget"], s["kind"])


def model_input(run_dir: Path, row: int) -> dict:
    with st.spinner("Loading the run's tokenizer ..."):
        return folder_view(examples.model_input, run_dir, int(row))


def map_coords(run_dir: Path, rank: int, method: str, max_points: int = pool_map.MAP_MAX_POINTS,
               compute: bool = False) -> pool_map.MapData | None:
    """PCA always; UMAP only when cached on disk or compute=True (a None must never be cached: map_coords computes
    by default)."""
    if method == "umap" and not compute and not pool_map.umap_cached(run_dir, rank, max_points):
        return None
    return folder_view(pool_map.map_coords, run_dir, rank, method, int(max_points))


def compare_columns(run_dir: Path) -> dict:
    """LESS / raw cosine / embedding subtask columns; compare's scores file joins the key (no JSON announces it)."""
    return folder_view(breakdowns.compare_columns, run_dir, files=[RunLayout(run_dir).compare_scores])


def curvature_display(run_dir: Path, epoch: int, matrix: str, kind: str, max_side: int = 256) -> curvature.DisplayMatrix | None:
    """The heatmap-ready (downsampled) matrix; None when ckpt-E.safetensors is missing (its mtime joins the key)."""
    return folder_view(curvature.matrix_display, run_dir, int(epoch), matrix, kind, int(max_side),
                       files=[curvature.geometry_matrix_path(run_dir, epoch)])


def curvature_diagonals(run_dir: Path, epoch: int):
    """Per coordinate diag(H) and Adam's sqrt(v) (curvature.diagonal_frame); None when the file is missing."""
    return folder_view(curvature.matrix_diagonals, run_dir, int(epoch), files=[curvature.geometry_matrix_path(run_dir, epoch)])


# ----------------------------------------------------------------------------- shared settings
def _skey(run_dir: Path, name: str) -> str:
    return f"gist:{run_dir}:{name}"


def settings(run_dir: Path) -> dict:
    """The current rank / budget / balance for this run (the run's own values until changed)."""
    run = folder_view(rundir.load_run, run_dir)
    d = rescore.default_settings(run)
    d["rank"] = min(max(1, d["rank"]), rundir.r_max(run_dir))
    d["kind"] = rundir.arrays(run_dir).kind  # an older run without stored norms: the in-subspace score only
    return {k: st.session_state.get(_skey(run_dir, k), v) for k, v in d.items()}


def _persist(widget_key: str, skey: str, convert=lambda v: v):
    def cb():
        st.session_state[skey] = convert(st.session_state[widget_key])
    return cb


def rank_slider(run_dir: Path, key: str, container=st) -> int:
    """Rank r in 1..R_max, shared across pages."""
    skey, rmax, cur = _skey(run_dir, "rank"), rundir.r_max(run_dir), settings(run_dir)["rank"]
    if rmax < 2:
        container.caption("rank r = 1 (the run stores a single direction)")
        return 1
    st.session_state[key] = cur  # widget shows the shared value even after visiting another page
    return container.slider("Rank r (task directions used by the cosine)", 1, rmax, key=key,
                            on_change=_persist(key, skey))


def budget_slider(run_dir: Path, key: str, container=st) -> float:
    """Budget as a percentage of the pool (0.1 % .. 50 %), shared across pages; returns a fraction."""
    skey, cur = _skey(run_dir, "budget"), settings(run_dir)["budget"]
    st.session_state[key] = float(min(50.0, max(0.1, round(cur * 100, 1))))
    pct = container.slider("Budget (% of the pool selected)", 0.1, 50.0, step=0.1, key=key, format="%.1f%%",
                           on_change=_persist(key, skey, lambda v: v / 100))
    return pct / 100


def score_radio(run_dir: Path, key: str, container=st) -> str:
    """The GIST score kind, shared across pages; an older run without stored norms says why it has one kind."""
    kinds = rundir.arrays(run_dir).kinds
    if len(kinds) == 1:
        container.caption(rundir.OLD_SCORE_NOTE)
        return kinds[0]
    skey, cur = _skey(run_dir, "kind"), settings(run_dir)["kind"]
    st.session_state[key] = cur
    return container.radio("Score", list(kinds), key=key, horizontal=True, on_change=_persist(key, skey),
                           format_func=labels.SCORE_NAMES.get, help=labels.SCORE_HELP)


def balance_radio(run_dir: Path, key: str, container=st) -> str:
    skey, cur = _skey(run_dir, "balance"), settings(run_dir)["balance"]
    st.session_state[key] = cur
    return container.radio("Selection rule", list(scoring.BALANCES), key=key, horizontal=True,
                           on_change=_persist(key, skey), format_func=labels.RULE_NAMES.get, help=labels.RULE_HELP)


def long_text(container, label: str, text: str, key: str) -> None:
    """A prompt or response of any length: the first ~1,500 characters with a "show all" toggle; Markdown (fenced
    code as code) when the text is written in Markdown, else plain wrapped text."""
    head, cut = examples.preview(text)
    show_all = cut and container.toggle(f"show all ({len(text):,} characters)", key=f"{key}_all")
    shown = text if show_all or not cut else head
    container.markdown(f"**{label}**" + ("" if not cut or show_all else f" (first {len(head):,} of {len(text):,} characters)"))
    if examples.looks_like_markdown(text):
        container.markdown(shown)
    else:
        container.code(shown, language=None, wrap_lines=True)


def semantics_caption() -> None:
    st.caption(labels.SCORE_SEMANTICS)


def settings_caption(s: dict, rs: rescore.Rescored) -> None:
    st.caption(f"rank r = {s['rank']} · score: {labels.SCORE_NAMES.get(rs.kind, rs.kind)} · budget "
               f"{s['budget'] * 100:.1f}% = {rs.k} examples · rule: {s['balance']} · re-scored in {rs.ms:.0f} ms")


def launch_and_rerun(run_dir: Path, args: list[str]) -> None:
    """Start a `gist-lab` subprocess on the run folder; rerun the page to follow it, or say why it failed."""
    try:
        launcher.launch(run_dir, args)
    except (launcher.LaunchError, OSError) as e:
        st.error(f"Could not launch: {e}")
    else:
        st.rerun()
