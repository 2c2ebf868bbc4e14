"""`gist-lab` command line: demo, select, merge, rescore, compare, geometry, cluster, experts, train,
proxy, bench, models, app.

The flags of a run's configuration come from the config dataclasses (cli/args.py); the commands are in
cli/commands.py. Every user error is a GistError: one line on stderr, exit 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gist_core.cli.args import (  # noqa: F401
    CLUSTER_FLAGS,
    COMPARE_FLAGS,
    EXPERT_FLAGS,
    GEOMETRY_FLAGS,
    PROXY_FLAGS,
    TRAIN_FLAGS,
    _budget,
    add_flags,
    add_scale_args,
    add_selection_args,
)
from gist_core.cli.args import overrides as _overrides  # noqa: F401  (tests use it under this name)
from gist_core.cli.commands import (  # noqa: F401
    DEFAULT_RUNS,
    cmd_app,
    cmd_bench,
    cmd_cluster,
    cmd_compare,
    cmd_data,
    cmd_demo,
    cmd_experts,
    cmd_geometry,
    cmd_merge,
    cmd_models,
    cmd_proxy,
    cmd_rescore,
    cmd_select,
    cmd_train,
    demo_default_out,
)
from gist_core.data.corpus import DEFAULT_DEMO_TARGET
from gist_core.errors import GistError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gist-lab", description="Targeted data selection through gradient geometry.")
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="run GIST on the bundled tiny model and synthetic corpus")
    d.add_argument("--target", default=DEFAULT_DEMO_TARGET, help="bundled target task: transform | lookup | facts")
    d.add_argument("--model", help="another model on the bundled data: registry name (smollm2-135m), folder or .gguf")
    add_selection_args(d)
    add_scale_args(d)
    d.set_defaults(func=cmd_demo)
    s = sub.add_parser("select", help="select training data for a target task")
    s.add_argument("--model", help="Hugging Face id, local folder, .gguf file or fetched registry name (smollm2-135m)")
    s.add_argument("--train", help="pool file (.jsonl/.json/.csv/.parquet) or datasets name/path")
    s.add_argument("--target", help="target validation examples (optional 'subtask' column)")
    s.add_argument("--config", help="replay a run's config.json (flags override its fields)")
    add_selection_args(s)
    add_scale_args(s)
    s.set_defaults(func=cmd_select)
    m = sub.add_parser("merge", help="merge the --shard jobs' projections into RUN and score")
    m.add_argument("--run", required=True, type=Path, help="the run folder the shard jobs wrote into")
    m.add_argument("--quiet", action="store_true")
    m.set_defaults(func=cmd_merge)
    r = sub.add_parser("rescore", help="scores at another rank from a run's stored projections")
    r.add_argument("--run", required=True, type=Path)
    r.add_argument("--rank", required=True, type=int)
    r.set_defaults(func=cmd_rescore)
    c = sub.add_parser("compare", help="GIST vs LESS and baselines: selection quality, downstream loss, cost")
    c.add_argument("--model", help="Hugging Face id, folder, .gguf file or registry name (default: the bundled tiny "
                   "model); with --target alone, the bundled pool and that bundled target")
    c.add_argument("--train", help="pool file or datasets name (default: the bundled pool)")
    c.add_argument("--target", help="target validation file, or a bundled target name (transform)")
    c.add_argument("--config", help="a run's config.json to compare on")
    add_flags(c, COMPARE_FLAGS)
    add_selection_args(c)
    add_scale_args(c)
    c.set_defaults(func=cmd_compare)
    g = sub.add_parser("geometry", help="curvature of a LoRA block per warm-up checkpoint (Hessian, GN, Fisher, Adam)")
    g.add_argument("--run", required=True, type=Path, help="a finished run directory")
    add_flags(g, GEOMETRY_FLAGS)
    g.add_argument("--quiet", action="store_true")
    g.set_defaults(func=cmd_geometry)
    k = sub.add_parser("cluster", help="GradientSpace (reconstruction): cluster the pool in LoRA-gradient space, "
                       "with ELREA, embedding and random baselines")
    k.add_argument("--run", required=True, type=Path, help="a run directory with a finished warm-up")
    add_flags(k, CLUSTER_FLAGS)
    k.add_argument("--quiet", action="store_true")
    k.set_defaults(func=cmd_cluster)
    x = sub.add_parser("experts", help="GradientSpace (reconstruction): one LoRA expert per cluster, a router, the ELREA "
                       "ensemble; test loss, exact match, routing accuracy and latency per seed")
    x.add_argument("--run", required=True, type=Path, help="a run directory with a finished gist-lab cluster")
    add_flags(x, EXPERT_FLAGS)
    x.add_argument("--quiet", action="store_true")
    x.set_defaults(func=cmd_experts)
    t = sub.add_parser("train", help="GAST: LoRA training with per-layer data selection inside every step (or an "
                       "ablation: top-K, random, plain LoRA); test loss, exact match, time and memory per step")
    t.add_argument("--out", required=True, type=Path, help="folder for train.json, the selection log and the adapter")
    t.add_argument("--ablation", action="store_true", help="every method × --seeds (GAST under both implementations)")
    t.add_argument("--seeds", type=int, default=3, help="seeds of the ablation (3)")
    add_flags(t, TRAIN_FLAGS)
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=cmd_train)
    px = sub.add_parser("proxy", help="Iprox: a low-rank proxy of the target model (IPSVD + gradient alignment) for "
                        "cheaper selection; its agreement with the target and its cost, side by side")
    px.add_argument("action", choices=["build"])
    px.add_argument("--out", required=True, type=Path, help="folder for the proxy model, its ablations and proxy.json")
    add_flags(px, PROXY_FLAGS)
    px.add_argument("--quiet", action="store_true")
    px.set_defaults(func=cmd_proxy)
    b = sub.add_parser("bench", help="gradient throughput, batching speed-up, rescore latency, memory scaling")
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--n-small", type=int, default=10_000, help="pool size of the small memory run")
    b.add_argument("--n-large", type=int, default=100_000, help="pool size of the large memory run")
    b.add_argument("--batch-size", type=int, default=16)
    b.add_argument("--rescore-n", type=int, default=100_000)
    b.add_argument("--model", help="model to measure (default: the bundled tiny LM); a registry name, folder or .gguf")
    b.add_argument("--max-length", type=int, default=256, help="tokens per example (256)")
    b.add_argument("--lora-layers", type=int, metavar="L", help="LoRA on the last L layers only (default: all)")
    b.add_argument("--n-throughput", type=int, default=256, help="examples per timed throughput round (256)")
    b.add_argument("--n-loop", type=int, default=64, help="examples timed against the one-at-a-time loop (64)")
    b.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians reported (3)")
    b.add_argument("--cpu-options", action="store_true",
                   help="also measure what each CPU option buys (LoRA layers, response-only logits, attention, threads)")
    b.set_defaults(func=cmd_bench)
    mo = sub.add_parser("models", help="real models offline: fetch a registry model once, list the cache")
    mo.add_argument("action", choices=["fetch", "list"])
    mo.add_argument("names", nargs="*", help="registry names to fetch (smollm2-135m)")
    mo.add_argument("--quiet", action="store_true")
    mo.set_defaults(func=cmd_models)
    dt = sub.add_parser("data", help="real instruction data offline: fetch a registry data set once (sharegpt, gsm8k, "
                                     "humaneval), list the cache; then use the name as --train / --target")
    dt.add_argument("action", choices=["fetch", "list"])
    dt.add_argument("names", nargs="*", help="registry names to fetch (sharegpt gsm8k humaneval)")
    dt.add_argument("--turns", choices=["first", "all"],
                    help="sharegpt: first = first user turn -> reply as prompt/response (default); all = whole chat")
    dt.add_argument("--max-chars", type=int, metavar="N", help="sharegpt: drop rows over N characters (8000; 0 = keep all)")
    dt.add_argument("--quiet", action="store_true")
    dt.set_defaults(func=cmd_data)
    ap = sub.add_parser("app", help="open the dashboard (Streamlit)")
    ap.add_argument("--runs", type=Path, default=DEFAULT_RUNS)
    ap.add_argument("--port", type=int, default=8501)
    ap.add_argument("--address", default="127.0.0.1")
    ap.set_defaults(func=cmd_app)
    return p


def os_error_line(e: OSError) -> str:
    """An OSError as one line naming the path (a full disk also says how to go on)."""
    from gist_core.store.atomic import DISK_FULL
    what = e.strerror or str(e) or type(e).__name__
    if e.errno in DISK_FULL:
        where = f" writing {e.filename}" if e.filename else ""
        return f"{e.strerror or 'no space left on device'}{where}; free some space and rerun the same command " \
               "(finished stages are kept)"
    paths = " -> ".join(str(p) for p in (e.filename, e.filename2) if p)
    return f"{what}: {paths}" if paths else what


def main(argv: list[str] | None = None) -> int:
    from gist_core.log import show_on_terminal
    show_on_terminal()
    a = build_parser().parse_args(argv)
    try:
        return a.func(a)
    except (GistError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {os_error_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130


