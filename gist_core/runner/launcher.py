"""Start, watch and cancel `gist-lab` runs as detached subprocesses (the dashboard never blocks on them).

A launch writes RUN/launch.json (pid, command, start time; atomic) and sends stdout/stderr to
RUN/launch.log, so a reloaded page (or a restarted dashboard) finds the run again from the
folder alone. The child gets its own session (process group), so cancelling reaches every
process it started.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from gist_core.data.corpus import DEFAULT_DEMO_TARGET
from gist_core.errors import LaunchError
from gist_core.flags import Flag
from gist_core.methods import registry
from gist_core.methods.gast.config import TRAIN_FLAGS
from gist_core.methods.gradientspace.config import CLUSTER_FLAGS, EXPERT_FLAGS
from gist_core.methods.iprox.config import PROXY_FLAGS
from gist_core.model import registry as models
from gist_core.store import lock
from gist_core.store.atomic import atomic_write_json
from gist_core.store.layout import LAUNCH, LAUNCH_LOG, RunLayout

LAUNCH_FILE = LAUNCH     # RUN/launch.json: pid, command, start time (names from gist_core.store.layout)
LOG_FILE = LAUNCH_LOG    # RUN/launch.log: the job's stdout and stderr
KILL_GRACE_S = 5.0
_CHILDREN: dict[int, subprocess.Popen] = {}  # launched by this process: poll() reaps them and gives the exit code
_ERROR_RE = re.compile(r"(?:^|\s|:)error: (.+)$")
_EXC_RE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Interrupt)): (.+)$")


# ----------------------------------------------------------------------------- command lines
def cli_command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "gist_core.cli", *args]


def demo_args(out: str | Path, target: str = DEFAULT_DEMO_TARGET, epochs: int | None = None,
              overwrite: bool = False) -> list[str]:
    args = ["demo", "--target", target, "--out", str(Path(out).resolve())]
    if epochs is not None:
        args += ["--epochs", str(epochs)]
    return args + (["--overwrite"] if overwrite else [])


def select_args(out: str | Path, *, model: str, train: str, target: str, budget: float | str | None = None,
                rank: int | None = None, tau: float | None = None, rank_rule: str | None = None,
                balance: str | None = None,
                lora_r: int | None = None, lora_alpha: float | None = None, epochs: int | None = None,
                lr: float | None = None, lora_layers: int | None = None, max_length: int | None = None,
                pool_size: int | None = None, paper: bool = False, overwrite: bool = False) -> list[str]:
    """`gist-lab select` arguments; options left None keep the CLI defaults. rank wins over tau. paper: the GIST
    paper's exact rule (--paper), so the form's rule, rank rule and tau are not passed."""
    args = ["select", "--model", model, "--train", train, "--target", target, "--out", str(Path(out).resolve())]
    if paper:
        args.append("--paper")
        balance = rank_rule = tau = None
    opts = {"--budget": budget, "--rank": rank, "--rank-rule": None if rank else rank_rule,
            "--tau": None if rank else tau, "--balance": balance,
            "--lora-r": lora_r, "--lora-alpha": lora_alpha, "--epochs": epochs, "--lr": lr,
            "--lora-layers": lora_layers, "--max-length": max_length, "--pool-size": pool_size}
    for flag, v in opts.items():
        if v is not None:
            args += [flag, str(v)]
    return args + (["--overwrite"] if overwrite else [])


def model_choices(bundled: str) -> list[tuple[str, str]]:
    """(label, --model value) for the Run page: the bundled tiny LM, then every registry model, fetched or not."""
    out = [("bundled tiny LM (2 M parameters, sample_data/tiny-lm)", bundled)]
    for e in models.registry_rows():
        state = "fetched" if e["fetched"] else f"not fetched: run `gist-lab models fetch {e['name']}` first"
        out.append((f"{e['name']} ({e['about'].split(',')[0]}; {state})", e["name"]))
    return out


def compare_args(out: str | Path) -> list[str]:
    """`gist-lab compare` on a run folder: it reuses the folder's own config.json and finished stages."""
    return ["compare", "--out", str(Path(out).resolve())]


def geometry_args(run_dir: str | Path, coords: int = 2048, module: str | None = None) -> list[str]:
    """`gist-lab geometry` on a finished run folder: curvature of one LoRA block at every warm-up checkpoint.

    coords: coordinates sampled from the block's A and B (0 = all); module: LoRA module name or suffix
    (None or blank: the CLI's default, the last LoRA module)."""
    args = ["geometry", "--run", str(Path(run_dir).resolve()), "--coords", str(int(coords))]
    return args + (["--module", module.strip()] if module and module.strip() else [])


def shell_command(args: list[str]) -> str:
    """The terminal command a page's launch runs (`gist-lab cluster --run ...`), quoted for a shell."""
    return shlex.join(["gist-lab", *args])


