"""Configuration flags built from config dataclass fields: each flag takes its help text (and shown default) from
its field, and parsed flags map back onto the fields from the same table, so a flag and its field cannot drift.

A table's flags are made by `flag_maker(sections)`, where `sections` names the config class of each section
('compare.train' is CompareConfig.train). Each method keeps its table beside its config (methods/<name>/config.py);
the run's own flags are in gist_core/cli/args.py. An unset flag leaves the config's own default.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from functools import partial


def names_list(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def floats_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in names_list(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of numbers") from None


def ints_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in names_list(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of whole numbers") from None


@dataclass(frozen=True)
class Flag:
    """One command-line flag for one config field; `section` names the config in `sections`."""
    flag: str
    field: str
    section: str = ""
    kwargs: tuple = ()
    extra_help: str = ""
    sections: Mapping[str, type] = field(default_factory=dict, compare=False, repr=False)

    @property
    def dest(self) -> str:
        return dict(self.kwargs).get("dest") or self.flag.lstrip("-").replace("-", "_")

    def config_class(self) -> type:
        return self.sections[self.section]

    def default(self):
        """The value the command uses when the flag is unset: a nested section's default comes from its container
        (TrainRunConfig's recipe trains 3 epochs although a bare TrainConfig says 4)."""
        parent, _, child = self.section.rpartition(".")
        if parent and parent in self.sections:
            return getattr(getattr(self.sections[parent](), child), self.field)
        f = next(f for f in fields(self.config_class()) if f.name == self.field)
        return f.default if f.default is not MISSING else None

    def help(self) -> str:
        f = next(f for f in fields(self.config_class()) if f.name == self.field)
        text = f.metadata.get("help", "")
        default = self.default()
        if isinstance(default, tuple):
            default = ",".join(map(str, default)) or None
        shown = f" (default {default})" if default not in (None, MISSING) and not isinstance(default, bool) else ""
        return (text + shown + self.extra_help).replace("%", "%%")


def flag_maker(sections: Mapping[str, type]) -> Callable[..., Flag]:
    """Flag(...) with this table's sections bound."""
    return partial(Flag, sections=dict(sections))


def add_flags(p: argparse.ArgumentParser, flags: tuple[Flag, ...]) -> None:
    for f in flags:
        p.add_argument(f.flag, help=f.help(), **dict(f.kwargs))


def flag_values(a: argparse.Namespace, flags: tuple[Flag, ...]) -> dict[str, dict]:
    """section -> {field: value} for the flags given on the command line."""
    out: dict[str, dict] = {s: {} for f in flags for s in f.sections}
    for f in flags:
        value = getattr(a, f.dest, None)
        if value is not None:
            out[f.section][f.field] = value
    return out
