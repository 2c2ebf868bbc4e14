"""Runs and progress: the stages of a run from its progress events, its status, and the table of all runs."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from gist_core.runner import launcher
from gist_core.store import lock
from gist_core.store.layout import CONFIG, LAUNCH, LAUNCH_LOG, PREVIOUS, RunLayout
from gist_core.store.manifest import read_events
from gist_core.viewer.rundir import read_json, run_config, run_summary

# commands that read a finished run and add their own report to it, and commands that write a folder of their own
ADD_ON_COMMANDS = ("geometry", "cluster", "experts")
ADD_ON_STAGES = ("clusters/", "experts/")  # the stages cluster and experts report in the run's progress.jsonl
OWN_FOLDER_COMMANDS = ("train", "proxy")


def stage_plan(config: dict) -> list[str]:
    epochs = int((config.get("warmup") or {}).get("epochs", 1))
    return ["data", "warmup", *[f"val_grads/ckpt-{e}" for e in range(1, epochs + 1)], "train_proj", "scores"]


def current_events(run_dir: str | Path) -> list[dict]:
    """Events of the run's latest attempt: since the last launch, else since the last 'data' start. A launch of an
    add-on command (geometry, cluster, experts) is not an attempt of the run: the run's stages stay as they were."""
    events = read_events(run_dir)
    ls = launcher.read_launch(run_dir)
    if ls and ls.get("started_at") and launcher.subcommand(ls.get("cmd")) not in ADD_ON_COMMANDS:
        return [e for e in events if e.get("t", 0) >= ls["started_at"] - 1]
    starts = [i for i, e in enumerate(events) if e.get("stage") == "data" and e.get("status") == "start"]
    return events[starts[-1]:] if starts else events


def stage_progress(run_dir: str | Path, events: list[dict] | None = None) -> pd.DataFrame:
    """Per planned stage: status (pending/running/done/skipped/error), done, total, fraction, wall_s, error. The
    run's own stages (an add-on job's are its page's: viewer.jobs), or, given `events`, the stages they name."""
    cfg = run_config(run_dir) if events is None else {}
    plan = stage_plan(cfg) if cfg else []
    if events is None:
        events = [e for e in current_events(run_dir) if not str(e.get("stage", "")).startswith(ADD_ON_STAGES)]
    state = {s: {"stage": s, "status": "pending", "done": None, "total": None, "fraction": 0.0,
                 "wall_s": None, "error": None, "loss": None} for s in plan}
    ranks: dict[str, dict] = {}  # torchrun: stage -> rank -> its own row
    for e in events:
        if e.get("rank") is not None:
            r = ranks.setdefault(e["stage"], {}).setdefault(e["rank"], {"stage": e["stage"], "status": "pending",
                                                                      "done": None, "total": None, "fraction": 0.0,
                                                                      "wall_s": None, "error": None, "loss": None})
            _apply_event(r, e)
            continue
        s = state.setdefault(e["stage"], {"stage": e["stage"], "status": "pending", "done": None, "total": None,
                                          "fraction": 0.0, "wall_s": None, "error": None, "loss": None})
        _apply_event(s, e)
    for stage, per_rank in ranks.items():
        state[stage] = _merge_ranks(stage, list(per_rank.values()))
    return pd.DataFrame(list(state.values()))


def _merge_ranks(stage: str, rows: list[dict]) -> dict:
    """One row for a stage several ranks ran: rows summed; running while any rank runs, error if any failed."""
    statuses = {r["status"] for r in rows}
    status = next((s for s in ("error", "running", "pending", "done", "skipped") if s in statuses), "pending")
    done = sum(r["done"] or 0 for r in rows)
    total = sum(r["total"] or 0 for r in rows) or None
    walls = [r["wall_s"] for r in rows if r["wall_s"] is not None]
    return {"stage": stage, "status": status, "done": done, "total": total,
            "fraction": 1.0 if status in ("done", "skipped") else (min(1.0, done / total) if total else 0.0),
            "wall_s": max(walls) if walls else None, "error": next((r["error"] for r in rows if r["error"]), None),
            "loss": None}


def _apply_event(s: dict, e: dict) -> None:
    """Fold one progress event into a stage row."""
    st = e.get("status")
    if st in ("start", "progress"):
        s["status"] = "running"
        s["total"] = e.get("total", s["total"])
        s["done"] = e.get("done", s["done"] or 0)
        s["loss"] = e.get("loss", s["loss"])
        s["fraction"] = min(1.0, s["done"] / s["total"]) if s["total"] else 0.0
    elif st in ("end", "skip"):
        s.update(status="done" if st == "end" else "skipped", fraction=1.0, wall_s=e.get("wall_s"))
    elif st == "error":
        s.update(status="error", error=e.get("error"), wall_s=e.get("wall_s"))


