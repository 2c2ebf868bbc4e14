"""`gist-lab proxy build`: Iprox's command (registered in gist_core/methods/registry.py)."""
from __future__ import annotations

from gist_core.methods.iprox.config import proxy_config
from gist_core.methods.iprox.stages import run_proxy
from gist_core.methods.iprox.view import models_frame
from gist_core.store.layout import ProxyLayout


def proxy(a) -> int:
    rep = run_proxy(proxy_config(a), a.out, quiet=a.quiet)
    frame = models_frame(rep).drop(columns=["how"]).set_index("model")
    print(frame.to_string(float_format=lambda x: f"{x:.3f}", na_rep="-"))
    print(f"written: {ProxyLayout(a.out).report} (proxy model: {ProxyLayout(a.out).model})")
    return 0
