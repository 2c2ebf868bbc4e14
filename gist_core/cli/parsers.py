"""The flags of the core subcommands, one function per command (a method's own are in methods/<name>/config.py;
the registry names each: gist_core/methods/registry.py)."""
from __future__ import annotations

import argparse
from pathlib import Path

from gist_core.cli.args import COMPARE_FLAGS, GEOMETRY_FLAGS, PLAN_FLAGS, add_scale_args, add_selection_args
from gist_core.data.corpus import DEFAULT_DEMO_TARGET
from gist_core.flags import add_flags
from gist_core.methods.scoring import BALANCES, SCORE_KINDS
from gist_core.store.runs import runs_root


def demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", default=DEFAULT_DEMO_TARGET, help="bundled target task: transform | lookup | facts")
    p.add_argument("--model", help="another model on the bundled data: registry name (smollm2-135m), folder or .gguf")
    add_selection_args(p)
    add_scale_args(p)


def select(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="Hugging Face id, local folder, .gguf file or fetched registry name (smollm2-135m)")
    p.add_argument("--train", help="pool file (.jsonl/.json/.csv/.parquet) or datasets name/path")
    p.add_argument("--target", help="target validation examples (optional 'subtask' column)")
    p.add_argument("--config", help="replay a run's config.json (flags override its fields)")
    add_selection_args(p)
    add_scale_args(p)


def merge(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, type=Path, help="the run folder the shard jobs wrote into")
    p.add_argument("--quiet", action="store_true")


def rescore(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, type=Path)
    p.add_argument("--rank", required=True, type=int)


def compare(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="Hugging Face id, folder, .gguf file or registry name (default: the bundled tiny "
                   "model); with --target alone, the bundled pool and that bundled target")
    p.add_argument("--train", help="pool file or datasets name (default: the bundled pool)")
    p.add_argument("--target", help="target validation file, or a bundled target name (transform)")
    p.add_argument("--config", help="a run's config.json to compare on")
    add_flags(p, COMPARE_FLAGS)
    add_selection_args(p)
    add_scale_args(p)


def geometry(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, type=Path, help="a finished run directory")
    add_flags(p, GEOMETRY_FLAGS)
    p.add_argument("--quiet", action="store_true")


def bench(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--n-small", type=int, default=10_000, help="pool size of the small memory run")
    p.add_argument("--n-large", type=int, default=100_000, help="pool size of the large memory run")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--rescore-n", type=int, default=100_000)
    p.add_argument("--model", help="model to measure (default: the bundled tiny LM); a registry name, folder or .gguf")
    p.add_argument("--max-length", type=int, default=256, help="tokens per example (256)")
    p.add_argument("--lora-layers", type=int, metavar="L", help="LoRA on the last L layers only (default: all)")
    p.add_argument("--n-throughput", type=int, default=256, help="examples per timed throughput round (256)")
    p.add_argument("--n-loop", type=int, default=64, help="examples timed against the one-at-a-time loop (64)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians reported (3)")
    p.add_argument("--cpu-options", action="store_true",
                   help="also measure what each CPU option buys (LoRA layers, response-only logits, attention, threads)")


def models(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["fetch", "list"])
    p.add_argument("names", nargs="*", help="registry names to fetch (smollm2-135m)")
    p.add_argument("--quiet", action="store_true")


def data(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["fetch", "list"])
    p.add_argument("names", nargs="*", help="registry names to fetch (sharegpt gsm8k humaneval)")
    p.add_argument("--turns", choices=["first", "all"],
                    help="sharegpt: first = first user turn -> reply as prompt/response (default); all = whole chat")
    p.add_argument("--max-chars", type=int, metavar="N", help="sharegpt: drop rows over N characters (8000; 0 = keep all)")
    p.add_argument("--quiet", action="store_true")


def app(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", type=Path, default=runs_root())
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--address", default="127.0.0.1")


def curate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, type=Path, help="a finished run folder")
    p.add_argument("--add", nargs="+", action="extend", default=[], metavar="ID", help="pool row ids to add")
    p.add_argument("--remove", nargs="+", action="extend", default=[], metavar="ID", help="pool row ids to remove")
    p.add_argument("--exclude", action="append", default=[], metavar="KEY=VALUE",
                   help="remove a whole group: source, skill, subtask, kind, domain (code, math, writing, other) or "
                        "cluster (gist-lab cluster's GradientSpace clusters; cluster:METHOD for another clustering)")
    p.add_argument("--from-view", default="cli", metavar="NAME", help="the view the rows came from, recorded with "
                   "the edit (default: cli)")
    p.add_argument("--undo", action="store_true", help="drop the last edit")
    p.add_argument("--reset", action="store_true", help="drop every edit (back to the method's selection)")
    p.add_argument("--ids", action="store_true", help="print the working selection's row ids, one per line")
    p.add_argument("--take-rank", type=int, metavar="R", help="make the selection re-scored at rank R (the "
                   "dashboard's rank slider) the working selection, as two edits: remove and add")
    p.add_argument("--rule", choices=BALANCES, help="with --take-rank: the selection rule (default: the run's)")
    p.add_argument("--budget", type=float, help="with --take-rank: a fraction in (0,1] of the pool or a count > 1 "
                   "(default: the run's)")
    p.add_argument("--score", choices=SCORE_KINDS, help="with --take-rank: the GIST score kind (default: the run's)")


def export(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, type=Path, help="a finished run folder")
    p.add_argument("--format", choices=["rows", "messages"], default="rows",
                   help="rows: the original pool rows as selected.jsonl keeps them (default); messages: chat turns, "
                        "{\"messages\": [{\"role\", \"content\"}, ...]} per row")
    p.add_argument("--out", required=True, type=Path, help="the JSONL file to write (its provenance record is "
                   "written beside it as FILE.provenance.json)")
    p.add_argument("--rows", nargs="+", action="extend", metavar="ID",
                   help="export these pool rows (e.g. a lasso's ids) instead of the working selection")
    p.add_argument("--overwrite", action="store_true", help="replace FILE and its provenance record")


def plan(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="a model's config.json instead of a --model preset")
    add_flags(p, PLAN_FLAGS)
    p.add_argument("--json", action="store_true", help="print the plan (every stage's terms) as JSON")
