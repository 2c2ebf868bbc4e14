"""Rank-slider latency: re-score + both selection rules from stored projections, 100,000 rows.

    python bench/rescore_latency.py            # prints JSON; no pass/fail
"""
from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fake_run import make_fake_run  # noqa: E402

from gist_core.viewer import rescore  # noqa: E402


def main(n_pool: int = 100_000, r_max: int = 16) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        d = make_fake_run(Path(tmp) / "big", n_pool=n_pool, n_val=20, r=r_max)
        t0 = time.perf_counter()
        rescore.rescored_frame(d, r_max // 2, "global", 0.05)
        first_ms = (time.perf_counter() - t0) * 1000
        times = []
        for r in range(1, r_max + 1):
            t0 = time.perf_counter()
            rescore.rescored_frame(d, r, "subtask", 0.05)
            times.append((time.perf_counter() - t0) * 1000)
    return {"n_pool": n_pool, "r_max": r_max, "first_call_ms": round(first_ms, 1),
            "rescore_ms_median": round(statistics.median(times), 1), "rescore_ms_max": round(max(times), 1)}


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
