"""The CLI's configuration flags, built from the config dataclasses' fields (gist_core/config.py): each flag
takes its help text (and shown default) from its field, and the parsed flags map back onto the fields from
the same tables (RUN_FLAGS, COMPARE_FLAGS, GEOMETRY_FLAGS), so a flag and its field cannot drift apart.
An unset flag leaves the config's own default.
"""
from __future__ import annotations

import argparse
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path

from gist_core.config import (
    ClusterConfig,
    CompareConfig,
    ExpertConfig,
    GeometryConfig,
    LoraSettings,
    RunConfig,
    TrainConfig,
)
from gist_core.methods import registry, scoring
from gist_core.methods.gast.config import GastConfig, TrainRunConfig
from gist_core.methods.iprox.config import INITS, ProxyConfig


def _budget(text: str) -> float:
    try:
        return float(text.rstrip("%")) / (100 if text.endswith("%") else 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"budget '{text}' is not a number (use 0.05, 5% or a count)") from None


def _tuple_of_names(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _tuple_of_floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in _tuple_of_names(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of numbers") from None


def _tuple_of_ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in _tuple_of_names(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of whole numbers") from None


# section -> the config class its fields belong to ('compare.train': CompareConfig.train)
SECTIONS = {"": RunConfig, "lora": LoraSettings, "warmup": TrainConfig, "compare": CompareConfig,
            "compare.train": TrainConfig, "geometry": GeometryConfig, "cluster": ClusterConfig,
            "experts": ExpertConfig, "experts.train": TrainConfig, "train": TrainRunConfig, "train.gast": GastConfig,
            "train.recipe": TrainConfig, "train.lora": LoraSettings, "proxy": ProxyConfig, "proxy.lora": LoraSettings}


@dataclass(frozen=True)
class Flag:
    """One command-line flag for one config field; `section` names the config (SECTIONS)."""
    flag: str
    field: str
    section: str = ""
    kwargs: tuple = ()
    extra_help: str = ""

    @property
    def dest(self) -> str:
        return dict(self.kwargs).get("dest") or self.flag.lstrip("-").replace("-", "_")

    def config_class(self) -> type:
        return SECTIONS[self.section]

    def default(self):
        """The value the command uses when the flag is unset: a nested section's default comes from its container
        (TrainRunConfig's recipe trains 3 epochs although a bare TrainConfig says 4)."""
        parent, _, child = self.section.rpartition(".")
        if parent and parent in SECTIONS:
            return getattr(getattr(SECTIONS[parent](), child), self.field)
        f = next(f for f in fields(self.config_class()) if f.name == self.field)
        return f.default if f.default is not MISSING else None

    def help(self) -> str:
        f = next(f for f in fields(self.config_class()) if f.name == self.field)
        text = f.metadata.get("help", "")
        default = self.default()
        if isinstance(default, tuple):
            default = ",".join(map(str, default)) or None
        shown = f" (default {default})" if default not in (None, MISSING) and not isinstance(default, bool) else ""
        return (text + shown + self.extra_help).replace("%", "%%")


RUN_FLAGS = (
    Flag("--budget", "budget", kwargs=(("type", _budget),), extra_help="; 0.05, 5% or a count (500)"),
    Flag("--rank", "rank", kwargs=(("type", int),)),
    Flag("--rank-rule", "rank_rule", kwargs=(("choices", ["tau", "advisor", "full"]),)),
    Flag("--tau", "tau", kwargs=(("type", float),)),
    Flag("--r-max", "r_max", kwargs=(("type", int),)),
    Flag("--balance", "balance", kwargs=(("choices", list(scoring.BALANCES)),)),
    Flag("--score", "score", kwargs=(("choices", list(scoring.SCORE_KINDS)),)),
    Flag("--aggregation", "aggregation", kwargs=(("choices", list(scoring.AGGREGATIONS)),)),
    Flag("--checkpoint", "checkpoint", kwargs=(("type", int),)),
    Flag("--epochs", "epochs", "warmup", (("type", int),), " (warm-up)"),
    Flag("--lr", "lr", "warmup", (("type", float),), " (warm-up)"),
    Flag("--warmup-fraction", "warmup_fraction", kwargs=(("type", float),)),
    Flag("--lora-r", "r", "lora", (("type", int),)),
    Flag("--lora-alpha", "alpha", "lora", (("type", float),)),
    Flag("--lora-dropout", "dropout", "lora", (("type", float),)),
    Flag("--lora-targets", "target_modules", "lora", (("type", _tuple_of_names),), "; comma-separated"),
    Flag("--lora-layers", "last_layers", "lora", (("type", int), ("metavar", "L"))),
    Flag("--max-length", "max_length", kwargs=(("type", int),)),
    Flag("--target-max-length", "target_max_length", kwargs=(("type", int),)),
    Flag("--batch-size", "grad_batch_size", kwargs=(("type", int),)),
    Flag("--proj-dtype", "proj_dtype", kwargs=(("choices", ["float32", "bfloat16"]),)),
    Flag("--no-target-eos", "target_eos", kwargs=(("action", "store_false"), ("default", None), ("dest", "target_eos"))),
    Flag("--device", "device", extra_help="auto | cpu | cuda | cuda:N"),
    Flag("--dtype", "dtype", kwargs=(("choices", ["float32", "bfloat16", "float16"]),), extra_help="model dtype"),
    Flag("--seed", "seed", kwargs=(("type", int),)),
    Flag("--trust-remote-code", "trust_remote_code", kwargs=(("action", "store_true"), ("default", None)),
         extra_help="allow model code from the model's repository (off by default)"),
    Flag("--pool-size", "limit_train", kwargs=(("type", int), ("metavar", "N")),
         extra_help="use the first N rows of the pool (default: all)"),
)

PAPER_RULE = registry.PAPER_RULE


def add_flags(p: argparse.ArgumentParser, flags: tuple[Flag, ...]) -> None:
    for f in flags:
        p.add_argument(f.flag, help=f.help(), **dict(f.kwargs))


def flag_values(a: argparse.Namespace, flags: tuple[Flag, ...]) -> dict[str, dict]:
    """section -> {field: value} for the flags given on the command line."""
    out: dict[str, dict] = {s: {} for s in SECTIONS}
    for f in flags:
        value = getattr(a, f.dest, None)
        if value is not None:
            out[f.section][f.field] = value
    return out


def add_selection_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, help="run directory (default: runs/<name>)")
    add_flags(p, RUN_FLAGS)
    p.add_argument("--paper", action="store_true",
                   help="the GIST paper's exact rule: max over individual target examples (--aggregation example_max), "
                        "global top-k (--balance global), rank by 95%% explained variance (--rank-rule tau --tau 0.95), "
                        "the cosine inside the subspace (--score subspace); flags given beside it still win")
    p.add_argument("--overwrite", action="store_true", help="replace a run with a different config in --out")
    p.add_argument("--quiet", action="store_true")


def add_scale_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shard", metavar="I/N", help="an independent job computing pool rows i, i+N, ... into "
                   "RUN/shards/ (after one --prepare run); then `gist-lab merge --run RUN` (select, demo) or the "
                   "same compare command without --shard")
    p.add_argument("--prepare", action="store_true",
                   help="run the shared stages only (data, warm-up, validation gradients), for --shard jobs")


def rules(text: str) -> tuple[str, ...]:
    from gist_core.methods.scoring import BALANCES
    return BALANCES if text.strip() == "all" else tuple(r.strip() for r in text.split(",") if r.strip())


def overrides(a: argparse.Namespace) -> dict:
    """The RunConfig fields the flags set (unset flags leave the config's value)."""
    sections = flag_values(a, RUN_FLAGS)
    out = sections[""]
    if getattr(a, "paper", False):
        out = {**PAPER_RULE, **out}
    if sections["lora"]:
        out["lora"] = LoraSettings(**sections["lora"])
    if sections["warmup"]:
        out["warmup"] = TrainConfig(**sections["warmup"])
    return out


COMPARE_FLAGS = (
    Flag("--methods", "methods", "compare", (("type", _tuple_of_names),),
         "; comma-separated: gist, less, rawcos, random, length, embedding, full, oracle, gist_mean, gist_max "
         "(score-based methods are reported under every --rules rule; gist_mean / gist_max: GIST with that "
         "aggregation on the same projections; oracle is added with ground truth)"),
    Flag("--rules", "rules", "compare", (("type", rules),), "; comma-separated from global, subtask, zscore, quantile, or 'all'"),
    Flag("--only", "only", "compare", (("type", _tuple_of_names),), "; comma-separated, e.g. gist_examples,less,random"),
    Flag("--seeds", "seeds", "compare", (("type", int),)),
    Flag("--test", "test", "compare"),
    Flag("--less-dim", "less_dim", "compare", (("type", int),)),
    Flag("--less-checkpoints", "less_checkpoints", "compare", (("type", _tuple_of_names),), "; comma-separated folders"),
    Flag("--less-cache-gb", "projector_cache_gb", "compare", (("type", float),),
         "; else the projection matrix is regenerated per batch"),
    Flag("--train-epochs", "epochs", "compare.train", (("type", int),), " (downstream LoRA)"),
    Flag("--train-lr", "lr", "compare.train", (("type", float),), " (downstream LoRA)"),
    Flag("--full-epochs", "full_epochs", "compare", (("type", int),)),
    Flag("--n-em", "n_em", "compare", (("type", int),)),
    Flag("--em-tokens", "em_tokens", "compare", (("type", int),)),
    Flag("--no-downstream", "downstream", "compare", (("action", "store_false"), ("default", None), ("dest", "downstream")),
         ": off = selection quality and cost only"),
)

GEOMETRY_FLAGS = (
    Flag("--module", "module", "geometry"),
    Flag("--coords", "n_coords", "geometry", (("type", int),)),
    Flag("--n-examples", "n_examples", "geometry", (("type", int),)),
    Flag("--rank", "rank", "geometry", (("type", int),)),
    Flag("--seed", "seed", "geometry", (("type", int),)),
    Flag("--checkpoints", "checkpoints", "geometry", (("type", _tuple_of_ints),), "; comma-separated"),
)


CLUSTER_FLAGS = (
    Flag("--clusters", "n_clusters", "cluster", (("type", int),)),
    Flag("--k-grid", "k_grid", "cluster", (("type", _tuple_of_ints),), "; comma-separated"),
    Flag("--rank", "rank", "cluster", (("type", int),)),
    Flag("--sketch-size", "sketch_size", "cluster", (("type", int),)),
    Flag("--rule", "rule", "cluster"),
    Flag("--pool-size", "pool_size", "cluster", (("type", int),)),
    Flag("--elrea-dim", "elrea_dim", "cluster", (("type", int),)),
    Flag("--birch-threshold", "birch_threshold", "cluster", (("type", float),)),
    Flag("--batch-size", "batch_size", "cluster", (("type", int),)),
    Flag("--seed", "seed", "cluster", (("type", int),)),
)


EXPERT_FLAGS = (
    Flag("--clusterings", "clusterings", "experts", (("type", _tuple_of_names),),
         "; comma-separated from gradientspace, elrea, embedding, random"),
    Flag("--seeds", "seeds", "experts", (("type", int),)),
    Flag("--expert-steps", "expert_steps", "experts", (("choices", ["epochs", "match"]),)),
    Flag("--ensembles", "ensembles", "experts", (("type", _tuple_of_names),), "; comma-separated ('' for none)"),
    Flag("--router", "router", "experts"),
    Flag("--base-weight", "base_weight", "experts", (("type", float),)),
    Flag("--temperature", "temperature", "experts", (("type", float),)),
    Flag("--no-oracle-routing", "oracle_routing", "experts", (("action", "store_false"), ("default", None))),
    Flag("--per-skill", "per_skill", "experts", (("type", int),)),
    Flag("--per-subtask", "per_subtask", "experts", (("type", int),)),
    Flag("--test", "tests", "experts", (("type", _tuple_of_names),), "; comma-separated files"),
    Flag("--n-em", "n_em", "experts", (("type", int),)),
    Flag("--latency-queries", "latency_queries", "experts", (("type", int),)),
    Flag("--train-epochs", "epochs", "experts.train", (("type", int),), " (every adapter)"),
    Flag("--train-lr", "lr", "experts.train", (("type", float),), " (every adapter)"),
)


TRAIN_FLAGS = (
    Flag("--model", "model", "train"), Flag("--train", "train", "train"), Flag("--target", "target", "train"),
    Flag("--test", "test", "train"),
    Flag("--pool-size", "pool_size", "train", (("type", int),)),
    Flag("--max-length", "max_length", "train", (("type", int),)),
    Flag("--n-em", "n_em", "train", (("type", int),)),
    Flag("--device", "device", "train"),
    Flag("--method", "method", "train.gast", (("choices", ["gast", "topk", "random", "lora"]),)),
    Flag("--implementation", "implementation", "train.gast", (("choices", ["cached", "twopass"]),)),
    Flag("--k-select", "k_select", "train.gast", (("type", int),)),
    Flag("--k-support", "k_support", "train.gast", (("type", int),)),
    Flag("--support", "support", "train.gast", (("choices", ["train", "target"]),)),
    Flag("--temperature", "temperature", "train.gast", (("type", float),)),
    Flag("--replacement", "replacement", "train.gast", (("action", "store_true"), ("default", None))),
    Flag("--aggregate", "aggregate", "train.gast", (("choices", ["mean", "sum"]),)),
    Flag("--epochs", "epochs", "train.recipe", (("type", int),)),
    Flag("--lr", "lr", "train.recipe", (("type", float),)),
    Flag("--batch-size", "batch_size", "train.recipe", (("type", int),)),
    Flag("--seed", "seed", "train.recipe", (("type", int),)),
    Flag("--lora-r", "r", "train.lora", (("type", int),)),
)


def train_config(a: argparse.Namespace) -> TrainRunConfig:
    v = flag_values(a, TRAIN_FLAGS)
    base = TrainRunConfig()
    return TrainRunConfig(**v["train"], gast=GastConfig(**{**asdict(base.gast), **v["train.gast"]}),
             recipe=TrainConfig(**{**asdict(base.recipe), **v["train.recipe"]}),
             lora=LoraSettings(**{**asdict(base.lora), **v["train.lora"]}))


def expert_config(a: argparse.Namespace) -> ExpertConfig:
    values = flag_values(a, EXPERT_FLAGS)
    train = TrainConfig(**{**asdict(ExpertConfig().train), **values["experts.train"]})
    return ExpertConfig(**values["experts"], train=train)


def cluster_config(a: argparse.Namespace) -> ClusterConfig:
    return ClusterConfig(**flag_values(a, CLUSTER_FLAGS)["cluster"])


def compare_config(a: argparse.Namespace) -> CompareConfig:
    values = flag_values(a, COMPARE_FLAGS)
    train = TrainConfig(**{**asdict(CompareConfig().train), **values["compare.train"]})  # the downstream recipe
    return CompareConfig(**values["compare"], train=train)


def geometry_config(a: argparse.Namespace) -> GeometryConfig:
    return GeometryConfig(**flag_values(a, GEOMETRY_FLAGS)["geometry"])


PROXY_FLAGS = (
    Flag("--model", "model", "proxy"), Flag("--train", "train", "proxy"), Flag("--target", "target", "proxy"),
    Flag("--rho", "rho", "proxy", (("type", float),)),
    Flag("--sweep", "sweep", "proxy", (("type", _tuple_of_floats),), "; comma-separated"),
    Flag("--rank-multiple", "rank_multiple", "proxy", (("type", int),)),
    Flag("--init", "init", "proxy", (("choices", list(INITS)),)),
    Flag("--candidates", "candidates", "proxy", (("type", _tuple_of_names),),
         "; comma-separated ('' for none)"),
    Flag("--probe-examples", "probe_examples", "proxy", (("type", int),)),
    Flag("--max-probes", "max_probes", "proxy", (("type", int),)),
    Flag("--align-examples", "align_examples", "proxy", (("type", int),)),
    Flag("--align-epochs", "align_epochs", "proxy", (("type", int),)),
    Flag("--align-batch", "align_batch", "proxy", (("type", int),)),
    Flag("--align-lr", "align_lr", "proxy", (("type", float),)),
    Flag("--lambda-kd", "lambda_kd", "proxy", (("type", float),)),
    Flag("--tau", "tau", "proxy", (("type", float),)),
    Flag("--max-length", "max_length", "proxy", (("type", int),)),
    Flag("--seed", "seed", "proxy", (("type", int),)),
    Flag("--eval-pool", "eval_pool", "proxy", (("type", int),)),
    Flag("--methods", "methods", "proxy", (("type", _tuple_of_names),), "; comma-separated"),
    Flag("--warmup-epochs", "warmup_epochs", "proxy", (("type", int),)),
    Flag("--less-dim", "less_dim", "proxy", (("type", int),)),
    Flag("--no-evaluate", "evaluate", "proxy", (("action", "store_false"), ("default", None), ("dest", "evaluate")),
         ": off = build only"),
    Flag("--downstream", "downstream", "proxy", (("action", "store_true"), ("default", None))),
    Flag("--n-em", "n_em", "proxy", (("type", int),)),
    Flag("--dtype", "dtype", "proxy", (("choices", ["float32", "bfloat16", "float16"]),)),
    Flag("--device", "device", "proxy"),
    Flag("--lora-r", "r", "proxy.lora", (("type", int),), " (selection runs)"),
    Flag("--lora-layers", "last_layers", "proxy.lora", (("type", int), ("metavar", "L")), " (selection runs)"),
)


def proxy_config(a: argparse.Namespace) -> ProxyConfig:
    v = flag_values(a, PROXY_FLAGS)
    return ProxyConfig(**v["proxy"], lora=LoraSettings(**{**asdict(ProxyConfig().lora), **v["proxy.lora"]}))
