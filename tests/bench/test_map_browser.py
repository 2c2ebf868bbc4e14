"""bench/map_browser.py at a toy size, so it cannot rot: a real dashboard, headless system Chromium, every figure
measured and consistent (needs chromium and playwright: skipped without them, failed with GIST_LAB_REQUIRE_BROWSER=1)."""
from __future__ import annotations

import subprocess
import sys

import browser_kit
import pytest
from repo import ROOT, load_bench

BENCH = ROOT / "bench" / "map_browser.py"


def _bench():
    return load_bench("map_browser")


def test_help_says_what_it_measures_and_bad_sizes_exit_2():
    out = subprocess.run([sys.executable, str(BENCH), "--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and "WebGL" in out.stdout and "Chromium" in out.stdout
    bad = subprocess.run([sys.executable, str(BENCH), "--sizes", "10"], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "--sizes" in bad.stderr


@pytest.mark.slow
def test_map_browser_bench_measures_a_small_pool():
    browser_kit.require_browser()
    mb = _bench()
    res = mb.main(sizes=[400], repeats=1, timeout_s=120)
    (size,) = res["sizes"]
    rep = size["repeats"][0]
    assert size["n_pool"] == 400 and size["points_drawn"] == 400 and res["machine"]["chromium"]
    assert 0 < rep["title_ms"] < rep["draw_ms"]  # the page is up before its map is drawn
    assert rep["recolour_ms"] > 0 and rep["select_ms"] > 0 and rep["heap_mb"] > 1
    assert 0 < rep["selected_rows"] < 400  # the lasso over a quarter of the plot listed some rows, not all
    server = size["server"]
    assert server["points"] == 400 and server["traces"] == 2 and server["json_bytes"] > 400 * 8
    assert server["total_ms"] >= server["pca_ms"] > 0
    assert size["draw_ms"] == {"min": rep["draw_ms"], "median": rep["draw_ms"], "max": rep["draw_ms"]}
    table = mb.markdown(res["sizes"]).splitlines()
    assert len(table) == 3 and table[2].startswith("| 400 | 400 |")
