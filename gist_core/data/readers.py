"""Rows out of a file or a `datasets` name: JSONL (plain or gzip), JSON (a list, or a dict holding one), CSV,
Parquet, a saved dataset folder or a hub name. Each row comes with its position (file line or row number)
so that every error can name the file, the line and the field.
"""
from __future__ import annotations

import codecs
import gzip
import io
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from gist_core.data.registry import registry_file
from gist_core.errors import DataError

FILE_FORMATS = (".jsonl.gz", ".jsonl", ".json", ".csv", ".parquet")  # longest first: suffix match
LIST_KEYS = ("data", "examples", "train", "rows", "instances", "items")


def _open_rows(name: str, split: str) -> tuple[Iterator[tuple[int, Any]], str, str]:
    """-> (iterator of (1-based number, row), 'line' or 'row', default source name)."""
    path = registry_file(name) or Path(name)  # a fetched registry name (`gist-lab data fetch`) reads its cached file
    if path.is_dir():
        return _dataset_rows(name, split, local_dir=True), "row", path.name
    if path.is_file():
        ext = next((e for e in FILE_FORMATS if path.name.lower().endswith(e)), None)
        if ext is None:
            raise DataError(f"{name}: unsupported format {path.suffix!r} "
                            "(use .jsonl, .json, .csv, .parquet or a datasets name/path)")
        readers = {".jsonl.gz": _jsonl_rows, ".jsonl": _jsonl_rows, ".json": _json_rows,
                   ".csv": _csv_rows, ".parquet": _parquet_rows}
        unit = "line" if ext.startswith(".jsonl") else "row"
        return readers[ext](path, name), unit, path.name[: -len(ext)]
    if _looks_like_path(name):
        raise DataError(f"{name}: file not found")
    return _dataset_rows(name, split, local_dir=False), "row", name


def _looks_like_path(name: str) -> bool:
    # Hub ids are 'name' or 'owner/name'; anything else that is missing is a mistyped path.
    return (name.lower().endswith(FILE_FORMATS) or name.startswith(("/", ".", "~"))
            or "\\" in name or name.count("/") > 1)


def _read_text(path: Path, name: str) -> str:
    # Decode explicitly so a bad byte is reported with its offset instead of a codec traceback.
    data = path.read_bytes()
    if path.name.lower().endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise DataError(f"{name}: not a valid gzip file ({e})") from None
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[bom:].decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{name}: not valid UTF-8 text (byte offset {e.start + bom})") from None


def _jsonl_rows(path: Path, name: str) -> Iterator[tuple[int, Any]]:
    # split on "\n" only: str.splitlines would also split on U+2028, which is legal inside JSON strings.
    for n, line in enumerate(_read_text(path, name).split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{name}:{n}: invalid JSON ({e.msg}: column {e.colno})") from None
        yield n, row


def _json_rows(path: Path, name: str) -> Iterator[tuple[int, Any]]:
    text = _read_text(path, name)
    if not text.strip():
        return  # an empty file is reported as "no examples", like an empty JSONL file
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{name}: invalid JSON ({e.msg}: line {e.lineno} column {e.colno})") from None
    if isinstance(data, dict):
        data = _unwrap_list(data, name)
    if not isinstance(data, list):
        raise DataError(f"{name}: expected a list of rows, got a JSON {_type_name(data)}")
    yield from enumerate(data, 1)


def _unwrap_list(obj: dict, name: str) -> list:
    """{"data": [...]} and the like: the single list-valued key, else a well-known one."""
    lists = [k for k, v in obj.items() if isinstance(v, list)]
    known = [k for k in LIST_KEYS if k in lists]
    if len(lists) == 1 or known:
        return obj[lists[0] if len(lists) == 1 else known[0]]
    raise DataError(f"{name}: expected a list of rows or an object with a single list-valued key "
                    f"such as 'data' (list-valued keys: {', '.join(map(repr, lists)) or 'none'})")


def _csv_rows(path: Path, name: str) -> Iterator[tuple[int, Any]]:
    text = _read_text(path, name)
    try:  # all cells as strings: ids like "007" and labels like "1" must survive untouched
        df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        return
    except (pd.errors.ParserError, ValueError) as e:
        raise DataError(f"{name}: invalid CSV ({_first_line(e)})") from None
    for n, row in enumerate(df.to_dict("records"), 1):
        yield n, _plain(row)


def _parquet_rows(path: Path, name: str) -> Iterator[tuple[int, Any]]:
    try:
        df = pd.read_parquet(path)
    except Exception as e:  # pyarrow raises several unrelated types for a damaged file
        raise DataError(f"{name}: cannot read Parquet ({_first_line(e)})") from None
    for n, row in enumerate(df.to_dict("records"), 1):
        yield n, _plain(row)  # numpy arrays/scalars -> lists/ints so rows validate and export like JSON


def _dataset_rows(name: str, split: str, *, local_dir: bool) -> Iterator[tuple[int, Any]]:
    import datasets  # lazy: datasets is slow to import and only a dataset name or folder needs it
    path = Path(name)
    try:
        if local_dir and ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
            ds = datasets.load_from_disk(name)
        else:  # a hub name, or a plain folder of data files that load_dataset understands
            ds = datasets.load_dataset(name, split=split)
    except Exception as e:  # datasets raises many types (hub, builder, file system); one line each
        raise DataError(f"{name}: cannot load dataset ({type(e).__name__}: {_first_line(e)})") from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise DataError(f"{name}: no split {split!r} (available: {', '.join(ds)})")
        ds = ds[split]
    yield from enumerate(ds, 1)


def _type_name(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number",
             float: "number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _plain(value: Any) -> Any:
    """numpy/pandas values -> plain JSON types (NaN/NA -> None, arrays -> lists, timestamps -> text)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if type(value).__name__ in ("NAType", "NaTType"):
        return None
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return _plain(value.tolist())
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value
