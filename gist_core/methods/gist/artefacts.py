"""GIST's artefacts in a run folder: the subspace trio of each checkpoint and the pool's projection store.

Save/load/exists per artefact (the bytes go through gist_core.store.artefacts, which checks dtype, shape and
C order); the math that makes them is in subspace.py, the stages that write them in stages.py.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gist_core.errors import ArtefactError
from gist_core.methods.gist.subspace import Subspace
from gist_core.store.artefacts import ARRAYS_KEY, array_digest, c_array, load_npy, load_tensors, save_tensors

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
    names = tuple(names)
    d, meta = load_tensors(path, names, allow_stale=allow_stale)
    if "val_norms" not in d and "val_norms" in json.loads(meta.get(ARRAYS_KEY, "{}")):  # small: always read
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