def run_state(run_dir: str | Path) -> dict:
    """{'status': running | done | failed | cancelled | stopped | empty, 'message': str | None, 'launch': ...}.

    A live writer (the folder's lock record, gist_core.store.lock) means running, whoever started it; a run the
    manifest marks as running with no live writer stopped before finishing: incomplete, never done."""
    d = Path(run_dir)
    ls = launcher.state(d)
    writer = lock.holder(d)
    marked = (read_json(RunLayout(d).manifest, {}) or {}).get("status") or {}
    events = current_events(d)
    summary = RunLayout(d).summary
    t_start = (ls.started_at if ls.launched else (events[0]["t"] if events else 0)) or 0
    # geometry, cluster and experts only read a finished run: their launch leaves the run's own summary valid, and
    # how they ended is their page's to show (Curvature, Clusters), not the run's status
    measured_only = ls.launched and launcher.subcommand(ls.cmd) in ADD_ON_COMMANDS
    fresh = summary.exists() and (measured_only or summary.stat().st_mtime >= t_start - 1)
    err_events = [e for e in events if e.get("status") == "error"]
    if ls.alive:
        status, msg = "running", None
    elif writer is not None:
        status, msg = "running", f"started outside the dashboard by {lock.describe(writer)} (stop it where it was started)"
    elif marked.get("state") == "running" and not (ls.cancelled or ls.error or ls.returncode not in (None, 0)):
        status, msg = "stopped", ("incomplete: the run stopped before finishing (an earlier result, if any, is kept in "
                                  f"{PREVIOUS}/); run the same command again to resume")
    elif fresh and (measured_only or ls.returncode in (None, 0)):
        status, msg = "done", None
    elif ls.cancelled:
        status, msg = "cancelled", "cancelled from the dashboard; launch the same settings again to resume"
    elif ls.error or err_events or (ls.returncode not in (None, 0)):
        status = "failed"
        msg = ls.error or (err_events[-1].get("error") if err_events else None) or \
            f"the run exited with code {ls.returncode}; see {LAUNCH_LOG}"
    elif events:
        status, msg = "stopped", "the run stopped before finishing; launch the same settings again to resume"
    elif ls.launched:
        status, msg = "failed", f"the run exited before its first stage; see {LAUNCH_LOG}"
    else:
        status, msg = "empty", None
    return {"status": status, "message": msg, "launch": ls}


def is_run_folder(d: Path) -> bool:
    """A selection run's folder: its config.json, or a launch of a command that makes one (a `gist-lab train` or
    `proxy build` folder launched from the dashboard is not a run: its own page lists it)."""
    if RunLayout(d).config.exists():
        return True
    rec = launcher.read_launch(d)
    return rec is not None and launcher.subcommand(rec.get("cmd")) not in OWN_FOLDER_COMMANDS


def runs_table(root: str | Path) -> pd.DataFrame:
    """Home-page rows: every run folder under root (config.json or launch.json), newest first."""
    root = Path(root)
    dirs = {p.parent for name in (CONFIG, LAUNCH) for p in root.glob(f"*/{name}")} \
        if root.is_dir() else set()
    dirs = {d for d in dirs if is_run_folder(d)}
    out = []
    for d in dirs:
        cfg, summ = run_config(d), run_summary(d)
        out.append({"run": d.name, "status": run_state(d)["status"], "model": _short(cfg.get("model")),
                    "data": f"{_short(cfg.get('train'))} → {_short(cfg.get('target'), 2)}" if cfg else "",
                    "budget": cfg.get("budget"), "rank": summ.get("rank", cfg.get("rank")),
                    "precision": summ.get("precision"), "random precision": summ.get("random_precision"),
                    "selected": summ.get("n_selected"), "mtime": d.stat().st_mtime})
    df = pd.DataFrame(out, columns=["run", "status", "model", "data", "budget", "rank", "precision",
                                    "random precision", "selected", "mtime"])
    return df.sort_values("mtime", ascending=False).drop(columns="mtime").reset_index(drop=True)


def _short(spec: str | None, parts: int = 1) -> str:
    """Last path component(s) of a path-like spec, for compact tables."""
    if not spec:
        return ""
    return "/".join(Path(spec).parts[-parts:])


# ----------------------------------------------------------------------------- compare (gist-lab compare)
