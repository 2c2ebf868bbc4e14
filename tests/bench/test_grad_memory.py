"""bench/grad_memory.py on the micro model and corpus, so the memory benchmark of docs/benchmarks/gradients.md
cannot rot: every side's worker runs in its own process on the same batch and reports a peak at or above the memory
it started from (the micro model is too small for the sides' peaks to be told apart)."""
from __future__ import annotations

import json

import pytest
from repo import load_bench

pytestmark = pytest.mark.slow


def _bench():
    return load_bench("grad_memory")


def test_report_has_every_side_and_size(micro_model_dir, micro_corpus, tmp_path):
    bench = _bench()
    out = tmp_path / "out"
    bench.main(["--model", str(micro_model_dir), "--pool", str(micro_corpus["pool"]), "--rows", "1", "4",
                "--out", str(out)])
    rep = json.loads((out / "grad_memory.json").read_text())
    got = {(r["side"], r["rows"]): r for r in rep["results"]}
    assert set(got) == {(s, n) for s in bench.SIDES for n in (1, 4)}
    for r in rep["results"]:
        assert r["peak_bytes"] >= r["before_bytes"] > 0
        assert r["padded_tokens"] % r["rows"] == 0 and r["response_tokens"] > 0
    assert got[("train", 4)]["padded_tokens"] == got[("forward", 4)]["padded_tokens"]  # the same batch
