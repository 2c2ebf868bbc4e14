"""One writer per run folder: an advisory lock (fcntl.flock) on RUN/.lock, taken by every command that writes.

A second writer is refused at once with one line naming the holder (pid and command line), which the holder
records in the lock file itself. The kernel drops a flock when its holder dies (kill -9 included), so a
crashed run never leaves a folder locked; the record it leaves behind is recognised as stale by its pid.

`--shard i/n` jobs write disjoint rows of one folder at the same time by design: they take the lock
*shared*, so they run beside each other but never beside an exclusive writer (select, merge, compare ...).
Readers (the dashboard) take no lock; `holder()` tells them whether a live writer is at work.

Nested takes of the same folder in one process (compare runs a select inside) share the outer lock: a
second flock on a new open file description would otherwise refuse the process itself.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from gist_core.errors import RunLockedError
from gist_core.store.layout import LOCK

_HELD: dict[str, int] = {}  # resolved folder -> how many nested takes this process holds


def lock_path(folder: str | os.PathLike) -> Path:
    return Path(folder) / LOCK


def _proc_start(pid: int) -> str | None:
    """Kernel start time of a pid (a record whose pid was reused by another process is stale)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _pid_alive(pid: int, proc_start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    now = _proc_start(pid)
    return proc_start is None or now is None or now == proc_start


def read_record(folder: str | os.PathLike) -> dict | None:
    """The last holder's record in RUN/.lock (pid, cmd, started_at, shared), None when empty or unreadable."""
    try:
        text = lock_path(folder).read_text()
    except OSError:
        return None
    try:
        rec = json.loads(text) if text.strip() else None
    except json.JSONDecodeError:
        return None
    return rec if isinstance(rec, dict) and isinstance(rec.get("pid"), int) else None


def holder(folder: str | os.PathLike) -> dict | None:
    """The record of a writer that is alive now, else None. For readers: takes no lock, changes nothing."""
    rec = read_record(folder)
    if rec is None or not _pid_alive(rec["pid"], rec.get("proc_start")):
        return None
    return rec


def refuse_if_held(folder: str | os.PathLike, shared: bool = False) -> None:
    """Refuse at once, before any input is read, when a live writer holds the folder in a conflicting mode (the
    flock taken later stays the guard against a race; this only makes the common case answer in a second)."""
    rec = holder(folder)
    if rec is not None and not (shared and rec.get("shared")):
        raise RunLockedError(f"{folder} is being written by {describe(rec)}; wait for it to finish or stop it, then "
                             "rerun (one writer per run folder)")


def describe(rec: dict | None) -> str:
    if rec is None:
        return "another process"
    cmd = " ".join(rec.get("cmd") or [])
    if len(cmd) > 160:
        cmd = cmd[:157] + "..."
    return f"pid {rec['pid']} ({cmd})" if cmd else f"pid {rec['pid']}"


def command_line() -> list[str]:
    """This process's command line as the user would recognise it."""
    argv = list(sys.argv)
    if argv and Path(argv[0]).name in ("gist-lab", "__main__.py", "cli"):
        argv[0] = "gist-lab"
    return argv


@contextlib.contextmanager
def writer_lock(folder: str | os.PathLike, shared: bool = False, cmd: list[str] | None = None) -> Iterator[None]:
    """Hold RUN/.lock for the duration: exclusive (one writer), or shared (`--shard` jobs beside each other).

    Creates the folder (this is the first write a command makes in it). RunLockedError (exit 2) when another
    process holds it in a conflicting mode."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = str(folder.resolve())
    if key in _HELD:  # nested in this process: the outer take covers it
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    fd = os.open(lock_path(folder), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            refuse_if_held(folder, shared)
            raise RunLockedError(f"{folder} is being written by another process; wait for it to finish or stop it, "
                                 "then rerun (one writer per run folder)") from None
        _write_record(fd, {"pid": os.getpid(), "proc_start": _proc_start(os.getpid()), "cmd": cmd or command_line(),
                           "started_at": round(time.time(), 3), "shared": shared})
        _HELD[key] = 1
        try:
            yield
        finally:
            del _HELD[key]
            if not shared:  # a shared holder leaves the record: its siblings may still be at work
                os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # closing the last descriptor releases the flock


def _write_record(fd: int, rec: dict) -> None:
    data = (json.dumps(rec) + "\n").encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
