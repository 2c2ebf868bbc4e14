"""`compare` end to end on a micro model: the table's contract, LESS and raw-cosine features against
naive one-example-at-a-time computations, resume, and the CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gist_core.config import CompareConfig, RunConfig, TrainConfig
from gist_core.errors import ConfigError
from gist_core.methods.less.config import LessConfig
from gist_core.runner.compare import run_compare
from gist_core.runner.compare_report import format_table
from gist_core.store.manifest import read_events

METHOD_KEYS = {"test_loss", "test_loss_std", "exact_match", "precision", "wall_s", "bytes"}


def _run_cfg(micro_model_dir, micro_corpus) -> RunConfig:
    return RunConfig(model=str(micro_model_dir), train=str(micro_corpus["pool"]), target=str(micro_corpus["val"]),
                     budget=0.1, rank=4, warmup_fraction=0.2, warmup=TrainConfig(epochs=2, batch_size=8))


CMP = CompareConfig(seeds=2, less=LessConfig(dim=64), train=TrainConfig(epochs=1, batch_size=8, seed=0))


@pytest.fixture(scope="module")
def compared(micro_model_dir, micro_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    rep = run_compare(_run_cfg(micro_model_dir, micro_corpus), CMP, out, quiet=True)
    return out, rep


def test_compare_json_has_every_method_both_rules_oracle_and_the_ratios(compared):
    out, rep = compared
    assert json.loads((out / "compare.json").read_text()) == json.loads(json.dumps(rep))
    rows = set(rep["methods"])
    assert rows == {"gist", "gist_subtask", "less", "less_subtask", "rawcos", "rawcos_subtask", "random", "length",
                    "embedding", "embedding_subtask", "full", "oracle"}
    for row, e in rep["methods"].items():
        assert METHOD_KEYS <= set(e), row
        assert len(e["per_seed"]) == 2
    assert rep["methods"]["oracle"]["precision"] == 1.0
    assert rep["methods"]["full"]["n_selected"] == rep["n_pool"]
    assert rep["methods"]["full"]["train_steps"] > rep["methods"]["gist"]["train_steps"]
    for key in ("compute_ratio_gist_over_less", "storage_ratio_gist_over_less"):
        assert 0 < rep[key] < 1
    # LESS stores N x checkpoints x d float16; GIST N x r_max float32
    assert rep["methods"]["less"]["bytes"] == rep["n_pool"] * 2 * 64 * 2
    assert rep["methods"]["gist"]["bytes"] == rep["n_pool"] * (rep["gist"]["r_max"] + 1) * 4  # coordinates and |g|
    # random is resampled per seed, deterministic methods are not
    assert rep["overlap"]["gist"]["gist"] == 1.0
    assert rep["train_recipe"]["epochs"] == 1 and rep["train_recipe"]["seeds"] == [0, 1]
    assert "gist" in format_table(rep) and "base (no LoRA)" in format_table(rep)


def test_stored_downstream_numbers_equal_a_plain_loop(compared, micro_model_dir, micro_corpus):
    """compare/evals/{base,random-s0,random-s1}.json and compare.json's random row against test loss and exact match
    recomputed one example at a time (tests/model/test_evaluate.py's plain loop). The downstream adapters are not stored:
    each is retrained here with the run's recipe (seeded LoRA init and Trainer: the same adapter again)."""
    from dataclasses import asdict

    import pandas as pd
    from naive_eval import TOL, naive_greedy, naive_test_loss
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from gist_core.data.examples import load_examples
    from gist_core.data.formatting import tokenize_examples
    from gist_core.methods.baselines.scores import random_selection
    from gist_core.model.load import attach_lora, load_base_model
    from gist_core.model.training import train_lora
    out, rep = compared
    run_cfg = _run_cfg(micro_model_dir, micro_corpus)
    assert rep["test"] == str(micro_corpus["test"])
    assert rep["train_recipe"]["lora"] == json.loads(json.dumps(asdict(run_cfg.lora)))
    assert {k: rep["train_recipe"][k] for k in asdict(CMP.train)} == {**asdict(CMP.train), "seed": 0}
    test, pool = load_examples(micro_corpus["test"]), load_examples(micro_corpus["pool"])
    assert [ex.id for ex in pool] == pd.read_parquet(out / "examples.parquet")["id"].tolist()

    tok = AutoTokenizer.from_pretrained(micro_model_dir)  # the loop's own tokenizer and base model, straight from HF

    def check(name, model):
        stored = json.loads((out / "compare" / "evals" / f"{name}.json").read_text())
        want, per = naive_test_loss(model, tok, test)
        assert stored["test_loss"] == pytest.approx(want, abs=TOL), name
        assert set(stored["per_subtask"]) == set(per), name
        for s, v in per.items():
            assert stored["per_subtask"][s]["loss"] == pytest.approx(v, abs=TOL), (name, s)
        # with the EOS in the mean the number moves far past the tolerance (the test split has one-token answers
        # and the same count per subtask, so the pooling mutations are tests/model/test_evaluate.py's to catch)
        assert abs(naive_test_loss(model, tok, test, include_eos=True)[0] - stored["test_loss"]) > 100 * TOL
        preds = [naive_greedy(model, tok, ex) for ex in test]
        assert [e["pred"] for e in stored["examples"]] == preds[: len(stored["examples"])], name
        em = {s: float(np.mean([p == ex.response.strip() for p, ex in zip(preds, test) if ex.subtask == s])) for s in per}
        assert {s: v["exact_match"] for s, v in stored["per_subtask"].items()} == em, name
        assert stored["exact_match"] == pytest.approx(float(np.mean(list(em.values()))), abs=1e-12)
        return want

    base_loss = check("base", AutoModelForCausalLM.from_pretrained(micro_model_dir, dtype=torch.float32))
    losses = []
    for s in range(CMP.seeds):
        stored = json.loads((out / "compare" / "evals" / f"random-s{s}.json").read_text())
        from peft import PeftModel  # the adapter the number came from, read back as saved
        peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(micro_model_dir, dtype=torch.float32),
                                         stored["adapter"])
        losses.append(check(f"random-s{s}", peft))
        assert abs(losses[-1] - base_loss) > 10 * TOL  # the trained adapter is in the number (3 steps: ~1e-3)
        if s == 0:  # and it is the adapter finetune's recipe trains on the seed's random rows
            model, run_tok = load_base_model(str(micro_model_dir), device="cpu")
            again = attach_lora(model, run_cfg.lora, seed=s)
            idx = random_selection(len(pool), rep["n_selected"], run_cfg.seed + s)
            toks = tokenize_examples([pool[i] for i in idx], run_tok, run_cfg.max_length)
            train_lora(again, toks.input_ids, toks.labels, run_tok.pad_token_id,
                       TrainConfig(**{**asdict(CMP.train), "seed": s}))
            assert check(f"random-s{s}", again) == pytest.approx(losses[-1], abs=TOL)
    row = rep["methods"]["random"]
    assert row["test_loss"] == pytest.approx(float(np.mean(losses)), abs=TOL)
    assert [r["test_loss"] for r in row["per_seed"]] == pytest.approx(losses, abs=TOL)


