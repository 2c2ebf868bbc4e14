"""Every method and tool, registered once: the `gist-lab` subcommands, the dashboard's pages and compare's
score-based methods are built from here. Light: no torch (the CLI parser and the dashboard's navigation read it
on every start).

ENTRIES: one Entry per method (gist, less, baselines, gradientspace, gast, iprox) or tool (compare, geometry, the
utilities). Parts are named as "module:function" and imported only when used (`load`):
- a Command's `arguments` adds its flags to an argparse parser (a light module: the method's config.py), its
  `run` does the work;
- a Page is a file under pages/, placed in the dashboard's navigation under its entry's section;
- a Scorer is one of compare's score-based methods: its stage computes a score per pool example (and per target
  subtask, so every selection rule applies: RULE_FAMILIES); a compare row is `<name>_<rule>` (scoring.row_name).
Adding a method: its folder under methods/, plus one Entry here (docs/contributing.md).
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from gist_core.methods.scoring import split_row


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    arguments: str   # "module:function(parser)" adding the flags
    run: str         # "module:function(args) -> exit code"


@dataclass(frozen=True)
class Scorer:
    """One of compare's score-based methods: its stage computes a score per pool example (and per target subtask
    where `per_subtask`, so every selection rule applies to it: RULE_FAMILIES)."""
    name: str
    label: str
    scores: str            # "module:function(CompareContext) -> scoring.Scores"
    per_subtask: bool = True


@dataclass(frozen=True)
class Page:
    key: str         # ui.PAGES key and URL path
    file: str        # relative to the repository root (the dashboard's entry point is app.py)
    title: str
    icon: str
    about: str = ""  # one line on what the page shows: the home page lists every page with it


@dataclass(frozen=True)
class Entry:
    name: str
    section: str     # the dashboard's navigation section
    about: str
    commands: tuple[Command, ...] = ()
    pages: tuple[Page, ...] = ()
    scorers: tuple[Scorer, ...] = ()


def load(ref: str) -> Callable:
    """The function a "module:function" reference names. Imported here, when called, by design: building the
    parser must not import every command's machinery (torch), only the one that runs."""
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


