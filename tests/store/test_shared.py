"""Stages that depend on the pool alone (the warm-up, LESS's pool features) are computed once for several targets
on one pool, and a run that takes them gives the same scores as one that computes everything itself."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import write_jsonl

from gist_core.cli import main

ARGS = ["--budget", "0.1", "--rank", "3", "--r-max", "8", "--epochs", "2", "--lr", "5e-3", "--batch-size", "8",
        "--methods", "gist,less", "--less-dim", "32", "--no-downstream", "--seeds", "1", "--quiet"]


def _compare(model, pool, target, out) -> None:
    assert main(["compare", "--model", str(model), "--train", str(pool), "--target", str(target), "--out", str(out),
                 *ARGS]) == 0


@pytest.fixture(scope="module")
def two_targets(micro_model_dir, micro_corpus, tmp_path_factory):
    d = tmp_path_factory.mktemp("shared")
    rows = [json.loads(x) for x in micro_corpus["val"].read_text().splitlines()]
    other = write_jsonl(d / "other" / "val.jsonl", rows[: len(rows) // 2])  # another target on the same pool
    runs = d / "runs"
    _compare(micro_model_dir, micro_corpus["pool"], micro_corpus["val"], runs / "a")
    _compare(micro_model_dir, micro_corpus["pool"], other, runs / "b")
    _compare(micro_model_dir, micro_corpus["pool"], other, d / "alone" / "b")  # nothing to share there
    return runs / "a", runs / "b", d / "alone" / "b"


def _stages(run):
    return json.loads((run / "manifest.json").read_text())["stages"]


def test_the_second_target_takes_the_warmup_and_less_pool_features(two_targets):
    a, b, _ = two_targets
    sa, sb = _stages(a), _stages(b)
    for stage in ("warmup", "compare/less/ckpt-1", "compare/less/ckpt-2"):
        assert "shared_from" in sb[stage] and "shared_from" not in sa[stage], stage
        assert sb[stage]["wall_s"] == pytest.approx(sa[stage]["wall_s"])  # the cost of computing it, not zero
    assert sa["warmup"]["key"] != sb["warmup"]["key"]  # the run keys still name their own target
    assert (a / "compare" / "less" / "ckpt-1.npy").samefile(b / "compare" / "less" / "ckpt-1.npy")  # one copy on disk
    for stage in ("val_grads/ckpt-1", "train_proj"):
        assert "shared_from" not in sb[stage]  # target-dependent: computed by each run


def test_taken_stages_give_the_scores_a_run_of_its_own_computes(two_targets):
    _, b, alone = two_targets
    assert not any("shared_from" in e for e in _stages(alone).values())
    x, y = pd.read_parquet(b / "compare" / "scores.parquet"), pd.read_parquet(alone / "compare" / "scores.parquet")
    for col in ("score:gist", "score:less"):
        np.testing.assert_allclose(x[col].to_numpy(), y[col].to_numpy(), atol=1e-6)
    from safetensors.numpy import load_file
    for f in ("adapter_model.safetensors", "optimizer_moments.safetensors"):
        got, want = (load_file(str(r / "checkpoints" / "ckpt-2" / f)) for r in (b, alone))
        assert got.keys() == want.keys()
        for name in got:  # the same warm-up up to the float rounding of two trainings
            np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-6)


def test_each_run_folder_stays_complete_on_its_own(two_targets, micro_model_dir, micro_corpus, tmp_path):
    a, b, _ = two_targets
    copy = tmp_path / "runs" / "b"
    shutil.copytree(b, copy)
    shutil.rmtree(copy.parent / ".shared", ignore_errors=True)
    before = {s: e["key"] for s, e in _stages(copy).items()}
    other = json.loads((copy / "config.json").read_text())["target"]
    _compare(micro_model_dir, micro_corpus["pool"], other, copy)  # a rerun finds every stage intact: nothing redone
    assert {s: e["key"] for s, e in _stages(copy).items()} == before
    events = [json.loads(x) for x in (copy / "progress.jsonl").read_text().splitlines()]
    assert not [e for e in events[-40:] if e["status"] == "start" and e["stage"].startswith(("warmup", "compare/less"))]


def test_a_downstream_adapter_is_trained_once_for_every_target_that_selects_the_same_rows(
        micro_model_dir, micro_corpus, tmp_path):
    """random picks the same pool rows whatever the target: its adapter is trained once, each target evaluates it."""
    rows = [json.loads(x) for x in micro_corpus["val"].read_text().splitlines()]
    test = micro_corpus["test"]
    half = write_jsonl(tmp_path / "half" / "val.jsonl", rows[: len(rows) // 2])
    shutil.copy(test, half.parent / "test.jsonl")
    runs = tmp_path / "runs"
    common = ["--budget", "0.1", "--rank", "2", "--epochs", "1", "--methods", "random", "--seeds", "1",
              "--train-epochs", "1", "--n-em", "1", "--quiet"]
    for name, target in (("a", micro_corpus["val"]), ("b", half)):
        assert main(["compare", "--model", str(micro_model_dir), "--train", str(micro_corpus["pool"]), "--target",
                     str(target), "--test", str(test), "--out", str(runs / name), *common]) == 0
    ea, eb = (json.loads((runs / n / "compare" / "evals" / "random-s0.json").read_text()) for n in "ab")
    assert ea["adapter"] == eb["adapter"] and eb["adapter_shared"] and "adapter_shared" not in ea
    assert eb["test_loss"] == pytest.approx(ea["test_loss"], abs=1e-6)  # the same adapter on the same test split
