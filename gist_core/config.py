"""Every configuration dataclass: what a run, a compare, a geometry run and a LoRA recipe are made of.

Each field carries its help text (`metadata["help"]`), which the CLI shows (gist_core/cli/args.py builds
the flags from these fields); `__post_init__` validates and raises ConfigError with one line for the user.
A run writes its config as JSON next to its artefacts (config.json, compare.json, geometry.json) and a
replay rebuilds it with `from_json`. Light: no torch here.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from gist_core.data.corpus import DEFAULT_DEMO_TARGET, SAMPLE_DATA
from gist_core.errors import ConfigError
from gist_core.methods import registry, scoring
from gist_core.methods.less.config import LessConfig


@dataclass(frozen=True)
class LoraSettings:
    """LoRA adapter settings (peft.LoraConfig underneath)."""
    r: int = field(default=8, metadata={"help": "LoRA rank"})
    alpha: float = field(default=16.0, metadata={"help": "LoRA scaling numerator (scale = alpha / r)"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on the LoRA input (off in eval mode)"})
    target_modules: tuple[str, ...] | None = field(
        default=None, metadata={"help": "module name suffixes; None = per-architecture default"})
    last_layers: int | None = field(default=None, metadata={
        "help": "LoRA on the last L transformer layers only (None = every layer); the frozen layers before "
                "them then need no backward pass, which is what makes a real model practical on a CPU"})

    def __post_init__(self):
        if self.r < 1:
            raise ConfigError(f"LoRA r must be >= 1, got {self.r}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"LoRA dropout must lie in [0, 1), got {self.dropout}")
        if self.target_modules is not None:
            object.__setattr__(self, "target_modules", tuple(self.target_modules))
        if self.last_layers is not None and self.last_layers < 1:
            raise ConfigError(f"LoRA last_layers must be >= 1 (or None for all), got {self.last_layers}")

    def key(self) -> dict:
        """The fields that stage keys hash: options at their defaults are left out, so run folders made
        before an option existed keep their keys."""
        d = asdict(self)
        if d["last_layers"] is None:
            del d["last_layers"]
        return d


@dataclass(frozen=True)
class TrainConfig:
    """LoRA training recipe (warm-up and downstream). Defaults suit the bundled tiny model;
    the GIST/LESS papers used lr 2e-5, LoRA r 128 / alpha 512, effective batch 32 on 7B models."""
    epochs: int = field(default=4, metadata={"help": "epochs; the warm-up saves a checkpoint after each"})
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate (AdamW)"})
    batch_size: int = field(default=16, metadata={"help": "per-device batch size"})
    grad_accum: int = field(default=1, metadata={"help": "gradient accumulation steps"})
    warmup_ratio: float = field(default=0.03, metadata={"help": "linear LR warm-up, share of all steps"})
    weight_decay: float = 0.0
    seed: int = field(default=3, metadata={"help": "data order and LoRA init seed (GIST uses data seed 3)"})
    bf16: bool = False

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1 or self.grad_accum < 1:
            raise ConfigError("epochs, batch_size and grad_accum must be >= 1")
        if not self.lr > 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"warmup_ratio must lie in [0, 1), got {self.warmup_ratio}")


PROJ_DTYPES = ("float32", "bfloat16")


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run's results; written to config.json and replayable."""
    model: str = field(metadata={"help": "Hugging Face model id, local folder, .gguf file or registry name "
                                         "(gist-lab models list)"})
    train: str = field(metadata={"help": "pool: JSONL/JSON/CSV/Parquet file or datasets name/path"})
    target: str = field(metadata={"help": "target validation examples (few-shot), optional 'subtask' column"})
    budget: float = field(default=0.05, metadata={"help": "fraction in (0,1] of the pool, or a count > 1"})
    rank: int | None = field(default=None, metadata={"help": "GIST rank r; None = set by rank_rule"})
    rank_rule: str = field(default=scoring.DEFAULT_RANK_RULE, metadata={
        "help": "rank when `rank` is None: full = every stored direction (r_max; the default, chosen on evidence), "
                "tau = smallest r reaching tau explained variance (the GIST paper's rule), advisor = the held-out "
                "rank advisor's suggestion"})
    tau: float = field(default=0.95, metadata={"help": "explained-variance threshold for the tau rank rule"})
    r_max: int = field(default=64, metadata={"help": "directions stored per pool example (>= rank)"})
    aggregation: str = field(default="subtask_mean", metadata={"help": "subtask_mean (code) | example_max (paper)"})
    score: str = field(default=scoring.DEFAULT_SCORE, metadata={
        "help": "normaware = projected gradient . projected target over the gradient's whole norm (the default, chosen "
                "on evidence) | subspace = the cosine inside the subspace (the GIST reference code)"})
    balance: str = field(default=scoring.DEFAULT_RULE, metadata={
        "help": "selection rule: subtask = round-robin quota (the default, chosen on evidence) | global = top-k of "
                "the max subtask cosine (the GIST paper's and LESS's rule) | zscore / quantile = top-k of the max of "
                "per-subtask calibrated columns"})
    checkpoint: int = field(default=1, metadata={"help": "warm-up epoch whose checkpoint GIST scores with"})
    warmup_fraction: float = field(default=0.05, metadata={"help": "random share of the pool for warm-up"})
    max_length: int = field(default=256, metadata={"help": "tokens per example (prompt cut first)"})
    target_max_length: int | None = field(default=None, metadata={"help": "tokens per target example (validation, and "
                                                                          "test downstream); None = max_length"})
    grad_batch_size: int = field(default=16, metadata={"help": "examples per per-example-gradient batch"})
    proj_dtype: str = field(default="float32", metadata={
        "help": "dtype of the pool projection g.V: float32, or bfloat16 as the GIST reference code does (basis "
                "and gradients cast to bf16 before the product, partial products summed and stored in float32)"})
    target_eos: bool = field(default=True, metadata={
        "help": "append the end-of-sequence token to the target's responses, as to the pool's; False = the "
                "GIST/LESS reference code, whose validation examples end at the answer"})
    lora: LoraSettings = field(default_factory=LoraSettings)
    warmup: TrainConfig = field(default_factory=TrainConfig)
    target_split: str = "train"
    train_split: str = "train"
    limit_train: int | None = None
    device: str = "auto"
    dtype: str = "float32"
    trust_remote_code: bool = False
    seed: int = field(default=0, metadata={"help": "warm-up subset and random-baseline seed"})
    model_sha256: str | None = field(default=None, metadata={
        "help": "sha256 of the GGUF file behind `model`, recorded when the run starts; a replay of this config "
                "refuses a different file (None: not a GGUF model)"})
    model_revision: str | None = field(default=None, metadata={
        "help": "Hugging Face hub revision of `model` (a branch, tag or commit); the run records the commit it "
                "resolved to, and a replay of its config loads that commit (None: the main branch; local models)"})

    def __post_init__(self):
        if isinstance(self.lora, dict):
            object.__setattr__(self, "lora", LoraSettings(**self.lora))
        if isinstance(self.warmup, dict):
            object.__setattr__(self, "warmup", TrainConfig(**self.warmup))
        try:
            scoring.check_budget(self.budget)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if self.rank is not None and self.rank < 1:
            raise ConfigError(f"rank must be >= 1, got {self.rank}")
        if not 0 < self.tau <= 1:
            raise ConfigError(f"tau must lie in (0, 1], got {self.tau}")
        if self.rank_rule not in scoring.RANK_RULES:
            raise ConfigError(f"rank_rule must be one of {scoring.RANK_RULES}, got '{self.rank_rule}'")
        if self.score not in scoring.SCORE_KINDS:
            raise ConfigError(f"score must be one of {scoring.SCORE_KINDS}, got '{self.score}'")
        if self.aggregation not in scoring.AGGREGATIONS:
            raise ConfigError(f"aggregation must be one of {scoring.AGGREGATIONS}, got '{self.aggregation}'")
        if self.balance not in scoring.BALANCES:
            raise ConfigError(f"balance must be one of {scoring.BALANCES}, got '{self.balance}'")
        if not 1 <= self.checkpoint <= self.warmup.epochs:
            raise ConfigError(f"checkpoint must lie in 1..{self.warmup.epochs} (warm-up epochs)")
        if not 0 < self.warmup_fraction <= 1:
            raise ConfigError(f"warmup_fraction must lie in (0, 1], got {self.warmup_fraction}")
        if self.proj_dtype not in PROJ_DTYPES:
            raise ConfigError(f"proj_dtype must be one of {PROJ_DTYPES}, got '{self.proj_dtype}'")
        if self.max_length < 8 or self.grad_batch_size < 1:
            raise ConfigError("max_length must be >= 8 and grad_batch_size >= 1")
        if self.target_max_length is not None and self.target_max_length < 8:
            raise ConfigError("target_max_length must be >= 8 (or None for max_length)")
        object.__setattr__(self, "r_max", max(self.r_max, self.rank or 1))

    def to_json(self) -> dict:
        return asdict(self)

    @property
    def target_length(self) -> int:
        """Tokens per target example."""
        return self.target_max_length or self.max_length

    @classmethod
    def from_json(cls, d: dict, **overrides) -> RunConfig:
        """A config read back from a file, with `overrides` (the flags) on top. `trust_remote_code` is never
        taken from the file: a run folder is data, so remote code runs only on the person's own flag, passed
        in `overrides`."""
        known = {f.name for f in fields(cls)}
        unknown = (set(d) | set(overrides)) - known
        if unknown:
            raise ConfigError(f"config.json: unknown field(s) {sorted(unknown)}")
        from_file = {k: v for k, v in d.items() if k != "trust_remote_code"}
        # a config written before rank rules (score kinds) existed ranked by tau (scored in the subspace): its
        # replay keeps that, whatever the default
        return cls(**{"rank_rule": "tau", "score": "subspace", **from_file, **overrides})


