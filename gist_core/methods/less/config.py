"""LESS's settings (Xia et al., 2024): the random projection and the checkpoints whose gradients it uses.

LESS runs as one of compare's methods, so these are compare's `less` section (compare.json: config.less) and its
flags are --less-dim, --less-checkpoints and --less-cache-gb (gist_core/cli/args.py, COMPARE_FLAGS).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from gist_core.errors import ConfigError


@dataclass(frozen=True)
class LessConfig:
    dim: int = field(default=8192, metadata={"help": "LESS random-projection dimension d"})
    seed: int = field(default=0, metadata={"help": "seed of the Rademacher projection"})
    checkpoints: tuple[str, ...] = field(
        default=(), metadata={"help": "LESS checkpoints (ours or HF Trainer's); default: the run's warm-up epochs"})
    projection_batch: int = field(default=128, metadata={"help": "rows per LESS projection matmul"})
    projector_cache_gb: float = field(default=4.0, metadata={"help": "keep R in memory up to this size"})

    def __post_init__(self):
        object.__setattr__(self, "checkpoints", tuple(self.checkpoints))
        if self.dim < 1 or self.projection_batch < 1:
            raise ConfigError("LESS dim and projection_batch must be >= 1")
        if self.projector_cache_gb < 0:
            raise ConfigError("LESS projector_cache_gb must be >= 0")
