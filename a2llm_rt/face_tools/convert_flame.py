"""Convert the user's licensed FLAME pickle into a plain ``.npz`` that the runtime loads without unpickling.

Usage::

    python -m a2llm_rt.face_tools.convert_flame --model generic_model.pkl [--masks FLAME_masks.pkl] \\
        [--eyelids l_eyelid.npy r_eyelid.npy] --out flame.npz

The official ``generic_model.pkl`` (FLAME 2020/2023) was written by Python 2 and holds ``chumpy.ch.Ch`` objects and a
scipy sparse ``J_regressor``. It is read once, here, by :class:`RestrictedUnpickler`: its ``find_class`` resolves only
an allow-list of globals (numpy's array/dtype reconstruction, ``set``, and inert stand-ins for ``chumpy.ch.Ch`` and
scipy's ``csc_matrix`` / ``csr_matrix`` that just keep their pickled state; numpy's protocol-5 ``_frombuffer`` and a
latin-1-only ``_codecs.encode`` for files re-saved by Python 3). Any other global (``os.system``,
``builtins.eval``, ...) raises :class:`~a2llm_rt.errors.InputError` naming it, before it could be called. Neither
chumpy nor scipy code runs while unpickling.

The ``.npz`` holds plain arrays only (see :data:`NPZ_KEYS`), plus ``mask_<name>`` index arrays from
``FLAME_masks.pkl``, optional ``l_eyelid`` / ``r_eyelid`` blendshapes and a ``provenance`` JSON string (source file
names and sha256).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import pickle
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from a2llm_rt.errors import InputError
from a2llm_rt.face.flame_regions import FLAME_NUM_JOINTS, FLAME_NUM_POSE_BASIS, FLAME_NUM_SHAPE
from a2llm_rt.utils.cli import cli_main
from a2llm_rt.utils.fileio import atomic_save_npz

NPZ_FORMAT_VERSION = 1

# Arrays every converted file holds (``parents`` is kintree_table[0] with parents[0] = -1).
NPZ_KEYS = ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "parents")


# --- restricted unpickling ------------------------------------------------------------------------------------------
class ChStandIn:
    """Inert stand-in for ``chumpy.ch.Ch``: keeps the pickled state dict; the array is ``np.asarray(state["x"])``."""

    def __init__(self) -> None:
        self.state: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise pickle.UnpicklingError("a chumpy.ch.Ch whose pickled state is not a dict")
        self.state = state

    def to_array(self) -> np.ndarray:
        if "x" not in self.state:
            raise pickle.UnpicklingError("a chumpy.ch.Ch without its array (state key 'x')")
        return np.asarray(_plain(self.state["x"]))


class SparseStandIn:
    """Inert stand-in for scipy's ``csc_matrix`` / ``csr_matrix``: keeps the state, densifies on request."""

    kind = "csc"

    def __init__(self) -> None:
        self.state: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"a scipy {self.kind}_matrix whose pickled state is not a dict")
        self.state = state

    def to_array(self) -> np.ndarray:
        """Dense ``[rows, cols]`` array (built by scipy from plain data/indices/indptr arrays)."""
        import scipy.sparse

        st = self.state
        shape = st.get("_shape", st.get("shape"))
        missing = [k for k in ("data", "indices", "indptr") if k not in st] + ([] if shape is not None else ["_shape"])
        if missing:
            raise pickle.UnpicklingError(f"a scipy {self.kind}_matrix without {', '.join(missing)}")
        ctor = scipy.sparse.csc_matrix if self.kind == "csc" else scipy.sparse.csr_matrix
        data, indices, indptr = (np.asarray(_plain(st[k])) for k in ("data", "indices", "indptr"))
        return np.asarray(ctor((data, indices, indptr), shape=tuple(int(s) for s in shape)).toarray())


class CsrStandIn(SparseStandIn):
    kind = "csr"


def _safe_reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """``copy_reg._reconstructor`` restricted to the stand-ins over ``object`` (protocol 0/1 pickles)."""
    if cls not in (ChStandIn, SparseStandIn, CsrStandIn) or base is not object or state is not None:
        raise pickle.UnpicklingError(f"copy_reg._reconstructor called on {cls!r} / {base!r}: refused")
    return cls.__new__(cls)


