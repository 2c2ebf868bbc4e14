"""The run directory: replayable config, manifest of stages, progress events, feature stores.

Layout (one run = one folder):
    config.json            the RunConfig that produced it (replay with `gist-lab select --config`)
    manifest.json          per stage: config hash, input hashes, versions, wall time, bytes, done
    progress.jsonl         one JSON event per line (stage start/progress/end), for the dashboard
    examples.parquet ...   stage artefacts (see pipeline.py)
The orchestrator decides skip/compute/resume from the manifest; stage code never looks here.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from gist_core.atomic import atomic_path, atomic_write_json


class StoreError(RuntimeError):
    pass


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
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("gist-lab", "torch", "transformers", "peft", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def dir_bytes(paths: list[Path]) -> int:
    total = 0
    for p in paths:
        if p.is_dir():
            total += sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
        elif p.exists():
            total += p.stat().st_size
    return total


class RunStore:
    """A run directory: manifest bookkeeping and progress events."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    # ---- manifest
    def manifest(self) -> dict:
        p = self.path("manifest.json")
        return json.loads(p.read_text()) if p.exists() else {"stages": {}}

    def stage_done(self, stage: str, key: str) -> bool:
        """True when `stage` finished with the same key (config + input hashes) and its files exist."""
        entry = self.manifest()["stages"].get(stage)
        if not entry or not entry.get("done") or entry.get("key") != key:
            return False
        return all(self.path(f).exists() for f in entry.get("files", []))

    def stage_key_mismatch(self, stage: str, key: str) -> bool:
        entry = self.manifest()["stages"].get(stage)
        return bool(entry) and entry.get("key") != key

    def record_stage(self, stage: str, key: str, files: list[str], wall_s: float, extra: dict | None = None) -> None:
        m = self.manifest()
        m["stages"][stage] = {"key": key, "done": True, "files": files, "wall_s": round(wall_s, 3),
                              "bytes": dir_bytes([self.path(f) for f in files]), "versions": versions(),
                              "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"), **(extra or {})}
        atomic_write_json(self.path("manifest.json"), m)

    def forget_stage(self, stage: str) -> None:
        m = self.manifest()
        if m["stages"].pop(stage, None) is not None:
            atomic_write_json(self.path("manifest.json"), m)

    # ---- progress events
    def event(self, stage: str, status: str, **fields) -> None:
        """Append one progress event (a short line: appends of < 4 KiB are atomic on POSIX)."""
        rec = {"t": round(time.time(), 3), "stage": stage, "status": status, **fields}
        with open(self.path("progress.jsonl"), "a") as fh:
            fh.write(json.dumps(rec) + "\n")


def read_events(root: str | os.PathLike) -> list[dict]:
    p = Path(root) / "progress.jsonl"
    if not p.exists():
        return []
    out = []
    for line in p.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a kill: skip it, the next event supersedes it
    return out


class FeatureStore:
    """Preallocated memmap (N x R, float32 unless told) with a boolean done-mask: resumable row writes.

    The mask is flushed only after the rows it marks, so a kill can lose at most the rows of
    the batch in flight, never mark a row done that was not written.
    """

    def __init__(self, path: Path, n: int, r: int, meta: dict, dtype=np.float32):
        self.path, self.mask_path, self.meta_path = path, path.with_suffix(".done.npy"), path.with_suffix(".json")
        self.dtype = np.dtype(dtype)
        expect = {"n": n, "r": r, **meta, **({} if self.dtype == np.float32 else {"dtype": self.dtype.name})}
        if self.meta_path.exists() and json.loads(self.meta_path.read_text()) == expect and self._sizes_ok(n, r):
            self.data = np.load(path, mmap_mode="r+")
            self.done = np.load(self.mask_path).astype(bool)
        else:  # fresh (or mismatched / truncated): allocate anew
            with atomic_path(path, suffix=".npy") as tmp:
                np.lib.format.open_memmap(tmp, mode="w+", dtype=self.dtype, shape=(n, r)).flush()
            self.done = np.zeros(n, dtype=bool)
            self._save_mask()
            atomic_write_json(self.meta_path, expect)
            self.data = np.load(path, mmap_mode="r+")

    def _sizes_ok(self, n: int, r: int) -> bool:
        try:
            arr = np.load(self.path, mmap_mode="r")
            mask = np.load(self.mask_path)
        except (OSError, ValueError):
            return False
        return arr.shape == (n, r) and arr.dtype == self.dtype and mask.shape == (n,)

    def _save_mask(self) -> None:
        with atomic_path(self.mask_path, suffix=".npy") as tmp:
            np.save(tmp, self.done)

    def write(self, rows: list[int] | np.ndarray, values: np.ndarray) -> None:
        self.data[rows] = values
        self.done[rows] = True

    def flush(self) -> None:
        self.data.flush()
        self._save_mask()

    def todo(self) -> list[int]:
        return np.flatnonzero(~self.done).tolist()
