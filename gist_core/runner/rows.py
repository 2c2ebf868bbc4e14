"""Row stores filled under a process split: one process, torchrun ranks, or independent `--shard i/n` jobs.

A stage that writes one row per pool example (the GIST projections, LESS's features) describes its store
with a StoreSpec and hands `fill_rows` the work for a list of rows; rank 0 allocates, every process writes
its disjoint rows, a killed run resumes from the done-mask, and shard files are merged into the store.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gist_core.errors import ConfigError, StoreError
from gist_core.runner.context import RunContext
from gist_core.runner.progress import skipped
from gist_core.runner.sharding import shard_size
from gist_core.store.atomic import atomic_write_json
from gist_core.store.layout import done_mask_of, meta_of, shard_rel
from gist_core.store.manifest import FeatureStore, store_meta

FLUSH_EVERY = 8  # batches between done-mask flushes: at most this many batches are redone after a kill


@dataclass(frozen=True)
class StoreSpec:
    """A row store's path (relative to the run), shape, meta and dtype; and its per-shard files."""
    rel: str
    n: int
    r: int
    meta: dict
    dtype: str = "float32"

    @property
    def sidecar(self) -> dict:
        """The .json sidecar a store of this spec holds."""
        return store_meta(self.n, self.r, self.meta, self.dtype)

    def open(self, root: Path, create: bool = True) -> FeatureStore:
        return FeatureStore(Path(root) / self.rel, self.n, self.r, self.meta, dtype=np.dtype(self.dtype), create=create)

    @property
    def files(self) -> list[str]:
        return [self.rel, done_mask_of(self.rel)]

    def shard(self, i: int, k: int) -> StoreSpec:
        """Shard i of k: pool rows i, i+k, ...; stored under shards/ beside nothing else."""
        return StoreSpec(shard_rel(self.rel, i, k), shard_size(self.n, i, k), self.r,
                         {**self.meta, "shard": f"{i}-of-{k}", "n_pool": self.n}, self.dtype)


