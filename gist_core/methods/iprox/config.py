"""What `gist-lab proxy build` runs: the proxy, its ablations, and the side-by-side evaluation against the target.
Written into proxy.json."""
from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gist_core.config import LoraSettings
from gist_core.data.corpus import DEFAULT_DEMO_TARGET, SAMPLE_DATA
from gist_core.errors import ConfigError
from gist_core.flags import add_flags, flag_maker, flag_values, floats_list, names_list

INITS = ("ipsvd", "svd", "random")  # factor initialisations: IPSVD and the reference's two ablations
CANDIDATES = ("ipsvd-noalign", "svd", "random", "layers")


@dataclass(frozen=True)
class ProxyConfig:
    model: str = field(default=str(SAMPLE_DATA / "tiny-lm"), metadata={"help": "target model (any --model value)"})
    train: str = field(default=str(SAMPLE_DATA / "pool.jsonl"), metadata={"help": "pool: probe, alignment and scored rows"})
    target: str = field(default=str(SAMPLE_DATA / "targets" / DEFAULT_DEMO_TARGET / "val.jsonl"),
                        metadata={"help": "target validation examples (what the agreement scores are computed for)"})
    rho: float = field(default=0.5, metadata={"help": "sparsity: share of each compressed layer's parameters removed"})
    rank_multiple: int = field(default=16, metadata={
        "help": "ranks rounded up to a multiple of this (the reference: 128, which keeps a small model's layers dense)"})
    init: str = field(default="ipsvd", metadata={"help": "ipsvd | svd | random (factor initialisation)"})
    probe_examples: int = field(default=32, metadata={"help": "pool rows whose tokens are the IPSVD probes"})
    max_probes: int = field(default=1024, metadata={"help": "probe tokens per layer (N)"})
    align_examples: int = field(default=128, metadata={"help": "pool rows for stage 2 (disjoint from the probes)"})
    align_epochs: int = field(default=5, metadata={"help": "stage-2 epochs (0 = IPSVD only)"})
    align_batch: int = field(default=4, metadata={"help": "stage-2 batch size"})
    align_lr: float = field(default=1e-4, metadata={"help": "stage-2 AdamW learning rate (weight decay 0.01)"})
    lambda_kd: float = field(default=0.1, metadata={
        "help": "weight of the τ²·KL(target ‖ proxy) logit anchor (the reference: 0.1 in its function, 0 in its CLI; "
                "0.1 agreed better with the target on both models measured, README)"})
    tau: float = field(default=2.0, metadata={"help": "distillation temperature"})
    max_length: int = field(default=128, metadata={"help": "tokens per example"})
    seed: int = field(default=0, metadata={"help": "row sampling, probe positions and random init"})
    evaluate: bool = field(default=True, metadata={"help": "score the pool on the target and on every proxy"})
    candidates: tuple[str, ...] = field(default=("ipsvd-noalign", "svd", "layers"), metadata={
        "help": f"ablations evaluated beside the proxy: {', '.join(CANDIDATES)}"})
    sweep: tuple[float, ...] = field(default=(), metadata={"help": "further ρ values built and evaluated (IPSVD + stage 2)"})
    eval_pool: int = field(default=1000, metadata={"help": "pool rows scored by every model (the file's first rows)"})
    methods: tuple[str, ...] = field(default=("gist", "less"), metadata={"help": "selection methods compared"})
    lora: LoraSettings = field(default_factory=LoraSettings, metadata={"help": "LoRA of the selection runs"})
    less_dim: int = field(default=8192, metadata={"help": "LESS's projection dimension in the selection runs"})
    warmup_epochs: int = field(default=4, metadata={"help": "warm-up epochs of the selection runs"})
    downstream: bool = field(default=False, metadata={
        "help": "fine-tune the TARGET on each model's selection and evaluate it on the target's test split"})
    n_em: int | None = field(default=None, metadata={
        "help": "with --downstream: exact-match prompts per test subtask (None = all; generation is the slow part)"})
    dtype: str = field(default="float32", metadata={"help": "model dtype"})
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda"})

    def __post_init__(self):
        if isinstance(self.lora, dict):
            object.__setattr__(self, "lora", LoraSettings(**self.lora))
        for name in ("candidates", "sweep", "methods"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        for r in (self.rho, *self.sweep):
            if not 0.0 < r < 1.0:
                raise ConfigError(f"rho must be in (0, 1), got {r}")
        if self.init not in INITS:
            raise ConfigError(f"unknown init '{self.init}' (use one of {', '.join(INITS)})")
        bad = [c for c in self.candidates if c not in CANDIDATES]
        if bad:
            raise ConfigError(f"unknown candidate '{bad[0]}' (use any of {', '.join(CANDIDATES)})")
        bad = [m for m in self.methods if m not in ("gist", "less", "rawcos")]
        if bad:
            raise ConfigError(f"proxy evaluation compares score-based methods gist, less, rawcos; got '{bad[0]}'")
        for name in ("rank_multiple", "probe_examples", "max_probes", "align_batch", "max_length", "eval_pool", "less_dim"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_em is not None and self.n_em < 1:
            raise ConfigError(f"n_em must be >= 1 (or unset for every test prompt), got {self.n_em}")
        if self.align_epochs < 0 or self.align_examples < 0 or self.lambda_kd < 0 or self.tau <= 0:
            raise ConfigError("align_epochs, align_examples and lambda_kd must be >= 0 and tau > 0")


flag = flag_maker({"proxy": ProxyConfig, "proxy.lora": LoraSettings})

PROXY_FLAGS = (
    flag("--model", "model", "proxy"), flag("--train", "train", "proxy"), flag("--target", "target", "proxy"),
    flag("--rho", "rho", "proxy", (("type", float),)),
    flag("--sweep", "sweep", "proxy", (("type", floats_list),), "; comma-separated"),
    flag("--rank-multiple", "rank_multiple", "proxy", (("type", int),)),
    flag("--init", "init", "proxy", (("choices", list(INITS)),)),
    flag("--candidates", "candidates", "proxy", (("type", names_list),),
         "; comma-separated ('' for none)"),
    flag("--probe-examples", "probe_examples", "proxy", (("type", int),)),
    flag("--max-probes", "max_probes", "proxy", (("type", int),)),
    flag("--align-examples", "align_examples", "proxy", (("type", int),)),
    flag("--align-epochs", "align_epochs", "proxy", (("type", int),)),
    flag("--align-batch", "align_batch", "proxy", (("type", int),)),
    flag("--align-lr", "align_lr", "proxy", (("type", float),)),
    flag("--lambda-kd", "lambda_kd", "proxy", (("type", float),)),
    flag("--tau", "tau", "proxy", (("type", float),)),
    flag("--max-length", "max_length", "proxy", (("type", int),)),
    flag("--seed", "seed", "proxy", (("type", int),)),
    flag("--eval-pool", "eval_pool", "proxy", (("type", int),)),
    flag("--methods", "methods", "proxy", (("type", names_list),), "; comma-separated"),
    flag("--warmup-epochs", "warmup_epochs", "proxy", (("type", int),)),
    flag("--less-dim", "less_dim", "proxy", (("type", int),)),
    flag("--no-evaluate", "evaluate", "proxy", (("action", "store_false"), ("default", None), ("dest", "evaluate")),
         ": off = build only"),
    flag("--downstream", "downstream", "proxy", (("action", "store_true"), ("default", None))),
    flag("--n-em", "n_em", "proxy", (("type", int),)),
    flag("--dtype", "dtype", "proxy", (("choices", ["float32", "bfloat16", "float16"]),)),
    flag("--device", "device", "proxy"),
    flag("--lora-r", "r", "proxy.lora", (("type", int),), " (selection runs)"),
    flag("--lora-layers", "last_layers", "proxy.lora", (("type", int), ("metavar", "L")), " (selection runs)"),
)


def proxy_config(a: argparse.Namespace) -> ProxyConfig:
    v = flag_values(a, PROXY_FLAGS)
    return ProxyConfig(**v["proxy"], lora=LoraSettings(**{**asdict(ProxyConfig().lora), **v["proxy.lora"]}))


def proxy_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["build"])
    p.add_argument("--out", required=True, type=Path, help="folder for the proxy model, its ablations and proxy.json")
    add_flags(p, PROXY_FLAGS)
    p.add_argument("--quiet", action="store_true")
