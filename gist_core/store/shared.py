"""Stages that depend on the pool alone, shared between the run folders that select from one pool for several
targets: the warm-up's checkpoints and LESS's pool features are the same whatever the target, and on a real model
they are most of a run's cost (LESS: one pass over the pool per warm-up checkpoint).

A finished stage is published under the runs folder, `<runs>/.shared/<pool key>/`, as hard links to the run's
own files (a copy where the file system has none); a run that needs the same stage with the same pool key links
the files into its own folder and records the stage as done, with the wall time and facts of the run that
computed it and a `shared_from` field. Every run folder stays complete on its own: deleting `.shared/` or
another run loses nothing. Files are only ever replaced by new files (atomic renames), never written in place
once finished, so a link never sees another run's edits. The pool key hashes everything the stage depends on
(pool content, model, tokenisation, LoRA, warm-up recipe, seed; LESS's checkpoint, dimension and seed), never
the target.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

from gist_core.store.atomic import atomic_folder, atomic_write_json
from gist_core.store.layout import SHARED

RECORD = "stage.json"  # in a published entry: the stage's manifest facts, written last (the entry is complete)


def entry_dir(run_root: str | os.PathLike, pool_key: str) -> Path:
    return Path(run_root).resolve().parent / SHARED / pool_key


def link_tree(src: Path, dst: Path) -> None:
    """`dst` becomes a copy of `src` (a file or a folder) made of hard links, copies where links are refused."""
    if src.is_dir():
        dst.mkdir(parents=True, exist_ok=True)
        for child in src.iterdir():
            link_tree(child, dst / child.name)
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise
        shutil.copy2(src, dst)


def publish(run_root: str | os.PathLike, pool_key: str, rels: list[str], record: dict) -> None:
    """Offer a finished stage's files (relative to the run folder) to other runs on the same pool."""
    dest = entry_dir(run_root, pool_key)
    if (dest / RECORD).exists():
        return
    with atomic_folder(dest) as tmp:
        for rel in rels:
            link_tree(Path(run_root) / rel, tmp / rel)
        (tmp / RECORD).write_text(json.dumps(record, sort_keys=True, default=str))


def take(run_root: str | os.PathLike, pool_key: str, rels: list[str]) -> dict | None:
    """Link a published stage's files into this run folder; its record, or None when nothing is published."""
    src = entry_dir(run_root, pool_key)
    try:
        record = json.loads((src / RECORD).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if not all((src / rel).exists() for rel in rels):
        return None
    for rel in rels:
        dst = Path(run_root) / rel
        if dst.is_dir():
            shutil.rmtree(dst)  # an unfinished stage's leftovers: replaced whole
        link_tree(src / rel, dst)
    return record


def put(run_root: str | os.PathLike, key: str, write, record: dict) -> Path:
    """Publish something that is not a run-folder file (a downstream adapter): `write(folder)` fills the entry."""
    dest = entry_dir(run_root, key)
    if not (dest / RECORD).exists():
        with atomic_folder(dest) as tmp:
            write(tmp)
            (tmp / RECORD).write_text(json.dumps(record, sort_keys=True, default=str))
    return dest


def get(run_root: str | os.PathLike, key: str) -> tuple[Path, dict] | None:
    """(entry folder, its record) of a published entry, None when there is none."""
    src = entry_dir(run_root, key)
    try:
        return src, json.loads((src / RECORD).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def rewrite_meta(path: Path, meta: dict) -> None:
    """A row store's sidecar names the run's own stage key: written afresh, never linked."""
    path.unlink(missing_ok=True)
    atomic_write_json(path, meta)
