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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gist_core.errors import ArtefactError, StaleArtefact  # noqa: F401  (raised here; re-exported)
from gist_core.store.atomic import atomic_path
from gist_core.store.manifest import ARTEFACT_FORMAT as FORMAT  # noqa: F401  (re-exported)

if TYPE_CHECKING:  # annotations only
    from gist_core.methods.gist.subspace import Subspace

_FORMAT_KEY = "gist_lab_format"
_LAYOUT_KEY = "gist_lab_arrays"


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
    from safetensors.numpy import save_file
    arrays = {k: c_array(v) for k, v in arrays.items()}
    meta = {**(metadata or {}), _FORMAT_KEY: str(FORMAT), _LAYOUT_KEY: json.dumps(_layout(arrays))}
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(arrays, str(tmp), metadata=meta)


def load_tensors(path: str | os.PathLike, names: Iterable[str] | None = None,
                 allow_stale: bool = False) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(arrays, metadata) of a file written by save_tensors; only `names` when given (the rest is not read).
    A file of an older format raises StaleArtefact unless `allow_stale` (then its layout is not checked)."""
    from safetensors import SafetensorError, safe_open
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
    layout = json.loads(meta.get(_LAYOUT_KEY, "{}"))
    for n, a in out.items():
        if n not in layout:
            raise ArtefactError(f"{path}: '{n}' has no recorded dtype and shape")
        _check(path, n, a, *layout[n])
    return out, meta


def artefact_format(path: str | os.PathLike) -> int:
    """The format a safetensors artefact was written in (1 = before FORMAT was recorded)."""
    from safetensors import safe_open
    with safe_open(str(path), "np") as f:
        return int((f.metadata() or {}).get(_FORMAT_KEY, 1))


# ----------------------------------------------------------------------------- safetensors (torch)
def save_torch_tensors(path: str | os.PathLike, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """Torch tensors (optimizer moments) into a safetensors file: contiguous CPU copies, layout recorded."""
    from safetensors.torch import save_file
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    layout = {k: [str(v.dtype), list(v.shape)] for k, v in tensors.items()}
    meta = {**(metadata or {}), _FORMAT_KEY: str(FORMAT), _LAYOUT_KEY: json.dumps(layout)}
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_torch_tensors(path: str | os.PathLike) -> dict:
    """The tensors of a file written by save_torch_tensors (dtype and shape checked). Older files (no layout)
    come back as stored: torch's writer has always refused non-contiguous tensors, so they are sound."""
    from safetensors import safe_open
    from safetensors.torch import load_file
    out = load_file(str(path))
    with safe_open(str(path), "pt") as f:
        layout = json.loads((f.metadata() or {}).get(_LAYOUT_KEY, "null") or "null")
    if layout is not None:
        for n, t in out.items():
            if n not in layout or str(t.dtype) != layout[n][0] or list(t.shape) != layout[n][1]:
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


# ----------------------------------------------------------------------------- the subspace trio
SUBSPACE_NAMES = ("basis", "sigma", "val_coords")


def save_subspace(path: str | os.PathLike, sub) -> None:
    """checkpoints/ckpt-E/subspace.safetensors: basis (D x R), sigma (N_v), val_coords (N_v x R)."""
    norms = {} if sub.stored_val_norms is None else {"val_norms": c_array(sub.stored_val_norms, np.float64)}
    save_tensors(path, {"basis": c_array(sub.basis, np.float32), "sigma": c_array(sub.sigma, np.float64),
                        "val_coords": c_array(sub.val_coords, np.float32), **norms},
                 {"ortho_error": repr(float(sub.ortho_error)), "basis_digest": array_digest(c_array(sub.basis, np.float32))})


def load_subspace(path: str | os.PathLike, names: Iterable[str] = SUBSPACE_NAMES,
                  allow_stale: bool = False) -> Subspace:
    """The Subspace (the basis, D x R, only when in `names`: the dashboard never needs it).
    Shapes are checked against each other; an older-format file raises StaleArtefact."""
    from gist_core.methods.gist.subspace import Subspace
    names = tuple(names)
    d, meta = load_tensors(path, names, allow_stale=allow_stale)
    if "val_norms" not in d and "val_norms" in json.loads(meta.get(_LAYOUT_KEY, "{}")):  # small: always read
        d.update(load_tensors(path, ("val_norms",), allow_stale=allow_stale)[0])
    sigma, val = d.get("sigma"), d.get("val_coords")
    if val is not None and sigma is not None and (val.shape[0] != sigma.shape[0] or val.ndim != 2):
        raise ArtefactError(f"{path}: val_coords {val.shape} does not fit sigma {sigma.shape}")
    basis = d.get("basis")
    if basis is not None and val is not None and basis.shape[1] != val.shape[1]:
        raise ArtefactError(f"{path}: basis {basis.shape} and val_coords {val.shape} keep different ranks")
    return Subspace(basis=basis, sigma=sigma, val_coords=val, ortho_error=float(meta.get("ortho_error", "nan")),
                    basis_digest=meta.get("basis_digest"), stored_val_norms=d.get("val_norms"))


# ----------------------------------------------------------------------------- the projection store
NORM_META = "norm"  # key in a projection store's .json: "last column" when each row ends with |g|


@dataclass
class Projections:
    """The pool's stored coordinates on the subspace's r_max directions and each pool gradient's whole norm."""
    coords: np.ndarray           # (N, r_max) memmap view
    norms: np.ndarray | None     # (N,) |g|, None for a store made before the norm was kept


def projections_meta(store: str | os.PathLike) -> dict:
    meta = Path(store).with_suffix(".json")
    try:
        return json.loads(meta.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def load_projections(store: str | os.PathLike) -> Projections:
    """A projection store (train_proj.npy), split into coordinates and norms by its sidecar's NORM_META."""
    X = load_npy(store, np.float32, ndim=2, mmap=True)
    if projections_meta(store).get(NORM_META) != "last column":
        return Projections(coords=X, norms=None)
    return Projections(coords=X[:, :-1], norms=np.ascontiguousarray(X[:, -1], dtype=np.float32))


def subspace_exists(path: str | os.PathLike) -> bool:
    return Path(path).is_file()
