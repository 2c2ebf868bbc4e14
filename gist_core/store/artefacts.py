"""Checked save/load pairs for every array artefact a run folder holds.

Why one place: safetensors 0.8.0 writes a numpy array from its raw buffer under a C-order
header (upstream issue safetensors#825), so a Fortran-ordered or strided array comes back
scrambled, silently. GIST once stored its target directions that way. Every writer here makes
arrays C-contiguous first and records each array's dtype and shape; every reader checks them.
No other module hands an array to safetensors or `np.save` directly.

FORMAT is the run-folder artefact format: 1 (no "format" field) = written before this guard,
2 = written through this module. Math lives elsewhere; this module only moves bytes.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from gist_core.errors import ArtefactError, StaleArtefact
from gist_core.store.atomic import atomic_path
from gist_core.store.manifest import ARTEFACT_FORMAT as FORMAT

_FORMAT_KEY = "gist_lab_format"
ARRAYS_KEY = "gist_lab_arrays"


def c_array(a, dtype=None) -> np.ndarray:
    """A C-contiguous copy (or the array itself when it already is one) with the given dtype."""
    return np.ascontiguousarray(np.asarray(a, dtype=dtype))


def array_digest(a: np.ndarray) -> str:
    """sha256 of an array's C-order bytes with its dtype and shape: identity of content, not of a file."""
    a = c_array(a)
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(memoryview(a).cast("B"))
    return h.hexdigest()[:16]


def _layout(arrays: dict[str, np.ndarray]) -> dict[str, list]:
    return {k: [np.dtype(v.dtype).str, list(v.shape)] for k, v in arrays.items()}


def _check(path, name: str, a: np.ndarray, dtype: str, shape: list) -> None:
    if np.dtype(a.dtype).str != dtype or list(a.shape) != list(shape):
        raise ArtefactError(f"{path}: '{name}' is {a.dtype}{list(a.shape)}, {np.dtype(dtype)}{shape} was written")


# ----------------------------------------------------------------------------- safetensors (numpy)
def save_tensors(path: str | os.PathLike, arrays: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> None:
    """Named arrays into one safetensors file, atomically; C-contiguous, dtype and shape recorded."""
    arrays = {k: c_array(v) for k, v in arrays.items()}
    meta = {**(metadata or {}), _FORMAT_KEY: str(FORMAT), ARRAYS_KEY: json.dumps(_layout(arrays))}
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(arrays, str(tmp), metadata=meta)


def load_tensors(path: str | os.PathLike, names: Iterable[str] | None = None,
                 allow_stale: bool = False) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(arrays, metadata) of a file written by save_tensors; only `names` when given (the rest is not read).
    A file of an older format raises StaleArtefact unless `allow_stale` (then its arrays are not checked)."""
    try:
        with safe_open(str(path), "np") as f:
            meta = dict(f.metadata() or {})
            present = set(f.keys())
            names = list(present) if names is None else list(names)
            missing = [n for n in names if n not in present]
            if missing:
                raise ArtefactError(f"{path}: no tensor(s) {', '.join(missing)}")
            out = {n: f.get_tensor(n) for n in names}
    except (OSError, SafetensorError) as e:
        raise ArtefactError(f"{path}: unreadable safetensors file ({e})") from None
    if meta.get(_FORMAT_KEY) != str(FORMAT):
        if allow_stale:
            return out, meta
        raise StaleArtefact(f"{path}: written in artefact format {meta.get(_FORMAT_KEY, 1)}, before the C-order "
                            f"guard (format {FORMAT}); rerun the command that made it to recompute it")
    arrays = json.loads(meta.get(ARRAYS_KEY, "{}"))
    for n, a in out.items():
        if n not in arrays:
            raise ArtefactError(f"{path}: '{n}' has no recorded dtype and shape")
        _check(path, n, a, *arrays[n])
    return out, meta


def artefact_format(path: str | os.PathLike) -> int:
    """The format a safetensors artefact was written in (1 = before FORMAT was recorded)."""
    with safe_open(str(path), "np") as f:
        return int((f.metadata() or {}).get(_FORMAT_KEY, 1))


# ----------------------------------------------------------------------------- safetensors (torch)
def save_torch_tensors(path: str | os.PathLike, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """Torch tensors (optimizer moments) into a safetensors file: contiguous CPU copies, dtypes and shapes recorded."""
    from safetensors.torch import save_file as save_torch_file  # lazy: torch; the dashboard reads artefacts here without it
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    arrays = {k: [str(v.dtype), list(v.shape)] for k, v in tensors.items()}
    meta = {**(metadata or {}), _FORMAT_KEY: str(FORMAT), ARRAYS_KEY: json.dumps(arrays)}
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_torch_file(tensors, str(tmp), metadata=meta)


def load_torch_tensors(path: str | os.PathLike) -> dict:
    """The tensors of a file written by save_torch_tensors (dtype and shape checked). Older files (no dtypes and shapes recorded)
    come back as stored: torch's writer has always refused non-contiguous tensors, so they are sound."""
    from safetensors.torch import load_file  # lazy: torch; the dashboard reads artefacts here without it
    out = load_file(str(path))
    with safe_open(str(path), "pt") as f:
        arrays = json.loads((f.metadata() or {}).get(ARRAYS_KEY, "null") or "null")
    if arrays is not None:
        for n, t in out.items():
            if n not in arrays or str(t.dtype) != arrays[n][0] or list(t.shape) != arrays[n][1]:
                raise ArtefactError(f"{path}: '{n}' is {t.dtype}{list(t.shape)}, not as written")
    return out


# ----------------------------------------------------------------------------- .npy
def save_npy(path: str | os.PathLike, a, dtype=None) -> None:
    """One array as .npy, atomically and C-ordered (np.save keeps Fortran order correctly, but every reader
    here, the row stores included, assumes C order)."""
    a = c_array(a, dtype)
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, a)


def load_npy(path: str | os.PathLike, dtype=None, ndim: int | None = None, shape: tuple | None = None,
             mmap: bool = False) -> np.ndarray:
    """A .npy artefact with its dtype, rank and shape checked (None = any); `mmap` maps it read-only."""
    try:
        a = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ArtefactError(f"{path}: unreadable .npy file ({e})") from None
    if dtype is not None and a.dtype != np.dtype(dtype):
        raise ArtefactError(f"{path}: dtype {a.dtype}, expected {np.dtype(dtype)}")
    if ndim is not None and a.ndim != ndim:
        raise ArtefactError(f"{path}: {a.ndim}-D array, expected {ndim}-D")
    if shape is not None and any(w is not None and w != s for w, s in zip(shape, a.shape)):
        raise ArtefactError(f"{path}: shape {a.shape}, expected {shape}")
    if not a.flags.c_contiguous:
        raise ArtefactError(f"{path}: not C-ordered")
    return a
