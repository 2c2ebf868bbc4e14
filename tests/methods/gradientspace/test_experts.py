"""GradientSpace experts: the router, the ELREA weights, the adapter bank and the combined decoding against naive
loops; the stage end to end against an independent evaluation of the adapters it stored."""
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import randomise_lora_b
from repo import ROOT

from gist_core.methods.gradientspace import ensemble
from gist_core.methods.gradientspace.router import ROUTERS, PromptRouter, cluster_skills, confusion, routing_accuracy


def planted(n_per=30, k=4, d=8, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 3
    X = np.concatenate([c + rng.normal(size=(n_per, d)) for c in centres]) * 5 + 2  # not standardised
    return X, np.repeat(np.arange(k) * 3 + 1, n_per)  # cluster ids that are not 0..k-1


def test_config_names_match_the_modules_they_validate_for():
    from gist_core.methods.gradientspace.cluster_stage import METHODS
    from gist_core.methods.gradientspace.config import EXPERT_CLUSTERINGS, EXPERT_ROUTERS
    assert EXPERT_CLUSTERINGS == METHODS and EXPERT_ROUTERS == ROUTERS


@pytest.mark.parametrize("kind", ["logreg", "mlp"])
def test_router_routes_to_the_naive_argmax_and_agrees_with_scikit_learn(kind):
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    X, y = planted()
    router = PromptRouter.fit(X, y, kind, seed=0)
    Q = X[::7] + np.random.default_rng(1).normal(size=X[::7].shape) * 4
    naive = []
    for q in Q:  # one query at a time: standardise, layer by layer, argmax by hand
        h = [(q[i] - router.mean[i]) / router.scale[i] for i in range(len(q))]
        for li, (W, b) in enumerate(zip(router.weights, router.biases)):
            h = [sum(h[i] * W[i, j] for i in range(len(h))) + b[j] for j in range(W.shape[1])]
            if li < len(router.weights) - 1:
                h = [max(v, 0.0) for v in h]
        naive.append(int(router.classes[max(range(len(h)), key=lambda j: h[j])]))
    assert router.route(Q).tolist() == naive
    Z, Zq = (X - X.mean(0)) / X.std(0), (Q - X.mean(0)) / X.std(0)
    clf = (LogisticRegression(C=1.0, max_iter=2000, random_state=0) if kind == "logreg"
           else MLPClassifier(hidden_layer_sizes=(64,), max_iter=500, random_state=0)).fit(Z, y)
    assert router.route(Q).tolist() == clf.predict(Zq).tolist()


def test_two_cluster_router_keeps_both_classes():
    X, y = planted(k=2, seed=3)
    r = PromptRouter.fit(X, y, "logreg")
    assert r.scores(X).shape == (len(X), 2) and set(r.route(X).tolist()) == {1, 4}
    assert (r.route(X) == y).mean() > 0.95


def test_router_round_trips_through_the_store(tmp_path):
    from gist_core.store.artefacts import load_tensors, save_tensors
    X, y = planted(seed=4)
    for kind in ROUTERS:
        r = PromptRouter.fit(X, y, kind)
        save_tensors(tmp_path / f"{kind}.safetensors", r.arrays(), {"router": kind})
        back = PromptRouter.from_arrays(load_tensors(tmp_path / f"{kind}.safetensors")[0])
        assert np.array_equal(back.scores(X), r.scores(X)) and np.array_equal(back.route(X), r.route(X))
    with pytest.raises(ValueError, match="router must be one of logreg, mlp"):
        PromptRouter.fit(X, y, "svm")


def test_routing_metrics_equal_naive_counts():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 3, size=30)
    truth = [["a", "b", "c", "d"][t] for t in rng.integers(0, 4, size=30)]
    skill_of = cluster_skills(labels, truth)
    for c in range(3):
        members = [truth[i] for i in range(30) if labels[i] == c]
        assert members.count(skill_of[c]) == max(members.count(s) for s in set(members))
    chosen, qtruth = rng.integers(0, 3, size=20), [["a", "b", "c", "d"][t] for t in rng.integers(0, 4, size=20)]
    assert routing_accuracy(chosen, qtruth, skill_of) == pytest.approx(
        sum(skill_of[int(c)] == t for c, t in zip(chosen, qtruth)) / 20)
    M = confusion(chosen, qtruth, ["a", "b", "c", "d"], [0, 1, 2])
    for si, s in enumerate("abcd"):
        for c in range(3):
            assert M[si, c] == sum(1 for x, t in zip(chosen, qtruth) if x == c and t == s)


