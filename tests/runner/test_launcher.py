"""The argument lists the dashboard's method pages launch, read back by the real `gist-lab` parser: a flag the CLI
does not know fails to parse, and every value given arrives in the command's config unchanged."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest

from gist_core.cli import build_parser
from gist_core.methods.gast.config import TrainRunConfig, train_config
from gist_core.methods.gradientspace.config import ClusterConfig, ExpertConfig, cluster_config, expert_config
from gist_core.methods.iprox.config import ProxyConfig, proxy_config
from gist_core.runner import launcher


def parse(args: list[str]):
    return build_parser().parse_args(args)


def test_cluster_args_round_trip(tmp_path):
    given = dict(clusters=6, k_grid=(3, 5), rank=16, sketch_size=40, rule="dominant", pool_size=500, elrea_dim=64,
                 birch_threshold=0.25, batch_size=8, seed=7)
    a = parse(launcher.cluster_args(tmp_path, **given))
    assert (a.cmd, a.run) == ("cluster", tmp_path.resolve())
    assert cluster_config(a) == ClusterConfig(n_clusters=6, k_grid=(3, 5), rank=16, sketch_size=40, rule="dominant",
                                              pool_size=500, elrea_dim=64, birch_threshold=0.25, batch_size=8, seed=7)
    assert cluster_config(parse(launcher.cluster_args(tmp_path))) == ClusterConfig()  # nothing given: CLI defaults


def test_defaults_are_left_off_the_command_line(tmp_path):
    """A form submits every field; those at the CLI's default do not lengthen the command shown."""
    d = ClusterConfig()
    assert launcher.cluster_args(tmp_path, clusters=d.n_clusters, k_grid=list(d.k_grid), rank=d.rank, rule=d.rule,
                                 seed=None) == ["cluster", "--run", str(tmp_path.resolve())]
    assert launcher.cluster_args(tmp_path, rank=d.rank + 1)[-2:] == ["--rank", str(d.rank + 1)]


def test_experts_args_round_trip(tmp_path):
    given = dict(clusterings=["gradientspace", "embedding"], seeds=2, expert_steps="match", ensembles=[],
                 router="mlp", base_weight=0.25, temperature=0.5, no_oracle_routing=True, per_skill=4, per_subtask=10,
                 test=["a.jsonl", "b.jsonl"], n_em=3, latency_queries=2, train_epochs=1, train_lr=0.002)
    a = parse(launcher.experts_args(tmp_path, **given))
    cfg = expert_config(a)
    assert (a.cmd, a.run) == ("experts", tmp_path.resolve())
    assert cfg.clusterings == ("gradientspace", "embedding") and cfg.ensembles == () and cfg.tests == ("a.jsonl", "b.jsonl")
    assert (cfg.seeds, cfg.expert_steps, cfg.router, cfg.base_weight, cfg.temperature) == (2, "match", "mlp", 0.25, 0.5)
    assert cfg.oracle_routing is False and (cfg.per_skill, cfg.per_subtask, cfg.n_em, cfg.latency_queries) == (4, 10, 3, 2)
    assert (cfg.train.epochs, cfg.train.lr) == (1, 0.002)
    assert expert_config(parse(launcher.experts_args(tmp_path, no_oracle_routing=False))) == ExpertConfig()


def test_train_args_round_trip(tmp_path):
    given = dict(model="smollm2-135m", train="p.jsonl", target="v.jsonl", test="t.jsonl", pool_size=300,
                 max_length=64, n_em=2, device="cpu", method="topk", implementation="twopass", k_select=4,
                 k_support=2, support="target", temperature=2.0, replacement=True, aggregate="sum", epochs=1,
                 lr=0.0005, batch_size=8, seed=3, lora_r=4)
    a = parse(launcher.train_args(tmp_path / "gast", **given))
    cfg = train_config(a)
    assert (a.cmd, a.out, a.ablation, a.seeds) == ("train", (tmp_path / "gast").resolve(), False, 3)
    assert (cfg.model, cfg.train, cfg.target, cfg.test, cfg.pool_size, cfg.max_length, cfg.n_em, cfg.device) == \
        ("smollm2-135m", "p.jsonl", "v.jsonl", "t.jsonl", 300, 64, 2, "cpu")
    assert asdict(cfg.gast) == dict(method="topk", implementation="twopass", k_select=4, k_support=2, support="target",
                                    temperature=2.0, replacement=True, aggregate="sum")
    assert (cfg.recipe.epochs, cfg.recipe.lr, cfg.recipe.batch_size, cfg.recipe.seed, cfg.lora.r) == (1, 0.0005, 8, 3, 4)
    abl = parse(launcher.train_args(tmp_path, ablation=True, seeds=1))
    assert abl.ablation and abl.seeds == 1 and train_config(abl) == TrainRunConfig()


def test_proxy_args_round_trip(tmp_path):
    given = dict(model="smollm2-135m", train="p.jsonl", target="v.jsonl", rho=0.3, sweep=(0.5, 0.7), rank_multiple=8,
                 init="svd", candidates=["svd", "random"], probe_examples=8, max_probes=256, align_examples=16,
                 align_epochs=1, align_batch=2, align_lr=0.001, lambda_kd=0.0, tau=1.5, max_length=64, seed=2,
                 eval_pool=100, methods=("gist",), warmup_epochs=1, less_dim=512, no_evaluate=True, downstream=True,
                 n_em=2, dtype="bfloat16", device="cpu", lora_r=4, lora_layers=2)
    a = parse(launcher.proxy_args(tmp_path / "px", **given))
    cfg = proxy_config(a)
    assert (a.cmd, a.action, a.out) == ("proxy", "build", (tmp_path / "px").resolve())
    expected = {k: v for k, v in given.items() if k not in ("no_evaluate", "lora_r", "lora_layers")}
    assert {k: getattr(cfg, k) for k in expected} == {**expected, "candidates": ("svd", "random")}
    assert cfg.evaluate is False and (cfg.lora.r, cfg.lora.last_layers) == (4, 2)
    assert proxy_config(parse(launcher.proxy_args(tmp_path))) == ProxyConfig()


def test_an_option_the_cli_does_not_know_is_refused(tmp_path):
    with pytest.raises(ValueError, match="--k-means"):
        launcher.cluster_args(tmp_path, k_means=4)
    with pytest.raises(ValueError, match="--ablation"):  # train's own switch, not one of its config flags
        launcher.proxy_args(tmp_path, ablation=True)


def test_shell_command_and_subcommand(tmp_path):
    out = tmp_path / "my proxy"
    args = launcher.proxy_args(out, sweep=(0.3,))
    assert launcher.shell_command(args) == f"gist-lab proxy build --out '{out.resolve()}' --sweep 0.3"
    assert launcher.subcommand(launcher.cli_command(args)) == "proxy"
    # a lock holder's command line, whose flag values may be any word: the subcommand comes first
    assert launcher.subcommand(["gist-lab", "train", "--out", "cluster"]) == "train"
    assert launcher.subcommand([str(Path("x") / "python"), "-c", "pass"]) is None and launcher.subcommand(None) is None