class ShardRows:
    """A shard store addressed by pool row: row i + k*j of the pool is local row j."""

    def __init__(self, fs: FeatureStore, i: int, k: int):
        self.fs, self.i, self.k = fs, i, k

    def write(self, rows, values) -> None:
        self.fs.write([(int(r) - self.i) // self.k for r in rows], values)

    def flush(self) -> None:
        self.fs.flush()


def row_writer(fs: FeatureStore):
    """`consume` for gradients.stream: write each batch's rows, flush every FLUSH_EVERY batches."""
    count = [0]

    def consume(batch, x):
        fs.write(batch, x.cpu().numpy())
        count[0] += 1
        if count[0] % FLUSH_EVERY == 0:
            fs.flush()
    return consume


def fill_rows(ctx: RunContext, stage: str, key: str, spec: StoreSpec, work, extra=None) -> FeatureStore | None:
    """Fill the row store `spec` under this process's part; returns it on the process that goes on.

    `work(rows, fs, progress)` computes and writes the given pool rows. Rank 0 (or the single
    process) allocates the store, resets it when the manifest says it is corrupt, and first copies
    in rows that `--shard` jobs left in shards/ (all of them, complete, with ctx.merge)."""
    L = ctx.procs
    if L.shard_job:
        return _fill_shard(ctx, stage, key, spec, work)

    def allocate() -> tuple[bool, list]:
        state = ctx.store.check_stage(stage, key)
        fs = spec.open(ctx.store.root)
        if state == "corrupt":
            fs.reset()
        used = _take_shards(ctx, spec, fs) if state != "done" else []
        fs.flush()
        return state == "done" and not fs.todo(), used

    finished, used = L.on_main(allocate)
    fs = spec.open(ctx.store.root, create=False)
    if finished:
        skipped(ctx.store, stage)
        return fs if L.main else None
    todo = fs.todo()
    mine = L.rows(todo)
    if len(todo) < fs.n:
        ctx.log(f"{stage}: resuming, {fs.n - len(todo)} of {fs.n} rows already done")
    t0 = time.time()
    # one process: progress over all rows (resumed ones count as done); ranks: each over its own rows,
    # which the dashboard sums
    total = len(mine) if L.sharded else fs.n
    with ctx.progress.stage(stage, total=total, resumed=fs.n - len(todo)) as st:
        st.resume_at(0 if L.sharded else fs.n - len(todo))  # the bar showed 16/2000 after 512 rows were kept
        if mine:
            work(mine, fs, st)
        fs.flush()
    L.barrier()
    if not L.main:
        return None
    fs.refresh()
    missing = fs.todo()
    if missing:
        raise StoreError(f"{stage}: {len(missing)} rows still missing after every process finished")
    wall = time.time() - t0
    prev = ctx.store.manifest()["stages"].get(stage, {}).get("wall_s", 0.0) if len(todo) < fs.n else 0.0
    ctx.record(stage, key, spec.files, wall + prev, extra(wall, len(todo)) if extra else None)
    _drop_shards(ctx, stage, spec, used)
    return fs


# ---- independent shard jobs and their merge
def _fill_shard(ctx: RunContext, stage: str, key: str, spec: StoreSpec, work) -> None:
    """A `--shard i/n` job: pool rows i, i+n, ... into shards/<store>.i-of-n.npy (local row j = pool row i+jn)."""
    L = ctx.procs
    part, part_stage = spec.shard(L.rank, L.world), f"{stage}/{L.part}"
    fs = part.open(ctx.store.root)
    if ctx.store.check_stage(part_stage, key) == "corrupt":
        fs.reset()
    todo = [L.rank + L.world * j for j in fs.todo()]
    if todo:
        t0 = time.time()
        with ctx.progress.stage(part_stage, total=fs.n, resumed=fs.n - len(todo)) as st:
            st.done = fs.n - len(todo)
            work(todo, ShardRows(fs, L.rank, L.world), st)
            fs.flush()
        ctx.record(part_stage, key, part.files, time.time() - t0)
    ctx.log(f"{stage}: shard {L.rank}/{L.world} holds its {fs.n} rows in {ctx.store.path(part.rel)}")
    return None


def _take_shards(ctx: RunContext, spec: StoreSpec, fs: FeatureStore) -> list[tuple[int, int]]:
    """Copy the finished rows of `--shard` jobs' files for `spec` into `fs`; returns the shards used.
    With ctx.merge every shard must be there and complete, else a one-line ConfigError."""
    folder, stem = ctx.store.path(spec.shard(0, 1).rel).parent, Path(spec.rel).stem
    found = {}
    for p in sorted(folder.glob(f"{stem}.*-of-*.npy")) if folder.is_dir() else []:
        tag = p.name[len(stem) + 1:-len(".npy")]
        if "-of-" in tag and tag.replace("-of-", "").isdigit():
            i, k = (int(x) for x in tag.split("-of-"))
            found[(i, k)] = p
    if ctx.merge and not found:
        raise ConfigError(f"{folder}: no {stem} shard files to merge (run the `--shard i/n` jobs first)")
    counts = {k for _, k in found}
    if len(counts) > 1:
        raise ConfigError(f"{folder}: {stem} shard files of different splits {sorted(counts)}; keep one set")
    missing = [f"{i}/{k}" for k in counts for i in range(k) if (i, k) not in found]
    problems = [f"shard(s) {', '.join(missing)} not found"] if missing else []
    used = []
    for (i, k) in sorted(found):
        try:
            part = spec.shard(i, k).open(ctx.store.root, create=False)
        except StoreError:
            problems.append(f"{found[(i, k)].name} was made for another configuration")
            continue
        done = np.asarray(part.done)
        fs.write(np.arange(i, fs.n, k)[done], np.asarray(part.data)[done])
        used.append((i, k))
        if not done.all():
            problems.append(f"shard {i}/{k} has {int((~done).sum())} of {part.n} rows left")
    fs.flush()
    if ctx.merge and problems:
        raise ConfigError(f"cannot merge {stem}: {'; '.join(problems)} (rerun those `--shard` jobs, then merge)")
    return used


def _drop_shards(ctx: RunContext, stage: str, spec: StoreSpec, used: list[tuple[int, int]]) -> None:
    """Once the merged store is recorded, the shard files it took its rows from are redundant."""
    for i, k in used:
        part = spec.shard(i, k)
        for rel in (*part.files, meta_of(part.rel)):
            ctx.store.path(rel).unlink(missing_ok=True)
        ctx.store.forget_stage(f"{stage}/{i}-of-{k}")


def relabel_store(meta_path: Path, old_file_hash: str | None, basis_digest: str) -> bool:
    """A projection store made before format 2 names its subspace by file hash; when that file's basis is
    bit-identical to the refitted one, name it by the basis digest instead (its rows stay valid)."""
    if old_file_hash is None or not meta_path.exists():
        return False
    meta = json.loads(meta_path.read_text())
    if meta.get("subspace") != old_file_hash:
        return False
    meta.pop("subspace")
    atomic_write_json(meta_path, {**meta, "basis": basis_digest})
    return True
