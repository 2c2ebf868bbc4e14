"""A run folder written before artefact format 2 is never scored silently with its scrambled directions.

tests/fixtures/old_format_run/ was made by `gist-lab select` at commit 3d3bd34 (before the fix),
on a 1-layer micro Llama with 12 target examples and r_max 8 (N_v != R_max, so its val_coords are
scrambled, not merely transposed). Command, run inside the fixture folder:
    gist-lab select --model model --train pool.jsonl --target val.jsonl --budget 0.1 --rank 3 --r-max 8 \
        --epochs 2 --lr 5e-3 --batch-size 8 --max-length 64 --out run
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from repo import ROOT

FIXTURE = ROOT / "tests" / "fixtures" / "old_format_run"
ARGS = ["select", "--model", "model", "--train", "pool.jsonl", "--target", "val.jsonl", "--budget", "0.1",
        "--rank", "3", "--r-max", "8", "--epochs", "2", "--lr", "5e-3", "--batch-size", "8", "--max-length", "64",
        "--out", "run", "--balance", "global", "--rank-rule", "tau", "--score", "subspace"]  # the rule it was made under


@pytest.fixture
def old_run(tmp_path, monkeypatch):
    d = tmp_path / "old"
    shutil.copytree(FIXTURE, d)
    monkeypatch.chdir(d)
    return d


def naive_scores(run: Path, rank: int) -> np.ndarray:
    """From the stored validation gradients, basis and pool projections of the GIST checkpoint (1) only:
    the targets projected onto the basis, subtask means, max cosine."""
    G = np.load(run / "checkpoints" / "ckpt-1" / "val_grads.npy").astype(np.float64)
    from safetensors.numpy import load_file
    basis = load_file(str(run / "checkpoints" / "ckpt-1" / "subspace.safetensors"))["basis"].astype(np.float64)
    X = np.load(run / "train_proj.npy").astype(np.float64)[:, :rank]
    Y = (G @ basis)[:, :rank]  # the validation examples' own projections onto the stored basis
    target = pd.read_parquet(run / "target.parquet")
    cols = []
    for sub in dict.fromkeys(target["subtask"]):
        c = Y[(target["subtask"] == sub).to_numpy()].mean(0)
        cols.append([x @ c / (np.linalg.norm(x) * np.linalg.norm(c)) for x in X])
    return np.max(np.array(cols), axis=0)


def val_coords_ok(run: Path) -> list[float]:
    from safetensors.numpy import load_file
    out = []
    for e in (1, 2):
        d = load_file(str(run / "checkpoints" / f"ckpt-{e}" / "subspace.safetensors"))
        G = np.load(run / "checkpoints" / f"ckpt-{e}" / "val_grads.npy").astype(np.float64)
        out.append(float(np.abs(d["val_coords"] - G @ d["basis"].astype(np.float64)).max()))
    return out


def test_fixture_really_is_scrambled():
    assert min(val_coords_ok(FIXTURE / "run")) > 0.1  # what the old writer left: not G . basis


def test_old_folder_is_detected_refit_and_rescored(old_run, capsys):
    from gist_core.cli import main
    from gist_core.viewer import rundir
    run = old_run / "run"
    assert rundir.stale_problem(run) and "artefact format 1" in rundir.stale_problem(run)  # the dashboard refuses it
    proj_before = (run / "train_proj.npy").read_bytes()
    old_scores = pd.read_parquet(run / "scores.parquet")["score"].to_numpy()
    assert main(ARGS + ["--quiet"]) == 0
    out = capsys.readouterr().out
    assert "notice: checkpoints/ckpt-1/subspace.safetensors: written before artefact format 2" in out
    assert "notice: checkpoints/ckpt-2/subspace.safetensors" in out
    assert "stored pool projections onto it are kept" in out
    events = [json.loads(x) for x in (run / "progress.jsonl").read_text().splitlines()]
    status = {(e["stage"], e["status"]) for e in events}
    assert ("warmup", "skip") in status and ("train_proj", "skip") in status  # no retraining, no re-projection
    assert ("val_grads/ckpt-2", "stale") in status
    assert (run / "train_proj.npy").read_bytes() == proj_before
    assert max(val_coords_ok(run)) < 1e-5
    new = pd.read_parquet(run / "scores.parquet")
    want = naive_scores(run, 3)
    np.testing.assert_allclose(new["score"].to_numpy(), want, atol=1e-5)
    assert np.abs(old_scores - want).max() > 1e-3  # the old folder's scores were really wrong
    top = set(np.argsort(-want, kind="stable")[:10])
    assert set(np.flatnonzero(new["selected_global"].to_numpy())) == top
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["stages"]["val_grads/ckpt-2"]["format"] == 2 and "refit" in manifest["stages"]["val_grads/ckpt-2"]
    assert rundir.stale_problem(run) is None
    # a second rerun finds nothing to repair
    assert main(ARGS + ["--quiet"]) == 0
    assert "notice:" not in capsys.readouterr().out


def test_stale_folder_refused_by_rescore_until_repaired(old_run):
    from gist_core.errors import StaleArtefact
    from gist_core.methods.gist.rescore import rescore
    with pytest.raises(StaleArtefact, match="format 1"):
        rescore(old_run / "run", 2)


def test_a_config_from_before_rank_rules_replays_with_tau():
    """config.json files written before --rank-rule ranked by tau; replaying one must not pick up a newer default."""
    from gist_core.config import RunConfig
    old = {"model": "m", "train": "t", "target": "v", "tau": 0.9}
    assert RunConfig.from_json(old).rank_rule == "tau"
    assert RunConfig.from_json({**old, "rank_rule": "full"}).rank_rule == "full"
    assert RunConfig.from_json(old).score == "subspace"  # nor one from before the norm-aware score
    assert RunConfig.from_json({**old, "score": "normaware"}).score == "normaware"