def test_oracle_routes_to_the_cluster_with_most_rows_of_the_skill():
    from gist_core.methods.gradientspace.router import oracle_routes
    labels = np.array([0, 0, 1, 1, 1, 2, 2, 5])
    truth = ["a", "a", "a", "b", "b", "a", "c", "c"]
    got = oracle_routes(labels, truth, ["a", "b", "c", "zz"], fallback=np.array([9, 9, 9, 7]))
    assert got.tolist() == [0, 1, 2, 7]  # a: c0 has 2 (c1, c2 one each); b: c1; c: tie c2/c5 → lower id; zz: fallback


def test_ensemble_weights_equal_a_naive_loop():
    rng = np.random.default_rng(6)
    F, labels = rng.normal(size=(40, 5)), rng.integers(0, 3, size=40) * 2
    Q = rng.normal(size=(4, 5))
    clusters, tau = [0, 2, 4], 0.7
    cents = ensemble.centroids(F, labels, clusters)
    W = ensemble.weights(Q, cents, *ensemble.member_stats(F, labels, cents, clusters), temperature=tau)

    def unit(v):
        return v / np.sqrt(sum(x * x for x in v))
    for qi, q in enumerate(Q):
        z = []
        for c in clusters:
            members = [unit(F[i]) for i in range(40) if labels[i] == c]
            cent = unit(sum(members) / len(members))
            cos = [float(m @ cent) for m in members]
            mu, sd = np.mean(cos), np.std(cos)
            z.append((float(unit(q) @ cent) - mu) / sd / tau)
        e = [np.exp(v - max(z)) for v in z]
        np.testing.assert_allclose(W[qi], [x / sum(e) for x in e], rtol=1e-10)


# ----------------------------------------------------------------------------- the adapter bank and decoding
@pytest.fixture(scope="module")
def two_adapters(tmp_path_factory, micro_model_dir):
    """Two LoRA adapters on the micro model with non-zero B (a fresh adapter is the base model)."""
    from gist_core.config import LoraSettings
    from gist_core.model.load import attach_lora, load_base_model
    out = tmp_path_factory.mktemp("adapters")
    paths = {}
    for seed, name in enumerate(["a", "b"]):
        model, _ = load_base_model(str(micro_model_dir), "float32", "cpu")
        peft = randomise_lora_b(attach_lora(model, LoraSettings(r=4), seed=seed), seed=10 + seed, scale=0.5)
        peft.save_pretrained(out / name)
        paths[name] = out / name
    return paths


def fresh(micro_model_dir, path=None):
    from peft import PeftModel

    from gist_core.model.load import load_base_model
    base, tok = load_base_model(str(micro_model_dir), "float32", "cpu")
    return (PeftModel.from_pretrained(base, str(path)).eval() if path else base.eval()), tok


def prompts_of(tok, n=5):
    texts = ["list: sun cup hill. give the first word", "a b c", "return the key of k1 in k1=v1 k2=v2 please now",
             "count: one two", "x"][:n]
    return [tok(t, add_special_tokens=False)["input_ids"] for t in texts]


