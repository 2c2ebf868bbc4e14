"""The normalisers of the data registry (gist_core.data.registry): a packaged file in, normalised rows out.

Pure: the same file and options give the same rows, in the same (seeded) order. ShareGPT's JSON list is cut
off at its end, so it is read record by record and reading stops at the first incomplete record.
"""
from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from gist_core.errors import DataError


class Entry(Protocol):
    """What a normaliser reads of its registry entry (gist_core.data.registry.DataEntry)."""
    seed: int
    splits: tuple[tuple[str, int], ...]

POOL, VAL, TEST = "pool.jsonl", "val.jsonl", "test.jsonl"

@dataclass(frozen=True)
class Normalised:
    """A normaliser's output: rows per file name (in the order written) and the counts for the manifest."""
    files: dict[str, list[dict]]
    counts: dict[str, int]


_SURROGATE = re.compile(r"[\ud800-\udfff]")  # lone halves (JSON allows \ud83d alone); UTF-8 cannot encode them
USER_ROLES = {"human", "user"}
ASSISTANT_ROLES = {"gpt", "chatgpt", "bing", "bard", "assistant", "model"}  # ShareGPT's assistant labels


def _clean(text: str) -> str:
    return _SURROGATE.sub("\ufffd", text)


def json_list_records(text: str) -> tuple[list, bool]:
    """Records of a JSON list parsed one at a time; -> (records, cut_off). A list whose text ends inside a
    record (the ShareGPT file in the wheel is cut off) yields the complete ones; broken JSON elsewhere is a
    DataError. A cut-off record is one the decoder ran out of text in."""
    decoder, i, n, records = json.JSONDecoder(), 0, len(text), []
    i = _skip(text, i, " \t\r\n\ufeff")
    if i >= n or text[i] != "[":
        raise DataError("expected a JSON list (the text does not start with '[')")
    i += 1
    while True:
        i = _skip(text, i, " \t\r\n,")
        if i >= n:
            return records, True  # no closing bracket: cut off between records
        if text[i] == "]":
            return records, False
        try:
            obj, i = decoder.raw_decode(text, i)
        except json.JSONDecodeError as e:
            if e.msg.startswith("Unterminated string") or e.pos >= len(text.rstrip()) - 6:
                return records, True
            raise DataError(f"invalid JSON in record {len(records) + 1} ({e.msg}: line {e.lineno} column {e.colno})") from None
        records.append(obj)


def _skip(text: str, i: int, chars: str) -> int:
    while i < len(text) and text[i] in chars:
        i += 1
    return i


def unique_ids(ids: list, prefix: str) -> list[str]:
    """Ids kept where unique; a repeated id becomes id#1, id#2, ... in file order; a missing one prefix-<index>."""
    ids = [str(x) if x not in (None, "") else f"{prefix}-{k}" for k, x in enumerate(ids, 1)]
    seen_count, used, out = Counter(ids), set(ids), []
    next_k: Counter = Counter()
    for x in ids:
        if seen_count[x] == 1:
            out.append(x)
            continue
        next_k[x] += 1
        while f"{x}#{next_k[x]}" in used:
            next_k[x] += 1
        used.add(f"{x}#{next_k[x]}")
        out.append(f"{x}#{next_k[x]}")
    return out


def seeded_order(n: int, seed: int) -> np.ndarray:
    """The permutation every entry uses (numpy's PCG64 generator from `seed`)."""
    return np.random.default_rng(seed).permutation(n)


def _turns(record: dict) -> list[tuple[str, str]] | None:
    """(role, text) with roles mapped to user/assistant/system; None for an unknown role or a malformed turn."""
    turns = []
    for m in record.get("conversations") or []:
        if not isinstance(m, dict) or not isinstance(m.get("value"), str):
            return None
        role = str(m.get("from", "")).lower()
        mapped = "user" if role in USER_ROLES else "assistant" if role in ASSISTANT_ROLES else role
        if mapped not in ("user", "assistant", "system"):
            return None
        turns.append((mapped, _clean(m["value"])))
    return turns


def _first_pair(turns: list[tuple[str, str]]) -> dict | None:
    for (r1, t1), (r2, t2) in zip(turns, turns[1:]):
        if r1 == "user" and r2 == "assistant" and t1.strip() and t2.strip():
            return {"prompt": t1, "response": t2}
    return None


