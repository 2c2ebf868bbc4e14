"""Atomic file and folder writes: write to a temp file (or folder) in the same folder, rename.

A reader (or a resumed run) therefore sees either the old file or the complete new one,
never a torn write; a failed write (full disk, kill) leaves the old file untouched.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def named_os_error(e: OSError, path) -> OSError:
    """The same error naming `path` (write errors carry no file name; temp files are not the user's)."""
    return OSError(e.errno, e.strerror or os.strerror(e.errno), str(path))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temp path next to `path`; on success rename it onto `path`.

    Use for writers that want a file name (np.save, pandas.to_parquet, safetensors).
    `suffix` keeps writers that append an extension (np.save adds '.npy') honest.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
        fsync_dir(path.parent)  # the rename itself survives a power cut only once its folder is synced
    except OSError as e:  # a full disk: name the file the user knows, not our temp file
        if e.errno in DISK_FULL:
            raise named_os_error(e, path) from None
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make the entries of `folder` (renames, removals) durable. A no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def aside_name(path: Path) -> Path:
    """Where atomic_folder keeps the old folder while the new one is renamed into place."""
    return path.with_name(f".{path.name}.old")


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp folder next to `path`; on success it replaces `path` (a model, adapter or checkpoint folder:
    a reader sees the old folder or the complete new one, never a half-written one).

    The old folder is renamed aside first, the new one into place, then the old one removed: a kill at any
    point leaves either the old complete folder at `path` or the new one (recover_folder puts an old folder
    that was set aside back when the new one never arrived)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_folder(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    old = aside_name(path)
    try:
        yield tmp
        _fsync_tree(tmp)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        fsync_dir(path.parent)
        if old.exists():
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def recover_folder(path: str | os.PathLike) -> None:
    """After a kill inside atomic_folder: the old folder back at `path` when the new one never arrived, else
    the leftover old copy removed."""
    path = Path(path)
    old = aside_name(path)
    if not old.exists():
        return
    if path.exists():
        shutil.rmtree(old)
    else:
        os.replace(old, path)
    fsync_dir(path.parent)


def _fsync_tree(folder: Path) -> None:
    """Flush every file of a freshly written folder before it is renamed into place."""
    for p in folder.rglob("*"):
        if p.is_file():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
        elif p.is_dir():
            fsync_dir(p)
    fsync_dir(folder)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
