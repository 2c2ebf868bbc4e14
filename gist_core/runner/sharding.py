"""How the work is split between processes for sharded extraction: one process, a torchrun group, or one of n shard jobs.

Per-example gradients are independent, so extraction splits by rows. Row i belongs to shard
i mod n: deterministic, independent of tokenisation and of what is already done, and balanced
in length on average. Under torchrun (gloo on CPU, nccl on GPU) rank 0 runs the shared stages
(data, warm-up, validation gradients), preallocates the feature stores and writes the manifest;
every rank then fills its own rows, a barrier, and rank 0 scores. Control messages (barriers,
a failed rank-0 stage) go over a gloo group with a long timeout: a warm-up can take hours and
NCCL's watchdog would kill the waiting ranks long before.
"""
from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from gist_core.errors import DistError

T = TypeVar("T")
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK",
                 "ROLE_WORLD_SIZE", "TORCHELASTIC_RUN_ID")


def parse_shard(text: str) -> tuple[int, int]:
    """'i/n' -> (i, n) with 0 <= i < n, or a one-line ValueError."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard '{text}' must look like i/n, e.g. 0/4") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"--shard '{text}': need 0 <= i < n")
    return i, n


def shard_rows(rows: Sequence[int], index: int, count: int) -> list[int]:
    """The rows (global indices) that shard `index` of `count` owns."""
    return [int(r) for r in rows if r % count == index]


def shard_size(n: int, index: int, count: int) -> int:
    return len(range(index, n, count))


@dataclass
class ProcessSplit:
    """Who this process is. world == 1 and not shard_job: the ordinary single process."""
    rank: int = 0
    world: int = 1
    torchrun: bool = False     # a process group exists: barriers and broadcasts work
    shard_job: bool = False    # an independent `--shard i/n` job: writes shard files, no collectives
    _group: object = None

    @property
    def main(self) -> bool:
        return self.rank == 0 and not self.shard_job

    @property
    def sharded(self) -> bool:
        return self.world > 1

    @property
    def part(self) -> str:
        return f"{self.rank}-of-{self.world}"

    def rows(self, todo: Sequence[int]) -> list[int]:
        return shard_rows(todo, self.rank, self.world) if self.sharded else list(todo)

    def barrier(self) -> None:
        if self.torchrun:
            import torch.distributed as dist  # lazy: torch, only under torchrun (from_env)
            dist.barrier(group=self._group)

    def on_main(self, fn: Callable[[], T]) -> T:
        """Run `fn` on rank 0 only while the others wait; every rank gets its (picklable) result.
        A failure on rank 0 fails every rank with rank 0's message."""
        if not self.torchrun:
            return fn()
        import torch.distributed as dist  # lazy: torch, only under torchrun (from_env)
        result, error = None, None
        if self.rank == 0:
            try:
                with single_process_env():
                    result = fn()
            except BaseException as e:  # noqa: BLE001 - tell the waiting ranks, then re-raise here
                error = e
        box = [None if error is None else f"{type(error).__name__}: {error}", result]
        dist.broadcast_object_list(box, src=0, group=self._group)
        if error is not None:
            raise error
        if box[0] is not None:
            raise DistError(f"rank 0 failed ({box[0]})")
        return box[1]

    def close(self) -> None:
        if self.torchrun:
            import torch.distributed as dist  # lazy: torch, only under torchrun (from_env)
            if dist.is_initialized():
                dist.destroy_process_group()


def timeout() -> datetime.timedelta:
    return datetime.timedelta(seconds=float(os.environ.get("GIST_LAB_DIST_TIMEOUT_S", 24 * 3600)))


def from_env(shard: str | None = None) -> ProcessSplit:
    """The split this process runs in: `--shard i/n`, torchrun's environment, or a single process."""
    if shard is not None:
        i, n = parse_shard(shard)
        return ProcessSplit(rank=i, world=n, shard_job=True)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return ProcessSplit()
    # lazy: torch; a single process or --shard job never needs it, and the CLI checks --shard through this module
    import torch
    import torch.distributed as dist  # lazy: as torch
    use_nccl = torch.cuda.is_available()
    if use_nccl:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_nccl else "gloo", timeout=timeout())
    group = dist.new_group(backend="gloo", timeout=timeout()) if use_nccl else None
    return ProcessSplit(rank=dist.get_rank(), world=dist.get_world_size(), torchrun=True, _group=group)


@contextlib.contextmanager
def single_process_env() -> Iterator[None]:
    """Hide torchrun's variables while rank 0 runs a one-process stage (the warm-up's Trainer).

    Trainer/accelerate read them and would wrap the model in DDP across ranks that are waiting
    at a barrier (a deadlock), and would change the warm-up's result with the world size.
    """
    saved = {k: os.environ.pop(k) for k in TORCHRUN_VARS if k in os.environ}
    if not saved:
        yield
        return
    try:
        _reset_accelerate()
        yield
    finally:
        os.environ.update(saved)
        _reset_accelerate()


def _reset_accelerate() -> None:
    try:
        from accelerate.state import AcceleratorState, PartialState  # lazy: accelerate, only under torchrun
    except ImportError:
        return
    AcceleratorState._reset_state(reset_partial_state=True)
    PartialState._reset_state()
