"""Every artefact kind round-trips through its save/load pair, whatever the memory layout it is handed.

safetensors 0.8.0 writes numpy arrays from their raw buffer under a C-order header (upstream #825):
a Fortran-ordered or strided array comes back scrambled, silently. These tests hand each writer
Fortran-ordered, strided, non-square and float16/float64 arrays and read the file back from disk.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gist_core.methods.gist import artefacts as gist_artefacts
from gist_core.methods.gist.subspace import Subspace, fit_subspace, val_coords_error
from gist_core.store import artefacts


def layouts(shape=(7, 5), dtype=np.float32, seed=0):
    """The same values as C-ordered, Fortran-ordered, strided (every other column) and transposed views."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(shape[0], 2 * shape[1])).astype(dtype)
    strided = base[:, ::2]
    return {"c": np.ascontiguousarray(strided), "fortran": np.asfortranarray(strided), "strided": strided,
            "transposed_view": np.ascontiguousarray(strided.T).T}


def test_raw_safetensors_would_scramble_these():
    """The hazard this module guards against, shown: if this ever passes without scrambling, upstream fixed it."""
    import tempfile

    from safetensors.numpy import load_file, save_file
    a = np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4))
    with tempfile.TemporaryDirectory() as d:
        try:
            save_file({"a": a}, f"{d}/x.safetensors")
        except Exception:  # a future safetensors may refuse instead: fine as well
            return
        back = load_file(f"{d}/x.safetensors")["a"]
    import safetensors
    if not np.array_equal(back, a):
        assert safetensors.__version__.startswith("0.8")  # the known regression; our writers must not rely on it


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
@pytest.mark.parametrize("kind", ["c", "fortran", "strided", "transposed_view"])
def test_tensors_round_trip(tmp_path, kind, dtype):
    a = layouts((7, 5), dtype)[kind]
    v = np.arange(6, dtype=np.int64)[::2]  # strided 1-D
    artefacts.save_tensors(tmp_path / "x.safetensors", {"a": a, "v": v}, {"note": "hi"})
    back, meta = artefacts.load_tensors(tmp_path / "x.safetensors")
    assert back["a"].dtype == dtype and back["a"].shape == (7, 5)
    np.testing.assert_array_equal(back["a"], a)
    np.testing.assert_array_equal(back["v"], v)
    assert meta["note"] == "hi"
    only, _ = artefacts.load_tensors(tmp_path / "x.safetensors", ["v"])
    assert list(only) == ["v"]


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
@pytest.mark.parametrize("kind", ["c", "fortran", "strided", "transposed_view"])
def test_npy_round_trip(tmp_path, kind, dtype):
    a = layouts((6, 9), dtype)[kind]
    artefacts.save_npy(tmp_path / "x.npy", a)
    back = artefacts.load_npy(tmp_path / "x.npy", dtype, ndim=2, shape=(6, 9))
    np.testing.assert_array_equal(back, a)
    assert back.flags.c_contiguous
    mm = artefacts.load_npy(tmp_path / "x.npy", mmap=True)
    np.testing.assert_array_equal(np.asarray(mm), a)
    with pytest.raises(artefacts.ArtefactError, match="dtype"):
        artefacts.load_npy(tmp_path / "x.npy", np.int8)
    with pytest.raises(artefacts.ArtefactError, match="shape"):
        artefacts.load_npy(tmp_path / "x.npy", shape=(6, 8))


@pytest.mark.parametrize("n_val, r_max", [(12, 8), (8, 12), (9, 9)])
def test_subspace_round_trip_from_eigh_ordering(tmp_path, n_val, r_max):
    """The real writer path: fit_subspace's eigh column reordering used to make val_coords Fortran-ordered."""
    rng = np.random.default_rng(n_val)
    G = rng.normal(size=(n_val, 300)).astype(np.float32)
    sub = fit_subspace(G, r_max)
    # hand the writer deliberately non-C arrays too
    sub_f = Subspace(basis=np.asfortranarray(sub.basis), sigma=sub.sigma[::-1][::-1],
                     val_coords=np.asfortranarray(sub.val_coords),
                     ortho_error=sub.ortho_error)
    for name, s in (("fresh", sub), ("fortran", sub_f)):
        path = tmp_path / f"{name}.safetensors"
        gist_artefacts.save_subspace(path, s)
        back = gist_artefacts.load_subspace(path)
        np.testing.assert_array_equal(back.basis, sub.basis)
        np.testing.assert_array_equal(back.val_coords, sub.val_coords)
        np.testing.assert_array_equal(back.sigma, sub.sigma)
        assert back.basis_digest == artefacts.array_digest(sub.basis)
        # the meaning, checked independently: the stored target coordinates are G times the stored basis
        np.testing.assert_allclose(back.val_coords, G.astype(np.float64) @ back.basis.astype(np.float64),
                                   atol=1e-5 * np.abs(back.val_coords).max())
        assert val_coords_error(G, back) < 1e-6
        part = gist_artefacts.load_subspace(path, ("sigma", "val_coords"))
        assert part.basis is None and part.r_max == back.r_max


