"""The jobs the method pages start (`gist-lab cluster`, `experts`, `train`, `proxy build`): which folder runs
which command, how far it got, who else writes a folder, and whether a new output folder's name may be used.

Read from the folders alone (RUN/launch.json, launch.log, progress.jsonl and the writer lock), so a reloaded page
or a restarted dashboard finds a job again. No Streamlit here: gist_core/app/jobs.py draws it.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from gist_core.runner import launcher
from gist_core.store import lock
from gist_core.store.manifest import read_events
from gist_core.store.runs import RunNameError, run_path, runs_root
from gist_core.viewer import progress

# the stages a command reports in a run folder's progress.jsonl (train and proxy build report none: their log is
# their progress)
STAGE_PREFIX = dict(zip(("cluster", "experts"), progress.ADD_ON_STAGES))


def job(folder: str | Path, command: str) -> launcher.LaunchState | None:
    """The folder's last dashboard launch when it was `gist-lab <command>`, else None."""
    ls = launcher.state(folder)
    return ls if ls.launched and launcher.subcommand(ls.cmd) == command else None


def running(folder: str | Path, command: str) -> bool:
    """A `command` job launched from the dashboard is alive in the folder (it can be followed and cancelled here)."""
    ls = job(folder, command)
    return ls is not None and ls.alive


def failure(folder: str | Path, command: str) -> str | None:
    """The readable error of the folder's last `command` launch when it failed (not when it was cancelled)."""
    ls = job(folder, command)
    return ls.error if ls is not None and not ls.alive and not ls.cancelled else None


def other_writer(folder: str | Path, command: str) -> str | None:
    """Who writes the folder now, in one line, unless it is a `command` job launched from the dashboard (that one
    the page follows): another launch (a selection still going), or a process holding the folder's lock (started
    from a terminal). None when nobody writes it. One writer per run folder: while this is not None, nothing is
    launched there."""
    if running(folder, command):
        return None
    ls = launcher.state(folder)
    writer = lock.holder(folder)
    if writer is not None:
        return lock.describe(writer)
    if ls.alive:
        return lock.describe({"pid": ls.pid, "cmd": ls.cmd})
    return None


def stages(folder: str | Path, command: str) -> pd.DataFrame:
    """The job's own stages since its launch (stage, status, done, total, fraction, wall_s), from progress.jsonl;
    none for a command that reports none."""
    prefix, ls = STAGE_PREFIX.get(command), job(folder, command)
    since = (ls.started_at or 0) - 1 if ls is not None else 0
    events = [e for e in read_events(folder) if prefix and str(e.get("stage", "")).startswith(prefix)
              and e.get("t", 0) >= since]
    return progress.stage_progress(folder, events)


def log_lines(folder: str | Path, n: int = 12) -> str:
    """The launch log's last `n` lines as a terminal would show them: a progress bar redrawn with carriage returns
    is its last state."""
    out = []
    for line in launcher.read_log_tail(folder, 32_000).split("\n"):
        shown = [part for part in line.split("\r") if part.strip()]
        if shown:
            out.append(shown[-1].rstrip())
    return "\n".join(out[-n:])


def elapsed(ls: launcher.LaunchState, now: float | None = None) -> str:
    """'2 min 05 s' since the launch."""
    s = max(0, int((now or time.time()) - (ls.started_at or 0)))
    return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"


def launched_folders(root: str | Path, command: str) -> list[str]:
    """Names of the folders under `root` whose last dashboard launch was `gist-lab <command>`, newest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for d in root.iterdir():
        rec = launcher.read_launch(d) if d.is_dir() else None
        if rec and launcher.subcommand(rec.get("cmd")) == command:
            found.append((rec.get("started_at") or 0, d.name))
    return [name for _, name in sorted(found, reverse=True)]


def unfinished(root: str | Path, command: str, has_report: Callable[[Path], bool]) -> list[str]:
    """The `command` folders a page has no results of yet to show but a job to tell about: running, or launched and
    stopped without a report (failed, cancelled). Newest first."""
    return [name for name in launched_folders(root, command)
            if running(Path(root) / name, command) or not has_report(Path(root) / name)]


def out_folder_problem(name: str, command: str, is_own: Callable[[Path], bool], overwrite: bool) -> str | None:
    """Why a new `command` output folder `name` (under the runs root) may not be used, or None.

    A free name is fine. A folder of the same command (its report, or its launch) is used again only with
    `overwrite` (its results are replaced; the same settings resume). Anything else there (a run, another
    command's folder, any other files) is never written into."""
    try:
        path = run_path(name)
    except RunNameError as e:
        return f"Folder name: {e}"
    if not path.exists():
        return None
    if not path.is_dir():
        return f"`{path}` is a file; choose another name."
    own = is_own(path) or job(path, command) is not None
    if not own and any(path.iterdir()):
        return f"`{name}` under `{runs_root()}` holds something else (a run or another command's folder); " \
               "choose another name."
    if not overwrite:
        return f"`{name}` already exists under `{runs_root()}`; tick “overwrite” to run into it again (its results " \
               "are replaced; the same settings resume), or choose another name."
    return None
