"""Independent oracle: a real CLI run on a micro model, recomputed from scratch along a deliberately naive
path that shares no code with the pipeline, and compared with what the run folder holds.

The naive path tokenizes with the tokenizer itself, loads the base model and each warm-up adapter with
transformers + peft, takes one example at a time through the Hugging Face loss and plain autograd, runs
`np.linalg.svd` on the validation gradients, and computes projections, cosines, subtask means, maxima,
top-k and the round-robin quota with numpy loops. Only gist_core's CLI and the dashboard's view functions
are called, as a user would; nothing from the math modules is imported here.

Set-up that a scrambled or transposed set of target directions cannot pass: N_v = 9 != R_max = 6,
subtasks of unequal sizes (3, 3, 2, 1), two ranks, both aggregations, both selection rules, and copies
of the 9 target examples inside the pool (their projections must be the targets' own coordinates).
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

PLAIN = "### Instruction:\n{prompt}\n\n### Response:"  # the plain template the README documents
R_MAX, BUDGET = 6, 0.1


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


@pytest.fixture(scope="module")
def oracle_inputs(micro_corpus, tmp_path_factory):
    d = tmp_path_factory.mktemp("oracle")
    val = _rows(micro_corpus["val"])
    by_sub: dict[str, list[dict]] = {}
    for r in val:
        by_sub.setdefault(r["subtask"], []).append(r)
    target = [r for sub, n in zip(by_sub, (3, 3, 2, 1)) for r in by_sub[sub][:n]]
    seen, pool = set(), []
    for r in micro_corpus["rows"]:  # exact duplicates would tie; keep one of each
        if (r["prompt"], r["response"]) not in seen:
            seen.add((r["prompt"], r["response"]))
            pool.append(r)
    pool += [{**r, "id": f"copy-{r['id']}", "source": "target-copy"} for r in target]
    (d / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pool))
    (d / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in target))
    return d, pool, target


def _argv(model_dir, d: Path, run: Path, *extra: str) -> list[str]:
    return ["select", "--model", str(model_dir), "--train", str(d / "pool.jsonl"), "--target", str(d / "val.jsonl"),
            "--budget", str(BUDGET), "--r-max", str(R_MAX), "--epochs", "2", "--lr", "5e-3", "--batch-size", "8",
            "--warmup-fraction", "0.2", "--out", str(run), "--quiet", *extra]


# ----------------------------------------------------------------------------- the naive path
def _encode(tok, prompt: str, response: str) -> tuple[list[int], list[int]]:
    p = tok(PLAIN.format(prompt=prompt), add_special_tokens=False)["input_ids"]
    r = tok(" " + response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    return p + r, [-100] * len(p) + r


def naive_gradients(model_dir, adapter: Path, rows: list[dict]) -> tuple[np.ndarray, list[str]]:
    """(N, D) float64: one example at a time, Hugging Face's own loss (mean CE over labelled tokens)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(model_dir)
    assert tok.chat_template is None and not getattr(tok, "add_bos_token", False)  # so PLAIN is the format
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), adapter, is_trainable=True)
    model.eval()
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    out = []
    for r in rows:
        ids, labels = _encode(tok, r["prompt"], r["response"])
        loss = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss
        out.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, [p for _, p in named])]).double())
    return torch.stack(out).numpy(), [n for n, _ in named]


def naive_subspace(G: np.ndarray, r_max: int) -> np.ndarray:
    U, S, Vt = np.linalg.svd(G, full_matrices=False)
    k = min(r_max, int((S > 1e-6 * S[0]).sum()))
    return Vt[:k].T, S


def cos(a, b) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def normaware(x, c, g_norm: float) -> float:
    """The projected gradient against the projected target, over the *whole* gradient's norm."""
    return float(x @ c / (g_norm * np.linalg.norm(c)))


def naive_columns(X: np.ndarray, Y: np.ndarray, subtasks: list[str], aggregation: str,
                  norms: np.ndarray | None = None) -> tuple[list, np.ndarray]:
    """Per-subtask columns: cos to the subtask mean (subtask_mean) or max cos over its examples (example_max);
    with `norms` (each pool gradient's whole norm) the norm-aware score instead of the cosine."""
    names = list(dict.fromkeys(subtasks))
    cols = np.zeros((len(X), len(names)))
    for t, name in enumerate(names):
        members = [j for j, s in enumerate(subtasks) if s == name]
        for i, x in enumerate(X):
            sim = (lambda c: cos(x, c)) if norms is None else (lambda c: normaware(x, c, norms[i]))  # noqa: B023
            if aggregation == "subtask_mean":
                cols[i, t] = sim(Y[members].mean(0))
            else:
                cols[i, t] = max(sim(Y[j]) for j in members)
    return names, cols