def subcommand(cmd: list[str] | None) -> str | None:
    """The `gist-lab` subcommand of a command line (a launch record's or a lock holder's): its first word that
    names one (the subcommand comes before any flag value)."""
    names = {c.name for c in registry.commands()}
    return next((a for a in cmd or [] if a in names), None)


def flag_args(flags: tuple[Flag, ...], options: dict) -> list[str]:
    """`options` (named as the command's flags: k_grid -> --k-grid) as arguments through the command's own flag
    table. None and a flag's default are left out (the command then uses its own default, so the line stays what
    the user changed); a bool is a switch, given when True; a list or tuple is comma-separated ('' for none). A name the
    command has no flag for is a ValueError: the dashboard cannot launch what the CLI does not know. Flags come in
    the table's order (the --help order), so the same settings always make the same line."""
    table = {f.flag: f for f in flags}
    given = {"--" + name.replace("_", "-"): value for name, value in options.items()}
    if unknown := [flag for flag in given if flag not in table]:
        raise ValueError(f"the command has no flag {', '.join(unknown)}")
    out = []
    for flag, value in sorted(given.items(), key=lambda kv: list(table).index(kv[0])):  # the table's order: one line
        if isinstance(value, bool):  # a switch (--replacement, --no-evaluate): its default is "not given"
            out += [flag] if value else []
            continue
        if isinstance(value, (list, tuple)):
            value = tuple(value)
        if value is None or value == table[flag].default():
            continue
        if isinstance(value, tuple):
            out += [flag, ",".join(map(str, value))]
        else:
            out += [flag, str(value)]
    return out


def cluster_args(run_dir: str | Path, **options) -> list[str]:
    """`gist-lab cluster --run RUN` (GradientSpace on a finished warm-up); options as its flags: clusters, k_grid,
    rank, sketch_size, rule, pool_size, elrea_dim, birch_threshold, batch_size, seed."""
    return ["cluster", "--run", str(Path(run_dir).resolve()), *flag_args(CLUSTER_FLAGS, options)]


def experts_args(run_dir: str | Path, **options) -> list[str]:
    """`gist-lab experts --run RUN` (after cluster); options as its flags: clusterings, seeds, expert_steps,
    ensembles, router, base_weight, temperature, no_oracle_routing, per_skill, per_subtask, test, n_em,
    latency_queries, train_epochs, train_lr."""
    return ["experts", "--run", str(Path(run_dir).resolve()), *flag_args(EXPERT_FLAGS, options)]


def train_args(out: str | Path, ablation: bool = False, seeds: int | None = None, **options) -> list[str]:
    """`gist-lab train --out OUT` (GAST), or its ablation (every method x `seeds`); options as its flags: model,
    train, target, test, pool_size, max_length, n_em, device, method, implementation, k_select, k_support, support,
    temperature, replacement, aggregate, epochs, lr, batch_size, seed, lora_r."""
    args = ["train", "--out", str(Path(out).resolve())]
    if ablation:
        args.append("--ablation")
        if seeds is not None:
            args += ["--seeds", str(int(seeds))]
    return args + flag_args(TRAIN_FLAGS, options)


def proxy_args(out: str | Path, **options) -> list[str]:
    """`gist-lab proxy build --out OUT` (Iprox); options as its flags: model, train, target, rho, sweep,
    rank_multiple, init, candidates, probe_examples, max_probes, align_examples, align_epochs, align_batch,
    align_lr, lambda_kd, tau, max_length, seed, eval_pool, methods, warmup_epochs, less_dim, no_evaluate,
    downstream, n_em, dtype, device, lora_r, lora_layers."""
    return ["proxy", "build", "--out", str(Path(out).resolve()), *flag_args(PROXY_FLAGS, options)]


