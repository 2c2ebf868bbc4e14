"""The Map page at large pools, measured in a real browser: how long until the WebGL scatter is drawn.

    python bench/map_browser.py                          # 10,000 / 20,000 / 100,000 pool rows, 3 repeats each
    python bench/map_browser.py --sizes 2000 --repeats 1 --out /tmp/map.json

Per pool size N it writes a synthetic run with tests/fake_run.py's make_fake_run (the numpy-only run folder every
page test uses; tests/ is put on sys.path for it, as bench/rescore_latency.py does) and measures

- server (in this process, the Python the page runs): re-score, PCA map, point frame, plotly figure and
  plotly.io.to_json (what st.plotly_chart sends), each timed; the figure JSON's bytes;
- browser: the dashboard (tests/browser_kit.py's streamlit_server) in headless system Chromium (Playwright,
  executable_path /usr/bin/chromium), a fresh browser context per repeat:
  * draw_ms: from navigation to /map?run=NAME until the map is drawn (title_ms: until the page's title is shown,
    the part that does not depend on the map);
  * recolour_ms: from picking "skill" under "Colour by" until the recoloured map is drawn;
  * select_ms: from the mouse-up that ends a lasso over a quarter of the plot until the picked rows are listed
    under the map (the selection goes to the server, which maps the lasso back to pool rows and reruns);
  * heap_mb: the page's used JS heap after the first draw (Chrome DevTools Protocol, Performance.getMetrics).

"Drawn" is decided in the page, on its own clock (performance.now(), 0 = navigation start): the first animation
frame at which the chart element (.js-plotly-plot) holds the expected traces with all N pool points plus the
targets in Plotly's _fullData, has its WebGL canvas, and Plotly has emitted plotly_afterplot for that figure; the
check runs once per animation frame (requestAnimationFrame), so a time is at most one frame late.

The first repeat of each size fills the server's cache (re-score, PCA); later repeats read it, so the table reports
the first repeat apart. Prints JSON (and writes it to --out); figures vary ±25 % on a shared machine.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import plotly.io as pio
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the fake run and the browser kit live there
import browser_kit  # noqa: E402
from fake_run import make_fake_run  # noqa: E402

from gist_core.viewer import pool_map, rescore, rundir  # noqa: E402
from gist_core.viewer.figures import pool_map as pool_map_figures  # noqa: E402

SIZES = (10_000, 20_000, 100_000)
RECOLOUR_BY = "skill"

# Installed before any page script: notes when the page title is first shown (Streamlit's page is up and running
# the script) and each time Plotly finishes a plot of the chart (plotly_afterplot).
AFTERPLOT_HOOK = """
window.__afterplot = [];
new MutationObserver(() => {
  if (window.__titleAt === undefined && document.querySelector('[data-testid="stApp"] h1')) {
    window.__titleAt = performance.now();
  }
  for (const gd of document.querySelectorAll('.js-plotly-plot')) {
    if (gd.__hooked || typeof gd.on !== 'function') continue;
    gd.__hooked = true;
    gd.on('plotly_afterplot', () => window.__afterplot.push(performance.now()));
  }
}).observe(document, {childList: true, subtree: true, attributes: true, attributeFilter: ['class']});
"""

# True (and the time noted) at the first animation frame where the chart shows `want`: {traces, points, since}.
DRAWN = """
(want) => {
  const gd = document.querySelector('.js-plotly-plot');
  if (!gd || !gd._fullData || !gd._fullLayout) return false;
  const points = gd._fullData.reduce((n, t) => n + (t._length ?? (t.x ? t.x.length : 0)), 0);
  if (gd._fullData.length !== want.traces || points !== want.points) return false;
  if (!gd.querySelector('canvas.gl-canvas-context')) return false;
  if (!window.__afterplot.some((t) => t >= want.since)) return false;
  window.__drawnAt = performance.now();
  return true;
}
"""

LISTED = """
() => {
  const hit = [...document.querySelectorAll('[data-testid="stMarkdownContainer"]')]
    .find((e) => /^[0-9,]+ examples, /.test(e.innerText));
  if (!hit) return false;
  window.__listedAt = performance.now();
  return hit.innerText.split(' ')[0];
}
"""


def summary(values: list[float]) -> dict:
    return {"min": round(min(values), 1), "median": round(statistics.median(values), 1), "max": round(max(values), 1)}


def server_side(run_dir: Path, color_by: str) -> dict:
    """Time and bytes of what the Map page computes for one figure, step by step (a cold process cache)."""
    run = rundir.load_run(run_dir)
    s = rescore.default_settings(run)
    t = {}
    t0 = time.perf_counter()
    rs = rescore.rescored_frame(run_dir, s["rank"], s["balance"], s["budget"], s["kind"])
    t["rescore_ms"] = time.perf_counter()
    md = pool_map.map_coords(run_dir, s["rank"], "pca")
    t["pca_ms"] = time.perf_counter()
    pts = pool_map.map_frame(md, rs.frame, color_by, rs.subtasks)
    t["frame_ms"] = time.perf_counter()
    fig = pool_map_figures.pool_map(pts, md.targets, color_by, "pca")
    t["figure_ms"] = time.perf_counter()
    spec = pio.to_json(fig, validate=False)
    t["to_json_ms"] = time.perf_counter()
    out, last = {}, t0
    for k, v in t.items():
        out[k], last = round((v - last) * 1000, 1), v
    return {**out, "total_ms": round((last - t0) * 1000, 1), "json_bytes": len(spec.encode()),
            "points": len(pts), "traces": len(fig.data), "n_targets": len(md.targets), "rank": s["rank"]}


def traces_for(run_dir: Path, color_by: str) -> int:
    """How many traces the figure has when coloured by `color_by` (the groups plus the targets)."""
    return server_side(run_dir, color_by)["traces"]


def wait_drawn(page, traces: int, points: int, since: float, timeout_ms: int) -> float:
    page.wait_for_function(DRAWN, arg={"traces": traces, "points": points, "since": since}, polling="raf",
                           timeout=timeout_ms)
    return page.evaluate("window.__drawnAt")


def lasso_quarter(page) -> float:
    """Draw a lasso over the plot's top-left quarter; returns the page time of the mouse-up."""
    box = page.locator(".js-plotly-plot .nsewdrag").first.bounding_box()
    x0, y0, w, h = box["x"], box["y"], box["width"], box["height"]
    corners = [(0.02, 0.02), (0.5, 0.02), (0.5, 0.5), (0.02, 0.5), (0.02, 0.03)]
    page.mouse.move(x0 + w * corners[0][0], y0 + h * corners[0][1])
    page.mouse.down()
    for fx, fy in corners[1:]:
        page.mouse.move(x0 + w * fx, y0 + h * fy, steps=8)
    t = page.evaluate("performance.now()")
    page.mouse.up()
    return t