def demo_config(target: str = DEFAULT_DEMO_TARGET, **overrides) -> RunConfig:
    """The bundled default: tiny LM, synthetic pool, one of its target tasks.

    GIST scores with the paper's warm-up checkpoint 1, as `select` does. (An earlier version used the
    last checkpoint, chosen on scrambled target directions; re-measured on every bundled target at every
    checkpoint, checkpoint 1 has the best mean precision under the global rule and is the only one that
    does not collapse on 'facts': bench/checkpoint_sweep.py, README.)
    """
    tdir = SAMPLE_DATA / "targets" / target
    if not tdir.is_dir():
        choices = sorted(p.name for p in (SAMPLE_DATA / "targets").iterdir()) if (SAMPLE_DATA / "targets").is_dir() else []
        raise ConfigError(f"unknown bundled target '{target}' (choose from {', '.join(choices) or 'none found'})")
    base = dict(model=str(SAMPLE_DATA / "tiny-lm"), train=str(SAMPLE_DATA / "pool.jsonl"), target=str(tdir / "val.jsonl"))
    return RunConfig(**{**base, **overrides})


@dataclass(frozen=True)
class CompareConfig:
    """What `compare` runs on top of a GIST run; written into compare.json."""
    methods: tuple[str, ...] = field(default=registry.DEFAULT_METHODS, metadata={"help": "methods to compare"})
    rules: tuple[str, ...] = field(default=registry.DEFAULT_RULES, metadata={
        "help": "selection rules applied to every score-based method (global = the paper's top-k of the max)"})
    only: tuple[str, ...] = field(default=(), metadata={
        "help": "exactly these table rows (method, or method_rule such as rds_examples) instead of every method under "
                "every rule: each method at its own rule, one downstream run each"})
    seeds: int = field(default=3, metadata={"help": "downstream seeds (LoRA init, data order, random/oracle draw)"})
    test: str | None = field(default=None, metadata={"help": "target test split; default test.jsonl beside the target"})
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=4, lr=1e-3, seed=0),
                               metadata={"help": "downstream LoRA recipe (seed replaced per run)"})
    full_epochs: int = field(default=1, metadata={"help": "epochs for the full-pool row (20x the examples)"})
    n_em: int | None = field(default=None, metadata={"help": "exact-match prompts per subtask (None = all; 0 = none)"})
    em_tokens: int = field(default=16, metadata={
        "help": "greedy tokens generated per exact-match prompt (a worked GSM8K answer needs about 200)"})
    downstream: bool = field(default=True, metadata={"help": "fine-tune and evaluate on each selection"})
    less: LessConfig = field(default_factory=LessConfig, metadata={"help": "LESS's projection and checkpoints"})

    def __post_init__(self):
        if isinstance(self.train, dict):
            object.__setattr__(self, "train", TrainConfig(**self.train))
        object.__setattr__(self, "methods", tuple(self.methods))
        if isinstance(self.less, dict):
            object.__setattr__(self, "less", LessConfig(**self.less))
        object.__setattr__(self, "rules", tuple(self.rules))
        object.__setattr__(self, "only", tuple(self.only))
        if self.only:
            object.__setattr__(self, "methods", tuple(dict.fromkeys(scoring.split_row(r)[0] for r in self.only)))
            ruled = [r for r in self.only if scoring.split_row(r)[1] != "global"
                     and scoring.split_row(r)[0] not in registry.rule_families()]
            if ruled:
                raise ConfigError(f"row(s) {', '.join(ruled)}: only score-based methods take a selection rule")
        bad = [r for r in self.rules if r not in scoring.BALANCES]
        if bad or not self.rules:
            raise ConfigError(f"unknown selection rule(s) {', '.join(bad) or '(none given)'} "
                              f"(choose from {', '.join(scoring.BALANCES)})")
        unknown = [m for m in self.methods if m not in registry.known_methods()]
        if unknown:
            raise ConfigError(f"unknown method(s) {', '.join(unknown)} (choose from {', '.join(registry.known_methods())})")
        if not self.methods:
            raise ConfigError("no methods to compare")
        if self.seeds < 1 or self.full_epochs < 1:
            raise ConfigError("seeds and full_epochs must be >= 1")

    def rows(self, has_truth: bool) -> list[str]:
        if self.only:
            out = list(self.only)
        else:
            out = [scoring.row_name(m, r) for m in self.methods
                   for r in (self.rules if m in registry.rule_families() else ("global",))]
        if has_truth and "oracle" not in out:
            out.append("oracle")
        return out


@dataclass(frozen=True)
class GeometryConfig:
    """Which block, how many coordinates, which data: written into geometry.json."""
    module: str | None = field(default=None, metadata={"help": "LoRA module (name or suffix); default: the last one"})
    n_coords: int = field(default=2048, metadata={"help": "coordinates sampled from A and B (0 = all of them)"})
    n_examples: int | None = field(default=None, metadata={"help": "target examples in the loss (None = all)"})
    rank: int = field(default=8, metadata={"help": "top-r eigenspaces compared (F_hat vs Hessian)"})
    seed: int = field(default=0, metadata={"help": "coordinate sample seed"})
    checkpoints: tuple[int, ...] | None = field(default=None, metadata={"help": "warm-up epochs (None = all)"})

    def __post_init__(self):
        if self.n_coords < 0 or self.rank < 1:
            raise ConfigError("n_coords must be >= 0 and rank >= 1")
        if self.n_examples is not None and self.n_examples < 1:
            raise ConfigError("n_examples must be >= 1")
        if self.checkpoints is not None:
            object.__setattr__(self, "checkpoints", tuple(self.checkpoints))