# ----------------------------------------------------------------------------- launch / state / cancel
def read_launch(run_dir: str | Path) -> dict | None:
    try:
        return json.loads(RunLayout(run_dir).launch.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def launch(run_dir: str | Path, args: list[str], cmd: list[str] | None = None) -> dict:
    """Start `gist-lab <args>` (or `cmd`) detached; returns the launch record. Refuses a second live run."""
    d = Path(run_dir)
    if state(d).alive:
        raise LaunchError(f"a run is already going in {d}; cancel it first")
    writer = lock.holder(d)
    if writer is not None:  # started elsewhere (a terminal): its folder is not ours to write, log included
        raise LaunchError(f"{d} is being written by {lock.describe(writer)}; wait for it to finish or stop it there")
    d.mkdir(parents=True, exist_ok=True)
    cmd = cmd or cli_command(args)
    with open(RunLayout(d).launch_log, "wb") as log:  # a fresh log per launch: old errors must not be re-reported
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    _CHILDREN[proc.pid] = proc
    rec = {"pid": proc.pid, "cmd": cmd, "started_at": time.time(), "proc_start": _proc_start(proc.pid)}
    atomic_write_json(RunLayout(d).launch, rec)
    return rec


@dataclass
class LaunchState:
    launched: bool
    alive: bool = False
    pid: int | None = None
    cmd: list | None = None
    started_at: float | None = None
    returncode: int | None = None
    cancelled: bool = False
    error: str | None = None   # readable failure message from the log


def state(run_dir: str | Path) -> LaunchState:
    d = Path(run_dir)
    rec = read_launch(d)
    if not rec:
        return LaunchState(launched=False)
    alive, rc = _alive(rec)
    if rc is not None and rec.get("returncode") is None:
        rec["returncode"] = rc
        atomic_write_json(RunLayout(d).launch, rec)
    rc = rec.get("returncode")
    cancelled = bool(rec.get("cancelled"))
    err = None if alive or cancelled or rc == 0 else failure_message(read_log_tail(d), rc)
    return LaunchState(launched=True, alive=alive, pid=rec.get("pid"), cmd=rec.get("cmd"),
                       started_at=rec.get("started_at"), returncode=rc, cancelled=cancelled, error=err)


def is_alive(run_dir: str | Path) -> bool:
    return state(run_dir).alive


def cancel(run_dir: str | Path, grace_s: float = KILL_GRACE_S, wait: bool = False) -> bool:
    """SIGTERM the run's process group, then SIGKILL after `grace_s` if it is still there.

    Returns at once (the SIGKILL follow-up runs in a daemon thread) unless wait=True."""
    d = Path(run_dir)
    rec = read_launch(d)
    if not rec or not _alive(rec)[0]:
        return False
    rec.update(cancelled=True, cancelled_at=time.time())
    atomic_write_json(RunLayout(d).launch, rec)
    _signal_group(rec["pid"], signal.SIGTERM)

    def follow_up():
        deadline = time.time() + grace_s
        while time.time() < deadline:
            if not _alive(rec)[0]:
                return
            time.sleep(0.1)
        _signal_group(rec["pid"], signal.SIGKILL)
        for _ in range(50):  # reap it, so it does not linger as a zombie
            if not _alive(rec)[0]:
                return
            time.sleep(0.1)

    if wait:
        follow_up()
    else:
        threading.Thread(target=follow_up, daemon=True).start()
    return True


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # start_new_session: the child leads its own group (pgid == pid)
    except (ProcessLookupError, PermissionError):
        pass


def _proc_start(pid: int) -> str | None:
    """Kernel start time of a pid (guards against pid reuse after a dashboard restart)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(rec: dict) -> tuple[bool, int | None]:
    """(alive, exit code if it just became known)."""
    pid = rec.get("pid")
    if not pid:
        return False, None
    proc = _CHILDREN.get(pid)
    if proc is not None:
        rc = proc.poll()
        return rc is None, rc
    try:  # our child from an earlier Popen we lost track of (module reload): reap it if it ended
        wpid, status = os.waitpid(pid, os.WNOHANG)
        if wpid == pid:
            return False, os.waitstatus_to_exitcode(status)
    except ChildProcessError:
        pass
    stat = Path(f"/proc/{pid}/stat")
    if stat.parent.parent.exists() and Path("/proc/self").exists():
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            return False, None
        if fields[0] in ("Z", "X"):
            return False, None
        return rec.get("proc_start") in (None, fields[19]), None
    try:
        os.kill(pid, 0)
        return True, None
    except (ProcessLookupError, PermissionError):
        return False, None


# ----------------------------------------------------------------------------- log parsing
def read_log_tail(run_dir: str | Path, max_bytes: int = 64_000) -> str:
    p = RunLayout(run_dir).launch_log
    if not p.exists():
        return ""
    with open(p, "rb") as fh:
        fh.seek(max(0, p.stat().st_size - max_bytes))
        return fh.read().decode("utf-8", errors="replace")


def failure_message(log: str, returncode: int | None = None) -> str | None:
    """The last `error: ...` line (the CLI's readable message), else a traceback's final line."""
    lines = [ln.strip() for ln in re.split(r"[\r\n]+", log) if ln.strip()]
    for ln in reversed(lines):
        m = _ERROR_RE.search(ln)
        if m:
            return m.group(1).strip()
    for ln in reversed(lines):
        m = _EXC_RE.match(ln)
        if m:
            return f"{m.group(1).rsplit('.', 1)[-1]}: {m.group(2)}"
    if returncode is not None and returncode < 0:
        return f"the run was killed by signal {-returncode}"
    if returncode not in (None, 0):
        return lines[-1] if lines else f"the run exited with code {returncode}"
    return None