def naive_top_k(score: np.ndarray, k: int) -> list[int]:
    return sorted(sorted(range(len(score)), key=lambda i: (-score[i], i))[:k])


def naive_calibrated(cols: np.ndarray, rule: str) -> np.ndarray:
    """Each column on its pool's scale, one value at a time: z-score, or the share of the pool at or below."""
    out = np.zeros_like(cols, dtype=np.float64)
    n = len(cols)
    for t in range(cols.shape[1]):
        col = [float(v) for v in cols[:, t]]
        mean = sum(col) / n
        sd = (sum((v - mean) ** 2 for v in col) / n) ** 0.5
        for i, v in enumerate(col):
            out[i, t] = (v - mean) / sd if rule == "zscore" else sum(1 for w in col if w <= v) / n
    return out


def naive_advisor(X: np.ndarray, Y: np.ndarray, subtasks: list[str], aggregation: str,
                  norms: np.ndarray | None = None, val_norms: np.ndarray | None = None) -> np.ndarray:
    """(folds, ranks): hold out each validation example of a subtask with others, SVD the rest, and count at
    each rank the pool rows that score below it against its subtask's direction from the others (norm-aware
    with the whole gradients' norms)."""
    rows = []
    for j, sj in enumerate(subtasks):
        others = [i for i, s in enumerate(subtasks) if s == sj and i != j]
        if not others:
            continue
        rest = [i for i in range(len(Y)) if i != j]
        _, S, Vt = np.linalg.svd(Y[rest], full_matrices=False)
        Vt = Vt[S > 1e-6 * S[0]]
        curve = []
        for r in range(1, len(Vt) + 1):
            B = Vt[:r].T
            dirs = [np.mean([Y[i] @ B for i in others], axis=0)] if aggregation == "subtask_mean" else \
                [Y[i] @ B for i in others]
            if norms is None:
                mine = max(cos(Y[j] @ B, c) for c in dirs)
                curve.append(sum(max(cos(x @ B, c) for c in dirs) < mine for x in X) / len(X))
            else:
                mine = max(normaware(Y[j] @ B, c, val_norms[j]) for c in dirs)
                curve.append(sum(max(normaware(x @ B, c, n) for c in dirs) < mine for x, n in zip(X, norms)) / len(X))
        rows.append(curve)
    width = min(map(len, rows))
    return np.array([c[:width] for c in rows])


def naive_quota(cols: np.ndarray, k: int) -> list[int]:
    taken: list[int] = []
    for turn in range(k):
        t = turn % cols.shape[1]
        best = max((i for i in range(len(cols)) if i not in taken), key=lambda i: (cols[i, t], -i))
        taken.append(best)
    return sorted(taken)


# ----------------------------------------------------------------------------- fixtures: the real runs
@pytest.fixture(scope="module")
def oracle(oracle_inputs, micro_model_dir, tmp_path_factory):
    """Run A (subtask_mean, r 3, global) and naive gradients at both warm-up checkpoints."""
    from gist_core.cli import main
    d, pool, target = oracle_inputs
    run = tmp_path_factory.mktemp("oracle-run") / "run"
    assert main(_argv(micro_model_dir, d, run, "--rank", "3", "--aggregation", "subtask_mean",
                      "--balance", "global")) == 0
    grads = {}
    for e in (1, 2):
        Gv, names = naive_gradients(micro_model_dir, run / "checkpoints" / f"ckpt-{e}", target)
        Gp, _ = naive_gradients(micro_model_dir, run / "checkpoints" / f"ckpt-{e}", pool)
        grads[e] = (Gv, Gp, names)
    return {"run": run, "pool": pool, "target": target, "grads": grads, "d": d, "model": micro_model_dir}


