"""The Side by side page in a real headless browser over synthetic runs: two ranks of one run (B's rank moved with
the keyboard), then two runs (B's run picked from its select box); the numbers the page shows equal sets computed
from the run folders by hand (tests/naive_selection.py); screenshots of each state.

`GIST_LAB_REQUIRE_BROWSER=1 GIST_LAB_SCREENSHOTS=/tmp/shots python -m pytest -q tests/app/test_browser_side_by_side.py`
(browser_kit: the system Chromium; a missing browser skips, or fails where GIST_LAB_REQUIRE_BROWSER=1)."""
from __future__ import annotations

import json

import pandas as pd
import pytest
from browser_kit import SLIDER, chromium_page, settle, shot, streamlit_server
from fake_run import make_fake_compare, make_fake_run
from naive_selection import jaccard, top_k_ids

pytestmark = pytest.mark.slow
COLUMN = '[data-testid="stColumn"]'


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    runs = tmp_path_factory.mktemp("sbs-browser-runs")
    make_fake_compare(make_fake_run(runs / "one", n_pool=1200, n_val=20, r=8), n_seeds=1)
    make_fake_run(runs / "two", n_pool=1500, n_val=20, r=8, seed=1)  # 300 rows run one's pool lacks
    summary = json.loads((runs / "one" / "summary.json").read_text())  # a run made at rank 3 of the 8 stored
    (runs / "one" / "summary.json").write_text(json.dumps({**summary, "rank": 3}))
    with streamlit_server(runs) as url:
        yield url, runs


def shown(page) -> dict[str, str]:
    """Each metric's label -> its value, as the browser draws them."""
    out = {}
    for text in page.locator('[data-testid="stMetric"]').all_inner_texts():
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        out[lines[0]] = lines[-1]
    return out


def expected(sa: set, sb: set) -> dict[str, str]:
    return {"|A|": f"{len(sa):,}", "|B|": f"{len(sb):,}", "|A ∩ B|": f"{len(sa & sb):,}",
            "Jaccard": f"{jaccard(sa, sb):.3f}"}


def side_column(page, n: int):
    """A's (0) or B's (1) column of pickers."""
    return page.locator(COLUMN).filter(has=page.locator('[data-testid="stSelectbox"]')).nth(n)


def wait_for_numbers(page, want: dict[str, str]) -> dict[str, str]:
    for _ in range(40):  # a rerun after a widget change: wait until the metrics show it
        got = shown(page)
        if all(got.get(k) == v for k, v in want.items()):
            return got
        page.wait_for_timeout(500)
    return shown(page)


def close_page_not_found(page) -> None:
    """A cold link to a page can open Streamlit's "Page not found" notice over the right page (streamlit#8860,
    docs/guide/dashboard.md); it holds the keyboard focus until closed."""
    notice = page.get_by_role("dialog").filter(has_text="Page not found")
    if notice.count():
        notice.get_by_role("button").first.click()
        notice.wait_for(state="hidden", timeout=10_000)


def test_two_ranks_then_two_runs(server):
    url, runs = server
    one, two = runs / "one", runs / "two"
    pool_one = set(pd.read_parquet(one / "examples.parquet")["id"])
    with chromium_page(height=4400) as page:  # tall: Streamlit scrolls inside, a screenshot shows the viewport
        page.goto(f"{url}/sidebyside?run=one")
        page.get_by_role("heading", name="Side by side").first.wait_for(timeout=60_000)
        settle(page)
        close_page_not_found(page)
        # the defaults: A = the run's rank 3, B = twice it
        sliders = page.locator(SLIDER)
        assert [sliders.nth(i).input_value() for i in (0, 2)] == ["3", "6"]
        got = wait_for_numbers(page, expected(top_k_ids(one, 3), top_k_ids(one, 6)))
        assert {k: got.get(k) for k in expected(set(), {1})} == expected(top_k_ids(one, 3), top_k_ids(one, 6))
        page.get_by_text("What enters and leaves from r = 3 to r = 6").wait_for(timeout=30_000)
        shot(page, "sbs_1_ranks_3_6")

        # B's rank one step down with the keyboard: 6 -> 5
        thumb = side_column(page, 1).locator(SLIDER).first
        thumb.focus()
        page.keyboard.press("ArrowLeft")
        page.wait_for_timeout(800)
        settle(page)
        assert thumb.input_value() == "5"
        want = expected(top_k_ids(one, 3), top_k_ids(one, 5))
        assert {k: v for k, v in wait_for_numbers(page, want).items() if k in want} == want
        page.get_by_text("What enters and leaves from r = 3 to r = 5").wait_for(timeout=30_000)
        shot(page, "sbs_2_ranks_3_5")

        # B on the other run (same rank 5): matched by id, B's rows outside run one's pool counted
        side_column(page, 1).locator('[data-testid="stSelectbox"]').first.click()
        page.get_by_role("option", name="two").click()
        page.wait_for_timeout(800)
        settle(page)
        sa, sb = top_k_ids(one, 3), top_k_ids(two, 5)
        want = {**expected(sa, sb), "B rows not in A's pool": f"{len(sb - pool_one):,}"}
        got = wait_for_numbers(page, want)
        assert {k: got.get(k) for k in want} == want and len(sb - pool_one) > 0
        assert page.get_by_text("What enters and leaves").count() == 0  # two runs: not a rank change
        assert page.locator('[data-testid="stPlotlyChart"]').count() == 4  # overlap, rank curve, groups, map
        shot(page, "sbs_3_two_runs")
