"""End to end on a micro model: stages, artefacts, resume after a kill, skip-if-done, CLI errors."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from gist_core.cli import main as cli_main
from gist_core.config import RunConfig, TrainConfig
from gist_core.errors import ConfigError
from gist_core.methods import scoring
from gist_core.methods.gist.rescore import rescore
from gist_core.runner import rows
from gist_core.runner.pipeline import run_select
from gist_core.store import manifest


def _cfg(micro_model_dir, micro_corpus, **kw):
    base = dict(model=str(micro_model_dir), train=str(micro_corpus["pool"]), target=str(micro_corpus["val"]),
                budget=0.1, rank=4, r_max=8, warmup=TrainConfig(epochs=2, lr=5e-3, batch_size=8),
                warmup_fraction=0.2, grad_batch_size=16)
    return RunConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, micro_model_dir, micro_corpus):
    out = tmp_path_factory.mktemp("run")
    summary = run_select(_cfg(micro_model_dir, micro_corpus), out, quiet=True)
    return out, summary


def test_run_writes_every_artefact(finished_run, micro_corpus):
    out, summary = finished_run
    for f in ["config.json", "manifest.json", "progress.jsonl", "examples.parquet", "target.parquet",
              "checkpoints/ckpt-1/adapter_model.safetensors", "checkpoints/ckpt-2/optimizer_moments.safetensors",
              "checkpoints/ckpt-1/val_grads.npy", "checkpoints/ckpt-2/subspace.safetensors",
              "train_proj.npy", "train_proj.done.npy", "scores.parquet", "selected.jsonl", "summary.json"]:
        assert (out / f).exists(), f
    for key in ["precision", "random_precision", "n_pool", "n_selected", "rank", "wall_s", "coverage",
                "n_wrong_selected"]:
        assert key in summary, key
    assert summary["n_pool"] == 240 and summary["n_selected"] == 24 and summary["rank"] == 4
    assert set(summary["coverage"]) == {"kth_word", "word_after", "key_lookup", "last_word"}
    scores = pd.read_parquet(out / "scores.parquet")
    assert len(scores) == 240 and scores["selected_global"].sum() == 24
    assert scores["score"].between(-1, 1.0001).all()
    selected = [json.loads(line) for line in (out / "selected.jsonl").read_text().splitlines()]
    assert len(selected) == 24
    # the input's own fields plus the score
    assert set(selected[0]) >= {"id", "prompt", "response", "skill", "kind", "score"}
    chosen = scores[scores[f"selected_{summary['balance']}"]]  # selected.jsonl holds the run's own rule's picks
    assert sorted(s["id"] for s in selected) == sorted(chosen["id"])
    np.testing.assert_allclose(sorted(s["score"] for s in selected), np.sort(chosen["score"].to_numpy()), atol=1e-6)
    meta = json.loads((out / "checkpoints/ckpt-1/meta.json").read_text())
    assert meta["epoch"] == 1 and meta["mean_lr"] > 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stages"]["train_proj"]["bytes"] > 0 and "torch" in manifest["stages"]["warmup"]["versions"]


def test_rescore_from_stored_projections_matches_run(finished_run):
    out, summary = finished_run
    sc = rescore(out, summary["rank"])
    stored = pd.read_parquet(out / "scores.parquet")
    assert np.allclose(sc.score, stored["score"].to_numpy(), atol=1e-6)
    assert not np.allclose(rescore(out, 2).score, sc.score)


def test_rerun_skips_done_stages(finished_run, micro_model_dir, micro_corpus):
    out, summary = finished_run
    before = (out / "train_proj.npy").stat().st_mtime_ns
    again = run_select(_cfg(micro_model_dir, micro_corpus), out, quiet=True)
    assert (out / "train_proj.npy").stat().st_mtime_ns == before
    assert again["precision"] == summary["precision"]
    events = [json.loads(x) for x in (out / "progress.jsonl").read_text().splitlines()]
    assert {"warmup", "train_proj"} <= {e["stage"] for e in events if e["status"] == "skip"}


def test_kill_during_projection_then_resume_gives_same_scores(finished_run, tmp_path, micro_model_dir,
                                                              micro_corpus, monkeypatch):
    ref_out, _ = finished_run
    cfg = _cfg(micro_model_dir, micro_corpus)
    real_stream = manifest.FeatureStore.write
    calls = {"n": 0}

    def dying_write(self, rows, values):
        calls["n"] += 1
        if calls["n"] == 10:
            raise KeyboardInterrupt("killed")  # like a kill between batches
        real_stream(self, rows, values)

    monkeypatch.setattr(rows, "FLUSH_EVERY", 4)
    monkeypatch.setattr(manifest.FeatureStore, "write", dying_write)
    with pytest.raises(KeyboardInterrupt):
        run_select(cfg, tmp_path, quiet=True)
    done = np.load(tmp_path / "train_proj.done.npy")
    assert 0 < done.sum() < len(done)
    monkeypatch.setattr(manifest.FeatureStore, "write", real_stream)
    run_select(cfg, tmp_path, quiet=True)
    a = pd.read_parquet(ref_out / "scores.parquet")
    b = pd.read_parquet(tmp_path / "scores.parquet")
    assert np.allclose(a["score"], b["score"], atol=1e-6)
    assert (a["selected_global"] == b["selected_global"]).all()


def test_changed_config_in_same_folder_is_refused(finished_run, micro_model_dir, micro_corpus):
    out, _ = finished_run
    with pytest.raises(ConfigError, match="different config"):
        run_select(_cfg(micro_model_dir, micro_corpus, budget=0.2), out, quiet=True)


def test_config_validation():
    with pytest.raises(ConfigError, match="budget"):
        RunConfig(model="m", train="t", target="v", budget=0)
    with pytest.raises(ConfigError, match="budget"):
        RunConfig(model="m", train="t", target="v", budget=1.5)
    with pytest.raises(ConfigError, match="checkpoint"):
        RunConfig(model="m", train="t", target="v", checkpoint=9)
    cfg = RunConfig(model="m", train="t", target="v", rank=100)
    assert cfg.r_max == 100
    assert RunConfig.from_json(json.loads(json.dumps(cfg.to_json()))) == cfg


def test_cli_select_and_balanced_rule(tmp_path, micro_model_dir, micro_corpus, capsys):
    out = tmp_path / "run"
    rc = cli_main(["select", "--model", str(micro_model_dir), "--train", str(micro_corpus["pool"]),
                   "--target", str(micro_corpus["val"]), "--budget", "10%", "--rank", "3", "--epochs", "1",
                   "--balance", "subtask", "--out", str(out), "--quiet"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "precision" in text and "selected.jsonl" in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["balance"] == "subtask"
    # the quota gives every subtask column its turns (by construction, no labels needed) ...
    assert scoring.starved(summary["picked_for_subtask"], summary["n_selected"]) == []
    # ... while the warning, with labels, speaks of the coverage figures printed beside it
    assert summary["starved_basis"] == "ground-truth coverage"
    cov = summary["by_balance"]["subtask"]["coverage"]
    sel, pool = sum(c["selected"] for c in cov.values()), sum(c["in_pool"] for c in cov.values())
    assert summary["starved_subtasks"] == [s for s, c in cov.items() if c["selected"] < sel * c["in_pool"] / pool / 3]
    for s in summary["starved_subtasks"]:
        assert f"subtask '{s}' has {cov[s]['selected']} of the {sel} correct target examples selected" in text
    # replay from the run's own config
    assert cli_main(["select", "--config", str(out / "config.json"), "--out", str(out), "--quiet"]) == 0


@pytest.mark.parametrize("args, message", [
    (["--train", "missing.jsonl"], "missing.jsonl: file not found"),
    (["--model", "no/such/dir/"], "model folder or .gguf file not found"),
    (["--rank", "50"], "rank 50 exceeds"),
])
def test_cli_errors_are_one_line_exit_2(tmp_path, micro_model_dir, micro_corpus, capsys, args, message):
    base = {"--model": str(micro_model_dir), "--train": str(micro_corpus["pool"]), "--target": str(micro_corpus["val"])}
    base.update(dict(zip(args[::2], args[1::2])))
    argv = ["select", *[x for kv in base.items() for x in kv], "--epochs", "1", "--out", str(tmp_path / "r"), "--quiet"]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_sigkill_during_projection_then_rerun_gives_same_scores(tmp_path, micro_model_dir):
    """A real SIGKILL of the CLI process mid-projection; the rerun resumes from the done-mask."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import write_jsonl

    from gist_core.data.corpus import CorpusConfig, build_pool, build_targets

    cfg = CorpusConfig(n_pool=3000, n_val_per_subtask=3, n_test_per_subtask=2, seed=2)
    targets, reserved = build_targets(cfg)
    pool = write_jsonl(tmp_path / "pool.jsonl", build_pool(cfg, reserved))
    val = write_jsonl(tmp_path / "val.jsonl", targets["transform"]["val"])

    def argv(out):
        return [sys.executable, "-m", "gist_core.cli", "select", "--model", str(micro_model_dir), "--train", str(pool),
                "--target", str(val), "--rank", "4", "--epochs", "1", "--batch-size", "4", "--out", str(out), "--quiet"]

    killed = tmp_path / "killed"
    proc = subprocess.Popen(argv(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        events = (killed / "progress.jsonl").read_text() if (killed / "progress.jsonl").exists() else ""
        mask = killed / "train_proj.done.npy"
        if '"train_proj", "status": "progress"' in events and mask.exists() and np.load(mask).sum() >= 64:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    done = np.load(killed / "train_proj.done.npy")
    assert 0 < done.sum() < len(done)
    assert subprocess.run(argv(killed), capture_output=True).returncode == 0
    clean = tmp_path / "clean"
    assert subprocess.run(argv(clean), capture_output=True).returncode == 0
    a, b = pd.read_parquet(killed / "scores.parquet"), pd.read_parquet(clean / "scores.parquet")
    assert np.allclose(a["score"], b["score"], atol=1e-6)
    assert (a["selected_global"] == b["selected_global"]).all()
    resumed = [json.loads(x) for x in (killed / "progress.jsonl").read_text().splitlines()
               if '"train_proj"' in x and '"start"' in x]
    assert resumed[-1]["resumed"] > 0