def test_transposed_or_scrambled_val_coords_are_caught(tmp_path):
    rng = np.random.default_rng(1)
    G = rng.normal(size=(10, 200)).astype(np.float32)
    sub = fit_subspace(G, 10)
    wrong = Subspace(basis=sub.basis, sigma=sub.sigma, val_coords=np.ascontiguousarray(sub.val_coords.T),
                     ortho_error=sub.ortho_error)
    assert val_coords_error(G, wrong) > 0.1


def test_stale_file_is_refused_unless_allowed(tmp_path):
    from safetensors.numpy import save_file
    rng = np.random.default_rng(2)
    sub = fit_subspace(rng.normal(size=(6, 50)).astype(np.float32), 4)
    save_file({"basis": sub.basis, "sigma": sub.sigma, "val_coords": sub.val_coords}, str(tmp_path / "old.safetensors"))
    with pytest.raises(artefacts.StaleArtefact, match="format 1"):
        gist_artefacts.load_subspace(tmp_path / "old.safetensors")
    assert artefacts.artefact_format(tmp_path / "old.safetensors") == 1
    np.testing.assert_array_equal(gist_artefacts.load_subspace(tmp_path / "old.safetensors", ("sigma",),
                                                          allow_stale=True).sigma, sub.sigma)


def test_layout_mismatch_is_an_error(tmp_path):
    """A file whose recorded layout disagrees with its tensors (hand-edited, or another writer) is refused."""
    from safetensors.numpy import save_file
    a = np.zeros((3, 4), np.float32)
    meta = {"gist_lab_format": str(artefacts.FORMAT), "gist_lab_arrays": json.dumps({"a": ["<f4", [4, 3]]})}
    save_file({"a": a}, str(tmp_path / "x.safetensors"), metadata=meta)
    with pytest.raises(artefacts.ArtefactError, match="'a' is float32"):
        artefacts.load_tensors(tmp_path / "x.safetensors")
    with pytest.raises(artefacts.ArtefactError, match="no tensor"):
        artefacts.load_tensors(tmp_path / "x.safetensors", ["b"])


def test_torch_tensors_round_trip(tmp_path):
    t = torch.randn(6, 4)
    tensors = {"w.exp_avg": t.t(), "w.exp_avg_sq": t[:, ::2], "b": torch.arange(5.0)}  # non-contiguous views
    artefacts.save_torch_tensors(tmp_path / "m.safetensors", tensors)
    back = artefacts.load_torch_tensors(tmp_path / "m.safetensors")
    for k, v in tensors.items():
        assert torch.equal(back[k], v), k


def test_geometry_matrices_round_trip(tmp_path):
    """The curvature artefact through its writer (non-square and Fortran-ordered inputs included)."""
    from gist_core.runner.geometry import Geometry, load_matrices
    rng = np.random.default_rng(3)
    H = np.asfortranarray(rng.normal(size=(6, 6)))
    F = rng.normal(size=(6, 9))[:, ::-1][:, :6]

    class Block:
        idx_a, idx_b = np.arange(3)[::-1], np.array([0, 2, 4])
        module, n_a, shape_a, shape_b = "m", 3, [2, 5], [5, 2]
    (tmp_path / "geometry").mkdir()
    Geometry._save(tmp_path / "geometry" / "ckpt-1.safetensors", H, H.T, F, np.arange(6.0)[::-1], Block)
    back = load_matrices(tmp_path, 1)
    np.testing.assert_allclose(back["hessian"], H.astype(np.float32))
    np.testing.assert_allclose(back["fisher"], F.astype(np.float32))
    np.testing.assert_array_equal(back["idx_a"], Block.idx_a)


def test_unreadable_file_is_one_artefact_error(tmp_path):
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(artefacts.ArtefactError, match="unreadable safetensors file"):
        artefacts.load_tensors(tmp_path / "bad.safetensors")
    (tmp_path / "bad.npy").write_bytes(b"nope")
    with pytest.raises(artefacts.ArtefactError, match="unreadable .npy file"):
        artefacts.load_npy(tmp_path / "bad.npy")