def _numpy_multiarray() -> Any:
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray  # type: ignore[no-redef]
    return multiarray


_MA = _numpy_multiarray()
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("chumpy.ch", "Ch"): ChStandIn,
    ("scipy.sparse.csc", "csc_matrix"): SparseStandIn,
    ("scipy.sparse._csc", "csc_matrix"): SparseStandIn,
    ("scipy.sparse.csr", "csr_matrix"): CsrStandIn,
    ("scipy.sparse._csr", "csr_matrix"): CsrStandIn,
    ("copy_reg", "_reconstructor"): _safe_reconstructor,
    ("copyreg", "_reconstructor"): _safe_reconstructor,
    ("__builtin__", "object"): object,
    ("builtins", "object"): object,
    ("__builtin__", "set"): set,
    ("builtins", "set"): set,
    ("__builtin__", "frozenset"): frozenset,
    ("builtins", "frozenset"): frozenset,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    ALLOWED_GLOBALS[(_mod, "_reconstruct")] = _MA._reconstruct
    ALLOWED_GLOBALS[(_mod, "scalar")] = _MA.scalar
    ALLOWED_GLOBALS[(_mod, "ndarray")] = np.ndarray
    ALLOWED_GLOBALS[(_mod, "dtype")] = np.dtype


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: str) -> np.ndarray:
    """numpy's protocol-5 array reconstruction (a copy of the buffer; Python-3 re-saved pickles use it)."""
    return np.frombuffer(bytes(buf), dtype=np.dtype(dtype)).reshape(shape, order=order).copy()


for _mod in ("numpy.core.numeric", "numpy._core.numeric"):
    ALLOWED_GLOBALS[(_mod, "_frombuffer")] = _frombuffer


def _latin1_encode(text: Any, encoding: Any = "latin1") -> bytes:
    """``_codecs.encode`` as Python 3 writes ``bytes`` at protocol 2, restricted to latin-1 (no other codec)."""
    if not isinstance(text, str) or str(encoding).lower().replace("_", "-") not in ("latin1", "latin-1", "iso-8859-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with {type(text).__name__} / {encoding!r}: refused")
    return text.encode("latin1")


