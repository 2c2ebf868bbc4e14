"""Run store: atomic writes, manifest skip logic, feature store resume, progress events."""
from __future__ import annotations

import numpy as np
import pytest

from gist_core.store.atomic import atomic_path, atomic_write_text
from gist_core.store.manifest import FeatureStore, RunStore, read_events


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    p = tmp_path / "a.txt"
    atomic_write_text(p, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(p) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert p.read_text() == "old"
    assert [f.name for f in tmp_path.iterdir()] == ["a.txt"]


def test_manifest_stage_done_needs_same_key_and_files(tmp_path):
    s = RunStore(tmp_path)
    (tmp_path / "x.npy").write_bytes(b"1234")
    s.record_stage("x", "k1", ["x.npy"], 1.0)
    assert s.stage_done("x", "k1") and not s.stage_done("x", "k2")
    assert s.manifest()["stages"]["x"]["bytes"] == 4
    (tmp_path / "x.npy").unlink()
    assert not s.stage_done("x", "k1")


def test_feature_store_resumes_and_reallocates_on_mismatch(tmp_path):
    p = tmp_path / "f.npy"
    fs = FeatureStore(p, 10, 3, {"key": "a"})
    assert fs.todo() == list(range(10))
    fs.write([2, 5], np.ones((2, 3), dtype=np.float32))
    fs.flush()
    again = FeatureStore(p, 10, 3, {"key": "a"})
    assert again.todo() == [0, 1, 3, 4, 6, 7, 8, 9]
    assert np.array_equal(again.data[5], np.ones(3))
    other = FeatureStore(p, 10, 3, {"key": "b"})  # different inputs: never mix rows
    assert other.todo() == list(range(10))


def test_truncated_feature_store_is_reallocated(tmp_path):
    p = tmp_path / "f.npy"
    fs = FeatureStore(p, 10, 3, {"key": "a"})
    fs.write([0], np.ones((1, 3), dtype=np.float32))
    fs.flush()
    del fs
    p.write_bytes(p.read_bytes()[:-20])
    assert FeatureStore(p, 10, 3, {"key": "a"}).todo() == list(range(10))


def test_events_skip_torn_lines(tmp_path):
    s = RunStore(tmp_path)
    s.event("a", "start")
    with open(tmp_path / "progress.jsonl", "a") as fh:
        fh.write('{"stage": "a", "sta')
    assert [e["status"] for e in read_events(tmp_path)] == ["start"]


def test_row_reader_reads_blocks_equal_to_the_store(tmp_path):
    fs = FeatureStore(tmp_path / "f.npy", 1001, 5, {"key": "a"})
    x = np.random.default_rng(0).standard_normal((1001, 5)).astype(np.float32)
    fs.write(np.arange(1001), x)
    fs.flush()  # also releases the written pages: the data must still read back
    rows = fs.rows()
    assert rows.shape == (1001, 5)
    assert np.array_equal(rows[0:400, :3], x[:400, :3]) and np.array_equal(rows[1000:5000, :], x[1000:])
    assert np.array_equal(np.asarray(fs.data), x) and np.array_equal(np.load(tmp_path / "f.npy"), x)


def test_open_only_store_refuses_a_missing_or_foreign_one(tmp_path):
    from gist_core.errors import StoreError
    with pytest.raises(StoreError, match="another configuration"):
        FeatureStore(tmp_path / "f.npy", 10, 3, {"key": "a"}, create=False)
    FeatureStore(tmp_path / "f.npy", 10, 3, {"key": "a"})
    with pytest.raises(StoreError):
        FeatureStore(tmp_path / "f.npy", 10, 3, {"key": "b"}, create=False)
    assert FeatureStore(tmp_path / "f.npy", 10, 3, {"key": "a"}, create=False).todo() == list(range(10))


def test_recorded_digests_catch_a_changed_byte(tmp_path):
    s = RunStore(tmp_path)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "w.bin").write_bytes(b"abcdef")
    s.record_stage("x", "k", ["d"], 1.0)
    assert s.check_stage("x", "k") == "done"
    (tmp_path / "d" / "w.bin").write_bytes(b"abcdeF")
    assert RunStore(tmp_path).check_stage("x", "k") == "corrupt"
    (tmp_path / "d" / "w.bin").write_bytes(b"abc")
    assert s.check_stage("x", "k") == "corrupt"  # a size change is caught even after a verified hash