def test_adapter_bank_equals_each_adapter_loaded_on_its_own(micro_model_dir, two_adapters):
    from gist_core.model.mixture import AdapterBank
    base, tok = fresh(micro_model_dir)
    bank = AdapterBank(base, two_adapters)
    x = torch.tensor([prompts_of(tok)[0]])
    with torch.no_grad():
        for name, path in two_adapters.items():
            alone, _ = fresh(micro_model_dir, path)
            assert torch.allclose(bank(name, input_ids=x).logits, alone(input_ids=x).logits, atol=1e-5)
        plain, _ = fresh(micro_model_dir)
        assert torch.allclose(bank(None, input_ids=x).logits, plain(input_ids=x).logits, atol=1e-5)
        assert not torch.allclose(bank("a", input_ids=x).logits, bank("b", input_ids=x).logits, atol=1e-3)


def test_one_hot_decode_equals_hugging_face_generate(micro_model_dir, two_adapters):
    from gist_core.model.mixture import AdapterBank, decode
    base, tok = fresh(micro_model_dir)
    bank = AdapterBank(base, two_adapters)
    prompts = prompts_of(tok)
    order = [None, "a", "b"]
    W = np.zeros((len(prompts), 3))
    W[:, 2] = 1.0
    got = decode(bank, order, W, prompts, tok, 6, batch_size=3)
    alone, _ = fresh(micro_model_dir, two_adapters["b"])
    want = []
    for p in prompts:  # one prompt at a time, no padding: generate's own greedy search
        g = alone.generate(input_ids=torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                           max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        want.append(tok.decode(g[0, len(p):], skip_special_tokens=True).strip())
    assert got == want


def naive_mixed_logits(models, weights, seq):
    with torch.no_grad():
        return sum(w * m(input_ids=torch.tensor([seq])).logits[0].float() for m, w in zip(models, weights) if w)


def test_ensemble_decode_and_loss_equal_a_naive_mixture_without_cache(micro_model_dir, two_adapters):
    from gist_core.model.mixture import AdapterBank, decode, rule_losses
    base, tok = fresh(micro_model_dir)
    bank = AdapterBank(base, two_adapters)
    models = [fresh(micro_model_dir)[0], fresh(micro_model_dir, two_adapters["a"])[0],
              fresh(micro_model_dir, two_adapters["b"])[0]]
    prompts = prompts_of(tok)
    rng = np.random.default_rng(7)
    W = np.c_[np.zeros(len(prompts)), rng.dirichlet([1, 1], size=len(prompts))]  # base weight 0: two experts mixed
    got = decode(bank, [None, "a", "b"], W, prompts, tok, 5, batch_size=2)
    for p, w, answer in zip(prompts, W, got):
        seq, new = list(p), []
        for _ in range(5):  # the whole sequence every step, each adapter separately, logits mixed by hand
            t = int(naive_mixed_logits(models, w, seq)[-1].argmax())
            if t == tok.eos_token_id:
                break
            seq.append(t)
            new.append(t)
        assert answer == tok.decode(new, skip_special_tokens=True).strip()
    # answer-token loss of the mixture, per example, against cross-entropy written out
    ids = [p + [5, 6, 7, tok.eos_token_id] for p in prompts]
    labels = [[-100] * len(p) + [5, 6, 7, tok.eos_token_id] for p in prompts]
    rules = {"mix": W, "b": np.tile([0.0, 0.0, 1.0], (len(prompts), 1))}
    losses = rule_losses(bank, [None, "a", "b"], rules, ids, labels, tok.pad_token_id, batch_size=2)
    for r, M in rules.items():
        for i in range(len(ids)):
            logits = naive_mixed_logits(models, M[i], ids[i])
            logp = torch.log_softmax(logits, -1)
            nll = [-float(logp[t - 1, ids[i][t]]) for t in range(1, len(ids[i])) if labels[i][t] != -100]
            assert losses[r][i] == pytest.approx(sum(nll) / len(nll), rel=1e-4)


# ----------------------------------------------------------------------------- the stage, end to end
def expert_cfg(test_path, **kw):
    from gist_core.config import TrainConfig
    from gist_core.methods.gradientspace.config import ExpertConfig
    return ExpertConfig(**{**dict(seeds=1, train=TrainConfig(epochs=1, lr=5e-3, seed=0), per_skill=2, per_subtask=2,
                                  n_em=2, latency_queries=1, tests=(str(test_path),)), **kw})


@pytest.fixture(scope="module")
def experts_run(tmp_path_factory, micro_model_dir, micro_corpus):
    from gist_core.config import RunConfig
    from gist_core.methods.gradientspace.cluster_stage import run_cluster
    from gist_core.methods.gradientspace.config import ClusterConfig
    from gist_core.methods.gradientspace.experts_stage import run_experts
    from gist_core.runner.pipeline import run_select
    out = tmp_path_factory.mktemp("experts-run")
    cfg = RunConfig(model=str(micro_model_dir), train=str(micro_corpus["pool"]), target=str(micro_corpus["val"]),
                    budget=0.1, rank=4, r_max=8, max_length=64, seed=0, grad_batch_size=8)
    run_select(cfg, out, quiet=True)
    run_cluster(out, ClusterConfig(n_clusters=3, rank=6, sketch_size=48, pool_size=40, elrea_dim=16, batch_size=8,
                                   seed=0), quiet=True)
    rep = run_experts(out, expert_cfg(micro_corpus["test"]), quiet=True)
    return out, rep


def group_means(groups, values):
    by = defaultdict(list)
    for g, v in zip(groups, values):
        by[g].append(float(v))
    return {g: float(np.mean(v)) for g, v in by.items()}


def test_stored_losses_equal_an_independent_evaluation_of_the_stored_adapters(experts_run, micro_model_dir,
                                                                              micro_corpus):
    from gist_core.methods.gradientspace.experts_stage import Experts, load_experts_report
    from gist_core.model.evaluate import test_losses
    from gist_core.store.layout import RunLayout
    run, rep = experts_run
    assert load_experts_report(run) == json.loads(json.dumps(rep))  # the report round-trips
    assert set(rep["table"]) == {"base", "single", "gradientspace-routed", "gradientspace-oracle", "elrea-routed",
                                 "elrea-oracle", "elrea-ensemble"}
    lay = RunLayout(run)
    n_rows = len(np.load(lay.clusters_array("rows")))
    assert rep["steps"]["single"] == -(-n_rows // 16)  # one epoch of batches of 16
    sizes = rep["routing"]["gradientspace"]["sizes"]
    assert rep["steps"]["gradientspace"]["max"] == -(-max(sizes) // 16)
    stored = json.loads(lay.experts_eval(0).read_text())["rules"]
    tests = Experts.open(run, expert_cfg(micro_corpus["test"]), quiet=True).tests()
    groups = [ex.subtask for ex in tests]
    assert {g.split("/")[0] for g in groups} == {Path(micro_corpus["test"]).parent.name, "pool"}
    model, tok = fresh(micro_model_dir, lay.expert_adapter(0, "single"))
    want = group_means(groups, test_losses(model, tok, tests, max_length=64))
    for g, v in want.items():
        assert stored["single"]["per_group"][g]["loss"] == pytest.approx(v, rel=1e-4)
    base, _ = fresh(micro_model_dir)
    want = group_means(groups, test_losses(base, tok, tests, max_length=64))
    assert all(stored["base"]["per_group"][g]["loss"] == pytest.approx(v, rel=1e-4) for g, v in want.items())


def test_routed_rule_is_scikit_learn_on_the_stored_embeddings_and_its_losses_the_chosen_experts(
        experts_run, micro_model_dir, micro_corpus):
    from sklearn.linear_model import LogisticRegression

    from gist_core.methods.gradientspace.experts_stage import Experts, prompt_part
    from gist_core.model.evaluate import test_losses
    from gist_core.store.layout import RunLayout
    run, rep = experts_run
    lay = RunLayout(run)
    ex = Experts.open(run, expert_cfg(micro_corpus["test"]), quiet=True)
    tests = ex.tests()
    ids, labels = ex.encoded(tests)
    E_train, E_query = np.load(lay.experts_array("embed-train")), np.load(lay.experts_array("embed-query"))
    base, tok = fresh(micro_model_dir)
    with torch.no_grad():  # the router's input: mean last hidden state of the prompt alone, one query at a time
        for i in (0, len(tests) - 1):
            h = base(input_ids=torch.tensor([prompt_part(ids[i], labels[i])]), output_hidden_states=True).hidden_states[-1]
            np.testing.assert_allclose(E_query[i], h[0].mean(0).numpy(), rtol=1e-4, atol=1e-5)
    m = "gradientspace"
    lab = np.load(lay.clusters_array(f"labels-{m}"))
    mu, sd = E_train.mean(0), E_train.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    chosen = LogisticRegression(C=1.0, max_iter=2000, random_state=0).fit((E_train - mu) / sd, lab).predict(
        (E_query - mu) / sd)
    truth = [t.skill for t in tests]
    r = rep["routing"][m]
    skill_of = {int(c): s for c, s in r["cluster_skill"].items()}
    assert r["router_accuracy"] == pytest.approx(np.mean([skill_of[int(c)] == t for c, t in zip(chosen, truth)]))
    assert np.asarray(r["confusion"]).sum() == len(tests)
    losses = np.zeros(len(tests))
    for c in np.unique(chosen):  # every query answered by the one expert the router chose, loaded from disk
        model, _ = fresh(micro_model_dir, lay.expert_adapter(0, f"{m}-c{c}"))
        idx = np.flatnonzero(chosen == c)
        losses[idx] = test_losses(model, tok, [tests[i] for i in idx], max_length=64)
    stored = json.loads(lay.experts_eval(0).read_text())["rules"]
    for g, v in group_means([t.subtask for t in tests], losses).items():
        assert stored[f"{m}-routed"]["per_group"][g]["loss"] == pytest.approx(v, rel=1e-4)
    train_truth = [ex.inputs.pool[int(r)].skill for r in np.load(lay.clusters_array("rows"))]
    oracle = []
    for t, routed in zip(truth, chosen):  # the cluster holding most clustered rows of the skill, counted by hand
        counts = {c: sum(1 for lc, s in zip(lab, train_truth) if lc == c and s == t) for c in sorted(set(lab))}
        best = max(counts, key=lambda c: (counts[c], -c))
        oracle.append(best if counts[best] else int(routed))  # a skill not in the sample: the router's choice
    for c in set(oracle):
        model, _ = fresh(micro_model_dir, lay.expert_adapter(0, f"{m}-c{c}"))
        idx = [i for i, o in enumerate(oracle) if o == c]
        losses[idx] = test_losses(model, tok, [tests[i] for i in idx], max_length=64)
    for g, v in group_means([t.subtask for t in tests], losses).items():
        assert stored[f"{m}-oracle"]["per_group"][g]["loss"] == pytest.approx(v, rel=1e-4)


def test_experts_command_resumes_without_retraining(experts_run, micro_corpus, monkeypatch, capsys):
    import gist_core.methods.gradientspace.experts_stage as experts_stage
    from gist_core.cli import main as cli_main
    from gist_core.methods.gradientspace.experts_stage import load_experts_report
    from gist_core.store.layout import RunLayout
    run, rep = experts_run
    before = RunLayout(run).experts_eval(0).read_text()

    def no_training(*a, **k):
        raise AssertionError("an adapter was retrained")
    monkeypatch.setattr(experts_stage, "train_lora", no_training)  # where the stage looks it up
    argv = ["experts", "--run", str(run), "--seeds", "1", "--train-epochs", "1", "--train-lr", "5e-3",
            "--per-skill", "2", "--per-subtask", "2", "--n-em", "2", "--latency-queries", "1",
            "--test", str(micro_corpus["test"]), "--quiet"]
    assert cli_main(argv) == 0  # the same config as the fixture's, from flags
    out = capsys.readouterr().out
    assert "elrea-ensemble" in out and "routing accuracy (gradientspace)" in out
    assert load_experts_report(run)["table"] == rep["table"] and RunLayout(run).experts_eval(0).read_text() == before


def test_matched_steps_scale_each_experts_epochs_to_the_single_adapters_steps(experts_run, micro_corpus):
    from gist_core.methods.gradientspace.experts_stage import Experts
    run, _ = experts_run
    ex = Experts.open(run, expert_cfg(micro_corpus["test"], expert_steps="match"), quiet=True)
    n = len(ex.rows)
    assert ex.train_cfg(0, n).epochs == 1 and ex.train_cfg(0, n // 4).epochs == 4 and ex.train_cfg(2, n // 3).seed == 2
    fixed = Experts.open(run, expert_cfg(micro_corpus["test"]), quiet=True)
    assert fixed.train_cfg(0, n // 4).epochs == 1


def test_experts_config_and_missing_clusters_fail_in_one_line(tmp_path, micro_corpus):
    from gist_core.errors import ConfigError
    from gist_core.methods.gradientspace.config import ExpertConfig
    from gist_core.methods.gradientspace.experts_stage import Experts
    with pytest.raises(ConfigError, match="ensembles .random. must be among the clusterings"):
        ExpertConfig(clusterings=("gradientspace",), ensembles=("random",))
    with pytest.raises(ConfigError, match="unknown clustering.s. kmeans"):
        ExpertConfig(clusterings=("kmeans",), ensembles=())
    with pytest.raises(ConfigError, match="router must be one of logreg, mlp, got 'svm'"):
        ExpertConfig(router="svm")
    with pytest.raises(ConfigError, match="expert_steps must be epochs or match, got 'all'"):
        ExpertConfig(expert_steps="all")
    with pytest.raises(ConfigError, match="base_weight must lie in"):
        ExpertConfig(base_weight=1.0)
    with pytest.raises(ConfigError, match="no clustering yet .*run gist-lab cluster first"):
        Experts.open(tmp_path, expert_cfg(micro_corpus["test"]))


def test_clusters_page_shows_the_expert_table_and_router_confusion(experts_run, monkeypatch):
    from fake_run import plotly_array
    from streamlit.testing.v1 import AppTest

    from gist_core.methods.gradientspace.view import RULE_LABELS
    run, rep = experts_run
    root = ROOT
    monkeypatch.setenv("GIST_LAB_RUNS", str(run.parent))
    at = AppTest.from_file(str(root / "app.py"), default_timeout=60)
    at.query_params["run"] = run.name
    at.run()
    at.switch_page("pages/8_Clusters.py").run()
    assert not at.exception, at.exception
    assert f"single LoRA {rep['steps']['single']};" in " ".join(c.value for c in at.caption)
    table = next(d.value for d in at.dataframe if "rule" in d.value.columns)
    order = ["base", "single", "gradientspace-routed", "gradientspace-oracle", "elrea-routed", "elrea-oracle",
             "elrea-ensemble"]
    assert table["rule"].tolist() == [RULE_LABELS[r] for r in order]
    assert table["test loss"].round(6).tolist() == [round(rep["table"][r]["test_loss"], 6) for r in order]
    routing = next(d.value for d in at.dataframe if "router accuracy" in d.value.columns)
    assert routing["router accuracy"].round(6).tolist() == [round(rep["routing"][m]["router_accuracy"], 6)
                                                           for m in ("gradientspace", "elrea")]
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    conf = next(c for c in charts if "Router confusion" in c["layout"]["title"]["text"])
    assert plotly_array(conf["data"][0]["customdata"]).sum() == rep["n_tests"]  # every query routed somewhere
    assert conf["data"][0]["y"] == rep["skills"]
    at.radio(key="experts_router").set_value("elrea").run()
    at.radio(key="experts_metric").set_value("exact_match").run()
    assert not at.exception, at.exception
