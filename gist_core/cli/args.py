"""The run's, compare's and geometry's flags, built from their config dataclasses (gist_core/config.py) through
gist_core/flags.py; each method's own table is beside its config (methods/<name>/config.py).
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import asdict
from pathlib import Path

from gist_core.config import CompareConfig, GeometryConfig, LoraSettings, RunConfig, TrainConfig
from gist_core.flags import add_flags, flag_maker, flag_values, ints_list, names_list
from gist_core.methods import registry, scoring
from gist_core.methods.less.config import LessConfig
from gist_core.runner.plan import PlanConfig


def _budget(text: str) -> float:
    try:
        return float(text.rstrip("%")) / (100 if text.endswith("%") else 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"budget '{text}' is not a number (use 0.05, 5% or a count)") from None


SECTIONS = {"": RunConfig, "lora": LoraSettings, "warmup": TrainConfig, "compare": CompareConfig,
            "compare.train": TrainConfig, "compare.less": LessConfig, "geometry": GeometryConfig}
flag = flag_maker(SECTIONS)


RUN_FLAGS = (
    flag("--budget", "budget", kwargs=(("type", _budget),), extra_help="; 0.05, 5% or a count (500)"),
    flag("--rank", "rank", kwargs=(("type", int),)),
    flag("--rank-rule", "rank_rule", kwargs=(("choices", ["tau", "advisor", "full"]),)),
    flag("--tau", "tau", kwargs=(("type", float),)),
    flag("--r-max", "r_max", kwargs=(("type", int),)),
    flag("--balance", "balance", kwargs=(("choices", list(scoring.BALANCES)),)),
    flag("--score", "score", kwargs=(("choices", list(scoring.SCORE_KINDS)),)),
    flag("--aggregation", "aggregation", kwargs=(("choices", list(scoring.AGGREGATIONS)),)),
    flag("--checkpoint", "checkpoint", kwargs=(("type", int),)),
    flag("--epochs", "epochs", "warmup", (("type", int),), " (warm-up)"),
    flag("--lr", "lr", "warmup", (("type", float),), " (warm-up)"),
    flag("--warmup-fraction", "warmup_fraction", kwargs=(("type", float),)),
    flag("--lora-r", "r", "lora", (("type", int),)),
    flag("--lora-alpha", "alpha", "lora", (("type", float),)),
    flag("--lora-dropout", "dropout", "lora", (("type", float),)),
    flag("--lora-targets", "target_modules", "lora", (("type", names_list),), "; comma-separated"),
    flag("--lora-layers", "last_layers", "lora", (("type", int), ("metavar", "L"))),
    flag("--max-length", "max_length", kwargs=(("type", int),)),
    flag("--target-max-length", "target_max_length", kwargs=(("type", int),)),
    flag("--batch-size", "grad_batch_size", kwargs=(("type", int),)),
    flag("--proj-dtype", "proj_dtype", kwargs=(("choices", ["float32", "bfloat16"]),)),
    flag("--no-target-eos", "target_eos", kwargs=(("action", "store_false"), ("default", None), ("dest", "target_eos"))),
    flag("--device", "device", extra_help="auto | cpu | cuda | cuda:N"),
    flag("--dtype", "dtype", kwargs=(("choices", ["float32", "bfloat16", "float16"]),), extra_help="model dtype"),
    flag("--seed", "seed", kwargs=(("type", int),)),
    flag("--trust-remote-code", "trust_remote_code", kwargs=(("action", "store_true"), ("default", None)),
         extra_help="allow model code from the model's repository (off by default)"),
    flag("--pool-size", "limit_train", kwargs=(("type", int), ("metavar", "N")),
         extra_help="use the first N rows of the pool (default: all)"),
)

PAPER_RULE = registry.PAPER_RULE


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
    return scoring.BALANCES if text.strip() == "all" else tuple(r.strip() for r in text.split(",") if r.strip())


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
    flag("--methods", "methods", "compare", (("type", names_list),),
         "; comma-separated: gist, less, rawcos, random, length, embedding, full, oracle, gist_mean, gist_max "
         "(score-based methods are reported under every --rules rule; gist_mean / gist_max: GIST with that "
         "aggregation on the same projections; oracle is added with ground truth)"),
    flag("--rules", "rules", "compare", (("type", rules),), "; comma-separated from global, subtask, zscore, quantile, or 'all'"),
    flag("--only", "only", "compare", (("type", names_list),), "; comma-separated, e.g. gist_examples,less,random"),
    flag("--seeds", "seeds", "compare", (("type", int),)),
    flag("--test", "test", "compare"),
    flag("--less-dim", "dim", "compare.less", (("type", int),)),
    flag("--less-checkpoints", "checkpoints", "compare.less", (("type", names_list),), "; comma-separated folders"),
    flag("--less-cache-gb", "projector_cache_gb", "compare.less", (("type", float),),
         "; else the projection matrix is regenerated per batch"),
    flag("--train-epochs", "epochs", "compare.train", (("type", int),), " (downstream LoRA)"),
    flag("--train-lr", "lr", "compare.train", (("type", float),), " (downstream LoRA)"),
    flag("--full-epochs", "full_epochs", "compare", (("type", int),)),
    flag("--n-em", "n_em", "compare", (("type", int),)),
    flag("--em-tokens", "em_tokens", "compare", (("type", int),)),
    flag("--no-downstream", "downstream", "compare", (("action", "store_false"), ("default", None), ("dest", "downstream")),
         ": off = selection quality and cost only"),
)

GEOMETRY_FLAGS = (
    flag("--module", "module", "geometry"),
    flag("--coords", "n_coords", "geometry", (("type", int),)),
    flag("--n-examples", "n_examples", "geometry", (("type", int),)),
    flag("--rank", "rank", "geometry", (("type", int),)),
    flag("--seed", "seed", "geometry", (("type", int),)),
    flag("--checkpoints", "checkpoints", "geometry", (("type", ints_list),), "; comma-separated"),
)














def compare_config(a: argparse.Namespace) -> CompareConfig:
    values = flag_values(a, COMPARE_FLAGS)
    train = TrainConfig(**{**asdict(CompareConfig().train), **values["compare.train"]})  # the downstream recipe
    return CompareConfig(**values["compare"], train=train, less=LessConfig(**values["compare.less"]))


def geometry_config(a: argparse.Namespace) -> GeometryConfig:
    return GeometryConfig(**flag_values(a, GEOMETRY_FLAGS)["geometry"])






_plan_flag = flag_maker({"": PlanConfig})
_PLAN_NAMES = {"targets": "--lora-targets", "last_layers": "--lora-layers"}  # spelled as select spells them
# gist-lab plan: one flag per PlanConfig field (--lora-r, --pool, --val, --device ...)
PLAN_FLAGS = tuple(
    _plan_flag(_PLAN_NAMES.get(f.name, f"--{f.name.replace('_', '-')}"), f.name, kwargs=kw) for f, kw in (
        (f, (("type", names_list),) if f.name == "targets" else
         (("type", float),) if f.type in ("float", "float | None") else
         (("type", int),) if f.type in ("int", "int | None") else ())
        for f in dataclasses.fields(PlanConfig)))


def plan_config(a: argparse.Namespace) -> PlanConfig:
    return PlanConfig(**flag_values(a, PLAN_FLAGS)[""])
