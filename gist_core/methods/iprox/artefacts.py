"""What a `gist-lab proxy build` folder holds, read back: its report (proxy.json). Light (no torch): the Proxy
page and the notebook read it; gist_core.methods.iprox.stages writes it. The proxy model folders themselves are
gist_core.methods.iprox.store's."""
from __future__ import annotations

from pathlib import Path

from gist_core.store.layout import ProxyLayout
from gist_core.store.reports import check_report, read_report


def load_proxy_report(folder) -> dict:
    lay = ProxyLayout(folder)
    return check_report(read_report(lay.report, "proxy"), "proxy", str(lay.report))


def is_proxy_run(folder: Path) -> bool:
    return ProxyLayout(folder).report.is_file()
