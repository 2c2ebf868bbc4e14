"""bench/bergson_side_by_side.py without Bergson (the test suite never needs it): a missing Bergson is one line and
exit 2 before any work; on the micro model, GIST Lab's side puts every row's gradient where the row is (checked
against the one-row-at-a-time autograd loop), Bergson's module names resolve to the very LoRA modules of
param_blocks and its per-module gradients are reassembled in param_blocks order; the equality figures and the table
agree with a naive computation."""
from __future__ import annotations

import json
import sys
from argparse import Namespace
from types import SimpleNamespace

import numpy as np
import pytest
from repo import load_bench

torch = pytest.importorskip("torch")


def _bench():
    return load_bench("bergson_side_by_side")


def test_missing_bergson_is_one_line_and_exit_2_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "bergson", None)  # `import bergson` raises ImportError, installed or not
    out = tmp_path / "out"
    assert _bench().main(["--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: bergson is not importable here") and "\n" not in err
    assert not out.exists()


@pytest.fixture(scope="module")
def micro_setup(micro_model_dir, micro_corpus):
    bench = _bench()
    a = Namespace(model=str(micro_model_dir), train=str(micro_corpus["pool"]), n=12, batch_size=5, max_length=64,
                  lora_layers=None)
    return bench, bench.setup(a, micro_corpus["pool"])


def test_gist_side_puts_each_rows_gradient_at_its_row(micro_setup):
    from gist_core.grads.per_example import loop_grads
    bench, s = micro_setup
    assert [len(b) for b in s.batches] == [5, 5, 2]
    assert sorted(i for b in s.batches for i in b) == list(range(12))
    assert [i for b in s.batches for i in b] != list(range(12)), \
        "the rows' length order is their file order: this test would not see a misplaced row"
    got = torch.from_numpy(bench.gist_flat(s)["grads"])
    want = loop_grads(s.peft, s.input_ids, s.labels, s.pad_id)
    assert got.shape == want.shape == (12, s.engine.dim)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-6)


def test_bergson_names_are_the_lora_modules_of_param_blocks(micro_setup):
    bench, s = micro_setup
    names = [bench.bergson_name(b.name) for b in s.engine.blocks]
    assert len(set(names)) == len(names) and all(n.endswith((".lora_A.default", ".lora_B.default")) for n in names)
    for b, n in zip(s.engine.blocks, names):
        assert s.peft.base_model.get_submodule(n) is b.module  # what Bergson hooks (it walks model.base_model)


def test_bergson_gradients_are_reassembled_in_param_blocks_order(micro_setup):
    bench, s = micro_setup
    flat = torch.randn(3, s.engine.dim, generator=torch.Generator().manual_seed(0))
    per_module = {bench.bergson_name(b.name): flat[:, b.offset:b.offset + b.size].clone()
                  for b in reversed(s.engine.blocks)}  # a dict in another order than the blocks
    assert torch.equal(bench.bergson_flat(per_module, s.engine.blocks), flat)
    first = s.engine.blocks[0]
    per_module[bench.bergson_name(first.name)] = torch.zeros(3, first.size + 1)
    with pytest.raises(ValueError, match="entries per row"):
        bench.bergson_flat(per_module, s.engine.blocks)


def test_agreement_is_the_worst_row(tmp_path):
    bench = _bench()
    ours = torch.randn(4, 50, generator=torch.Generator().manual_seed(1))
    theirs = ours.clone()
    theirs[2, 7] += 0.5
    got = bench.agreement(ours, theirs)
    assert got["max_rel_l2"] == pytest.approx(0.5 / float(ours[2].norm()), rel=1e-6)
    assert got["max_abs_diff_over_max_abs"] == pytest.approx(0.5 / float(ours.abs().max()), rel=1e-6)
    cos = float(torch.nn.functional.cosine_similarity(ours[2:3].double(), theirs[2:3].double()))
    assert got["min_cosine"] == pytest.approx(cos, abs=1e-12) and got["min_cosine"] < 1
    assert bench.agreement(ours, ours.clone())["max_rel_l2"] == 0.0


def test_table_reads_the_medians_and_the_memory_over_load_only():
    bench = _bench()
    secs = {"train_step": [2.0, 1.0, 4.0], "gist_flat": [2.0, 3.0, 2.5], "gist_projected": [2.0, 2.0, 2.0],
            "bergson_flat": [4.0, 4.0, 4.0], "bergson_projected": [3.0, 3.0, 3.0],
            "bergson_flat_call": [8.0, 8.0, 8.0], "bergson_projected_call": [5.0, 5.0, 5.0]}
    t = bench.rates(secs, 16)
    assert t["train_step"]["examples_per_s"] == 8.0 and t["gist_flat"]["examples_per_s"] == 6.4
    assert t["gist_flat"]["x_train_step"] == 0.8 and t["bergson_flat_call"]["x_train_step"] == 0.25
    mb = 2 ** 20
    rep = {"settings": {"model": "m", "train": "sharegpt", "batch_size": 8, "max_length": 256, "lora_layers": None,
                        "rank": 64, "bergson_proj": 8, "rounds": 3},
           "rows": {"n": 16, "batches": 2, "mean_tokens": 100.0}, "gradient_dim": 1000,
           "machine": {"device": "CPU", "cpu_count": 2}, "timing": t,
           "agreement": {"max_rel_l2": 3e-7, "min_cosine": 1.0, "max_loss_diff": 1e-7},
           "peak_rss_bytes": {side: {"before": 1000 * mb, "peak": peak * mb} for side, peak in (
               ("train_step", 1500), ("gist_flat", 1300), ("gist_projected", 1200), ("bergson_flat", 2000),
               ("bergson_projected", 1100))}}
    md = bench.markdown(json.loads(json.dumps(rep)))
    assert "| GIST Lab, full per-example gradients | 6.4 | 0.8 | 1,300 | 300 |" in md
    assert "| Bergson, full per-example gradients, in its loop | 4.0 | 0.5 | 2,000 | 1,000 |" in md
    assert "| Bergson, full per-example gradients, whole call | 2.0 | 0.25 | | |" in md
    assert "| GIST Lab, projected (R = 64, global orthonormal basis) | 8.0 | 1.0 |" in md
    assert "3.0e-07" in md


def test_a_child_reports_the_peak_memory_its_side_adds(micro_model_dir, micro_corpus, capsys, monkeypatch):
    bench = _bench()
    monkeypatch.setattr(bench, "load_bergson", lambda: SimpleNamespace(version="test"))
    big = 256 * 2 ** 20  # a side that holds 256 MB at once must show at least that over the loaded state

    def holds_256_mb(s):
        block = np.ones(big // 8)
        return {"sum": float(block.sum())}

    monkeypatch.setattr(bench, "train_step", holds_256_mb)
    argv = ["--model", str(micro_model_dir), "--train", str(micro_corpus["pool"]), "--n", "6", "--batch-size", "3",
            "--max-length", "64"]
    assert bench.main([*argv, "--child", "train_step"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["side"] == "train_step" and 0.95 * big <= line["peak"] - line["before"] < 1.5 * big


def test_a_run_leaves_the_callers_logging_as_it_was(micro_model_dir, micro_corpus, capsys, monkeypatch):
    """The script silences logging below WARNING while it runs (Bergson prints each call's module list); the
    process it ran in (here the test suite, where a later CLI test reads gist_core's INFO notes) gets it back."""
    import logging
    test_a_child_reports_the_peak_memory_its_side_adds(micro_model_dir, micro_corpus, capsys, monkeypatch)
    assert logging.root.manager.disable == logging.NOTSET