def test_less_features_equal_a_naive_loop(compared, micro_model_dir):
    """Row i of compare/less/ckpt-E.npy == normalise(R^T adam_direction(loop gradient, stored moments))."""
    import pandas as pd

    from gist_core.data.formatting import tokenize_examples
    from gist_core.grads.per_example import loop_grads, param_blocks
    from gist_core.methods.less.features import RademacherProjector, adam_direction, read_moments
    from gist_core.model.load import load_adapter, load_base_model
    out, rep = compared
    base, tok = load_base_model(str(micro_model_dir), device="cpu")
    model = load_adapter(base, out / "checkpoints" / "ckpt-2")
    frame = pd.read_parquet(out / "examples.parquet")
    rows = [0, 7, 100]
    from gist_core.data.examples import Example
    exs = [Example(id=frame.id[i], prompt=frame.prompt[i], response=frame.response[i]) for i in rows]
    toks = tokenize_examples(exs, tok, 256)
    g = loop_grads(model, toks.input_ids, toks.labels, tok.pad_token_id)
    blocks = param_blocks(model)
    mom = read_moments(out / "checkpoints" / "ckpt-2", [b.name for b in blocks], [b.size for b in blocks])
    P = RademacherProjector(g.shape[1], 64, seed=0).project(adam_direction(g, mom.m, mom.v))
    expect = (P / P.norm(dim=1, keepdim=True)).numpy()
    stored = np.load(out / "compare" / "less" / "ckpt-2.npy")[rows].astype(np.float32)
    np.testing.assert_allclose(stored, expect, atol=2e-3)  # float16 storage


def test_rawcos_from_gist_projections_equals_a_naive_loop(compared, micro_model_dir):
    """r_max (64) >= N_v: GIST's store spans every validation gradient, so raw cosine is read from it (no second
    pass over the pool) and must equal cos(g, mean of the subtask's validation gradients) from plain autograd."""
    import pandas as pd

    from gist_core.data.examples import Example
    from gist_core.data.formatting import tokenize_examples
    from gist_core.grads.per_example import loop_grads
    from gist_core.model.load import load_adapter, load_base_model
    out, _ = compared
    base, tok = load_base_model(str(micro_model_dir), device="cpu")
    model = load_adapter(base, out / "checkpoints" / "ckpt-1")  # the GIST checkpoint of this config
    frame = pd.read_parquet(out / "examples.parquet")
    rows = [3, 50]
    exs = [Example(id=frame.id[i], prompt=frame.prompt[i], response=frame.response[i]) for i in rows]
    toks = tokenize_examples(exs, tok, 256)
    g = loop_grads(model, toks.input_ids, toks.labels, tok.pad_token_id).double()
    G = torch.from_numpy(np.load(out / "checkpoints" / "ckpt-1" / "val_grads.npy")).double()
    rep = json.loads((out / "compare.json").read_text())
    assert rep["rawcos_from"].startswith("GIST's projections") and not (out / "compare" / "rawcos.npy").exists()
    target = pd.read_parquet(out / "target.parquet")
    scores = pd.read_parquet(out / "compare" / "scores.parquet")
    for sub in dict.fromkeys(target["subtask"]):
        c = G[torch.from_numpy((target["subtask"] == sub).to_numpy())].mean(0)
        want = (g @ c / (g.norm(dim=1) * c.norm())).numpy()
        np.testing.assert_allclose(scores[f"col:rawcos:{sub}"].to_numpy()[rows], want, atol=1e-5)


