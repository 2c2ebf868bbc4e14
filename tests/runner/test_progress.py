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