_CORE = "gist_core.cli.commands"
_ARGS = "gist_core.cli.parsers"
ENTRIES: tuple[Entry, ...] = (
    Entry("gist", "GIST", "warm-up, target subspace, scores, selection (the GIST paper, norm-aware by default)",
          commands=(
              Command("demo", "run GIST on the bundled tiny model and synthetic corpus", f"{_ARGS}:demo", f"{_CORE}:cmd_demo"),
              Command("select", "select training data for a target task", f"{_ARGS}:select", f"{_CORE}:cmd_select"),
              Command("merge", "merge the --shard jobs' projections into RUN and score", f"{_ARGS}:merge",
                      f"{_CORE}:cmd_merge"),
              Command("rescore", "scores at another rank from a run's stored projections", f"{_ARGS}:rescore",
                      f"{_CORE}:cmd_rescore")),
          pages=(Page("home", "pages/0_Home.py", "Home", ":material/home:", "the runs, a one-click demo, every page"),
                 Page("run", "pages/1_Run.py", "Run", ":material/play_arrow:",
                      "launch a selection and follow it; replay a run's config"),
                 Page("spectrum", "pages/2_Spectrum.py", "Spectrum", ":material/show_chart:",
                      "singular values of the target gradients and the rank r that re-scores every page"),
                 Page("scores", "pages/3_Scores.py", "Scores", ":material/bar_chart:",
                      "score distributions by source and domain, the selection threshold"),
                 Page("examples", "pages/4_Examples.py", "Examples", ":material/list:",
                      "the pool ranked by score, filters, a row's tokens and nearest targets, download"),
                 Page("curate", "pages/12_Curate.py", "Curate", ":material/edit_note:",
                      "the working selection: rows removed or added by hand, groups excluded, undo, export"),
                 Page("map", "pages/5_Map.py", "Map", ":material/scatter_plot:",
                      "a 2-D map of the pool's gradients, the selection and the target in colour")),
          scorers=(Scorer("gist", "GIST", "gist_core.methods.gist.stages:compare_scores"),
                   Scorer("gist_mean", "GIST (subtask means)", "gist_core.methods.gist.stages:subtask_mean_scores"),
                   Scorer("gist_max", "GIST (example max)", "gist_core.methods.gist.stages:example_max_scores"),
                   Scorer("gist_paper", "GIST as in the paper (example max, in-subspace cosine, τ = 0.95, global "
                          "top-k)", "gist_core.methods.gist.stages:paper_scores", per_subtask=False))),
    Entry("less", "Methods", "LESS (Xia et al., 2024): Adam-preconditioned gradient features, run inside compare",
          scorers=(Scorer("less", "LESS", "gist_core.methods.less.stages:less_scores"),)),
    Entry("baselines", "Methods", "the baselines compare runs beside GIST and LESS",
          scorers=(Scorer("rawcos", "raw-gradient cosine", "gist_core.methods.baselines.stages:rawcos_scores"),
                   Scorer("embedding", "embedding similarity", "gist_core.methods.baselines.stages:embedding_scores"),
                   Scorer("rds", "RDS+ (position-weighted hidden states)", "gist_core.methods.baselines.stages:rds_scores"),
                   Scorer("minilm", "MiniLM sentence embeddings", "gist_core.methods.baselines.stages:minilm_scores"),
                   Scorer("length", "longest responses", "gist_core.methods.baselines.stages:length_scores",
                          per_subtask=False))),
    Entry("compare", "Analysis", "GIST against LESS, raw-gradient cosine, embeddings, random and the full pool",
          commands=(Command("compare", "GIST vs LESS and baselines: selection quality, downstream loss, cost",
                            f"{_ARGS}:compare", f"{_CORE}:cmd_compare"),),
          pages=(Page("compare", "pages/7_Compare.py", "Compare", ":material/compare_arrows:",
                      "GIST against LESS, raw-gradient cosine, embeddings and random, from `gist-lab compare`"),
                 Page("sidebyside", "pages/11_Side_by_side.py", "Side by side", ":material/join_inner:",
                      "two selections (ranks, rules, methods or runs): overlap, what enters and leaves, on the map"))),
    Entry("geometry", "Analysis", "curvature of one LoRA block per warm-up checkpoint",
          commands=(Command("geometry", "curvature of a LoRA block per warm-up checkpoint (Hessian, GN, Fisher, Adam)",
                            f"{_ARGS}:geometry", f"{_CORE}:cmd_geometry"),),
          pages=(Page("curvature", "pages/6_Curvature.py", "Curvature", ":material/grid_on:",
                      "Hessian, Gauss–Newton, Fisher and Adam diagonals of one LoRA block, from `gist-lab geometry`"),)),
    Entry("gradientspace", "Methods", "GradientSpace (reconstruction): clusters in LoRA-gradient space, one expert each",
          commands=(
              Command("cluster", "GradientSpace (reconstruction): cluster the pool in LoRA-gradient space, with ELREA, "
                      "embedding and random baselines", "gist_core.methods.gradientspace.config:cluster_arguments",
                      "gist_core.methods.gradientspace.cli:cluster"),
              Command("experts", "GradientSpace (reconstruction): one LoRA expert per cluster, a router, the ELREA "
                      "ensemble; test loss, exact match, routing accuracy and latency per seed",
                      "gist_core.methods.gradientspace.config:experts_arguments",
                      "gist_core.methods.gradientspace.cli:experts")),
          pages=(Page("clusters", "pages/8_Clusters.py", "Clusters", ":material/bubble_chart:",
                      "GradientSpace: clusters in LoRA-gradient space, one expert each"),)),
    Entry("gast", "Methods", "GAST: per-layer data selection inside every LoRA training step",
          commands=(Command("train", "GAST: LoRA training with per-layer data selection inside every step (or an "
                            "ablation: top-K, random, plain LoRA); test loss, exact match, time and memory per step",
                            "gist_core.methods.gast.config:train_arguments", "gist_core.methods.gast.cli:train"),),
          pages=(Page("layers", "pages/9_Layers.py", "Layers", ":material/layers:",
                      "GAST: per-layer data selection inside LoRA training, its layers and its adapter"),)),
    Entry("iprox", "Methods", "Iprox: a low-rank proxy of the target model for cheaper selection",
          commands=(Command("proxy", "Iprox: a low-rank proxy of the target model (IPSVD + gradient alignment) for "
                            "cheaper selection; its agreement with the target and its cost, side by side",
                            "gist_core.methods.iprox.config:proxy_arguments", "gist_core.methods.iprox.cli:proxy"),),
          pages=(Page("proxy", "pages/10_Proxy.py", "Proxy", ":material/compress:",
                      "Iprox: a low-rank proxy of the model and how far its scores agree with the model's"),)),
    Entry("curation", "Tools", "a working selection per run: the method's selection edited by hand, exported as a "
          "training file",
          commands=(Command("curate", "edit a run's working selection: add or remove rows, exclude a group, undo",
                            f"{_ARGS}:curate", "gist_core.cli.curation:cmd_curate"),
                    Command("export", "write a run's working selection (or given rows) as a training file: the "
                            "original rows or chat messages, with a provenance record", f"{_ARGS}:export",
                            "gist_core.cli.curation:cmd_export"))),
    Entry("tools", "Tools", "measurement, the offline model and data registries, the dashboard",
          commands=(
              Command("bench", "gradient throughput, batching speed-up, rescore latency, memory scaling",
                      f"{_ARGS}:bench", f"{_CORE}:cmd_bench"),
              Command("plan", "predicted peak memory, storage and time of each GIST and LESS stage (1B-8B too)",
                      f"{_ARGS}:plan", f"{_CORE}:cmd_plan"),
              Command("models", "real models offline: fetch a registry model once, list the cache", f"{_ARGS}:models",
                      f"{_CORE}:cmd_models"),
              Command("data", "real instruction data offline: fetch a registry data set once (sharegpt, gsm8k, "
                      "humaneval), list the cache; then use the name as --train / --target", f"{_ARGS}:data",
                      f"{_CORE}:cmd_data"),
              Command("app", "open the dashboard (Streamlit)", f"{_ARGS}:app", f"{_CORE}:cmd_app"))),
)


