"""gist_core/runner/progress.py: a resumed stage's bar and events count on from the rows already kept."""
from __future__ import annotations

from gist_core.runner.progress import Progress
from gist_core.store.manifest import RunStore, read_events


def test_a_resumed_stage_starts_its_bar_and_events_at_the_kept_rows(tmp_path):
    progress = Progress(RunStore(tmp_path), quiet=False)
    with progress.stage("compare/less/ckpt-4", total=2000, resumed=512) as st:
        st.resume_at(512)
        assert st.bar.n == 512  # it showed 16/2000 after a resume that had kept 512 rows
        st.advance(16)
        assert st.bar.n == 528
    done = [e["done"] for e in read_events(tmp_path) if e["status"] == "progress"]
    assert done == [528]


def test_a_stage_records_the_gpu_allocator_peak_when_cuda_is_in_use(tmp_path, monkeypatch):
    """No GPU here: a stand-in torch.cuda that counts resets and reports a peak. The stage must reset it on entry
    and put its peak in the end event and in Progress.device_peaks (what the manifest entry records)."""
    import sys
    import types
    calls = []
    cuda = types.SimpleNamespace(is_available=lambda: True, is_initialized=lambda: True,
                                 reset_peak_memory_stats=lambda: calls.append("reset"),
                                 max_memory_allocated=lambda: 123_456_789)
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    progress = Progress(RunStore(tmp_path), quiet=True)
    with progress.stage("train_proj", total=4):
        assert calls == ["reset"]
    end = [e for e in read_events(tmp_path) if e["status"] == "end"][0]
    assert end["peak_cuda_bytes"] == 123_456_789 and progress.device_peaks == {"train_proj": 123_456_789}


def test_without_cuda_no_gpu_peak_is_recorded(tmp_path):
    progress = Progress(RunStore(tmp_path), quiet=True)
    with progress.stage("scores"):
        pass
    end = [e for e in read_events(tmp_path) if e["status"] == "end"][0]
    assert "peak_cuda_bytes" not in end and progress.device_peaks == {}
