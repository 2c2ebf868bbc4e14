"""gist_core/methods/less/stages.py: an interrupt inside LESS's pool-feature pass keeps every projected buffer
written before it, the rerun resumes from there (its progress starts at the kept rows) and gives the features of an
uninterrupted run."""
from __future__ import annotations

import numpy as np
import pytest

from gist_core.config import CompareConfig, RunConfig, TrainConfig
from gist_core.methods.less.config import LessConfig
from gist_core.runner.compare import run_compare
from gist_core.store import manifest


def _cfgs(micro_model_dir, micro_corpus) -> tuple[RunConfig, CompareConfig]:
    run = RunConfig(model=str(micro_model_dir), train=str(micro_corpus["pool"]), target=str(micro_corpus["val"]),
                    budget=0.1, rank=4, warmup_fraction=0.2, warmup=TrainConfig(epochs=2, batch_size=8))
    cmp = CompareConfig(methods=("less",), seeds=1, downstream=False, less=LessConfig(dim=32, projection_batch=16))
    return run, cmp


def test_a_kill_inside_the_less_pass_keeps_the_finished_buffers(micro_model_dir, micro_corpus, tmp_path, monkeypatch):
    run_cfg, cmp = _cfgs(micro_model_dir, micro_corpus)
    run_compare(run_cfg, cmp, tmp_path / "a" / "clean", quiet=True)
    real_write, calls = manifest.FeatureStore.write, {"n": 0}

    def dying_write(self, rows, values):
        if self.path.name == "ckpt-1.npy":  # LESS's first checkpoint; the GIST projection writes untouched
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt("killed")  # after two 16-row buffers
        real_write(self, rows, values)

    monkeypatch.setattr(manifest.FeatureStore, "write", dying_write)
    killed = tmp_path / "b" / "killed"  # its own runs folder: runs on one pool share LESS's features
    with pytest.raises(KeyboardInterrupt):
        run_compare(run_cfg, cmp, killed, quiet=True)
    done = np.load(killed / "compare" / "less" / "ckpt-1.done.npy")
    assert done.sum() == 32  # both finished buffers survive the kill, nothing more
    monkeypatch.setattr(manifest.FeatureStore, "write", real_write)
    run_compare(run_cfg, cmp, killed, quiet=True)
    events = [e for e in manifest.read_events(killed) if e["stage"] == "compare/less/ckpt-1"]
    start = max(i for i, e in enumerate(events) if e["status"] == "start")
    assert events[start]["resumed"] == 32 and events[-1]["status"] == "end"
    counts = [e["done"] for e in events[start:] if e["status"] == "progress"]
    assert counts[0] > 32 and counts[-1] == events[start]["total"]  # counted on from the kept rows, to the end
    for e in (1, 2):
        a = np.load(tmp_path / "a" / "clean" / "compare" / "less" / f"ckpt-{e}.npy").astype(np.float32)
        b = np.load(killed / "compare" / "less" / f"ckpt-{e}.npy").astype(np.float32)
        np.testing.assert_allclose(a, b, atol=2e-3)  # float16 storage: at most one rounding step apart
