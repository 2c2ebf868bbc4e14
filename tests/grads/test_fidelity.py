"""The two GIST-reference behaviours offered as options: bfloat16 projection and no EOS on target examples."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import micro_select_argv


def test_tokenize_without_target_eos(tokenizer_dir):
    from transformers import AutoTokenizer

    from gist_core.data.examples import Example
    from gist_core.data.formatting import encode_pair, tokenize_examples
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    exs = [Example(id="a", prompt="say one word", response="sun"), Example(id="b", prompt="and two", response="a b")]
    with_eos = tokenize_examples(exs, tok, 64)
    without = tokenize_examples(exs, tok, 64, eos=False)
    for i, ex in enumerate(exs):
        assert with_eos.input_ids[i][-1] == tok.eos_token_id and with_eos.input_ids[i][:-1] == without.input_ids[i]
        assert tok.eos_token_id not in without.input_ids[i]
        assert without.labels[i] == with_eos.labels[i][:-1]
        ids, labels, _ = encode_pair(tok, ex.prompt, ex.response, 64, eos=False)
        assert ids == without.input_ids[i] and labels == without.labels[i]


def test_default_options_keep_earlier_keys_and_configs(micro_model_dir, micro_corpus, tmp_path):
    """Defaults leave every stage key as before (old run folders stay valid); off-default options key only
    the stages they change; an old config.json without the new fields is the same config."""
    from gist_core.config import RunConfig
    from gist_core.runner.pipeline import Run
    base = dict(model=str(micro_model_dir), train=str(micro_corpus["pool"]), target=str(micro_corpus["val"]))
    k0 = Run(RunConfig(**base), tmp_path / "a", quiet=True).keys
    k_eos = Run(RunConfig(**base, target_eos=False), tmp_path / "b", quiet=True).keys
    k_bf = Run(RunConfig(**base, proj_dtype="bfloat16"), tmp_path / "c", quiet=True).keys
    assert k0["val_grads"] == k0["warmup"]  # as before the options existed
    assert k_eos["warmup"] == k0["warmup"] and k_eos["val_grads"] != k0["val_grads"]
    assert k_eos["train_proj"] != k0["train_proj"]
    assert k_bf["val_grads"] == k0["val_grads"] and k_bf["train_proj"] != k0["train_proj"]
    old = RunConfig(**base).to_json()
    del old["proj_dtype"], old["target_eos"]
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "config.json").write_text(json.dumps(old))
    Run(RunConfig(**base), tmp_path / "d", quiet=True)  # no "different config" refusal
    with pytest.raises(Exception, match="proj_dtype"):
        RunConfig(**base, proj_dtype="float8")


def test_bfloat16_projection_is_the_rounded_product(micro_model_dir, micro_corpus, tmp_path):
    """A bfloat16 basis projects bf16-rounded gradients, module by module, summed in float32: within bf16
    rounding of the float32 projection, and exactly the naive bf16 product."""
    from gist_core.cli import main
    from gist_core.data.examples import load_examples
    from gist_core.data.formatting import tokenize_examples
    from gist_core.grads.per_example import GradientEngine
    from gist_core.model.load import load_adapter, load_base_model
    out = tmp_path / "run"
    assert main(micro_select_argv(micro_model_dir, micro_corpus, out)) == 0
    X32 = np.load(out / "train_proj.npy")[:, :-1]  # the coordinates (|g| is the last column)
    assert main(micro_select_argv(micro_model_dir, micro_corpus, out) + ["--proj-dtype", "bfloat16", "--overwrite"]) == 0
    events = [json.loads(x) for x in (out / "progress.jsonl").read_text().splitlines()]
    assert [e["status"] for e in events if e["stage"] == "warmup"][-1] == "skip"  # only the projection is redone
    X16 = np.load(out / "train_proj.npy")[:, :-1]
    rel = np.abs(X16 - X32).max() / np.abs(X32).max()
    assert 1e-5 < rel < 3e-2  # really bf16, and only bf16 rounding
    # naive: a few rows by hand at the GIST checkpoint
    from safetensors.numpy import load_file
    basis = torch.from_numpy(load_file(str(out / "checkpoints" / "ckpt-1" / "subspace.safetensors"))["basis"])
    model, tok = load_base_model(str(micro_model_dir))
    eng = GradientEngine(load_adapter(model, out / "checkpoints" / "ckpt-1").eval(), tok.pad_token_id)
    toks = tokenize_examples(load_examples(micro_corpus["pool"])[:4], tok, 256)
    g, _ = eng.flat_grads(toks.input_ids, toks.labels)
    want = torch.zeros(4, basis.shape[1])
    for b in eng.blocks:
        want += (g[:, b.offset:b.offset + b.size].bfloat16() @ basis[b.offset:b.offset + b.size].bfloat16()).float()
    np.testing.assert_allclose(X16[:4], want.numpy(), rtol=1e-6, atol=1e-7)


def test_no_target_eos_end_to_end(micro_model_dir, micro_corpus, tmp_path):
    """--no-target-eos recomputes the validation gradients (not the warm-up), and they are the gradients of
    the target examples without their end-of-sequence token."""
    from gist_core.cli import main
    from gist_core.data.examples import load_examples
    from gist_core.data.formatting import tokenize_examples
    from gist_core.grads.per_example import loop_grads
    from gist_core.model.load import load_adapter, load_base_model
    out = tmp_path / "run"
    assert main(micro_select_argv(micro_model_dir, micro_corpus, out)) == 0
    G_eos = np.load(out / "checkpoints" / "ckpt-1" / "val_grads.npy")
    assert main(micro_select_argv(micro_model_dir, micro_corpus, out) + ["--no-target-eos", "--overwrite"]) == 0
    events = [json.loads(x) for x in (out / "progress.jsonl").read_text().splitlines()]
    assert [e["status"] for e in events if e["stage"] == "warmup"][-1] == "skip"
    G = np.load(out / "checkpoints" / "ckpt-1" / "val_grads.npy")
    assert np.abs(G - G_eos).max() > 1e-4
    model, tok = load_base_model(str(micro_model_dir))
    toks = tokenize_examples(load_examples(micro_corpus["val"])[:3], tok, 256, eos=False)
    want = loop_grads(load_adapter(model, out / "checkpoints" / "ckpt-1"), toks.input_ids, toks.labels, tok.pad_token_id)
    np.testing.assert_allclose(G[:3], want.numpy(), atol=1e-5 * float(np.abs(want.numpy()).max()))
