"""The CLI's configuration flags are built from the config dataclasses: each flag's help is its field's, and
the parsed flags give exactly the config a caller would build by hand (unset flags: the config's defaults)."""
from dataclasses import fields

import pytest

from gist_core.cli import build_parser
from gist_core.cli.args import COMPARE_FLAGS, GEOMETRY_FLAGS, RUN_FLAGS, compare_config, geometry_config, overrides
from gist_core.config import CompareConfig, GeometryConfig, LoraSettings, RunConfig, TrainConfig
from gist_core.errors import ConfigError
from gist_core.methods.less.config import LessConfig


def _help(cls, name):
    return next(f for f in fields(cls) if f.name == name).metadata.get("help", "")


def test_every_flag_names_a_real_field_and_carries_its_help():
    for flag in (*RUN_FLAGS, *COMPARE_FLAGS, *GEOMETRY_FLAGS):
        cls = flag.config_class()
        assert flag.field in {f.name for f in fields(cls)}, flag
        assert _help(cls, flag.field).replace("%", "%%") in flag.help()


def test_unset_flags_leave_the_config_defaults():
    a = build_parser().parse_args(["compare"])
    assert compare_config(a) == CompareConfig() and overrides(a) == {}
    assert geometry_config(build_parser().parse_args(["geometry", "--run", "r"])) == GeometryConfig()


def test_parsed_flags_give_the_hand_built_configs():
    a = build_parser().parse_args(["compare", "--methods", "gist, less", "--rules", "all", "--seeds", "2",
                                   "--less-dim", "64", "--train-epochs", "2", "--no-downstream", "--n-em", "5",
                                   "--lora-r", "4", "--epochs", "2", "--lr", "5e-3", "--no-target-eos", "--budget", "5%"])
    want = CompareConfig(methods=("gist", "less"), rules=("global", "subtask", "zscore", "quantile", "examples"), seeds=2,
                         less=LessConfig(dim=64), downstream=False, n_em=5, train=TrainConfig(epochs=2, lr=1e-3, seed=0))
    assert compare_config(a) == want
    got = overrides(a)
    assert got == {"budget": 0.05, "target_eos": False, "lora": LoraSettings(r=4), "warmup": TrainConfig(epochs=2, lr=5e-3)}
    cfg = RunConfig(model="m", train="t", target="v", **got)
    assert cfg.lora.r == 4 and cfg.warmup.epochs == 2 and cfg.target_eos is False
    g = build_parser().parse_args(["geometry", "--run", "r", "--coords", "0", "--checkpoints", "1,3", "--module", "v_proj"])
    assert geometry_config(g) == GeometryConfig(n_coords=0, checkpoints=(1, 3), module="v_proj")


def test_only_names_the_rows_each_method_at_its_own_rule():
    from gist_core.cli import build_parser
    from gist_core.cli.args import compare_config
    a = build_parser().parse_args(["compare", "--only", "gist_examples,gist_paper,less,rds_examples,random,full"])
    cmp = compare_config(a)
    assert cmp.rows(has_truth=False) == ["gist_examples", "gist_paper", "less", "rds_examples", "random", "full"]
    assert cmp.methods == ("gist", "gist_paper", "less", "rds", "random", "full")
    with pytest.raises(ConfigError, match="only score-based methods take a selection rule"):
        CompareConfig(only=("random_examples",))
