"""GradientSpace's settings: `gist-lab cluster` (ClusterConfig, clusters.json) and `gist-lab experts`
(ExpertConfig, experts.json), with the flags built from them."""
from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gist_core.config import TrainConfig
from gist_core.errors import ConfigError
from gist_core.flags import add_flags, flag_maker, flag_values, ints_list, names_list

CLUSTER_RULES = ("kmeans", "dominant")  # = methods.gradientspace.assign.RULES (tested)


@dataclass(frozen=True)
class ClusterConfig:
    """What `cluster` runs; written into clusters.json."""
    n_clusters: int = field(default=0, metadata={"help": "clusters (0 = pick by silhouette over --k-grid)"})
    k_grid: tuple[int, ...] = field(default=(4, 8, 12, 16, 19, 24, 32), metadata={
        "help": "candidate cluster counts for the silhouette criterion"})
    rank: int = field(default=32, metadata={"help": "sketch rank K (coordinates kept per example)"})
    sketch_size: int = field(default=64, metadata={"help": "Frequent Directions buffer ℓ (≥ rank; memory 2ℓ·D)"})
    rule: str = field(default="kmeans", metadata={"help": "assignment: kmeans (unit coordinates) | dominant (argmax |v_k·g|)"})
    pool_size: int = field(default=3000, metadata={"help": "seeded pool sample clustered (0 = the whole pool)"})
    elrea_dim: int = field(default=256, metadata={"help": "ELREA random-projection dimension"})
    birch_threshold: float = field(default=0.1, metadata={
        "help": "BIRCH subcluster radius on unit ELREA features (scikit-learn's 0.5 merges everything into one)"})
    batch_size: int = field(default=16, metadata={"help": "examples per gradient batch"})
    seed: int = field(default=0, metadata={"help": "sample, projection and k-means seed"})

    def __post_init__(self):
        if self.rule not in CLUSTER_RULES:
            raise ConfigError(f"rule must be one of {', '.join(CLUSTER_RULES)}, got '{self.rule}'")
        if self.sketch_size < self.rank:
            raise ConfigError(f"sketch_size ({self.sketch_size}) must be ≥ rank ({self.rank})")
        if self.n_clusters < 0 or self.n_clusters == 1 or any(k < 2 for k in self.k_grid):
            raise ConfigError("cluster counts must be ≥ 2 (n_clusters 0 = pick by silhouette)")
        if self.rule == "dominant" and max(self.n_clusters, *self.k_grid) > self.rank:
            raise ConfigError(f"the dominant rule needs every cluster count ≤ rank ({self.rank})")


EXPERT_CLUSTERINGS = ("gradientspace", "elrea", "embedding", "random")  # = runner.cluster.METHODS (tested)
EXPERT_ROUTERS = ("logreg", "mlp")  # = methods.gradientspace.router.ROUTERS (tested)


@dataclass(frozen=True)
class ExpertConfig:
    """What `experts` trains and evaluates on top of `cluster`; written into experts.json."""
    clusterings: tuple[str, ...] = field(default=("gradientspace", "elrea"), metadata={
        "help": "clusterings whose clusters get one LoRA expert each (the ones in clusters.json)"})
    seeds: int = field(default=3, metadata={"help": "seeds (LoRA init and data order of every adapter)"})
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=4, lr=1e-3, seed=0),
                               metadata={"help": "the downstream LoRA recipe, for the single LoRA and every expert"})
    expert_steps: str = field(default="epochs", metadata={
        "help": "epochs: every expert trains the recipe's epochs over its own rows (a small cluster gets few steps) | "
                "match: each expert's epochs are scaled by single's rows / its rows, so it takes about as many "
                "optimizer steps as the single LoRA (the equal-compute comparison; k times the training time)"})
    ensembles: tuple[str, ...] = field(default=("elrea",), metadata={
        "help": "clusterings whose experts are also scored as an ELREA ensemble (each costs k+1 forwards a token)"})
    router: str = field(default="logreg", metadata={
        "help": "router on the prompt's mean-pooled base hidden state: logreg | mlp (one hidden layer of 64)"})
    base_weight: float = field(default=0.5, metadata={
        "help": "ELREA ensemble: weight of the base (all-data) adapter's logits; the experts share the rest"})
    temperature: float = field(default=1.0, metadata={"help": "ELREA ensemble: softmax temperature on the cosines"})
    oracle_routing: bool = field(default=True, metadata={
        "help": "also score routing by the true skill (each query to the cluster with most rows of its skill): "
                "separates the router's errors from what the experts can do"})
    per_skill: int = field(default=16, metadata={"help": "held-out pool test examples per skill (not clustered)"})
    per_subtask: int = field(default=40, metadata={"help": "test-split examples per subtask (0 = all)"})
    tests: tuple[str, ...] = field(default=(), metadata={
        "help": "test splits (JSONL with subtask); default: the bundled targets' test splits on the bundled pool, "
                "else the run target's test.jsonl"})
    n_em: int = field(default=10, metadata={"help": "exact-match prompts per test group (greedy decoding)"})
    max_new_tokens: int = field(default=16, metadata={"help": "greedy decoding length for exact match"})
    latency_queries: int = field(default=6, metadata={"help": "queries timed one at a time per inference rule"})
    eval_batch: int = field(default=32, metadata={"help": "test examples per forward batch"})

    def __post_init__(self):
        if isinstance(self.train, dict):
            object.__setattr__(self, "train", TrainConfig(**self.train))
        object.__setattr__(self, "clusterings", tuple(self.clusterings))
        object.__setattr__(self, "tests", tuple(self.tests))
        object.__setattr__(self, "ensembles", tuple(self.ensembles))
        bad = [c for c in self.clusterings if c not in EXPERT_CLUSTERINGS]
        if not set(self.ensembles) <= set(self.clusterings):
            raise ConfigError(f"ensembles ({', '.join(self.ensembles)}) must be among the clusterings "
                              f"({', '.join(self.clusterings)})")
        if bad or not self.clusterings:
            raise ConfigError(f"unknown clustering(s) {', '.join(bad) or '(none given)'} "
                              f"(choose from {', '.join(EXPERT_CLUSTERINGS)})")
        if self.expert_steps not in ("epochs", "match"):
            raise ConfigError(f"expert_steps must be epochs or match, got '{self.expert_steps}'")
        if self.router not in EXPERT_ROUTERS:
            raise ConfigError(f"router must be one of {', '.join(EXPERT_ROUTERS)}, got '{self.router}'")
        if not 0 <= self.base_weight < 1:
            raise ConfigError(f"base_weight must lie in [0, 1), got {self.base_weight}")
        if not self.temperature > 0:
            raise ConfigError(f"temperature must be positive, got {self.temperature}")
        if self.seeds < 1 or self.eval_batch < 1:
            raise ConfigError("seeds and eval_batch must be >= 1")
        if min(self.per_skill, self.per_subtask, self.n_em, self.latency_queries) < 0:
            raise ConfigError("per_skill, per_subtask, n_em and latency_queries must be >= 0")