def test_rerun_recomputes_nothing(compared, micro_model_dir, micro_corpus):
    out, rep = compared
    n_before = len(read_events(out))
    rep2 = run_compare(_run_cfg(micro_model_dir, micro_corpus), CMP, out, quiet=True)
    new = read_events(out)[n_before:]
    started = {e["stage"] for e in new if e["status"] == "start"}
    assert started <= {"data", "scores"}, started  # data is re-read, scores re-written; no gradients, no training
    for row in rep["methods"]:
        assert rep2["methods"][row]["test_loss"] == rep["methods"][row]["test_loss"]


def test_gist_at_both_aggregations_on_the_same_projections(compared, micro_model_dir, micro_corpus):
    """gist_mean / gist_max rows cost no gradients and equal a naive numpy rescoring of the stored projections:
    subtask means of the validation coordinates, or every validation example, each its own direction, under the
    run's (default) norm-aware score: the projected gradient over its whole norm |g|."""
    import pandas as pd

    from gist_core.methods.gist.artefacts import load_subspace
    from gist_core.store.artefacts import load_npy
    out, _ = compared
    n_before = len(read_events(out))
    cmp = CompareConfig(methods=("gist", "gist_mean", "gist_max"), seeds=1, downstream=False)
    rep = run_compare(_run_cfg(micro_model_dir, micro_corpus), cmp, out, quiet=True)
    started = {e["stage"] for e in read_events(out)[n_before:] if e["status"] == "start"}
    assert started <= {"data", "scores"}, started
    assert {"gist_max", "gist_max_subtask", "gist_mean", "gist_mean_subtask"} <= set(rep["methods"])
    stored_rows = load_npy(out / "train_proj.npy", np.float32, ndim=2).astype(np.float64)
    X, norms = stored_rows[:, :4], stored_rows[:, -1]
    Y = load_subspace(out / "checkpoints" / "ckpt-1" / "subspace.safetensors").val_coords.astype(np.float64)[:, :4]
    target = pd.read_parquet(out / "target.parquet")
    means = np.stack([Y[(target["subtask"] == s).to_numpy()].mean(0) for s in dict.fromkeys(target["subtask"])])

    def naive_max_cosine(D):
        return np.array([max(float(x @ d) / (n * np.linalg.norm(d)) for d in D) for x, n in zip(X, norms)])

    stored = pd.read_parquet(out / "compare" / "scores.parquet")
    np.testing.assert_allclose(stored["score:gist_max"], naive_max_cosine(Y), atol=1e-5)
    np.testing.assert_allclose(stored["score:gist_mean"], naive_max_cosine(means), atol=1e-5)
    np.testing.assert_allclose(stored["score:gist"], stored["score:gist_mean"], atol=0)  # the run's own: subtask mean
    gm, g = rep["methods"]["gist_max"], rep["methods"]["gist"]  # same features, same cost: GIST's stages are charged
    assert (gm["flops"], gm["bytes"]) == (g["flops"], g["bytes"]) and g["flops"] > 0 and g["bytes"] > 0
    assert set(gm["stage_wall_s"]) == set(g["stage_wall_s"]) and "scoring" in g["stage_wall_s"]


def test_rules_apply_to_every_score_based_family():
    from gist_core.methods.registry import row_label
    from gist_core.methods.scoring import split_row
    cmp = CompareConfig(methods=("gist", "less", "rawcos", "random", "length", "gist_max"), rules=("global", "quantile"))
    assert cmp.rows(True) == ["gist", "gist_quantile", "less", "less_quantile", "rawcos", "rawcos_quantile", "random",
                              "length", "gist_max", "gist_max_quantile", "oracle"]
    assert split_row("gist_max_subtask") == ("gist_max", "subtask") and split_row("gist_max") == ("gist_max", "global")
    assert row_label("rawcos_zscore") == "raw-gradient cosine, z-scored max"
    assert row_label("less") == "LESS, global top-k" and row_label("random") == "random"
    with pytest.raises(ConfigError, match="unknown selection rule"):
        CompareConfig(rules=("median",))


def test_unknown_method_is_refused():
    with pytest.raises(ConfigError, match="unknown method"):
        CompareConfig(methods=("gist", "bm25"))


def test_cli_compare_errors_are_one_line(capsys, tmp_path):
    from gist_core.cli import main
    assert main(["compare", "--out", str(tmp_path / "r"), "--methods", "gist,nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown method(s) nope") and "\n" not in err
