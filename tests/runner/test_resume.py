"""A real SIGKILL at each stage, then the same command again: the scores of an uninterrupted run,
finished stages not recomputed. Corrupted or truncated artefacts are detected and recomputed."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import assert_same_scores, micro_select_argv

# Patches applied inside the child process: each SIGKILLs it at one point of one stage.
KILLS = {
    # at the end of warm-up epoch 2, before its checkpoint: epoch 1 and the Trainer's state are on disk
    "warmup": """
        import gist_core.model.training as w
        real = w.save_checkpoint
        def save(path, *a, **kw):
            if path.name == "ckpt-2":
                die()
            real(path, *a, **kw)
        w.save_checkpoint = save
    """,
    # after checkpoint 1's validation gradients and subspace were recorded
    "val_grads": """
        import gist_core.methods.gist.stages as p
        real, n = p.save_subspace, [0]
        def save(*a, **kw):
            n[0] += 1
            if n[0] == 2:
                die()
            real(*a, **kw)
        p.save_subspace = save
    """,
    # mid-projection, after some rows and their done-mask entries were flushed
    "projection": """
        import gist_core.runner.rows as r
        import gist_core.store.manifest as m
        r.FLUSH_EVERY = 2
        real, n = m.FeatureStore.write, [0]
        def write(self, rows, values):
            n[0] += 1
            if n[0] == 7:
                die()
            real(self, rows, values)
        m.FeatureStore.write = write
    """,
    "scoring": """
        import gist_core.methods.scoring as s
        def select(*a, **kw):
            die()
        s.select = select
    """,
    # scores.parquet written, selected.jsonl not yet
    "export": """
        import gist_core.methods.gist.stages as p
        def write(*a, **kw):
            die()
        p.write_selected_jsonl = write
    """,
}
NOT_RECOMPUTED = {"warmup": {"data"}, "val_grads": {"data", "warmup", "val_grads/ckpt-1"},
                  "projection": {"data", "warmup", "val_grads/ckpt-1", "val_grads/ckpt-2"},
                  "scoring": {"data", "warmup", "val_grads/ckpt-1", "val_grads/ckpt-2", "train_proj"},
                  "export": {"data", "warmup", "val_grads/ckpt-1", "val_grads/ckpt-2", "train_proj"}}


def _run(args, patch: str | None = None) -> subprocess.CompletedProcess:
    code = "import os, signal, sys\ndef die():\n    os.kill(os.getpid(), signal.SIGKILL)\n"
    code += textwrap.dedent(patch or "") + "\nfrom gist_core.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def reference(tmp_path_factory, micro_model_dir, micro_corpus):
    out = tmp_path_factory.mktemp("reference") / "run"
    res = _run(micro_select_argv(micro_model_dir, micro_corpus, out))
    assert res.returncode == 0, res.stderr
    return out


def _events(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "progress.jsonl").read_text().splitlines() if x.strip()]


def _same_scores(a: Path, b: Path) -> None:
    assert_same_scores(a, b)
    assert (a / "selected.jsonl").read_text() == (b / "selected.jsonl").read_text()


@pytest.mark.parametrize("stage", list(KILLS))
def test_sigkill_then_rerun_gives_the_same_scores(stage, reference, tmp_path, micro_model_dir, micro_corpus):
    out = tmp_path / "run"
    args = micro_select_argv(micro_model_dir, micro_corpus, out)
    killed = _run(args, KILLS[stage])
    assert killed.returncode == -9, f"not killed: {killed.returncode} {killed.stderr[-500:]}"
    assert not (out / "selected.jsonl").exists()
    n_before = len(_events(out))
    res = _run(args)
    assert res.returncode == 0, res.stderr
    _same_scores(reference, out)
    rerun = _events(out)[n_before:]
    skipped = {e["stage"] for e in rerun if e["status"] == "skip"}
    started = {e["stage"] for e in rerun if e["status"] == "start"}
    assert NOT_RECOMPUTED[stage] <= skipped and not (NOT_RECOMPUTED[stage] & started)
    if stage == "warmup":
        warm = [e for e in rerun if e["stage"] == "warmup" and e["status"] == "start"]
        assert warm[0]["resumed_from"], "the warm-up restarted from scratch instead of its last epoch"
        assert not (out / "checkpoints" / ".trainer").exists()  # the Trainer's state is dropped at the end
    if stage == "projection":
        proj = [e for e in rerun if e["stage"] == "train_proj" and e["status"] == "start"]
        assert proj[0]["resumed"] > 0


def _flip_byte(path: Path, offset: int = -9) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["truncate projections", "flip a projection byte", "flip an adapter byte",
                                    "flip a validation-gradient byte"])
def test_corrupted_artefacts_are_detected_and_recomputed(damage, reference, tmp_path, micro_model_dir, micro_corpus):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    target, stage = {
        "truncate projections": ("train_proj.npy", "train_proj"),
        "flip a projection byte": ("train_proj.npy", "train_proj"),
        "flip an adapter byte": ("checkpoints/ckpt-1/adapter_model.safetensors", "warmup"),
        "flip a validation-gradient byte": ("checkpoints/ckpt-2/val_grads.npy", "val_grads/ckpt-2"),
    }[damage]
    if damage.startswith("truncate"):
        with open(out / target, "r+b") as fh:
            fh.truncate((out / target).stat().st_size - 100)
    else:
        _flip_byte(out / target)
    n_before = len(_events(out))
    res = _run(micro_select_argv(micro_model_dir, micro_corpus, out))
    assert res.returncode == 0, res.stderr
    assert f"warning: {stage}:" in res.stdout
    rerun = _events(out)[n_before:]
    assert any(e["stage"] == stage and e["status"] == "corrupt" for e in rerun)
    assert any(e["stage"] == stage and e["status"] == "start" for e in rerun)  # recomputed, not used
    _same_scores(reference, out)
