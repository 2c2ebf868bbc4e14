"""GAST's configuration: the per-layer selection inside LoRA training and what `gist-lab train` runs."""
from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gist_core.config import LoraSettings, TrainConfig
from gist_core.data.corpus import DEFAULT_DEMO_TARGET, SAMPLE_DATA
from gist_core.errors import ConfigError
from gist_core.flags import add_flags, flag_maker, flag_values

GAST_METHODS = ("gast", "topk", "random", "lora")  # gast = the paper's stochastic rule; lora = plain LoRA


@dataclass(frozen=True)
class GastConfig:
    """GAST's per-layer, per-step selection (arXiv 2603.09865); written into train.json."""
    method: str = field(default="gast", metadata={
        "help": "gast (softmax sampling, the paper) | topk (deterministic top K) | random (K uniformly) | lora "
                "(plain LoRA: every example, one ordinary backward)"})
    implementation: str = field(default="cached", metadata={
        "help": "cached (compute-efficient: per-example per-layer gradients in memory, one pass) | twopass "
                "(memory-efficient: score from activations, then a pass over the selected examples per layer group)"})
    k_select: int = field(default=8, metadata={"help": "K_select: examples each layer's update uses, of the batch"})
    k_support: int = field(default=4, metadata={"help": "K_sup: support mini-batch drawn each step"})
    support: str = field(default="train", metadata={
        "help": "support set: train (App. B.2's default) | target (the target's validation examples, §3's "
                "'held-out')"})
    temperature: float = field(default=1.0, metadata={"help": "softmax temperature (not stated by the paper)"})
    replacement: bool = field(default=False, metadata={"help": "sample with replacement (not stated; default no)"})
    aggregate: str = field(default="mean", metadata={
        "help": "mean (over the K selected: the learning rate keeps its meaning) | sum (not stated by the paper)"})

    def __post_init__(self):
        if self.method not in GAST_METHODS:
            raise ConfigError(f"method must be one of {', '.join(GAST_METHODS)}, got '{self.method}'")
        if self.implementation not in ("cached", "twopass"):
            raise ConfigError(f"implementation must be cached or twopass, got '{self.implementation}'")
        if self.support not in ("train", "target"):
            raise ConfigError(f"support must be train or target, got '{self.support}'")
        if self.aggregate not in ("mean", "sum"):
            raise ConfigError(f"aggregate must be mean or sum, got '{self.aggregate}'")
        if self.k_select < 1 or self.k_support < 1:
            raise ConfigError("k_select and k_support must be >= 1")
        if not self.temperature > 0:
            raise ConfigError(f"temperature must be positive, got {self.temperature}")


@dataclass(frozen=True)
class TrainRunConfig:
    """What `gist-lab train` runs: one LoRA training (GAST or an ablation) and its evaluation; train.json."""
    model: str = field(default=str(SAMPLE_DATA / "tiny-lm"), metadata={"help": "model (default: the bundled tiny LM)"})
    train: str = field(default=str(SAMPLE_DATA / "pool.jsonl"), metadata={"help": "training examples"})
    target: str = field(default=str(SAMPLE_DATA / "targets" / DEFAULT_DEMO_TARGET / "val.jsonl"), metadata={
        "help": "target validation examples (the support set under --support target); its test.jsonl is the test"})
    test: str | None = field(default=None, metadata={"help": "test split (default: test.jsonl next to the target)"})
    pool_size: int = field(default=2000, metadata={"help": "seeded sample of the training file (0 = all of it)"})
    max_length: int = field(default=128, metadata={"help": "tokens per example"})
    lora: LoraSettings = field(default_factory=LoraSettings, metadata={"help": "LoRA adapter"})
    recipe: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=3, lr=1e-3, batch_size=16, seed=0),
                                metadata={"help": "optimizer recipe (batch 16 as in the paper)"})
    gast: GastConfig = field(default_factory=GastConfig, metadata={"help": "the selection"})
    n_em: int = field(default=10, metadata={"help": "exact-match prompts per test subtask"})
    dtype: str = field(default="float32", metadata={"help": "model dtype"})
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda"})

    def __post_init__(self):
        for name, cls in (("lora", LoraSettings), ("recipe", TrainConfig), ("gast", GastConfig)):
            if isinstance(getattr(self, name), dict):
                object.__setattr__(self, name, cls(**getattr(self, name)))
        if self.pool_size < 0 or self.n_em < 0:
            raise ConfigError("pool_size and n_em must be >= 0")
        if self.gast.k_select > self.recipe.batch_size and not self.gast.replacement:
            raise ConfigError(f"k_select {self.gast.k_select} exceeds the batch size {self.recipe.batch_size} "
                              "(sampling without replacement)")


flag = flag_maker({"train": TrainRunConfig, "train.gast": GastConfig, "train.recipe": TrainConfig,
                   "train.lora": LoraSettings})

TRAIN_FLAGS = (
    flag("--model", "model", "train"), flag("--train", "train", "train"), flag("--target", "target", "train"),
    flag("--test", "test", "train"),
    flag("--pool-size", "pool_size", "train", (("type", int),)),
    flag("--max-length", "max_length", "train", (("type", int),)),
    flag("--n-em", "n_em", "train", (("type", int),)),
    flag("--device", "device", "train"),
    flag("--method", "method", "train.gast", (("choices", ["gast", "topk", "random", "lora"]),)),
    flag("--implementation", "implementation", "train.gast", (("choices", ["cached", "twopass"]),)),
    flag("--k-select", "k_select", "train.gast", (("type", int),)),
    flag("--k-support", "k_support", "train.gast", (("type", int),)),
    flag("--support", "support", "train.gast", (("choices", ["train", "target"]),)),
    flag("--temperature", "temperature", "train.gast", (("type", float),)),
    flag("--replacement", "replacement", "train.gast", (("action", "store_true"), ("default", None))),
    flag("--aggregate", "aggregate", "train.gast", (("choices", ["mean", "sum"]),)),
    flag("--epochs", "epochs", "train.recipe", (("type", int),)),
    flag("--lr", "lr", "train.recipe", (("type", float),)),
    flag("--batch-size", "batch_size", "train.recipe", (("type", int),)),
    flag("--seed", "seed", "train.recipe", (("type", int),)),
    flag("--lora-r", "r", "train.lora", (("type", int),)),
)


def train_config(a: argparse.Namespace) -> TrainRunConfig:
    v = flag_values(a, TRAIN_FLAGS)
    base = TrainRunConfig()
    return TrainRunConfig(**v["train"], gast=GastConfig(**{**asdict(base.gast), **v["train.gast"]}),
             recipe=TrainConfig(**{**asdict(base.recipe), **v["train.recipe"]}),
             lora=LoraSettings(**{**asdict(base.lora), **v["train.lora"]}))


def train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, type=Path, help="folder for train.json, the selection log and the adapter")
    p.add_argument("--ablation", action="store_true", help="every method × --seeds (GAST under both implementations)")
    p.add_argument("--seeds", type=int, default=3, help="seeds of the ablation (3)")
    add_flags(p, TRAIN_FLAGS)
    p.add_argument("--quiet", action="store_true")
