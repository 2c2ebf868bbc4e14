"""Curation end to end in a real headless browser: draw a box on the Map with the mouse, see its rows listed,
remove them from the working selection, go to the Curate page and download the export. The bar: the exported file
of a curated selection equals, row for row, what the page showed (its table, downloaded as CSV from the table's own
toolbar), the rows the box listed are the ones that left, and each exported row is the run's own row read with json.

Slow (a Streamlit server and Chromium): `pytest -m slow tests/app/test_browser_curation.py`. Needs Debian's chromium
and `pip install playwright` (never `playwright install`); see tests/browser_kit.py.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pandas as pd
import pytest
from browser_kit import chromium_page, nav, settle, shot, streamlit_server
from fake_run import make_fake_run

from gist_core.store.layout import RunLayout

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    runs = tmp_path_factory.mktemp("curation-runs")
    run = make_fake_run(runs / "fake", n_pool=600, n_val=8, r=4)
    with streamlit_server(runs) as url:
        yield url, run


def download(page, trigger, folder: Path) -> Path:
    """The file a click downloads (the click is `trigger()`), kept in `folder` (Playwright's own copy goes with
    the browser)."""
    with page.expect_download(timeout=60_000) as info:
        trigger()
    kept = folder / f"{len(list(folder.iterdir()))}-{info.value.suggested_filename}"
    info.value.save_as(kept)
    return kept


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").split("\n") if x.strip()]


def table_csv(page, folder: Path, index: int = 0) -> pd.DataFrame:
    """A page's table as the browser holds it: its toolbar's "Download as CSV"."""
    table = page.locator('[data-testid="stDataFrame"]').nth(index)
    table.scroll_into_view_if_needed()
    table.hover()
    button = table.locator('[data-testid="stElementToolbarButton"] button[aria-label="Download as CSV"]')
    if not button.count():
        button = page.get_by_role("button", name="Download as CSV").first
    return pd.read_csv(download(page, button.click, folder), dtype={"id": str})


def draw_box(page) -> None:
    """Choose plotly's box tool in the map's modebar and drag over the right half of the plot."""
    chart = page.locator('[data-testid="stPlotlyChart"]').first
    chart.hover()
    page.locator('[data-testid="stPlotlyChart"] .modebar-btn[data-title="Box Select"]').first.click()
    area = chart.locator(".nsewdrag").first.bounding_box()
    x0, y0 = area["x"] + area["width"] * 0.55, area["y"] + area["height"] * 0.05
    x1, y1 = area["x"] + area["width"] * 0.98, area["y"] + area["height"] * 0.95
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move((x0 + x1) / 2, (y0 + y1) / 2, steps=8)
    page.mouse.move(x1, y1, steps=8)
    page.mouse.up()
    page.wait_for_timeout(800)
    settle(page)


def test_a_box_on_the_map_removed_then_exported_equals_what_the_page_showed(served, tmp_path):
    url, run = served
    lay = RunLayout(run)
    selected_lines = {json.loads(x)["id"]: json.loads(x) for x in lay.selected.read_text().splitlines() if x.strip()}
    pool_order = pd.read_parquet(lay.scores, columns=["id"])["id"].tolist()
    base = [i for i in pool_order if i in selected_lines]
    with chromium_page(accept_downloads=True) as page:
        page.add_init_script("delete window.showSaveFilePicker")  # the table's CSV through a plain download
        page.goto(f"{url}/?run=fake")  # Home first: a cold link to /map can open under "Page not found" (streamlit#8860)
        settle(page)
        nav(page, "Map")
        draw_box(page)
        remove = page.get_by_role("button", name=re.compile(r"Remove [\d,]+ from the working selection"))
        remove.wait_for(timeout=60_000)
        shot(page, "curation_1_map_box")
        listed = table_csv(page, tmp_path)["id"].tolist()  # the rows the box listed, as the page showed them
        lasso_file = read_jsonl(download(page, page.get_by_role(
            "button", name=re.compile(r"Download exactly these rows")).click, tmp_path))
        assert [r["id"] for r in lasso_file] == [i for i in pool_order if i in set(listed)]
        leaving = [i for i in base if i in set(listed)]
        assert 0 < len(listed) < len(pool_order) and leaving, "the box should hold some of the selection"
        assert f"Remove {len(leaving)} from the working selection" in remove.inner_text()  # (after its icon's name)
        remove.click()
        page.get_by_role("button", name="Remove 0 from the working selection").wait_for(timeout=60_000)
        settle(page)
        shot(page, "curation_2_map_removed")

        nav(page, "Curate")
        status = page.get_by_text("Working selection:").first.inner_text()
        assert f"{len(base) - len(leaving)} rows" in status and f"−{len(leaving)} removed" in status, status
        shot(page, "curation_3_curate")
        shown = table_csv(page, tmp_path)  # the working selection as the Curate page shows it
        export_button = page.get_by_role("button", name=re.compile(r"Download the working selection"))
        exported_path = download(page, export_button.click, tmp_path)
        provenance = json.loads(download(page, page.get_by_role("button", name="Provenance record (JSON)").click,
                                         tmp_path).read_text())

    exported = read_jsonl(exported_path)
    want = [i for i in base if i not in set(leaving)]
    ops = json.loads(lay.curation_edits.read_text())["ops"]
    assert [(o["action"], o["ids"], o["view"]) for o in ops] == [("remove", leaving, "map box")]
    # row for row: the page's table, the file, the run's own rows (selected.jsonl read with json)
    assert shown["id"].tolist() == [r["id"] for r in exported] == want
    assert exported == [selected_lines[i] for i in want]
    assert shown["prompt"].tolist() == [r["prompt"] for r in exported]
    assert shown["score"].round(4).tolist() == [round(r["score"], 4) for r in exported]
    assert provenance["ids"] == want and provenance["sha256"] == hashlib.sha256(exported_path.read_bytes()).hexdigest()
    assert provenance["edits"] == ops and provenance["counts"]["left_out_of_method_selection"] == len(leaving)
