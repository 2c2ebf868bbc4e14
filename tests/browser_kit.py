"""What every real-browser test shares: the system Chromium, a Streamlit server over a runs folder, and waits.

Needs Debian's chromium (`apt-get install -y chromium`) and `pip install playwright`; never `playwright install`.
Where either is missing a test skips with a reason, except with GIST_LAB_REQUIRE_BROWSER=1 (set by .ci/run): then
it fails with the same one-line install hint, so CI cannot pass without having run it. Screenshots go to
$GIST_LAB_SCREENSHOTS when set.
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from repo import ROOT

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
REQUIRE_ENV = "GIST_LAB_REQUIRE_BROWSER"  # "1": a missing browser fails the test instead of skipping it
SLIDER = '[data-testid="stSlider"] input[type="range"]'
IDLE = "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def missing(hint: str) -> None:
    """Skip with the install hint; fail with it where the browser test is required (REQUIRE_ENV=1)."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{hint} ({REQUIRE_ENV}=1)", pytrace=False)
    pytest.skip(hint)


def require_browser() -> None:
    if not Path(CHROMIUM).exists():
        missing(f"{CHROMIUM} missing: apt-get install -y chromium")
    try:
        import playwright.sync_api  # noqa: F401  # lazy: optional (the test skips without it)
    except ImportError:
        missing("playwright missing: pip install playwright (no `playwright install`)")


@contextlib.contextmanager
def streamlit_server(runs: Path, env: dict | None = None):
    """The dashboard (app.py) over the runs folder `runs`, on a free local port; yields its URL."""
    require_browser()
    port = free_port()
    env = {**os.environ, "GIST_LAB_RUNS": str(runs), **(env or {})}
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true",
                             "--server.address", "127.0.0.1", "--server.port", str(port),
                             "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=1).read() == b"ok":
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("streamlit did not come up: " + proc.stdout.read().decode(errors="replace")[-2000:])
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextlib.contextmanager
def chromium_page(width: int = 1400, height: int = 1000, **context):
    """A page of a fresh headless Chromium (the system one, never a downloaded browser)."""
    from playwright.sync_api import sync_playwright  # lazy: optional, present once require_browser passed
    require_browser()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser.new_context(viewport={"width": width, "height": height}, **context).new_page()
        finally:
            browser.close()


def settle(page) -> None:
    """Wait until the app is drawn and no rerun is in flight."""
    page.wait_for_selector('[data-testid="stApp"] h1', timeout=60_000)
    page.wait_for_timeout(500)
    page.wait_for_function(IDLE, timeout=120_000)
    page.wait_for_timeout(300)


def shot(page, name: str) -> None:
    out = os.environ.get("GIST_LAB_SCREENSHOTS")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(out) / f"{name}.png"), full_page=True)


def nav(page, label: str) -> None:
    """Switch page through the sidebar (keeps the session, hence the shared rank)."""
    page.locator('[data-testid="stSidebarNav"] a', has_text=label).first.click()
    settle(page)
    page.get_by_role("heading", name=label).first.wait_for(timeout=60_000)
    settle(page)
