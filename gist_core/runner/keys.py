"""Stage bookkeeping: what --model resolves to, content fingerprints of the inputs, and each stage's key
(the hash of everything its result depends on; the manifest's key decides skip or recompute)."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from gist_core.config import RunConfig
from gist_core.data.registry import registry_file
from gist_core.errors import ConfigError, ModelSourceError
from gist_core.model.load import check_model_folder
from gist_core.model.registry import ResolvedModel, resolve
from gist_core.store.manifest import file_hash, stable_hash


def model_source(cfg: RunConfig) -> ResolvedModel:
    """What --model names (a GGUF file is converted here, once per file, before any stage runs); a config that
    recorded another GGUF file's hash is refused."""
    try:
        src = resolve(cfg.model, revision=cfg.model_revision, hub=True)
    except ModelSourceError as e:
        raise ConfigError(str(e)) from None
    check_model_folder(src.path)
    if cfg.model_sha256 and src.gguf_sha256 != cfg.model_sha256:
        found = f"sha256 {src.gguf_sha256[:12]}..." if src.gguf_sha256 else "not a GGUF file"
        raise ConfigError(f"--model {cfg.model}: {found}, but the config recorded GGUF sha256 "
                          f"{cfg.model_sha256[:12]}...; pass the same file or drop model_sha256 from the config")
    return src


def input_fingerprint(spec: str) -> str:
    p = registry_file(spec) or Path(spec)  # a fetched data registry name: the content of its cached file
    return file_hash(p) if p.exists() else f"name:{spec}"


def input_fingerprints(cfg: RunConfig, model_fingerprint: str | None) -> dict[str, str]:
    """Content hashes of the inputs (hashing a large pool is not free: callers keep the result)."""
    return {"train": input_fingerprint(cfg.train), "target": input_fingerprint(cfg.target),
            "model": model_fingerprint or input_fingerprint(cfg.model)}


def stage_keys(c: RunConfig, fp: dict[str, str]) -> dict[str, str]:
    """Per stage: hash of everything its result depends on (config fields + input hashes)."""
    data = stable_hash({"train": fp["train"], "target": fp["target"], "splits": [c.train_split, c.target_split],
                        "limit": c.limit_train})
    model = stable_hash({"model": fp["model"], "dtype": c.dtype, "max_length": c.max_length})
    warm = stable_hash([data, model, c.lora.key(), asdict(c.warmup), c.warmup_fraction, c.seed])
    # the same warm-up without the target: what run folders on one pool for other targets can share
    pool = stable_hash({"train": fp["train"], "split": c.train_split, "limit": c.limit_train})
    pool_warmup = stable_hash(["pool-warmup", pool, model, c.lora.key(), asdict(c.warmup), c.warmup_fraction, c.seed])
    # options off their defaults join the keys; at their defaults the keys are those of earlier versions
    val = warm if c.target_eos else stable_hash([warm, "no-target-eos"])
    if c.target_max_length is not None:  # options off their defaults join the keys
        val = stable_hash([val, "target-length", c.target_max_length])
    proj = stable_hash([val, c.checkpoint, c.r_max] + ([c.proj_dtype] if c.proj_dtype != "float32" else []))
    # (a rank rule other than tau joins the key: a folder scored by tau before rank rules existed keeps its key)
    scores = stable_hash([proj, c.rank, c.tau, c.aggregation, c.balance, c.budget, c.seed, c.score]
                         + ([c.rank_rule] if c.rank_rule != "tau" and c.rank is None else []))
    return {"data": data, "warmup": warm, "val_grads": val, "subspace": val, "train_proj": proj, "scores": scores,
            "pool_warmup": pool_warmup, "pool": stable_hash([pool, model])}