def _whole_chat(turns: list[tuple[str, str]]) -> dict | None:
    """The conversation from its first user turn to its last assistant turn (a leading system turn kept);
    None unless it alternates user/assistant (ShareGPT splits long chats, so a chunk may start mid-way)."""
    kept = [(r, t) for r, t in turns if t.strip()]
    system = kept[:1] if kept and kept[0][0] == "system" else []
    body = kept[len(system):]
    start = next((k for k, (r, _) in enumerate(body) if r == "user"), None)
    end = max((k for k, (r, _) in enumerate(body) if r == "assistant"), default=-1)
    if start is None or end < start:
        return None
    body = body[start:end + 1]
    if any(r != ("user" if k % 2 == 0 else "assistant") for k, (r, _) in enumerate(body)):
        return None
    return {"messages": [{"role": r, "content": t} for r, t in system + body]}


def _row_chars(row: dict) -> int:
    if "messages" in row:
        return sum(len(m["content"]) for m in row["messages"])
    return len(row["prompt"]) + len(row["response"])


def normalise_sharegpt(path: Path, options: dict, entry: Entry) -> Normalised:
    """ShareGPT V3 -> pool rows. turns=first: the first user turn followed by an assistant turn, as prompt and
    response; turns=all: the conversation as chat messages (examples.py trains on its last assistant turn, with
    the turns before it as context). Rows over max_chars characters (0 = no limit) are dropped."""
    text = path.read_bytes().decode("utf-8", errors="replace")
    records, cut_off = json_list_records(text)
    ids = unique_ids([r.get("id") if isinstance(r, dict) else None for r in records], "sharegpt")
    build = _first_pair if options["turns"] == "first" else _whole_chat
    rows, skipped = [], Counter()
    for rid, record in zip(ids, records):
        turns = _turns(record) if isinstance(record, dict) else None
        row = build(turns) if turns else None
        if row is None:
            skipped["skipped_no_usable_turns" if turns is not None else "skipped_malformed"] += 1
        elif options["max_chars"] and _row_chars(row) > options["max_chars"]:
            skipped["skipped_over_max_chars"] += 1
        else:
            rows.append({"id": rid, **row, "source": "sharegpt"})
    order = seeded_order(len(rows), entry.seed)
    counts = {"records_read": len(records), "cut_off_tail": int(cut_off), "rows_kept": len(rows),
              "ids_made_unique": sum(1 for a, b in zip(ids, records) if isinstance(b, dict) and a != b.get("id")),
              **dict(sorted(skipped.items()))}
    return Normalised({POOL: [rows[k] for k in order]}, counts)


def _jsonl(text: str, label: str) -> Iterator[tuple[int, dict]]:
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{label}:{n}: invalid JSON ({e.msg}: column {e.colno})") from None
        if not isinstance(row, dict):
            raise DataError(f"{label}:{n}: row is not a JSON object")
        yield n, row


def _text_field(row: dict, key: str, where: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: field {key!r} is missing or empty")
    return _clean(value)


def _split(rows: list[dict], splits: tuple[tuple[str, int], ...], seed: int, label: str) -> Normalised:
    """Disjoint splits drawn in a seeded order: the first n1 rows of the permutation, the next n2, ...; the rest unused."""
    need = sum(n for _, n in splits)
    if need > len(rows):
        raise DataError(f"{label}: {len(rows)} rows, fewer than the {need} the splits need")
    order, files, start = seeded_order(len(rows), seed), {}, 0
    for fname, n in splits:
        files[fname] = [rows[k] for k in order[start:start + n]]
        start += n
    counts = {"rows_read": len(rows), **{Path(f).stem: n for f, n in splits}, "unused": len(rows) - need}
    return Normalised(files, counts)


def normalise_gsm8k(path: Path, options: dict, entry: Entry) -> Normalised:
    """GSM8K test -> target rows: prompt = question, response = the worked answer ending in '#### N'."""
    label = Path(path).name
    rows = [{"id": f"gsm8k-{n}", "prompt": _text_field(r, "question", f"{label}:{n}"),
             "response": _text_field(r, "answer", f"{label}:{n}"), "subtask": "gsm8k", "source": "gsm8k"}
            for n, r in _jsonl(path.read_text(encoding="utf-8"), label)]
    return _split(rows, entry.splits, entry.seed, label)


def normalise_humaneval(path: Path, options: dict, entry: Entry) -> Normalised:
    """HumanEval -> target rows: prompt = signature + docstring, response = the canonical solution's body.
    The unit tests are left out: nothing here runs code, the model's or the data's."""
    label = Path(path).name
    try:
        text = gzip.decompress(path.read_bytes()).decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise DataError(f"{label}: not a valid gzipped UTF-8 file ({e})") from None
    rows = [{"id": _text_field(r, "task_id", f"{label}:{n}"), "prompt": _text_field(r, "prompt", f"{label}:{n}"),
             "response": _text_field(r, "canonical_solution", f"{label}:{n}"), "subtask": "humaneval",
             "source": "humaneval", "entry_point": r.get("entry_point")}
            for n, r in _jsonl(text, label)]
    return _split(rows, entry.splits, entry.seed, label)