def check_against_naive(o, run: Path, rank: int, aggregation: str, balance: str, kind: str) -> None:
    Gv, Gp, _ = o["grads"][1]  # select's GIST checkpoint: warm-up epoch 1
    V, S = naive_subspace(Gv, R_MAX)
    assert V.shape[1] == R_MAX < len(Gv)
    assert (S[rank - 1] - S[rank]) / S[0] > 1e-3  # a well-separated rank-r subspace: the comparison is well posed
    X, Y = Gp @ V[:, :rank], Gv @ V[:, :rank]
    X_all, Y_all = Gp @ V, Gv @ V
    subtasks = [r["subtask"] for r in o["target"]]
    assert sorted(Counter(subtasks).values()) == [1, 2, 3, 3]
    g_norms, val_norms = np.linalg.norm(Gp, axis=1), np.linalg.norm(Gv, axis=1)
    stored = np.load(run / "train_proj.npy")  # each row: the coordinates, then the whole gradient's norm
    np.testing.assert_allclose(stored[:, -1], g_norms, rtol=1e-5)
    norms = g_norms if kind == "normaware" else None
    names, cols = naive_columns(X, Y, subtasks, aggregation, norms)
    score = cols.max(1)
    frame = pd.read_parquet(run / "scores.parquet")
    assert frame["id"].tolist() == [r["id"] for r in o["pool"]]
    np.testing.assert_allclose(frame["score"].to_numpy(), score, atol=1e-5)
    if aggregation == "subtask_mean":
        for t, name in enumerate(names):
            np.testing.assert_allclose(frame[f"cos:{name}"].to_numpy(), cols[:, t], atol=1e-5)
    k = int(round(BUDGET * len(o["pool"])))
    top, quota = naive_top_k(score, k), naive_quota(cols, k)
    got_top = np.flatnonzero(frame["selected_global"].to_numpy()).tolist()
    # identical, except where two scores are closer than float32 can tell at the boundary (none, usually)
    boundary = np.sort(score)[::-1][k - 1]
    assert all(abs(score[i] - boundary) < 1e-6 for i in set(got_top) ^ set(top)), (got_top, top)
    assert len(set(got_top) ^ set(top)) <= 2
    assert np.flatnonzero(frame["selected_subtask"].to_numpy()).tolist() == quota
    # round-robin over the target examples: each in turn takes its best remaining pool row, by its own column
    _, per_example = naive_columns(X, Y, [str(j) for j in range(len(Y))], "example_max", norms)
    by_examples = naive_quota(per_example, k)
    assert np.flatnonzero(frame["selected_examples"].to_numpy()).tolist() == by_examples
    calibrated = {}
    for rule in ("zscore", "quantile"):  # calibrated columns, then the global top-k of their max
        cal = naive_calibrated(cols, rule).max(1)
        calibrated[rule] = naive_top_k(cal, k)
        got = np.flatnonzero(frame[f"selected_{rule}"].to_numpy()).tolist()
        # quantiles: the target copies tie at cosine 1 in float64 (up to 3 per subtask) and not quite in float32
        np.testing.assert_allclose(frame[f"score_{rule}"].to_numpy(), cal, atol=1e-5 if rule == "zscore" else 3.01 / len(cal))
        edge = np.sort(cal)[::-1][k - 1]
        assert len(set(got) ^ set(calibrated[rule])) <= 2, (rule, got, calibrated[rule])
        assert all(abs(cal[i] - edge) < 1e-5 for i in set(got) ^ set(calibrated[rule])), rule
    top = got_top
    chosen = {"global": top, "subtask": quota, "examples": by_examples, **calibrated}[balance]
    adv = json.loads((run / "advisor.json").read_text())  # the rank advisor, from the naive projections
    want = naive_advisor(X_all, Y_all, subtasks, aggregation, norms, val_norms if norms is not None else None)
    # the pool holds copies of the targets: a copy ties its held-out original, and float32 storage may put it
    # one row either side of the tie
    np.testing.assert_allclose(adv["per_example"], want, atol=1.01 / len(X))
    curve = np.sort(want.mean(0))
    if curve[-1] - curve[-2] > 2 / len(X):
        assert adv["suggested"] == int(np.argmax(want.mean(0))) + 1
    assert adv["aggregation"] == aggregation and adv["n_ref"] == len(X)
    sel = _rows(run / "selected.jsonl")
    assert sorted(r["id"] for r in sel) == sorted(o["pool"][i]["id"] for i in chosen)
    want = {o["pool"][i]["id"]: score[i] for i in chosen}
    np.testing.assert_allclose([r["score"] for r in sel], [want[r["id"]] for r in sel], atol=1e-5)
    # the stored target coordinates are the targets' projections onto the stored basis
    from safetensors.numpy import load_file
    st = load_file(str(run / "checkpoints" / "ckpt-1" / "subspace.safetensors"))
    stored_G = np.load(run / "checkpoints" / "ckpt-1" / "val_grads.npy").astype(np.float64)
    np.testing.assert_allclose(stored_G, Gv, atol=1e-6 * np.abs(Gv).max())
    np.testing.assert_allclose(st["val_coords"], stored_G @ st["basis"].astype(np.float64), atol=1e-5)
    np.testing.assert_allclose(np.abs(st["sigma"]), S, rtol=1e-4)


