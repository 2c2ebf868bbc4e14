"""Progress of a stage: events into the run folder's progress.jsonl (the dashboard reads them) and a tqdm bar; each
stage's peak resident memory on the way (Linux) and, on a GPU, the allocator's peak, which the stage's manifest
entry then records."""
from __future__ import annotations

import time

from tqdm.auto import tqdm

from gist_core import memory
from gist_core.store.manifest import RunStore


class Progress:
    """Progress events into the run directory plus a tqdm bar on the terminal."""

    def __init__(self, store: RunStore, quiet: bool = False, rank: int | None = None):
        self.store, self.quiet, self.rank = store, quiet, rank
        self.peaks: dict[str, int] = {}  # stage -> the process's peak resident bytes while it ran
        self.device_peaks: dict[str, int] = {}  # stage -> the GPU allocator's peak bytes (CUDA runs only)

    def stage(self, name: str, total: int | None = None, **info) -> _StageProgress:
        return _StageProgress(self, name, total, info if self.rank is None else {**info, "rank": self.rank})


class _StageProgress:
    def __init__(self, parent: Progress, name: str, total: int | None, info: dict):
        self.p, self.name, self.total, self.info, self.done = parent, name, total, info, 0
        self.bar, self.t0, self.last_event = None, time.time(), 0.0

    def __enter__(self):
        memory.reset_peak()
        memory.reset_device_peak()
        self.p.store.event(self.name, "start", total=self.total, **self.info)
        if not self.p.quiet and self.total:
            self.bar = tqdm(total=self.total, desc=self.name, unit="ex", leave=False)
        return self

    def resume_at(self, done: int) -> None:
        """Count `done` rows as finished before this process started (a resumed stage): the bar starts there."""
        self.done = done
        if self.bar:
            self.bar.n = done
            self.bar.refresh()

    def advance(self, n: int = 1, **fields) -> None:
        self.done += n
        if self.bar:
            self.bar.update(n)
        if time.time() - self.last_event > 1.0 or (self.total and self.done >= self.total):
            self.last_event = time.time()
            rank = {} if self.p.rank is None else {"rank": self.p.rank}
            self.p.store.event(self.name, "progress", done=self.done, total=self.total, **rank, **fields)

    def __exit__(self, exc_type, exc, tb):
        if self.bar:
            self.bar.close()
        status = "end" if exc_type is None else "error"
        extra = {} if exc is None else {"error": f"{type(exc).__name__}: {exc}"}
        peak = memory.peak_bytes()
        if peak is not None:
            self.p.peaks[self.name] = extra["peak_rss_bytes"] = peak
        device_peak = memory.device_peak_bytes()
        if device_peak is not None:
            self.p.device_peaks[self.name] = extra["peak_cuda_bytes"] = device_peak
        self.p.store.event(self.name, status, wall_s=round(time.time() - self.t0, 3), **extra)
        return False


def skipped(store: RunStore, stage: str) -> None:
    store.event(stage, "skip")