def commands(entries: tuple[Entry, ...] | None = None) -> list[Command]:
    return [c for e in (ENTRIES if entries is None else entries) for c in e.commands]


def pages(entries: tuple[Entry, ...] | None = None) -> list[Page]:
    return [p for e in (ENTRIES if entries is None else entries) for p in e.pages]


def scorers(entries: tuple[Entry, ...] | None = None) -> list[Scorer]:
    return [s for e in (ENTRIES if entries is None else entries) for s in e.scorers]


# selections without scores: compare draws or takes them itself
UNSCORED_METHODS = ("random", "full", "oracle")
DEFAULT_METHODS = ("gist", "less", "rawcos", "random", "length", "embedding", "full")


def known_methods() -> tuple[str, ...]:
    return tuple(s.name for s in scorers()) + UNSCORED_METHODS


def rule_families() -> tuple[str, ...]:
    """Score-based methods with per-subtask columns: every selection rule applies to them."""
    return tuple(s.name for s in scorers() if s.per_subtask)


# GIST variants on the run's stored projections (no extra gradients): the run's own settings are the "gist" row;
# these add other aggregations, or the GIST paper's exact rule (example max, in-subspace cosine, tau = 0.95,
# global top-k: reported under the global rule only), to the same table
PAPER_RULE = {"aggregation": "example_max", "balance": "global", "rank_rule": "tau", "tau": 0.95, "score": "subspace"}
GIST_VARIANTS = {"gist_mean": {"aggregation": "subtask_mean"}, "gist_max": {"aggregation": "example_max"},
                 "gist_paper": {**PAPER_RULE, "rank": None}}
DEFAULT_RULES = ("global", "subtask")
RULE_LABELS = {"global": "global top-k", "subtask": "per-subtask quota", "zscore": "z-scored max",
               "quantile": "quantile max", "examples": "round-robin over target examples"}
LABELS = {"random": "random", "full": "full pool", "oracle": "oracle (true target examples)"}


def row_label(row: str) -> str:
    """A compare row's name for people: 'gist_subtask' -> 'GIST, per-subtask quota'."""
    family, rule = split_row(row)
    label = {s.name: s for s in scorers()}.get(family)
    if label is not None and label.per_subtask:
        return f"{label.label}, {RULE_LABELS[rule]}"
    return label.label if label is not None else LABELS.get(row, row)
