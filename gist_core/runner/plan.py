"""A memory, storage and time model of GIST's and LESS's stages, from a model's shape and a run's settings.

Math only (the one path it reads is an optional config.json, `shape_from_config`). Each stage's peak is a sum of
named terms, so the breakdown says *why* a stage does or does not fit; the constants that are not read off the
code (the runtime's resident baseline, the activation bytes kept for backward, the CPU's throughput) were fitted
on measured runs: bench/memory_model.py, docs/guide/plan.md.

What each term mirrors in the code:
  - per-example gradients: gist_core/grads/per_example.py (probes, no weight gradients; a batch's (B, D) float32
    gradients are joined only while B x D x 4 <= FLAT_BUDGET_BYTES, else projected module by module; logits only
    from the response window, a batch's padded tokens capped by logit_token_cap);
  - warm-up: the loss in chunks (gist_core/model/training.py chunked_causal_lm_loss), AdamW on the LoRA weights;
  - validation gradients: written into val_grads.npy row by row ("streamed") or, before that change, held (N_v, D)
    in memory ("dense"); the subspace is fitted from column chunks (gist_core/methods/gist/subspace.py);
  - LESS: gist_core/methods/less (Rademacher R cached while D x d x 4 <= the cache, regenerated per block beyond;
    one simulated Adam step per row on 128-row buffers).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gist_core.errors import ConfigError
from gist_core.store import layout

GiB = 2 ** 30
FLAT_BUDGET_BYTES = 512 * 2 ** 20      # per_example.FLAT_BUDGET_BYTES (not imported: grads/ pulls in torch)
LOGITS_BUDGET_BYTES = 3 * GiB          # per_example.LOGITS_BUDGET_BYTES
LOGIT_COPIES = 3                       # float32 logits, their log-softmax and their gradient
WARMUP_LOSS_CHUNK = 256                # training.chunked_causal_lm_loss: labelled positions per output projection
LESS_BLOCK_ROWS = 4096                 # less.features.BLOCK_ROWS
LESS_VAL_CHUNK_BYTES = 1 << 30         # less.stages.VAL_CHUNK_BYTES: validation gradients read at a time
SUBSPACE_CHUNK = 1 << 20               # subspace.gram's column chunk (float64 copies)
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
ATTENTION_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_MODULES = ("gate_proj", "up_proj", "down_proj")

# Fitted constants (bench/memory_model.py; which run fitted which: docs/guide/plan.md).
HOST_BASELINE_BYTES = int(0.62 * GiB)  # python + torch + transformers + peft + pandas + data: set from tiny-a
ACTIVATION_FACTOR = 1.0                # x the analytic count of values a LoRA layer keeps for backward (not fitted)
CPU_FLOPS_PER_S = 1.25e11              # this machine's 2 cores, float32: fitted on SmolLM2's train_proj (smol-a)
RADEMACHER_PER_S = 7.6e7               # R entries generated per second (CPU bernoulli_): fitted on smol-a's LESS
CUDA_FLOPS_PER_S = 2.0e14              # assumed (not measured here): ~40% of an H100's dense bf16 peak
CUDA_CONTEXT_BYTES = int(0.6 * GiB)    # CUDA context + allocator slack on the device (assumed)


@dataclass(frozen=True)
class ModelShape:
    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied_embeddings: bool
    params: int = 0  # 0: counted from the shape (published counts are kept where known)

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def module_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each decoder-layer linear."""
        h, i = self.hidden, self.intermediate
        return {"q_proj": (h, self.q_dim), "k_proj": (h, self.kv_dim), "v_proj": (h, self.kv_dim),
                "o_proj": (self.q_dim, h), "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    def layer_params(self) -> int:
        return sum(a * b for a, b in self.module_shapes().values()) + 2 * self.hidden

    def total_params(self) -> int:
        if self.params:
            return self.params
        emb = self.vocab * self.hidden * (1 if self.tied_embeddings else 2)
        return emb + self.layers * self.layer_params() + self.hidden

    def activation_values(self) -> int:
        """Values one token keeps for backward in one decoder layer (before ACTIVATION_FACTOR): the norms' and
        projections' inputs, q/k/v, the attention output, and the MLP's gate, up, activation and product."""
        return 4 * self.hidden + 2 * self.q_dim + 2 * self.kv_dim + 4 * self.intermediate


def _shape(name, hidden, layers, heads, kv, head_dim, inter, vocab, tied, params=0) -> ModelShape:
    return ModelShape(name, hidden, layers, heads, kv, head_dim, inter, vocab, tied, params)


# Published config.json values (Hugging Face model repositories; docs/guide/plan.md cites each). The registry's
# small models are the configs gist_core.model.load.load_base_model loads (tests check them).
PRESETS: dict[str, ModelShape] = {s.name: s for s in (
    _shape("tiny", 192, 4, 4, 4, 48, 512, 1007, True),
    _shape("smollm2-135m", 576, 30, 9, 3, 64, 1536, 49152, True),
    _shape("gemma3-270m", 640, 18, 4, 1, 256, 2048, 262144, True),
    _shape("gemma-3-1b", 1152, 26, 4, 1, 256, 6912, 262144, True),
    _shape("llama-3.2-1b", 2048, 16, 32, 8, 64, 8192, 128256, True),
    _shape("llama-3.2-3b", 3072, 28, 24, 8, 128, 8192, 128256, True),
    _shape("llama-2-7b", 4096, 32, 32, 32, 128, 11008, 32000, False),
    _shape("mistral-7b", 4096, 32, 32, 8, 128, 14336, 32000, False),
    _shape("qwen2.5-7b", 3584, 28, 28, 4, 128, 18944, 152064, False),
    _shape("llama-3.1-8b", 4096, 32, 32, 8, 128, 14336, 128256, False),
)}


def shape_from_config(path: str | Path, name: str | None = None) -> ModelShape:
    """A ModelShape from a Hugging Face config.json (a multimodal one's text_config is used)."""
    try:
        c = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read model config {path}: {e}") from None
    c = c.get("text_config", c)
    try:
        heads = int(c["num_attention_heads"])
        return ModelShape(name or c.get("model_type", Path(path).parent.name), int(c["hidden_size"]),
                          int(c["num_hidden_layers"]), heads, int(c.get("num_key_value_heads") or heads),
                          int(c.get("head_dim") or c["hidden_size"] // heads), int(c["intermediate_size"]),
                          int(c["vocab_size"]), bool(c.get("tie_word_embeddings", False)))
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"{path}: not a decoder config this model knows (missing or bad {e})") from None


def gradient_dim(shape: ModelShape, r: int, targets: tuple[str, ...] = ATTENTION_MODULES + MLP_MODULES,
                 last_layers: int | None = None) -> int:
    """Entries of the flattened LoRA gradient: r x (in + out) per targeted module (A: r x in, B: out x r)."""
    shapes = shape.module_shapes()
    unknown = [t for t in targets if t not in shapes]
    if unknown:
        raise ConfigError(f"unknown LoRA target(s) {', '.join(unknown)}; known: {', '.join(shapes)}")
    return r * sum(sum(shapes[t]) for t in targets) * lora_layers(shape, last_layers)


def lora_layers(shape: ModelShape, last_layers: int | None) -> int:
    return shape.layers if last_layers is None else min(last_layers, shape.layers)


@dataclass(frozen=True)
class PlanConfig:
    model: str = field(default="smollm2-135m", metadata={"help": "a preset (" + ", ".join(PRESETS) + ")"})
    dtype: str = field(default="float32", metadata={"help": "model weights' dtype: float32 | bfloat16 | float16"})
    device: str = field(default="cpu", metadata={"help": "cpu | cuda (cuda: device and host memory apart)"})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank"})
    targets: tuple[str, ...] = field(default=ATTENTION_MODULES + MLP_MODULES,
                                     metadata={"help": "LoRA target modules, comma-separated"})
    last_layers: int | None = field(default=None, metadata={"help": "LoRA on the last L layers (default: all)"})
    pool: int = field(default=10_000, metadata={"help": "pool rows"})
    val: int = field(default=32, metadata={"help": "validation rows N_v"})
    r_max: int = field(default=64, metadata={"help": "stored subspace directions"})
    max_length: int = field(default=256, metadata={"help": "tokens per example (memory: batches padded to it)"})
    mean_tokens: int | None = field(default=None, metadata={"help": "mean tokens per example, for the time "
                                                                     "column (default: max_length)"})
    grad_batch_size: int = field(default=16, metadata={"help": "rows per per-example-gradient batch"})
    warmup_batch_size: int = field(default=16, metadata={"help": "rows per warm-up step"})
    warmup_fraction: float = field(default=0.05, metadata={"help": "share of the pool the warm-up trains on"})
    less_dim: int = field(default=8192, metadata={"help": "LESS projection dimension d"})
    less_checkpoints: int = field(default=4, metadata={"help": "LESS checkpoints (warm-up epochs)"})
    less_cache_gb: float = field(default=4.0, metadata={"help": "LESS keeps R in memory up to this size"})
    val_grads: str = field(default="streamed", metadata={"help": "streamed (rows written into val_grads.npy, main "
                                                                  "since 02fd26d) | dense ((N_v, D) in memory)"})
    proj_dtype: str = field(default="float32", metadata={"help": "GIST basis dtype: float32 | bfloat16"})
    flops_per_s: float | None = field(default=None, metadata={"help": "throughput for the time column (default: "
                                                                      "measured CPU / assumed CUDA)"})

    def __post_init__(self):
        object.__setattr__(self, "targets", tuple(self.targets))
        problems = []
        if self.dtype not in DTYPE_BYTES or self.proj_dtype not in ("float32", "bfloat16"):
            problems.append(f"dtype {self.dtype}/{self.proj_dtype} is not one of {', '.join(DTYPE_BYTES)}")
        if self.device not in ("cpu", "cuda"):
            problems.append(f"device must be cpu or cuda, got {self.device}")
        if self.val_grads not in ("streamed", "dense"):
            problems.append(f"val_grads must be streamed or dense, got {self.val_grads}")
        for name in ("lora_r", "pool", "val", "r_max", "max_length", "grad_batch_size", "warmup_batch_size",
                     "less_dim", "less_checkpoints"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.mean_tokens is not None and not 1 <= self.mean_tokens <= self.max_length:
            problems.append(f"mean_tokens must lie in 1..max_length, got {self.mean_tokens}")
        if self.last_layers is not None and self.last_layers < 1:
            problems.append(f"last_layers must be >= 1, got {self.last_layers}")
        if not 0 < self.warmup_fraction <= 1 or self.less_cache_gb < 0:
            problems.append("warmup_fraction must lie in (0, 1] and less_cache_gb be >= 0")
        if self.flops_per_s is not None and not self.flops_per_s > 0:
            problems.append("flops_per_s must be > 0")
        if problems:
            raise ConfigError("; ".join(problems))


@dataclass(frozen=True)
class Term:
    name: str
    bytes: int
    where: str  # host | device
    note: str = ""


@dataclass(frozen=True)
class Stage:
    method: str
    name: str
    terms: tuple[Term, ...]
    flops: float
    seconds: float
    storage: dict[str, int]

    def peak(self, where: str = "host") -> int:
        return sum(t.bytes for t in self.terms if t.where == where)


@dataclass(frozen=True)
class Plan:
    config: PlanConfig
    shape: ModelShape
    dim: int
    stages: tuple[Stage, ...]

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def as_dict(self) -> dict:
        return {"config": asdict(self.config), "shape": asdict(self.shape), "gradient_dim": self.dim,
                "stages": [{"method": s.method, "stage": s.name, "host_peak_bytes": s.peak("host"),
                            "device_peak_bytes": s.peak("device"), "flops": s.flops, "seconds": s.seconds,
                            "storage_bytes": s.storage, "terms": [asdict(t) for t in s.terms]}
                           for s in self.stages]}


class _Model:
    """The shared quantities of one PlanConfig: where each lives, how big a batch is."""

    def __init__(self, cfg: PlanConfig, shape: ModelShape):
        self.cfg, self.s = cfg, shape
        self.D = gradient_dim(shape, cfg.lora_r, cfg.targets, cfg.last_layers)
        self.L = lora_layers(shape, cfg.last_layers)
        self.acc = "device" if cfg.device == "cuda" else "host"
        self.wbytes = DTYPE_BYTES[cfg.dtype]
        self.tokens = cfg.mean_tokens or cfg.max_length  # per example, for FLOPs
        self.flops_per_s = cfg.flops_per_s or (CUDA_FLOPS_PER_S if cfg.device == "cuda" else CPU_FLOPS_PER_S)

    def grad_batch_rows(self) -> int:
        """Rows of a per-example batch at full length: the batch size, or fewer under the logit token cap."""
        cap = max(1, LOGITS_BUDGET_BYTES // (self.s.vocab * 4 * LOGIT_COPIES))
        return max(1, min(self.cfg.grad_batch_size, cap // self.cfg.max_length))

    def base_terms(self) -> list[Term]:
        terms = [Term("runtime baseline", HOST_BASELINE_BYTES, "host",
                      "python, torch, transformers, peft, the tokenised data (fitted)"),
                 Term("weights", self.s.total_params() * self.wbytes, self.acc,
                      f"{self.s.total_params() / 1e6:.0f}M parameters x {self.wbytes} B")]
        if self.cfg.device == "cuda":
            terms.append(Term("CUDA context", CUDA_CONTEXT_BYTES, "device", "assumed"))
        return terms

    def activations(self, rows: int, label: str) -> Term:
        tokens = rows * self.cfg.max_length
        b = int(ACTIVATION_FACTOR * tokens * self.L * self.s.activation_values() * self.wbytes)
        return Term("activations", b, self.acc, f"{tokens} tokens x {self.L} LoRA layers x "
                    f"{self.s.activation_values()} values x {self.wbytes} B x {ACTIVATION_FACTOR} ({label})")

    def example_logits(self, rows: int) -> Term:
        tokens = rows * self.cfg.max_length
        return Term("logits", tokens * self.s.vocab * 4 * LOGIT_COPIES, self.acc,
                    f"{tokens} tokens x {self.s.vocab} words x 4 B x {LOGIT_COPIES} (response window, capped)")

    def example_grads(self, rows: int, projected: bool) -> Term:
        flat = rows * self.D * 4
        if projected and (flat > FLAT_BUDGET_BYTES or self.cfg.proj_dtype != "float32"):
            widest = max(max(self.s.module_shapes()[t]) for t in self.cfg.targets)
            return Term("per-example gradients", 2 * rows * self.cfg.lora_r * widest * 4, self.acc,
                        "one LoRA matrix at a time (B x D above 512 MiB or a bf16 basis)")
        return Term("per-example gradients", 2 * flat, self.acc, f"{rows} x {self.D:,} x 4 B, per module + joined")

    def flops_forward_backward(self, tokens: float) -> float:
        """Forward 2 P t; backward 2 x (LoRA layers' P) t (input gradients only: the layers before need none, no
        weight gradients but LoRA's); the vocabulary projection forward and back."""
        s = self.s
        head = 2 * s.vocab * s.hidden * tokens
        return 2 * s.layers * s.layer_params() * tokens + head + 2 * self.L * s.layer_params() * tokens + 2 * head


def plan(cfg: PlanConfig, shape: ModelShape | None = None) -> Plan:
    """Per-stage peak memory (named terms), storage and time of GIST and LESS for `cfg`."""
    if shape is None:
        if cfg.model not in PRESETS:
            raise ConfigError(f"unknown model '{cfg.model}'; presets: {', '.join(PRESETS)} (or --config config.json)")
        shape = PRESETS[cfg.model]
    m = _Model(cfg, shape)
    stages = (_warmup(m), _val_grads(m), _train_proj(m), _gist_scores(m), _less_val(m), _less_pool(m),
              _less_scores(m))
    return Plan(cfg, shape, m.D, stages)


def _stage(m: _Model, method: str, name: str, terms: list[Term], flops: float, storage: dict[str, int],
           r_elements: float = 0.0) -> Stage:
    """`r_elements`: Rademacher entries generated (on the CPU, whatever the device: less.features.block)."""
    seconds = flops / m.flops_per_s + r_elements / RADEMACHER_PER_S
    return Stage(method, name, tuple(t for t in terms if t.bytes), flops, seconds, storage)


def _warmup(m: _Model) -> Stage:
    c, D = m.cfg, m.D
    n = max(1, round(c.pool * c.warmup_fraction))
    rows = min(c.warmup_batch_size, n)  # a small pool's warm-up set is smaller than one batch
    terms = m.base_terms() + [
        Term("LoRA + AdamW state", 16 * D, m.acc, f"{D:,} x 4 B x (weight, gradient, two moments)"),
        m.activations(rows, f"warm-up batch {rows}"),
        Term("logits (chunked loss)", WARMUP_LOSS_CHUNK * m.s.vocab * 4 * LOGIT_COPIES, m.acc,
             f"{WARMUP_LOSS_CHUNK} labelled positions at a time"),
    ]
    flops = m.flops_forward_backward(n * m.tokens) * c.less_checkpoints
    return _stage(m, "gist+less", "warmup", terms, flops,
                  {"checkpoints (adapter + moments)": 12 * D * c.less_checkpoints})


def _val_grads(m: _Model) -> Stage:
    c, D = m.cfg, m.D
    rows = min(m.grad_batch_rows(), c.val)
    k = min(c.r_max, c.val)
    terms = m.base_terms() + [m.activations(rows, f"batch {rows}"), m.example_logits(rows),
                              m.example_grads(rows, projected=False)]
    if c.val_grads == "dense":
        terms.append(Term("validation gradients", c.val * D * 4, "host", f"{c.val} x {D:,} x 4 B in memory"))
    terms += [Term("Gram column chunk", c.val * min(D, SUBSPACE_CHUNK) * 8, "host",
                   f"{c.val} x {min(D, SUBSPACE_CHUNK):,} float64 (Gram and basis from column chunks)"),
              Term("basis", D * k * 4, "host", f"{D:,} x {k} x 4 B")]
    flops = m.flops_forward_backward(c.val * m.tokens) + 2 * D * m.tokens * c.val \
        + 2 * c.val * c.val * D + 4 * c.val * D * k
    return _stage(m, "gist", "val_grads + subspace", terms, flops,
                  {layout.VAL_GRADS: c.val * D * 4, layout.SUBSPACE: D * k * 4})


def _train_proj(m: _Model) -> Stage:
    c, D = m.cfg, m.D
    rows = m.grad_batch_rows()
    k = min(c.r_max, c.val)
    basis_bytes = D * k * DTYPE_BYTES[c.proj_dtype]
    terms = m.base_terms() + [m.activations(rows, f"batch {rows}"), m.example_logits(rows),
                              m.example_grads(rows, projected=True),
                              Term("basis", basis_bytes, m.acc, f"{D:,} x {k} x {DTYPE_BYTES[c.proj_dtype]} B")]
    if m.acc == "device":
        terms.append(Term("basis (host copy)", D * k * 4, "host", "read from subspace.safetensors"))
    flops = m.flops_forward_backward(c.pool * m.tokens) + 2 * D * m.tokens * c.pool + 2 * D * k * c.pool
    return _stage(m, "gist", "train_proj", terms, flops, {layout.TRAIN_PROJ: c.pool * (k + 1) * 4})


def _gist_scores(m: _Model) -> Stage:
    c = m.cfg
    k = min(c.r_max, c.val)
    terms = m.base_terms() + [Term("pool projections", c.pool * (k + 1) * 4, "host", layout.TRAIN_PROJ)]
    return _stage(m, "gist", "scores", terms, 2 * c.pool * k * c.val, {layout.SCORES: c.pool * 64})


def _less_r(m: _Model) -> Term:
    c = m.cfg
    full = m.D * c.less_dim * 4
    if full <= c.less_cache_gb * GiB:
        return Term("Rademacher R (cached)", full, m.acc, f"{m.D:,} x {c.less_dim} x 4 B")
    return Term("Rademacher R block", LESS_BLOCK_ROWS * c.less_dim * 4, m.acc,
                f"regenerated per batch: {m.D:,} x {c.less_dim} over the cache")


def _less_val(m: _Model) -> Stage:
    c, D = m.cfg, m.D
    rows = max(1, LESS_VAL_CHUNK_BYTES // (4 * D))  # methods/less/stages.py reads val_grads.npy in row chunks
    terms = m.base_terms() + [Term("validation gradients", min(c.val, rows) * D * 4, "host",
                                   f"val_grads.npy read {min(c.val, rows)} rows at a time"),
                              _less_r(m), Term("projected", c.val * c.less_dim * 4 * 2, m.acc, "")]
    flops = 2 * c.val * D * c.less_dim * c.less_checkpoints
    return _stage(m, "less", "val features", terms, flops, {"val features": c.val * c.less_dim * 4 * c.less_checkpoints},
                  D * c.less_dim * (1 if "cached" in _less_r(m).name else c.less_checkpoints))


def _less_pool(m: _Model) -> Stage:
    c, D = m.cfg, m.D
    rows = m.grad_batch_rows()
    buffered = math.ceil(128 / rows) * rows
    terms = m.base_terms() + [
        m.activations(rows, f"batch {rows}"), m.example_logits(rows), m.example_grads(rows, projected=False),
        Term("Adam moments", 2 * D * 4, m.acc, "m, v of the checkpoint"),
        Term("Adam-step buffer", 2 * buffered * D * 4, m.acc,
             f"{buffered} rows x {D:,} x 4 B, held and joined for one projection"),
        _less_r(m)]
    # a cached R was made by the validation features; else all of it is regenerated for every buffer
    regen = 0 if "cached" in _less_r(m).name else D * c.less_dim * math.ceil(c.pool / buffered) * c.less_checkpoints
    flops = (m.flops_forward_backward(c.pool * m.tokens) + 2 * D * m.tokens * c.pool
             + 2 * c.pool * D * c.less_dim) * c.less_checkpoints
    return _stage(m, "less", "pool features", terms, flops,
                  {"pool features (float16)": c.pool * c.less_dim * 2 * c.less_checkpoints}, regen)


def _less_scores(m: _Model) -> Stage:
    c = m.cfg
    terms = m.base_terms() + [Term("pool features", c.pool * c.less_dim * 2 * c.less_checkpoints, "host",
                                   "memmapped float16, read in 2,048-row blocks"),
                              Term("scores", c.pool * c.val * 8, "host", "(N, N_v) float64")]
    return _stage(m, "less", "scores", terms, 2 * c.pool * c.val * c.less_dim * c.less_checkpoints, {})


def human_bytes(n: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def human_seconds(s: float) -> str:
    return f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.1f} min" if s >= 60 else f"{s:.1f} s"


def plan_table(p: Plan) -> str:
    """The per-stage table with each stage's terms beneath it (bytes in SI units: GB = 1e9)."""
    c = p.config
    lines = [f"{p.shape.name}: {p.shape.total_params() / 1e6:,.0f}M parameters ({c.dtype}), LoRA r {c.lora_r} on "
             f"{','.join(c.targets)} x {lora_layers(p.shape, c.last_layers)} layers: D = {p.dim:,} gradient entries; "
             f"pool {c.pool:,}, validation {c.val}, r_max {c.r_max}, LESS d {c.less_dim} x {c.less_checkpoints} "
             f"checkpoint(s); device {c.device}",
             f"{'method':10s} {'stage':22s} {'host peak':>10s} {'device peak':>12s} {'time':>10s}  storage"]
    for s in p.stages:
        dev = human_bytes(s.peak("device")) if c.device == "cuda" else "-"
        store = ", ".join(f"{k} {human_bytes(v)}" for k, v in s.storage.items())
        lines.append(f"{s.method:10s} {s.name:22s} {human_bytes(s.peak('host')):>10s} {dev:>12s} "
                     f"{human_seconds(s.seconds):>10s}  {store}")
        for t in s.terms:
            lines.append(f"{'':33s}{t.where:6s} {human_bytes(t.bytes):>10s}  {t.name}{': ' + t.note if t.note else ''}")
    return "\n".join(lines)