def test_gist_subtask_mean_global_rank_3(oracle):
    """The default score (norm-aware) under the paper's global rule."""
    check_against_naive(oracle, oracle["run"], 3, "subtask_mean", "global", "normaware")


def test_round_robin_over_target_examples_writes_its_selection(oracle):
    from gist_core.cli import main
    assert main(_argv(oracle["model"], oracle["d"], oracle["run"], "--rank", "3", "--aggregation", "subtask_mean",
                      "--balance", "examples", "--overwrite")) == 0
    check_against_naive(oracle, oracle["run"], 3, "subtask_mean", "examples", "normaware")


@pytest.fixture(scope="module")
def run_b(oracle):
    """The same folder re-scored as the paper writes it: example_max, the in-subspace cosine, r 5, per-subtask
    quota."""
    from gist_core.cli import main
    assert main(_argv(oracle["model"], oracle["d"], oracle["run"], "--rank", "5", "--aggregation", "example_max",
                      "--balance", "subtask", "--score", "subspace", "--overwrite")) == 0
    return oracle["run"]


def test_gist_example_max_quota_rank_5(oracle, run_b):
    check_against_naive(oracle, run_b, 5, "example_max", "subtask", "subspace")


def test_calibrated_rule_writes_its_selection(oracle, run_b):
    """--balance quantile: selected.jsonl holds the naive quantile rule's examples (scores stay cosines)."""
    from gist_core.cli import main
    assert main(_argv(oracle["model"], oracle["d"], run_b, "--rank", "5", "--aggregation", "example_max",
                      "--balance", "quantile", "--score", "subspace", "--overwrite")) == 0
    check_against_naive(oracle, run_b, 5, "example_max", "quantile", "subspace")


def test_dashboard_rescore_map_and_nearest_targets(oracle, run_b):
    """What the pages show: a re-score at a rank the run never used, the Map's stars, the nearest targets."""
    from gist_core.viewer import examples, pool_map, rescore
    Gv, Gp, _ = oracle["grads"][1]
    V, _ = naive_subspace(Gv, R_MAX)
    subtasks = [r["subtask"] for r in oracle["target"]]
    _, cols = naive_columns(Gp @ V[:, :4], Gv @ V[:, :4], subtasks, "example_max")
    np.testing.assert_allclose(rescore.scores_at(run_b, 4).score, cols.max(1), atol=1e-5)
    ids = [r["id"] for r in oracle["pool"]]
    copies = [ids.index(f"copy-{t['id']}") for t in oracle["target"]]
    for rank in (3, 5):
        md = pool_map.map_coords(run_b, rank, "pca")
        pts = md.pool.set_index("row")
        stars = md.targets[["x", "y"]].to_numpy()
        np.testing.assert_allclose(stars, pts.loc[copies, ["x", "y"]].to_numpy(), atol=1e-5)  # stars on their copies
    for j, row in enumerate(copies):
        near = examples.nearest_targets(run_b, row, 5)
        assert near["id"].iloc[0] == oracle["target"][j]["id"] and near["cosine"].iloc[0] > 1 - 1e-5


# ----------------------------------------------------------------------------- LESS and raw cosine
@pytest.fixture(scope="module")
def compared(oracle, run_b):
    from gist_core.cli import main
    argv = _argv(oracle["model"], oracle["d"], run_b, "--rank", "5", "--aggregation", "example_max",
                 "--balance", "subtask", "--score", "subspace")
    argv[0] = "compare"
    assert main(argv + ["--methods", "gist,less,rawcos", "--no-downstream", "--less-dim", "64", "--seeds", "1",
                        "--rules", "all", "--overwrite"]) == 0
    return run_b


