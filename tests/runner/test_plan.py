"""The memory/time model (gist_core/runner/plan.py): gradient_dim against the engine, each term against a hand
computation, the CLI's bad input, and the predictions against recorded measurements (tests/runner/data)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from gist_core.cli import main
from gist_core.errors import ConfigError
from gist_core.runner.plan import (
    ATTENTION_MODULES,
    HOST_BASELINE_BYTES,
    PRESETS,
    GiB,
    PlanConfig,
    gradient_dim,
    plan,
    shape_from_config,
)

ROOT = Path(__file__).resolve().parents[2]
MEASURED = Path(__file__).parent / "data" / "plan_measured.json"
MODEL_CACHE = Path.home() / ".cache/gist-lab/models/by-sha256"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"  # the registry's GGUF, converted


def engine_dim(folder, r: int, targets, last_layers) -> int:
    from gist_core.config import LoraSettings  # lazy: collecting the tests must not wait for torch
    from gist_core.grads.per_example import GradientEngine  # lazy: torch
    from gist_core.model.load import attach_lora, load_base_model  # lazy: torch
    model, tok = load_base_model(str(folder), device="cpu")
    peft = attach_lora(model, LoraSettings(r=r, target_modules=targets, last_layers=last_layers))
    return GradientEngine(peft, tok.pad_token_id).dim


@pytest.mark.parametrize("r,targets,last", [(8, None, None), (4, ATTENTION_MODULES, 2), (16, ("v_proj", "down_proj"), 1)])
def test_gradient_dim_is_the_engines_on_the_tiny_model(r, targets, last):
    shape = shape_from_config(ROOT / "sample_data/tiny-lm/config.json", "tiny")
    want = engine_dim(ROOT / "sample_data/tiny-lm", r, targets, last)
    assert gradient_dim(shape, r, targets or PlanConfig().targets, last) == want


def test_gradient_dim_is_the_engines_on_the_micro_model(micro_model_dir):
    shape = shape_from_config(micro_model_dir / "config.json")
    assert gradient_dim(shape, 4, PlanConfig().targets, None) == engine_dim(micro_model_dir, 4, None, None)


def test_presets_are_the_loaded_configs():
    assert PRESETS["tiny"] == shape_from_config(ROOT / "sample_data/tiny-lm/config.json", "tiny")
    for name in ("smollm2-135m", "gemma3-270m"):
        configs = [p for p in MODEL_CACHE.glob("*/config.json")
                   if json.loads(p.read_text()).get("model_type") in ("llama", "gemma3_text")
                   and shape_from_config(p).hidden == PRESETS[name].hidden]
        if not configs:
            pytest.skip(f"{name} is not fetched (gist-lab models fetch {name})")
        assert shape_from_config(configs[0], name) == PRESETS[name]


@pytest.mark.slow
def test_gradient_dim_is_the_engines_on_smollm2():
    folder = MODEL_CACHE / SMOLLM2_SHA256
    if not (folder / "config.json").exists():
        pytest.skip("smollm2-135m is not fetched (gist-lab models fetch smollm2-135m)")
    want = engine_dim(folder, 8, None, 4)
    assert gradient_dim(PRESETS["smollm2-135m"], 8, PlanConfig().targets, 4) == want == 325_632


def test_llama2_7b_less_setting_has_134m_entries():
    # LESS's paper setting: LoRA r 128 on q, k, v, o of every Llama-2-7B layer (32 x 4 x 128 x (4096 + 4096))
    assert gradient_dim(PRESETS["llama-2-7b"], 128, ATTENTION_MODULES) == 32 * 4 * 128 * 8192 == 134_217_728
    assert abs(PRESETS["llama-2-7b"].total_params() - 6.738e9) < 0.01e9  # the published 6.74B


def test_terms_by_hand():
    cfg = PlanConfig(model="tiny", lora_r=4, last_layers=2, pool=100, val=8, r_max=64, max_length=64,
                     grad_batch_size=4, warmup_batch_size=16, less_dim=512, less_checkpoints=2)
    p = plan(cfg)
    h, i, v, L = 192, 512, 1007, 2
    D = 4 * L * (4 * (h + h) + 3 * (h + i))
    assert p.dim == D
    params = v * h + 4 * (4 * h * h + 3 * h * i + 2 * h) + h   # tied embeddings, 4 layers, norms
    terms = {t.name: t.bytes for t in p.stage("train_proj").terms}
    assert terms["runtime baseline"] == HOST_BASELINE_BYTES
    assert terms["weights"] == params * 4
    assert terms["logits"] == 4 * 64 * v * 4 * 3
    assert terms["per-example gradients"] == 2 * 4 * D * 4
    assert terms["basis"] == D * 8 * 4          # k = min(r_max, N_v) = 8
    warm = {t.name: t.bytes for t in plan(cfg).stage("warmup").terms}
    assert warm["LoRA + AdamW state"] == 16 * D
    assert warm["activations"] == 5 * 64 * L * (4 * h + 2 * h + 2 * h + 4 * i) * 4  # 5 warm-up rows (5% of 100)
    pool = {t.name: t.bytes for t in p.stage("pool features").terms}
    assert pool["Rademacher R (cached)"] == D * 512 * 4
    assert pool["Adam-step buffer"] == 2 * 128 * D * 4
    assert pool["Adam moments"] == 2 * D * 4
    assert p.stage("train_proj").storage == {"train_proj.npy": 100 * 9 * 4}
    assert p.stage("val_grads + subspace").storage["val_grads.npy"] == 8 * D * 4
    assert p.stage("pool features").storage == {"pool features (float16)": 100 * 512 * 2 * 2}
    assert p.stage("train_proj").peak() == sum(terms.values())


def test_dense_validation_gradients_and_the_7b_basis():
    base = dict(model="llama-2-7b", lora_r=128, targets=ATTENTION_MODULES, pool=100_000, val=300, device="cuda")
    dense, streamed = plan(PlanConfig(**base, val_grads="dense")), plan(PlanConfig(**base))
    D = 134_217_728
    extra = dense.stage("val_grads + subspace").peak("host") - streamed.stage("val_grads + subspace").peak("host")
    assert extra == 300 * D * 4
    assert {t.name: t.bytes for t in streamed.stage("train_proj").terms}["basis"] == D * 64 * 4  # 34 GB
    # R is 4.4 TB: over the 4 GiB cache, so one 4,096-row block is held and regenerated per batch
    less = {t.name: t.bytes for t in streamed.stage("pool features").terms}
    assert less["Rademacher R block"] == 4096 * 8192 * 4
    assert streamed.stage("train_proj").peak("device") > 80 * GiB


def test_gemma_batches_shrink_under_the_logit_cap():
    p = plan(PlanConfig(model="gemma3-270m", grad_batch_size=16, max_length=256))
    logits = {t.name: t.bytes for t in p.stage("train_proj").terms}["logits"]
    assert logits == 4 * 256 * 262144 * 4 * 3  # 3 GiB / (262,144 x 12 B) = 1,024 tokens: 4 rows of 256


@pytest.mark.parametrize("argv", [["--lora-r", "0"], ["--model", "nope"], ["--device", "tpu"],
                                  ["--config", "/nonexistent/config.json"], ["--lora-targets", "q_proj,wat"],
                                  ["--mean-tokens", "999"]])
def test_cli_bad_input_exits_2(argv, capsys):
    assert main(["plan", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err


def test_cli_table_and_json(capsys, tmp_path):
    assert main(["plan", "--model", "llama-2-7b", "--lora-r", "128", "--lora-targets", "q_proj,k_proj,v_proj,o_proj",
                 "--pool", "100000", "--val", "300", "--device", "cuda", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["gradient_dim"] == 134_217_728
    assert [s["stage"] for s in out["stages"]][:3] == ["warmup", "val_grads + subspace", "train_proj"]
    cfg = tmp_path / "config.json"
    cfg.write_text((ROOT / "sample_data/tiny-lm/config.json").read_text())
    assert main(["plan", "--config", str(cfg), "--lora-r", "8"]) == 0
    assert "D = 116,736" in capsys.readouterr().out


def test_plan_config_refuses_bad_values():
    with pytest.raises(ConfigError, match="pool"):
        PlanConfig(pool=0)
    with pytest.raises(ConfigError, match="val_grads"):
        PlanConfig(val_grads="sometimes")


def test_predictions_within_25_percent_of_the_recorded_peaks():
    rec = json.loads(MEASURED.read_text())
    assert {r["model"] for r in rec["rows"]} >= {"tiny", "smollm2-135m", "gemma3-270m"}
    for r in rec["rows"]:
        p = plan(PlanConfig(**r["config"]))
        ratio = p.stage(r["stage"]).peak() / r["measured_peak_rss_bytes"]
        assert 0.75 <= ratio <= 1.25, f"{r['run']} {r['stage']}: predicted / measured = {ratio:.2f}"


def test_mirrored_constants_equal_the_code_they_model():
    """plan.py imports no torch, so it repeats a few of the engine's and LESS's sizes: they must not drift."""
    from gist_core.grads import per_example  # lazy: collecting the tests must not wait for torch
    from gist_core.methods.less import features, stages  # lazy: as above
    from gist_core.runner import plan as model  # lazy: `plan` here is the function
    assert model.FLAT_BUDGET_BYTES == per_example.FLAT_BUDGET_BYTES
    assert model.LOGITS_BUDGET_BYTES == per_example.LOGITS_BUDGET_BYTES
    assert model.LESS_BLOCK_ROWS == features.BLOCK_ROWS
    assert model.LESS_VAL_CHUNK_BYTES == stages.VAL_CHUNK_BYTES
