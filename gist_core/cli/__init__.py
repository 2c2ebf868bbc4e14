"""`gist-lab` command line, built from the method registry (gist_core/methods/registry.py): each registered
Command adds its subcommand, its flags (its `arguments` function) and what it runs (its `run` function, imported
only when it runs). Every user error is a GistError: one line on stderr, exit 2.
"""
from __future__ import annotations

import argparse
import sys

from gist_core.errors import GistError
from gist_core.log import show_on_terminal
from gist_core.methods import registry
from gist_core.store.atomic import DISK_FULL


def build_parser(entries: tuple[registry.Entry, ...] | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gist-lab", description="Targeted data selection through gradient geometry.")
    sub = p.add_subparsers(dest="cmd", required=True)
    for command in registry.commands(entries):  # None: the registry as it is now
        sp = sub.add_parser(command.name, help=command.help)
        registry.load(command.arguments)(sp)
        # a private name: flags such as merge's --run must not shadow what runs
        sp.set_defaults(_command_run=command.run)
    return p


def os_error_line(e: OSError) -> str:
    """An OSError as one line naming the path (a full disk also says how to go on)."""
    what = e.strerror or str(e) or type(e).__name__
    if e.errno in DISK_FULL:
        where = f" writing {e.filename}" if e.filename else ""
        return f"{e.strerror or 'no space left on device'}{where}; free some space and rerun the same command " \
               "(finished stages are kept)"
    paths = " -> ".join(str(p) for p in (e.filename, e.filename2) if p)
    return f"{what}: {paths}" if paths else what


def main(argv: list[str] | None = None) -> int:
    show_on_terminal()
    a = build_parser().parse_args(argv)
    try:
        return registry.load(a._command_run)(a)
    except (GistError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {os_error_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130