def dense_rademacher(dim: int, d: int, seed: int) -> np.ndarray:
    """The documented projector, built in one piece: rows in blocks of 4096, block b seeded seed*1_000_003+b,
    entries +-1 from Bernoulli(0.5), scaled by 1/sqrt(d)."""
    blocks = []
    for b in range(-(-dim // 4096)):
        g = torch.Generator().manual_seed(seed * 1_000_003 + b)
        rows = min(4096, dim - 4096 * b)
        blocks.append(torch.empty(rows, d).bernoulli_(0.5, generator=g).mul_(2).sub_(1))
    return torch.cat(blocks).double().numpy() / np.sqrt(d)


def unit(M: np.ndarray) -> np.ndarray:
    return M / np.linalg.norm(M, axis=1, keepdims=True)


def test_less_scores_from_a_naive_adam_direction_and_dense_projection(oracle, compared):
    from safetensors.numpy import load_file
    rep = json.loads((compared / "compare.json").read_text())
    d, seed = rep["less"]["d"], rep["less"]["projector_seed"]
    subtasks = [r["subtask"] for r in oracle["target"]]
    names = list(dict.fromkeys(subtasks))
    lrs = [json.loads((compared / "checkpoints" / f"ckpt-{e}" / "meta.json").read_text())["mean_lr"] for e in (1, 2)]
    w = np.array(lrs) / sum(lrs) if all(lr and lr > 0 for lr in lrs) else np.array([0.5, 0.5])
    cols = np.zeros((len(oracle["pool"]), len(names)))
    cols_stored = np.zeros_like(cols)
    for e, we in zip((1, 2), w):
        Gv, Gp, pnames = oracle["grads"][e]
        mom = load_file(str(compared / "checkpoints" / f"ckpt-{e}" / "optimizer_moments.safetensors"))
        m = np.concatenate([mom[f"{n}.exp_avg"].reshape(-1) for n in pnames]).astype(np.float64)
        v = np.concatenate([mom[f"{n}.exp_avg_sq"].reshape(-1) for n in pnames]).astype(np.float64)
        m2, v2 = 0.9 * m + 0.1 * Gp, 0.999 * v + 0.001 * Gp ** 2
        gamma = m2 / np.sqrt(v2 + 1e-8)
        R = dense_rademacher(Gp.shape[1], d, seed)
        phi, psi = unit(gamma @ R), unit(Gv @ R)
        stored = np.load(compared / "compare" / "less" / f"ckpt-{e}.npy").astype(np.float64)
        np.testing.assert_allclose(stored, phi, atol=2e-3)  # float16 store: one rounding step
        sims, sims_stored = phi @ psi.T, unit(stored) @ psi.T
        for t, name in enumerate(names):
            members = [j for j, s in enumerate(subtasks) if s == name]
            cols[:, t] += we * sims[:, members].mean(1)
            cols_stored[:, t] += we * sims_stored[:, members].mean(1)
    got = pd.read_parquet(compared / "compare" / "scores.parquet")["score:less"].to_numpy()
    np.testing.assert_allclose(got, cols_stored.max(1), atol=1e-5)  # scoring, from the stored features
    np.testing.assert_allclose(got, cols.max(1), atol=2e-3)  # end to end, within the float16 store
    frame = pd.read_parquet(compared / "compare" / "scores.parquet")
    for t, name in enumerate(names):  # the subtask columns every selection rule starts from
        np.testing.assert_allclose(frame[f"col:less:{name}"].to_numpy(), cols_stored[:, t], atol=1e-5)


def test_rawcos_scores_from_naive_gradients(oracle, compared):
    Gv, Gp, _ = oracle["grads"][1]
    subtasks = [r["subtask"] for r in oracle["target"]]
    _, cols = naive_columns(Gp, Gv, subtasks, "subtask_mean")  # cos to the mean raw gradient, no subspace
    got = pd.read_parquet(compared / "compare" / "scores.parquet")["score:rawcos"].to_numpy()
    np.testing.assert_allclose(got, cols.max(1), atol=1e-5)
    # every selection rule on raw cosine's columns: precision of the naive rule's selection
    rep = json.loads((compared / "compare.json").read_text())
    k = rep["n_selected"]
    relevant = np.array([r["skill"] in subtasks and r.get("kind", "correct") == "correct" for r in oracle["pool"]])
    picks = {"rawcos": naive_top_k(cols.max(1), k), "rawcos_subtask": naive_quota(cols, k),
             "rawcos_zscore": naive_top_k(naive_calibrated(cols, "zscore").max(1), k),
             "rawcos_quantile": naive_top_k(naive_calibrated(cols, "quantile").max(1), k)}
    for row, idx in picks.items():
        assert abs(rep["methods"][row]["precision"] - relevant[idx].mean()) <= 1 / k + 1e-9, row
        assert rep["methods"][row]["rule"] == (row.split("_")[1] if "_" in row else "global")
    gist = pd.read_parquet(compared / "compare" / "scores.parquet")["score:gist"].to_numpy()
    np.testing.assert_allclose(gist, pd.read_parquet(compared / "scores.parquet")["score"].to_numpy(), atol=1e-6)