ALLOWED_GLOBALS[("_codecs", "encode")] = _latin1_encode


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` resolves only :data:`ALLOWED_GLOBALS`.

    A refused global raises :class:`pickle.UnpicklingError` (turned into ``InputError`` by :func:`load_pickle`)
    before anything is imported or called. ``persistent_load`` is refused as well.
    """

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise _RefusedGlobal(f"{module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed")


class _RefusedGlobal(pickle.UnpicklingError):
    def __init__(self, qualname: str):
        super().__init__(qualname)
        self.qualname = qualname


def _plain(obj: Any) -> Any:
    """Replace stand-ins by numpy arrays, recursively through dicts, lists and tuples."""
    if isinstance(obj, (ChStandIn, SparseStandIn)):
        return obj.to_array()
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj)
    return obj


def load_pickle(path: str | Path) -> Any:
    """Read a (Python-2 written) pickle with :class:`RestrictedUnpickler`, ``encoding="latin1"``.

    Chumpy arrays come back as numpy arrays, scipy sparse matrices as dense arrays. Raises ``InputError`` for a
    refused global, a truncated or malformed file.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read: {e.strerror or e}", path) from None
    try:
        obj = RestrictedUnpickler(io.BytesIO(raw), encoding="latin1").load()
        return _plain(obj)
    except _RefusedGlobal as e:
        raise InputError(
            f"refused to unpickle the global {e.qualname} (only numpy arrays, chumpy.ch.Ch and scipy sparse "
            "matrices are allowed in a FLAME pickle); the file was not loaded",
            path,
        ) from None
    except (pickle.UnpicklingError, EOFError) as e:
        raise InputError(f"not a readable pickle (truncated or corrupt): {e}", path) from None
    except Exception as e:  # malformed content makes numpy / pickle raise many types
        raise InputError(f"malformed pickle: {type(e).__name__}: {e}", path) from None


# --- FLAME model --------------------------------------------------------------------------------------------------
def _array(d: dict[str, Any], key: str, path: Path, ndim: int, kind: str = "f") -> np.ndarray:
    if key not in d:
        raise InputError(f"missing key {key!r} (keys present: {sorted(map(str, d))})", path)
    try:
        a = np.asarray(d[key])
    except Exception as e:
        raise InputError(f"{key} is not an array: {e}", path) from None
    if a.ndim != ndim or a.dtype.kind not in ("iu" if kind == "i" else "f"):
        raise InputError(
            f"{key} must be a {ndim}-d {'integer' if kind == 'i' else 'float'} array, got "
            f"shape {a.shape} dtype {a.dtype}",
            path,
        )
    if kind == "f" and not np.isfinite(a).all():
        raise InputError(f"{key} holds NaN or inf", path)
    return a


def flame_arrays_from_pickle_dict(d: Any, path: str | Path) -> dict[str, np.ndarray]:
    """Check a loaded FLAME dict and return the plain arrays of :data:`NPZ_KEYS` (shapes checked)."""
    path = Path(path)
    if not isinstance(d, dict):
        raise InputError(f"expected a dict of FLAME arrays, got {type(d).__name__}", path)
    v = _array(d, "v_template", path, 2)
    nv = v.shape[0]
    if v.shape != (nv, 3) or nv == 0:
        raise InputError(f"v_template must be [V, 3], got {v.shape}", path)
    f = _array(d, "f", path, 2, "i")
    if f.shape[1:] != (3,) or (f.size and (f.min() < 0 or f.max() >= nv)):
        raise InputError(f"f must be [F, 3] vertex indices below V={nv}, got shape {f.shape}", path)
    shapedirs = _array(d, "shapedirs", path, 3)
    if shapedirs.shape[:2] != (nv, 3) or shapedirs.shape[2] < FLAME_NUM_SHAPE + 50:
        raise InputError(
            f"shapedirs must be [V={nv}, 3, >= 350] (300 identity + expression), got {shapedirs.shape}", path
        )
    posedirs = _array(d, "posedirs", path, 3)
    if posedirs.shape != (nv, 3, FLAME_NUM_POSE_BASIS):
        raise InputError(f"posedirs must be [V={nv}, 3, 36], got {posedirs.shape}", path)
    jreg = _array(d, "J_regressor", path, 2).astype(np.float32)
    if jreg.shape != (FLAME_NUM_JOINTS, nv):
        raise InputError(f"J_regressor must be [5, V={nv}], got {jreg.shape}", path)
    weights = _array(d, "weights", path, 2)
    if weights.shape != (nv, FLAME_NUM_JOINTS):
        raise InputError(f"weights must be [V={nv}, 5], got {weights.shape}", path)
    kt = _array(d, "kintree_table", path, 2, "i").astype(np.int64)
    if kt.shape != (2, FLAME_NUM_JOINTS):
        raise InputError(f"kintree_table must be [2, 5], got {kt.shape}", path)
    parents = _parents_from_kintree(kt, path)
    return {
        "v_template": v,
        "f": f.astype(np.int64),
        "shapedirs": shapedirs,
        "posedirs": posedirs,
        "J_regressor": jreg,
        "weights": weights,
        "kintree_table": kt,
        "parents": parents,
    }


def _parents_from_kintree(kt: np.ndarray, path: Path) -> np.ndarray:
    """``parents[j]`` of joint ``j`` (``-1`` for the root) from a ``[2, J]`` kintree table."""
    ids = kt[1]
    if sorted(ids.tolist()) != list(range(kt.shape[1])):
        raise InputError(f"kintree_table row 1 must list joints 0..{kt.shape[1] - 1}, got {ids.tolist()}", path)
    parents = np.full(kt.shape[1], -1, dtype=np.int64)
    for col in range(kt.shape[1]):
        parents[ids[col]] = kt[0, col]
    parents[0] = -1
    for j in range(1, len(parents)):
        if not 0 <= parents[j] < j:
            raise InputError(f"kintree_table: joint {j} has parent {parents[j]} (must be an earlier joint)", path)
    return parents


def load_masks(path: str | Path, num_vertices: int) -> dict[str, np.ndarray]:
    """``FLAME_masks.pkl`` -> ``{name: int64 vertex indices}`` (checked against ``num_vertices``)."""
    path = Path(path)
    d = load_pickle(path)
    if not isinstance(d, dict) or not d:
        raise InputError("expected a non-empty dict {region name: vertex indices}", path)
    out: dict[str, np.ndarray] = {}
    for name, idx in d.items():
        key = str(name)
        if not key.replace("_", "").isalnum():
            raise InputError(f"mask name {key!r} is not a plain identifier", path)
        a = np.asarray(idx)
        if a.dtype.kind not in "iu" or a.ndim != 1:
            raise InputError(f"mask {key!r} must be a 1-d integer index array, got {a.dtype} {a.shape}", path)
        if a.size and (a.min() < 0 or a.max() >= num_vertices):
            raise InputError(f"mask {key!r} refers to vertices outside 0..{num_vertices - 1}", path)
        out[key] = a.astype(np.int64)
    return out


def load_eyelid(path: str | Path, num_vertices: int) -> np.ndarray:
    """An eyelid blendshape ``.npy`` (``[V, 3]``), read with ``allow_pickle=False``."""
    path = Path(path)
    try:
        a = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise InputError(f"not a readable .npy array: {e}", path) from None
    if a.shape != (num_vertices, 3) or a.dtype.kind != "f":
        raise InputError(f"eyelid blendshape must be a float [{num_vertices}, 3] array, got {a.dtype} {a.shape}", path)
    if not np.isfinite(a).all():
        raise InputError("eyelid blendshape holds NaN or inf", path)
    return a


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def convert_flame(
    model: str | Path,
    out: str | Path,
    masks: str | Path | None = None,
    eyelids: Sequence[str | Path] | None = None,
) -> dict[str, np.ndarray]:
    """Convert ``model`` (+ optional masks / eyelids) to the ``.npz`` at ``out`` (written atomically).

    Returns the arrays written. Raises ``InputError`` naming the offending file for any bad input.
    """
    model = Path(model)
    arrays: dict[str, np.ndarray] = flame_arrays_from_pickle_dict(load_pickle(model), model)
    nv = arrays["v_template"].shape[0]
    sources: dict[str, Any] = {"model": {"file": model.name, "sha256": _sha256(model)}}
    if masks is not None:
        masks = Path(masks)
        for name, idx in load_masks(masks, nv).items():
            arrays[f"mask_{name}"] = idx
        sources["masks"] = {"file": masks.name, "sha256": _sha256(masks)}
    if eyelids is not None:
        if len(eyelids) != 2:
            raise InputError(f"--eyelids takes exactly two files (left, right), got {len(eyelids)}")
        paths = [Path(p) for p in eyelids]
        arrays["l_eyelid"] = load_eyelid(paths[0], nv)
        arrays["r_eyelid"] = load_eyelid(paths[1], nv)
        sources["eyelids"] = [{"file": p.name, "sha256": _sha256(p)} for p in paths]
    provenance = {"format": "a2llm-flame-npz", "version": NPZ_FORMAT_VERSION, "converter": __name__, **sources}
    arrays["provenance"] = np.array(json.dumps(provenance, sort_keys=True))
    atomic_save_npz(out, **arrays)
    return arrays


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m a2llm_rt.face_tools.convert_flame",
        description="Convert a licensed FLAME pickle (generic_model.pkl) into a plain .npz for a2llm.",
    )
    parser.add_argument("--model", required=True, help="FLAME generic_model.pkl (FLAME 2020 or 2023)")
    parser.add_argument("--masks", default=None, help="FLAME_masks.pkl (vertex regions), optional")
    parser.add_argument(
        "--eyelids", nargs=2, default=None, metavar=("L_EYELID", "R_EYELID"), help="l_eyelid.npy r_eyelid.npy"
    )
    parser.add_argument("--out", required=True, help="output .npz")
    args = parser.parse_args(argv)
    arrays = convert_flame(args.model, args.out, masks=args.masks, eyelids=args.eyelids)
    masks = sorted(k[5:] for k in arrays if k.startswith("mask_"))
    print(
        f"wrote {args.out}: {arrays['v_template'].shape[0]} vertices, {arrays['f'].shape[0]} faces, "
        f"shapedirs {arrays['shapedirs'].shape[2]}, eyelids {'yes' if 'l_eyelid' in arrays else 'no'}, "
        f"masks {masks or 'none'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
