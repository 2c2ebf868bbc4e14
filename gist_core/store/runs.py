"""Where run directories live (no math, no torch): the dashboard and the CLI agree on it.

Run names and uploaded file names come from the browser, so they are checked here before they
touch the file system: a run name is one plain path component (check_run_name), a run folder is
a direct child of the runs root even after symlinks are followed (run_path), and an upload is
stored as RUN/inputs/<sanitised base name> (upload_path). Every refusal is a RunNameError whose
message is one line for the user.
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from gist_core.errors import ConfigError, RunNameError

NAME_MAX = 100
NAME_RULE = f"1 to {NAME_MAX} letters, digits, '.', '_' or '-', not starting with '.'"
UPLOAD_DIR = "inputs"
UPLOAD_MAX = 150  # characters of a stored upload name (the atomic writer adds ~15 for its temp file)
_NAME_RE = re.compile(r"[A-Za-z0-9._-]+")
_BAD_UPLOAD_CHAR = re.compile(r"[^A-Za-z0-9._-]")


def runs_root() -> Path:
    return Path(os.environ.get("GIST_LAB_RUNS", "runs"))


def _show(name: object, limit: int = 60) -> str:
    """repr() of a name, cut short: one line whatever the name holds."""
    s = repr(name)
    return s if len(s) <= limit else s[:limit - 4] + "...'"


def check_run_name(name: str) -> str:
    """Return `name` when it is a safe run folder name (NAME_RULE), else raise RunNameError."""
    if not isinstance(name, str) or not (1 <= len(name) <= NAME_MAX) or not _NAME_RE.fullmatch(name) \
            or name.startswith("."):
        raise RunNameError(f"bad run name {_show(name)}: use {NAME_RULE}")
    return name


def _inside(path: Path, parent: Path, what: str) -> Path:
    """`path` when, with symlinks followed, it is a direct child of `parent`; else RunNameError."""
    if path.resolve().parent != parent.resolve():
        raise RunNameError(f"{what} {path} resolves outside {parent} (symlink?); refused")
    return path


def run_path(name: str, root: str | os.PathLike | None = None) -> Path:
    """The folder of run `name`: root/name, checked to stay directly under the runs root (default runs_root())."""
    root = Path(root) if root is not None else runs_root()
    return _inside(root / check_run_name(name), root, "run folder")


def safe_upload_name(filename: str) -> str:
    """A browser-supplied file name reduced to a safe base name: directories dropped, characters other than
    letters, digits, '.', '_' and '-' replaced by '_', the extension kept; RunNameError when nothing usable is left."""
    base = re.split(r"[/\\]", str(filename or ""))[-1]
    safe = _BAD_UPLOAD_CHAR.sub("_", base)
    if not safe.strip("."):
        raise RunNameError(f"bad upload file name {_show(filename)}: it has no usable base name")
    if len(safe) > UPLOAD_MAX:  # keep the (format-deciding) extension, shorten the stem
        stem, dot, ext = safe.rpartition(".")
        ext = dot + ext if stem and len(ext) < 20 else ""
        safe = safe[:UPLOAD_MAX - len(ext)] + ext
    return safe


def upload_path(run_name: str, filename: str, root: str | os.PathLike | None = None) -> Path:
    """Where an uploaded file is stored: RUN/inputs/<safe_upload_name(filename)>, checked to stay in the run folder."""
    run = run_path(run_name, root)
    inputs = _inside(run / UPLOAD_DIR, run, "upload folder")
    return _inside(inputs / safe_upload_name(filename), inputs, "upload")


def check_out_folder(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Refuse, before anything is written, an output folder that cannot be one: an existing file, or a place
    this process cannot create files in (the folder itself, or its nearest existing parent). Creates nothing."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {path} is a file, not a folder; name a folder (it is created if missing)")
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{flag} {path}: {probe} is a file, so no folder can be made under it")
    try:  # os.access ignores read-only mounts and root's privileges: try the real thing, then clean up
        fd, tmp = tempfile.mkstemp(prefix=".gist-lab-write-check.", dir=probe)
    except OSError as e:
        raise ConfigError(f"{flag} {path}: cannot write in {probe} ({e.strerror or e})") from None
    os.close(fd)
    os.unlink(tmp)
    return path
