"""A job started from its empty page in a real headless browser: on an empty runs folder the Layers page offers
`gist-lab train`; with the tiny settings typed into its form (64 training rows, 1 epoch) the Launch button starts it
detached, the page follows it and, when it has finished, draws its results. The quickest job that really runs (on
the bundled tiny LM, 2 cores: 4 steps and the evaluation; the whole test took 22 s, server and browser included).

Slow: `pytest -m slow tests/app/test_browser_launch.py`. Needs Debian's chromium and playwright (browser_kit: a
missing browser skips, or fails with GIST_LAB_REQUIRE_BROWSER=1). Screenshots go to $GIST_LAB_SCREENSHOTS when set.
"""
from __future__ import annotations

import json
import time

import pytest
from browser_kit import chromium_page, nav, settle, shot, streamlit_server

from gist_core.runner import launcher

FOLDER = "gast-browser"
JOB_TIMEOUT_S = 240

pytestmark = pytest.mark.slow


def fill_number(page, label: str, value: int) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Enter")
    settle(page)


def test_train_launched_from_the_empty_layers_page_finishes_and_shows_its_results(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    with streamlit_server(runs) as url, chromium_page() as page:
        try:
            page.goto(url)  # then the sidebar: a cold deep link can show Streamlit's "Page not found" over the page
            settle(page)
            nav(page, "Layers")
            page.get_by_text("No gist-lab train folder", exact=False).first.wait_for(timeout=60_000)
            page.get_by_label("Folder name", exact=True).fill(FOLDER)
            page.get_by_label("Folder name", exact=True).press("Enter")
            settle(page)
            fill_number(page, "Training rows (0 = all)", 64)
            fill_number(page, "Epochs", 1)
            command = page.locator('[data-testid="stCode"]', has_text="gist-lab train").first.inner_text()
            assert f"--out {runs / FOLDER}" in command and "--pool-size 64" in command and "--epochs 1" in command
            shot(page, "layers_0_form")

            page.get_by_role("button", name="Launch gist-lab train").click()
            t0, running_seen = time.time(), False
            while time.time() - t0 < JOB_TIMEOUT_S:  # the page follows the job every 2 s, then reruns whole
                if page.get_by_text("selected (seed 0)", exact=False).count():  # the run's results heading
                    break
                if page.get_by_text("failed:", exact=False).count():
                    shot(page, "layers_failed")
                    pytest.fail("train failed: " + (runs / FOLDER / launcher.LOG_FILE).read_text(errors="replace")[-2000:])
                if not running_seen and page.get_by_text(f"gist-lab train is running in {FOLDER}").count():
                    running_seen = True
                    assert page.get_by_role("button", name="Cancel").count() == 1
                    shot(page, "layers_1_running")
                page.wait_for_timeout(1000)
            else:
                pytest.fail(f"train not finished after {JOB_TIMEOUT_S} s: "
                            + (runs / FOLDER / launcher.LOG_FILE).read_text(errors="replace")[-2000:])
            settle(page)
            shot(page, "layers_2_results")
            rep = json.loads((runs / FOLDER / "train.json").read_text())
            assert rep["n_train"] == 64 and rep["config"]["recipe"]["epochs"] == 1
            assert page.get_by_text(f"{rep['steps']} steps on 64 examples", exact=False).count()
            assert page.locator('[data-testid="stPlotlyChart"]').count() >= 2  # the selection-frequency heatmaps
            assert launcher.state(runs / FOLDER).returncode == 0
            assert running_seen  # followed while it ran (model loading alone outlasts the first redraw)
        finally:
            launcher.cancel(runs / FOLDER, grace_s=2.0, wait=True)  # never leave a job running