def close_dialog(page) -> None:
    """A direct link to a page opens with Streamlit's "Page not found" dialog over the (right) page; it makes the rest
    of the page inert until closed."""
    if page.locator('[role="dialog"]').count():
        page.keyboard.press("Escape")
        page.locator('[role="dialog"]').wait_for(state="detached", timeout=10_000)


def pick_colour(page, label: str) -> float:
    """Choose `label` under "Colour by"; returns the page time of the click."""
    page.locator('[data-testid="stSelectbox"]').filter(has_text="Colour by").click()
    option = page.get_by_role("option", name=label, exact=True)
    option.wait_for(timeout=30_000)
    t = page.evaluate("performance.now()")
    option.click()
    return t


def browser_repeat(url: str, run_name: str, want: dict, timeout_ms: int) -> dict:
    with browser_kit.chromium_page() as page:
        page.add_init_script(AFTERPLOT_HOOK)
        cdp = page.context.new_cdp_session(page)
        cdp.send("Performance.enable")
        page.goto(f"{url}/map?run={run_name}", wait_until="commit")
        draw = wait_drawn(page, want["traces"], want["points"], 0.0, timeout_ms)
        title = page.evaluate("window.__titleAt")
        metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
        browser_kit.settle(page)
        close_dialog(page)
        t_pick = pick_colour(page, RECOLOUR_BY)
        recolour = wait_drawn(page, want["recolour_traces"], want["points"], t_pick, timeout_ms) - t_pick
        browser_kit.settle(page)
        t_up = lasso_quarter(page)
        listed = page.wait_for_function(LISTED, polling="raf", timeout=timeout_ms).json_value()
        select = page.evaluate("window.__listedAt") - t_up
        return {"draw_ms": round(draw, 1), "title_ms": round(title, 1), "recolour_ms": round(recolour, 1),
                "select_ms": round(select, 1), "selected_rows": int(str(listed).replace(",", "")),
                "heap_mb": round(metrics["JSHeapUsedSize"] / 2**20, 1),
                "chromium": page.context.browser.version}


