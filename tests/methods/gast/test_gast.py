"""GAST: the selection rule's distribution, per-layer gradients against a naive loop, the two implementations
against each other, and a step that selects every example against a plain LoRA step."""
import copy

import numpy as np
import pytest
import torch
from conftest import randomise_lora_b
from repo import ROOT

from gist_core.methods.gast import selection
from gist_core.methods.gast.selection import layer_groups, probabilities, select_counts, standardise


def test_layer_groups_follow_the_transformer_layers():
    names = ["base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight",
             "base_model.model.model.layers.0.mlp.down_proj.lora_B.default.weight",
             "base_model.model.model.layers.11.mlp.up_proj.lora_A.default.weight", "lm_head.lora_A.weight"]
    layers, index = layer_groups(names)
    assert layers == ["layers.0", "layers.11", "lm_head.lora_A.weight"] and index == [0, 0, 1, 2]


def test_standardised_softmax_equals_the_formula():
    a = torch.tensor([[1.0, 5.0], [2.0, 5.0], [4.0, 5.0]])
    z = (a[:, 0] - a[:, 0].mean()) / a[:, 0].std(unbiased=False)
    assert torch.allclose(standardise(a)[:, 0], z.double()) and torch.all(standardise(a)[:, 1] == 0)
    p = probabilities(a, temperature=0.5)
    assert torch.allclose(p[:, 0], torch.softmax(z.double() / 0.5, 0))
    assert torch.allclose(p[:, 1], torch.full((3,), 1 / 3).double())


def test_stochastic_selection_follows_the_softmax():
    a = torch.tensor([[0.1], [2.0], [-1.0], [0.5], [3.0], [0.0]])
    p = probabilities(a)[:, 0].numpy()
    gen = torch.Generator().manual_seed(0)
    n = 20000
    one = sum(select_counts(a, 1, "stochastic", gen)[:, 0].numpy() for _ in range(n)) / n  # K = 1: P(i) = p_i
    assert np.abs(one - p).max() < 4 * np.sqrt(p * (1 - p) / n).max()
    rep = sum(select_counts(a, 8, "stochastic", gen, replacement=True)[:, 0].numpy() for _ in range(4000)) / 4000
    assert np.abs(rep - 8 * p).max() < 0.1  # with replacement: expected counts K·p
    wo = select_counts(a, 4, "stochastic", gen)
    assert wo.sum() == 4 and wo.max() == 1  # without replacement: K distinct examples