flag = flag_maker({"cluster": ClusterConfig, "experts": ExpertConfig, "experts.train": TrainConfig})

CLUSTER_FLAGS = (
    flag("--clusters", "n_clusters", "cluster", (("type", int),)),
    flag("--k-grid", "k_grid", "cluster", (("type", ints_list),), "; comma-separated"),
    flag("--rank", "rank", "cluster", (("type", int),)),
    flag("--sketch-size", "sketch_size", "cluster", (("type", int),)),
    flag("--rule", "rule", "cluster"),
    flag("--pool-size", "pool_size", "cluster", (("type", int),)),
    flag("--elrea-dim", "elrea_dim", "cluster", (("type", int),)),
    flag("--birch-threshold", "birch_threshold", "cluster", (("type", float),)),
    flag("--batch-size", "batch_size", "cluster", (("type", int),)),
    flag("--seed", "seed", "cluster", (("type", int),)),
)


EXPERT_FLAGS = (
    flag("--clusterings", "clusterings", "experts", (("type", names_list),),
         "; comma-separated from gradientspace, elrea, embedding, random"),
    flag("--seeds", "seeds", "experts", (("type", int),)),
    flag("--expert-steps", "expert_steps", "experts", (("choices", ["epochs", "match"]),)),
    flag("--ensembles", "ensembles", "experts", (("type", names_list),), "; comma-separated ('' for none)"),
    flag("--router", "router", "experts"),
    flag("--base-weight", "base_weight", "experts", (("type", float),)),
    flag("--temperature", "temperature", "experts", (("type", float),)),
    flag("--no-oracle-routing", "oracle_routing", "experts", (("action", "store_false"), ("default", None))),
    flag("--per-skill", "per_skill", "experts", (("type", int),)),
    flag("--per-subtask", "per_subtask", "experts", (("type", int),)),
    flag("--test", "tests", "experts", (("type", names_list),), "; comma-separated files"),
    flag("--n-em", "n_em", "experts", (("type", int),)),
    flag("--latency-queries", "latency_queries", "experts", (("type", int),)),
    flag("--train-epochs", "epochs", "experts.train", (("type", int),), " (every adapter)"),
    flag("--train-lr", "lr", "experts.train", (("type", float),), " (every adapter)"),
)


def cluster_config(a: argparse.Namespace) -> ClusterConfig:
    return ClusterConfig(**flag_values(a, CLUSTER_FLAGS)["cluster"])


def expert_config(a: argparse.Namespace) -> ExpertConfig:
    values = flag_values(a, EXPERT_FLAGS)
    train = TrainConfig(**{**asdict(ExpertConfig().train), **values["experts.train"]})
    return ExpertConfig(**values["experts"], train=train)


def cluster_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, type=Path, help="a run directory with a finished warm-up")
    add_flags(p, CLUSTER_FLAGS)
    p.add_argument("--quiet", action="store_true")


def experts_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, type=Path, help="a run directory with a finished gist-lab cluster")
    add_flags(p, EXPERT_FLAGS)
    p.add_argument("--quiet", action="store_true")