def measure_size(runs: Path, url: str, n: int, repeats: int, timeout_ms: int) -> dict:
    name = f"map-{n}"
    t0 = time.perf_counter()
    run_dir = make_fake_run(runs / name, n_pool=n, n_val=20, r=8)
    made_s = time.perf_counter() - t0
    server = server_side(run_dir, "score")
    want = {"traces": server["traces"], "points": server["points"] + server["n_targets"],
            "recolour_traces": traces_for(run_dir, RECOLOUR_BY)}
    reps = [browser_repeat(url, name, want, timeout_ms) for _ in range(repeats)]
    out = {"n_pool": n, "points_drawn": server["points"], "make_run_s": round(made_s, 1), "server": server,
           "repeats": reps, "chromium": reps[0]["chromium"]}
    for k in ("draw_ms", "title_ms", "recolour_ms", "select_ms", "heap_mb"):
        out[k] = summary([r[k] for r in reps])
    out["draw_ms_first"] = reps[0]["draw_ms"]
    return out


def markdown(results: list[dict]) -> str:
    lines = ["| pool rows | points drawn | figure JSON | server build ms | draw ms (first; min / median / max) "
             "| title ms (median) | recolour ms | lasso → rows ms | JS heap MB |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        d, c, s, h = r["draw_ms"], r["recolour_ms"], r["select_ms"], r["heap_mb"]
        lines.append(f"| {r['n_pool']:,} | {r['points_drawn']:,} | {r['server']['json_bytes'] / 1e6:.2f} MB "
                     f"| {r['server']['total_ms']:,.0f} | {r['draw_ms_first']:,.0f}; {d['min']:,.0f} / {d['median']:,.0f} / "
                     f"{d['max']:,.0f} | {r['title_ms']['median']:,.0f} | {c['min']:,.0f} / {c['median']:,.0f} / {c['max']:,.0f} "
                     f"| {s['min']:,.0f} / {s['median']:,.0f} / {s['max']:,.0f} | {h['median']:.0f} |")
    return "\n".join(lines)


def main(sizes=SIZES, repeats: int = 3, timeout_s: float = 300.0) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"
        runs.mkdir()
        with browser_kit.streamlit_server(runs) as url:
            results = [measure_size(runs, url, n, repeats, int(timeout_s * 1000)) for n in sizes]
    return {"machine": {"cpus": os.cpu_count(), "chromium": results[0]["chromium"] if results else None,
                        "browser": "headless, --disable-gpu (WebGL in software)"},
            "map_max_points": pool_map.MAP_MAX_POINTS, "repeats": repeats, "sizes": results}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Time until the Map page's WebGL scatter is drawn in headless Chromium "
                                "(from navigation; after a 'Colour by' change; lasso to listed rows), the JS heap, and "
                                "the server's figure build time and JSON bytes, on synthetic runs of N pool rows.")
    p.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="pool sizes N (default 10000 20000 100000)")
    p.add_argument("--repeats", type=int, default=3, help="browser repeats per size (a fresh browser context each)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for one draw before giving up")
    p.add_argument("--out", type=Path, help="also write the JSON here")
    return p.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    if min(args.sizes) < 50 or args.repeats < 1:
        print("map_browser: --sizes must be >= 50 and --repeats >= 1", file=sys.stderr)
        sys.exit(2)
    try:
        browser_kit.require_browser()
    except (pytest.skip.Exception, pytest.fail.Exception) as e:  # browser_kit speaks pytest; here one line
        print(f"map_browser: {e}", file=sys.stderr)
        sys.exit(2)
    res = main(args.sizes, args.repeats, args.timeout)
    text = json.dumps(res, indent=2)
    if args.out:
        args.out.write_text(text)
    print(text)
    print(markdown(res["sizes"]))