def test_topk_random_and_all():
    a = torch.tensor([[0.1, 9.0], [2.0, 1.0], [-1.0, 3.0], [0.5, 0.0]])
    gen = torch.Generator().manual_seed(1)
    top = select_counts(a, 2, "topk", gen)
    assert top[:, 0].tolist() == [0, 1, 0, 1] and top[:, 1].tolist() == [1, 0, 1, 0]
    freq = sum(select_counts(a, 2, "random", gen) for _ in range(4000)) / 4000
    assert torch.allclose(freq, torch.full_like(freq, 0.5), atol=0.04)
    assert torch.all(select_counts(a, 2, "all", gen) == 1)
    assert torch.allclose(selection.weights(top).sum(0), torch.ones(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="selection rule must be one of"):
        select_counts(a, 2, "greedy", gen)


# ----------------------------------------------------------------------------- on the micro model
@pytest.fixture(scope="module")
def lora_model(micro_model_dir):
    from gist_core.config import LoraSettings
    from gist_core.model.load import attach_lora, load_base_model
    model, tok = load_base_model(str(micro_model_dir), "float32", "cpu")
    return randomise_lora_b(attach_lora(model, LoraSettings(r=4), seed=0), seed=3, scale=0.3), tok


def rows_of(tok, corpus_rows, n):
    from gist_core.data.formatting import encode_pair
    enc = [encode_pair(tok, r["prompt"], r["response"], 64, None) for r in corpus_rows[:n]]
    return [e[0] for e in enc], [e[1] for e in enc]


def test_per_layer_gradients_and_scores_equal_a_naive_loop(lora_model, micro_corpus):
    from gist_core.grads.per_example import GradientEngine, loop_grads, pad_batch
    from gist_core.methods.gast.step import scores_from_captures, scores_from_grads, support_gradient
    model, tok = lora_model
    ids, labels = rows_of(tok, micro_corpus["rows"], 6)
    engine = GradientEngine(model, tok.pad_token_id)
    layers, li = layer_groups([b.name for b in engine.blocks])
    batch = pad_batch(ids, labels, tok.pad_token_id, "cpu")
    grads, _ = engine.padded_module_grads(*batch)
    naive = loop_grads(model, ids, labels, tok.pad_token_id).double()  # one example at a time
    ghat = support_gradient(engine, *pad_batch(ids[:3], labels[:3], tok.pad_token_id, "cpu"))
    ghat_naive = naive[:3].mean(0)
    a_naive = np.zeros((6, len(layers)))
    for b, g in zip(engine.blocks, grads):
        sl = slice(b.offset, b.offset + b.size)
        assert torch.allclose(g.reshape(6, -1).double(), naive[:, sl], rtol=1e-4, atol=1e-6)
        a_naive[:, li[engine.blocks.index(b)]] += (naive[:, sl] @ ghat_naive[sl]).numpy()
    assert np.allclose(scores_from_grads(grads, ghat, li, len(layers)).numpy(), a_naive, rtol=1e-4, atol=1e-8)
    xs, ds, _ = engine.captures(*batch)
    assert np.allclose(scores_from_captures(xs, ds, ghat, li, len(layers)).numpy(), a_naive, rtol=1e-4, atol=1e-8)


def train_steps(model, tok, ids, labels, steps, **gast_kw):
    from gist_core.config import TrainConfig
    from gist_core.methods.gast.config import GastConfig
    from gist_core.methods.gast.trainer import train_gast
    m = copy.deepcopy(model)
    recipe = TrainConfig(epochs=1, lr=1e-2, batch_size=8, seed=0, warmup_ratio=0.0)
    summary, log = train_gast(m, ids, labels, tok.pad_token_id, recipe, GastConfig(**gast_kw), (ids, labels),
                              max_steps=steps)
    return {n: p.detach().clone() for n, p in m.named_parameters() if p.requires_grad}, log


def test_selecting_every_example_is_a_plain_lora_step(lora_model, micro_corpus):
    model, tok = lora_model
    ids, labels = rows_of(tok, micro_corpus["rows"], 16)
    plain, _ = train_steps(model, tok, ids, labels, 1, method="lora")
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert max(float((plain[n] - before[n]).abs().max()) for n in plain) > 1e-4  # the step moved something
    for impl in ("cached", "twopass"):
        gast, log = train_steps(model, tok, ids, labels, 1, method="gast", k_select=8, implementation=impl)
        assert max(float((gast[n] - plain[n]).abs().max()) for n in plain) <= 1e-6, impl
        assert log.selected.sum() == 8 * log.selected.shape[0]


def test_cached_and_twopass_train_alike_under_one_rng(lora_model, micro_corpus):
    model, tok = lora_model
    ids, labels = rows_of(tok, micro_corpus["rows"], 48)
    a, log_a = train_steps(model, tok, ids, labels, 4, method="gast", k_select=3, implementation="cached")
    b, log_b = train_steps(model, tok, ids, labels, 4, method="gast", k_select=3, implementation="twopass")
    assert np.array_equal(log_a.selected, log_b.selected)  # the same selections, step by step
    assert max(float((a[n] - b[n]).abs().max()) for n in a) <= 1e-6
    np.testing.assert_allclose(np.stack(log_a.cosines), np.stack(log_b.cosines), atol=1e-4)
    plain, _ = train_steps(model, tok, ids, labels, 4, method="lora")
    assert max(float((a[n] - plain[n]).abs().max()) for n in a) > 1e-4  # selecting 3 of 8 is not plain LoRA
    assert (log_a.selected <= log_a.seen[None]).all() and log_a.seen.sum() == 32
    assert (log_a.selected.sum(1) == 4 * 3).all()  # every layer: K = 3 per step


# ----------------------------------------------------------------------------- gist-lab train, end to end
def micro_train_cfg(micro_model_dir, micro_corpus, **gast):
    from gist_core.config import TrainConfig
    from gist_core.methods.gast.config import GastConfig, TrainRunConfig
    return TrainRunConfig(model=str(micro_model_dir), train=str(micro_corpus["pool"]), target=str(micro_corpus["val"]),
                          test=str(micro_corpus["test"]), pool_size=48, max_length=64, n_em=2,
                          recipe=TrainConfig(epochs=1, lr=5e-3, batch_size=8, seed=0),
                          gast=GastConfig(**{"k_select": 4, "k_support": 2, **gast}))


def test_train_command_stores_what_an_independent_evaluation_finds(tmp_path, micro_model_dir, micro_corpus, monkeypatch):
    from peft import PeftModel

    from gist_core.cli import main as cli_main
    from gist_core.data.examples import load_examples
    from gist_core.methods.gast.artefacts import load_selection, load_train_report
    from gist_core.methods.gast.stages import run_train
    from gist_core.model.evaluate import test_losses
    from gist_core.model.load import load_base_model
    out = tmp_path / "gast"
    argv = ["train", "--out", str(out), "--model", str(micro_model_dir), "--train", str(micro_corpus["pool"]),
            "--target", str(micro_corpus["val"]), "--test", str(micro_corpus["test"]), "--pool-size", "48",
            "--max-length", "64", "--n-em", "2", "--epochs", "1", "--lr", "5e-3", "--batch-size", "8", "--seed", "0",
            "--k-select", "4", "--k-support", "2", "--quiet"]
    assert cli_main(argv) == 0
    rep = load_train_report(out)
    assert rep["key"] == run_train(micro_train_cfg(micro_model_dir, micro_corpus), out)["key"]  # flags = config
    assert rep["steps"] == 6 and rep["n_train"] == 48 and rep["method"] == "gast"
    arrays, layers = load_selection(out)
    assert layers == rep["layers"] and arrays["selected"].shape == (len(layers), 48)
    assert (arrays["selected"].sum(1) == 6 * 4).all() and arrays["seen"].sum() == 48
    assert arrays["cosines"].shape == (6, 8, len(layers)) and np.nanmax(np.abs(arrays["cosines"])) <= 1 + 1e-5
    np.testing.assert_allclose(arrays["loss"], rep["loss_curve"])
    base, tok = load_base_model(str(micro_model_dir), "float32", "cpu")
    model = PeftModel.from_pretrained(base, str(out / "adapter")).eval()
    tests = load_examples(micro_corpus["test"])
    losses = test_losses(model, tok, tests, max_length=64)
    for s, v in rep["per_subtask"].items():
        want = np.mean([x for x, ex in zip(losses, tests) if ex.subtask == s])
        assert v["loss"] == pytest.approx(float(want), rel=1e-5)

    import gist_core.methods.gast.stages as stages
    monkeypatch.setattr(stages, "train_gast", lambda *a, **k: pytest.fail("a finished run was retrained"))
    assert cli_main(argv) == 0  # the same config: skipped


def test_ablation_table_aggregates_its_members_and_the_layers_page_shows_it(tmp_path, micro_model_dir, micro_corpus,
                                                                            monkeypatch):
    import json

    from fake_run import plotly_array
    from streamlit.testing.v1 import AppTest

    from gist_core.methods.gast.artefacts import load_ablation_report, load_selection, load_train_report
    from gist_core.methods.gast.stages import run_ablation
    from gist_core.store.layout import TrainLayout
    folder = tmp_path / "abl"
    cfg = micro_train_cfg(micro_model_dir, micro_corpus)
    rep = run_ablation(cfg, folder, seeds=2, runs=(("gast", "cached"), ("lora", "cached")))
    assert load_ablation_report(folder)["table"] == json_round(rep["table"])
    for row in rep["table"].values():
        members = [load_train_report(folder / m) for m in row["members"]]
        assert [m["seed"] for m in members] == [0, 1]
        assert row["test_loss"] == pytest.approx(np.mean([m["test_loss"] for m in members]))
    lora = load_train_report(TrainLayout(folder).member("lora", "cached", 0).root)
    arrays, _ = load_selection(TrainLayout(folder).member("lora", "cached", 0).root)
    assert (arrays["selected"] == arrays["seen"][None]).all() and lora["held_bytes_per_step"] == 0

    monkeypatch.setenv("GIST_LAB_RUNS", str(tmp_path))
    at = AppTest.from_file(str(ROOT / "pages" / "9_Layers.py"), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    assert table["test loss"].round(6).tolist() == [round(v["test_loss"], 6) for v in rep["table"].values()]
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    heat = next(c for c in charts if c["layout"]["title"]["text"].startswith("Selection frequency"))["data"][0]
    member = TrainLayout(folder).member("gast", "cached", 0).root
    sel, layers = load_selection(member)
    assert heat["y"] == layers
    z = plotly_array(heat["z"])
    assert z.shape == (len(layers), int((sel["seen"] > 0).sum()))
    assert np.isclose(np.sort(z.ravel()), np.sort((sel["selected"] / np.maximum(sel["seen"], 1))[:, sel["seen"] > 0]
                                                  .ravel())).all()
    assert any(c["layout"]["title"]["text"].startswith("Per-layer cosine") for c in charts)
    at.radio(key="layers_sort").set_value("frequency").run()
    at.selectbox(key="layers_member").set_value("lora-cached-s1").run()
    assert not at.exception, at.exception


def json_round(obj):
    import json
    return json.loads(json.dumps(obj))


def test_train_config_errors_are_one_line():
    from gist_core.config import TrainConfig
    from gist_core.errors import ConfigError
    from gist_core.methods.gast.config import GastConfig, TrainRunConfig
    with pytest.raises(ConfigError, match="method must be one of gast, topk, random, lora, got 'greedy'"):
        GastConfig(method="greedy")
    with pytest.raises(ConfigError, match="k_select 32 exceeds the batch size 16"):
        TrainRunConfig(gast=GastConfig(k_select=32), recipe=TrainConfig(batch_size=16))
    with pytest.raises(ConfigError, match="support must be train or target"):
        GastConfig(support="val")
