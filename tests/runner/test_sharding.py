"""Sharded extraction: a 2-process torchrun (gloo) run and --shard jobs + merge equal a single process."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import assert_same_scores, micro_select_argv

from gist_core.runner.sharding import ProcessSplit, parse_shard, shard_rows, shard_size


def test_parse_shard_and_rows():
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "-1/2", "x", "1/0", "1/2/3"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)
    rows = list(range(11))
    parts = [shard_rows(rows, i, 3) for i in range(3)]
    assert sorted(sum(parts, [])) == rows and [len(p) for p in parts] == [shard_size(11, i, 3) for i in range(3)]
    assert ProcessSplit(rank=1, world=3, shard_job=True).rows([0, 1, 4, 5, 7]) == [1, 4, 7]
    assert ProcessSplit().rows([3, 5]) == [3, 5] and ProcessSplit().main


def _env():
    # one thread per process: two ranks on a 2-core machine, and no oversubscription
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "GIST_LAB_DIST_TIMEOUT_S": "600"}


def _cli(args, **kw):
    return subprocess.run([sys.executable, "-m", "gist_core.cli", *args], capture_output=True, text=True,
                          env=_env(), timeout=600, **kw)


@pytest.fixture(scope="module")
def single_run(tmp_path_factory, micro_model_dir, micro_corpus):
    out = tmp_path_factory.mktemp("single") / "run"
    res = _cli(micro_select_argv(micro_model_dir, micro_corpus, out))
    assert res.returncode == 0, res.stderr
    return out


def _same_scores(a_dir, b_dir):
    assert_same_scores(a_dir, b_dir)
    pa, pb = np.load(a_dir / "train_proj.npy"), np.load(b_dir / "train_proj.npy")
    assert np.abs(pa - pb).max() <= 1e-6 * max(1.0, np.abs(pa).max())


def test_torchrun_two_processes_equal_single_process(single_run, tmp_path, micro_model_dir, micro_corpus):
    out = tmp_path / "torchrun"
    exe = shutil.which("gist-lab")
    launch = ["--no-python", exe] if exe else ["-m", "gist_core.cli"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *launch,
           *micro_select_argv(micro_model_dir, micro_corpus, out)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    _same_scores(single_run, out)
    events = [json.loads(x) for x in (out / "progress.jsonl").read_text().splitlines()]
    ranks = {e.get("rank") for e in events if e["stage"] == "train_proj" and e["status"] == "start"}
    assert ranks == {0, 1}  # both ranks projected rows
    warm = [e for e in events if e["stage"] == "warmup" and e["status"] == "start"]
    assert len(warm) == 1  # the warm-up ran once, on rank 0


def test_shard_jobs_then_merge_equal_single_process(single_run, tmp_path, micro_model_dir, micro_corpus):
    out = tmp_path / "sharded"
    args = micro_select_argv(micro_model_dir, micro_corpus, out)
    early = _cli([*args, "--shard", "0/2"])
    assert early.returncode == 2 and "--prepare" in early.stderr  # shard jobs never run the shared stages
    assert _cli([*args, "--prepare"]).returncode == 0
    assert not (out / "scores.parquet").exists()
    assert _cli([*args, "--shard", "1/2"]).returncode == 0
    part = _cli(["merge", "--run", str(out), "--quiet"])
    assert part.returncode == 2 and "shard(s) 0/2 not found" in part.stderr
    assert _cli([*args, "--shard", "0/2"]).returncode == 0
    assert np.load(out / "shards" / "train_proj.0-of-2.done.npy").all()
    res = _cli(["merge", "--run", str(out), "--quiet"])
    assert res.returncode == 0, res.stderr
    _same_scores(single_run, out)
    assert not list((out / "shards").glob("train_proj.*"))  # merged rows live in train_proj.npy now


def test_torchrun_compare_less_features_equal_single_process(tmp_path, micro_model_dir, micro_corpus):
    """The LESS pool-feature stage under a 2-process torchrun: the same features and LESS scores. Each run in a
    runs folder of its own: runs beside each other on one pool share LESS's pool features (store/shared.py), and
    here every run must compute them."""
    def args(out):
        return ["compare", "--model", str(micro_model_dir), "--train", str(micro_corpus["pool"]),
                "--target", str(micro_corpus["val"]), "--methods", "gist,less", "--less-dim", "64",
                "--no-downstream", "--budget", "0.1", "--rank", "4", "--epochs", "2", "--batch-size", "8",
                "--out", str(out), "--quiet"]
    single = _cli(args(tmp_path / "a" / "single"))
    assert single.returncode == 0, single.stderr
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
           "gist_core.cli", *args(tmp_path / "b" / "torchrun")]
    res = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    for e in (1, 2):
        a = np.load(tmp_path / "a" / "single" / "compare" / "less" / f"ckpt-{e}.npy").astype(np.float32)
        b = np.load(tmp_path / "b" / "torchrun" / "compare" / "less" / f"ckpt-{e}.npy").astype(np.float32)
        assert np.abs(a - b).max() <= 2e-3  # float16 storage: at most one rounding step apart
    sa = pd.read_parquet(tmp_path / "a" / "single" / "compare" / "scores.parquet")
    sb = pd.read_parquet(tmp_path / "b" / "torchrun" / "compare" / "scores.parquet")
    assert np.abs(sa["score:less"].to_numpy() - sb["score:less"].to_numpy()).max() <= 1e-3
    events = [json.loads(x) for x in (tmp_path / "b" / "torchrun" / "progress.jsonl").read_text().splitlines()]
    assert {e.get("rank") for e in events if e["stage"] == "compare/less/ckpt-1" and e["status"] == "start"} == {0, 1}

    # the same stages as independent jobs: --prepare, two --shard jobs, then the plain command merges
    sharded = tmp_path / "c" / "sharded"
    assert _cli([*args(sharded), "--prepare"]).returncode == 0
    for part in ("1/2", "0/2"):
        res = _cli([*args(sharded), "--shard", part])
        assert res.returncode == 0, res.stderr
    assert (sharded / "shards" / "compare" / "less" / "ckpt-2.0-of-2.npy").exists()
    res = _cli(args(sharded))
    assert res.returncode == 0, res.stderr
    for e in (1, 2):
        a = np.load(tmp_path / "a" / "single" / "compare" / "less" / f"ckpt-{e}.npy").astype(np.float32)
        b = np.load(sharded / "compare" / "less" / f"ckpt-{e}.npy").astype(np.float32)
        assert np.abs(a - b).max() <= 2e-3
    sc = pd.read_parquet(sharded / "compare" / "scores.parquet")
    assert np.abs(sa["score:less"].to_numpy() - sc["score:less"].to_numpy()).max() <= 1e-3
    assert np.abs(sa["score:gist"].to_numpy() - sc["score:gist"].to_numpy()).max() <= 1e-6
    assert not [p for p in (sharded / "shards").rglob("*") if p.is_file()]  # merged, then dropped
    rerun = [json.loads(x) for x in (sharded / "progress.jsonl").read_text().splitlines()]
    assert not [e for e in rerun if e["stage"] == "compare/less/ckpt-1" and e["status"] == "progress"
                and e.get("rank") is None]  # the merging run computed no LESS rows itself
