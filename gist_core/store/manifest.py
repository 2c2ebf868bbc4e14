"""The run directory: replayable config, manifest of stages, progress events, feature stores.

ProcessSplit (one run = one folder):
    config.json            the RunConfig that produced it (replay with `gist-lab select --config`)
    manifest.json          per stage: config hash, input hashes, versions, wall time, bytes, done
    progress.jsonl         one JSON event per line (stage start/progress/end), for the dashboard
    examples.parquet ...   stage artefacts (see pipeline.py)
The orchestrator decides skip/compute/resume from the manifest; stage code never looks here.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata as md
import json
import logging
import mmap
import os
import platform
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from gist_core.errors import StoreError
from gist_core.store import layout
from gist_core.store.atomic import DISK_FULL, atomic_path, atomic_write_json, fsync_dir, named_os_error

log = logging.getLogger(__name__)


# Artefact format of what a stage writes (recorded per manifest entry; no entry = 1): 2 = arrays written
# C-ordered with dtype and shape checked on load (gist_core.store.artefacts).
ARTEFACT_FORMAT = 2
RUNNING, DONE, PREPARED = "running", "done", "prepared"  # the run's status in the manifest


def stable_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_hash(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 of a file, or of a folder's files (name + content), for input fingerprints."""
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        with open(f, "rb") as fh:
            while block := fh.read(chunk):
                h.update(block)
    return h.hexdigest()[:16]


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("gist-lab", "torch", "transformers", "peft", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def artefact_digests(root: Path, files: list[str]) -> dict[str, dict]:
    """Size and sha256 of every file a stage wrote (folders: each file inside), keyed by relative path."""
    out = {}
    for rel in files:
        p = root / rel
        members = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        for f in members:
            out[str(f.relative_to(root))] = {"bytes": f.stat().st_size, "sha256": file_hash(f)}
    return out


def verify_artefacts(root: Path, entry: dict, hashes: bool = True) -> str | None:
    """None when every recorded file is there with its recorded size and hash; else what is wrong."""
    for rel in entry.get("files", []):
        if not (root / rel).exists():
            return f"{rel} is missing"
    for rel, want in entry.get("digests", {}).items():  # manifests written before digests: existence only
        p = root / rel
        if not p.is_file():
            return f"{rel} is missing"
        if p.stat().st_size != want["bytes"]:
            return f"{rel} has {p.stat().st_size} bytes, {want['bytes']} were written (truncated or altered)"
        if hashes and file_hash(p) != want["sha256"]:
            return f"{rel} does not match its recorded sha256 (corrupted or altered)"
    return None


class RunStore:
    """A run directory: manifest bookkeeping, the run's status and progress events.

    Creating a RunStore writes nothing: the folder is made by the writer's lock (gist_core.store.lock), which
    every writing command takes only after its inputs passed their checks, so a refused input leaves no folder.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self._verified: set[tuple] = set()

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    # ---- manifest
    def manifest(self) -> dict:
        p = self.path(layout.MANIFEST)
        return json.loads(p.read_text()) if p.exists() else {"stages": {}}

    def stage_done(self, stage: str, key: str) -> bool:
        """True when `stage` finished with the same key (config + input hashes) and its files are intact."""
        return self.check_stage(stage, key) == "done"

    def check_stage(self, stage: str, key: str) -> str:
        """'done', 'todo' (never finished, or with another key) or 'corrupt' (finished, but a file is
        missing, truncated or altered since: size and sha256 against the manifest). Verified once per store."""
        entry = self.manifest()["stages"].get(stage)
        if not entry or not entry.get("done") or entry.get("key") != key:
            return "todo"
        stamp = (stage, entry.get("finished_at"), key)
        problem = verify_artefacts(self.root, entry, hashes=stamp not in self._verified)  # hash once per store
        if problem:
            self.event(stage, "corrupt", problem=problem)
            log.warning(f"warning: {stage}: {problem}; recomputing it")
            return "corrupt"
        self._verified.add(stamp)
        return "done"

    @contextlib.contextmanager
    def _editing_manifest(self) -> Iterator[dict]:
        """Read, change and write the manifest under a short exclusive lock of its own: `--shard` jobs share a
        folder and each records its part, so their read-modify-writes must not interleave."""
        fd = os.open(self.path(layout.MANIFEST_LOCK), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            m = self.manifest()
            yield m
            atomic_write_json(self.path(layout.MANIFEST), m)
        finally:
            os.close(fd)

    def record_stage(self, stage: str, key: str, files: list[str], wall_s: float, extra: dict | None = None) -> None:
        digests = artefact_digests(self.root, files)
        with self._editing_manifest() as m:
            m["stages"][stage] = {"key": key, "done": True, "format": ARTEFACT_FORMAT, "files": files,
                                  "wall_s": round(wall_s, 3), "bytes": sum(d["bytes"] for d in digests.values()),
                                  "digests": digests, "versions": versions(),
                                  "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"), **(extra or {})}

    def forget_stage(self, stage: str) -> None:
        if stage in self.manifest()["stages"]:
            with self._editing_manifest() as m:
                m["stages"].pop(stage, None)

    # ---- the run's status: a folder being (re)written never presents an earlier result as its own
    def begin(self, results: list[str], cmd: list[str]) -> None:
        """Mark the run as running, then move the result files of the earlier run aside into .previous/ (in that
        order: a kill in between leaves a folder marked running, which readers show as incomplete, never as
        done). Nothing is lost: a run that fails leaves the earlier result in .previous/; one that finishes
        removes it."""
        with self._editing_manifest() as m:
            m["status"] = {"state": RUNNING, "pid": os.getpid(), "cmd": cmd, "started_at": round(time.time(), 3)}
        present = [rel for rel in results if self.path(rel).exists()]
        if present:
            aside = self.path(layout.PREVIOUS)
            for rel in present:
                (aside / rel).parent.mkdir(parents=True, exist_ok=True)
                os.replace(self.path(rel), aside / rel)
            fsync_dir(aside)
        fsync_dir(self.root)

    def finish(self, state: str = DONE) -> None:
        """The run's new results are all written: mark it `state` and drop the earlier run's results."""
        with self._editing_manifest() as m:
            m["status"] = {**m.get("status", {}), "state": state, "finished_at": round(time.time(), 3)}
        shutil.rmtree(self.path(layout.PREVIOUS), ignore_errors=True)

    def status(self) -> dict:
        """{'state': running | done | prepared, ...}; {} for a folder written before the status existed."""
        return self.manifest().get("status") or {}

    # ---- progress events
    def event(self, stage: str, status: str, **fields) -> None:
        """Append one progress event (a short line: appends of < 4 KiB are atomic on POSIX)."""
        rec = {"t": round(time.time(), 3), "stage": stage, "status": status, **fields}
        path = self.path(layout.PROGRESS)
        try:
            with open(path, "a") as fh:
                fh.write(json.dumps(rec) + "\n")
        except OSError as e:  # name the file: a write error on a full disk carries none
            raise named_os_error(e, path) from None


def read_events(root: str | os.PathLike) -> list[dict]:
    p = Path(root) / layout.PROGRESS
    if not p.exists():
        return []
    out = []
    for line in p.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a kill: skip it, the next event supersedes it
    return out


def reserve(path: Path) -> None:
    """Claim a (sparse) file's blocks now: a full disk is then an OSError here, not a SIGBUS later
    when a memmap page is written. Filesystems without fallocate keep the sparse file."""
    if not hasattr(os, "posix_fallocate"):
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as e:
        if e.errno in DISK_FULL:
            raise named_os_error(e, path) from None
    finally:
        os.close(fd)


def _drop_pages(arr) -> None:
    """Unmap a flushed memmap's pages from this process (the data stays in the file and page cache),
    so resident memory does not grow with the rows written. A no-op where madvise is missing."""
    mm = getattr(arr, "_mmap", None)
    if mm is not None and hasattr(mm, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        mm.madvise(mmap.MADV_DONTNEED)


class RowReader:
    """A 2-D .npy file read block by block with plain file reads: X[s:e, :r] costs that block's memory only."""

    def __init__(self, path: Path):
        self.path = Path(path)
        with open(self.path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            self.shape, fortran, self.dtype = read(fh)
            self.offset = fh.tell()
        if fortran or len(self.shape) != 2:
            raise StoreError(f"{path}: expected a C-ordered 2-D array")

    def __getitem__(self, key):
        rows, cols = key if isinstance(key, tuple) else (key, slice(None))
        start, stop, step = rows.indices(self.shape[0])
        if step != 1:
            raise IndexError("RowReader reads contiguous row blocks")
        width = self.shape[1] * self.dtype.itemsize
        block = np.fromfile(self.path, dtype=self.dtype, count=max(0, stop - start) * self.shape[1],
                            offset=self.offset + start * width).reshape(-1, self.shape[1])
        return block[:, cols]


def store_meta(n: int, r: int, meta: dict, dtype) -> dict:
    """What a row store's .json sidecar holds: its shape, the writer's meta, its dtype unless float32."""
    dtype = np.dtype(dtype)
    return {"n": n, "r": r, **meta, **({} if dtype == np.float32 else {"dtype": dtype.name})}


class FeatureStore:
    """Preallocated memmap (N x R, float32 unless told) with a boolean done-mask: resumable row writes.

    The done-mask is a memmap too, so processes that own disjoint rows (torchrun ranks) each mark
    their own entries in one file. It is flushed only after the rows it marks, so a kill loses at
    most the rows since the last flush and never marks a row done that was not written.
    `create=False` opens a store another process allocated and refuses one that does not match.
    """

    def __init__(self, path: Path, n: int, r: int, meta: dict, dtype=np.float32, create: bool = True):
        self.path, self.mask_path, self.meta_path = path, path.with_suffix(".done.npy"), path.with_suffix(".json")
        self.dtype = np.dtype(dtype)
        self.n, self.r = n, r
        self.expect = store_meta(n, r, meta, self.dtype)
        if self.matches():
            self._open()
        elif create:
            self.reset()
        else:
            raise StoreError(f"{path}: feature store missing or made for another configuration")

    def matches(self) -> bool:
        if not self.meta_path.exists():
            return False
        try:
            same = json.loads(self.meta_path.read_text()) == self.expect
        except json.JSONDecodeError:
            return False
        return same and self._sizes_ok()

    def _sizes_ok(self) -> bool:
        try:
            arr = np.load(self.path, mmap_mode="r")
            mask = np.load(self.mask_path, mmap_mode="r")
        except (OSError, ValueError):
            return False
        return arr.shape == (self.n, self.r) and arr.dtype == self.dtype and mask.shape == (self.n,) \
            and mask.dtype == np.bool_

    def _open(self) -> None:
        self.data = np.load(self.path, mmap_mode="r+")
        self.done = np.load(self.mask_path, mmap_mode="r+")

    def reset(self) -> None:
        """Allocate anew (fresh, mismatched, truncated or corrupted): every row to do."""
        for target, dtype, shape in ((self.path, self.dtype, (self.n, self.r)), (self.mask_path, np.bool_, (self.n,))):
            with atomic_path(target, suffix=".npy") as tmp:
                np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape).flush()
                reserve(tmp)
        atomic_write_json(self.meta_path, self.expect)
        self._open()

    def write(self, rows: list[int] | np.ndarray, values: np.ndarray) -> None:
        self.data[rows] = values
        self.done[rows] = True

    def flush(self) -> None:
        self.data.flush()  # rows first, then the mask that vouches for them
        self.done.flush()
        _drop_pages(self.data)  # written rows are on disk: keep them out of this process's resident memory

    def rows(self) -> RowReader:
        """Row blocks read from the file, for scoring in blocks without mapping the whole store."""
        return RowReader(self.path)

    def todo(self) -> list[int]:
        return np.flatnonzero(~np.asarray(self.done)).tolist()

    def refresh(self) -> None:
        """Re-read the mask after other processes wrote their rows."""
        self._open()
