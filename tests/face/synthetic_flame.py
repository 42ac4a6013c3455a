"""A synthetic FLAME-format model for tests (no licensed FLAME data is used anywhere in the tests).

:func:`write_synthetic_flame_pickle` writes a pickle laid out like the official ``generic_model.pkl`` (FLAME 2020):
same keys, shapes and dtypes, Python-2 style protocol 2 (``py2 str`` opcodes for raw bytes, ``numpy.core.multiarray``
and ``__builtin__`` module names), arrays wrapped as ``chumpy.ch.Ch`` objects and a scipy ``csc_matrix``
``J_regressor`` - without importing chumpy and without registering anything in ``sys.modules``: a small pure-Python
pickler writes those globals' opcodes itself. The bases are random and small; the template is a head-sized
ellipsoid (~0.1 m) on which the FLAME 2020 landmark vertices (mouth pairs, inner-lip midline, lip corners) sit where
a real face has them, so that a positive jaw pitch opens the mouth (upper lip skinned to the neck/head joint, lower
lip to the jaw joint, the jaw joint behind and above the mouth).

Helpers for other tests: :func:`synthetic_flame_npz` (pickle + masks + eyelids, converted) and
:func:`write_synthetic_masks_pickle`, :func:`write_synthetic_eyelids`.
"""

from __future__ import annotations

import atexit
import copyreg
import functools
import pickle
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

NUM_VERTICES = 5023
NUM_FACES = 9976
NUM_SHAPEDIRS = 400
MOUTH_UPPER = (2851, 2849, 2865, 2866, 3546, 1751, 1750, 1734, 1736)  # x from - to +
MOUTH_LOWER = (1775, 1794, 1803, 1850, 3506, 2939, 2906, 2897, 2882)  # x from + to - (pair upper[i], lower[8-i])
INNER_UPPER, INNER_LOWER = 3531, 3504
LIP_CORNERS = (2819, 1702)  # x < 0, x > 0
# joint positions (metres): global/root, neck, jaw, left eye (x > 0), right eye (x < 0)
JOINTS = np.array(
    [[0.0, -0.07, -0.03], [0.0, -0.05, -0.03], [0.0, -0.025, -0.005], [0.032, 0.035, 0.065], [-0.032, 0.035, 0.065]]
)
ANCHORS_PER_JOINT = 4
HEAD_RADII = np.array([0.075, 0.10, 0.09])


# --- geometry ---------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def _geometry(seed: int, num_vertices: int) -> dict[str, np.ndarray]:
    if num_vertices < 40:
        raise ValueError("num_vertices must be at least 40")
    rng = np.random.default_rng(seed)
    d = rng.normal(size=(num_vertices, 3))
    v = d / np.linalg.norm(d, axis=1, keepdims=True) * HEAD_RADII  # ellipsoid surface, [V, 3]
    region = np.full(num_vertices, 1)  # skinning region per vertex: 1 neck/head by default
    region[(v[:, 1] < -0.05) & (v[:, 2] > 0.02)] = 2  # chin and lower face -> jaw
    region[v[:, 1] < -0.085] = 0  # bottom -> root
    for j in (3, 4):
        region[np.linalg.norm(v - JOINTS[j], axis=1) < 0.02] = j
    onehot = np.zeros(num_vertices, dtype=bool)

    def put(idx: int, xyz: tuple[float, float, float], joint: int) -> None:
        if idx < num_vertices:
            v[idx] = xyz
            region[idx] = joint
            onehot[idx] = True

    for i, (up, lo) in enumerate(zip(MOUTH_UPPER, MOUTH_LOWER[::-1], strict=True)):
        x = -0.02 + 0.005 * i
        z = 0.085 - 20.0 * x * x
        put(up, (x, -0.046, z), 1)
        put(lo, (x, -0.054, z), 2)
    put(INNER_UPPER, (0.0, -0.048, 0.083), 1)
    put(INNER_LOWER, (0.0, -0.052, 0.083), 2)
    put(LIP_CORNERS[0], (-0.026, -0.05, 0.075), 1)
    put(LIP_CORNERS[1], (0.026, -0.05, 0.075), 1)
    # joint anchors: the last 20 vertices sit around the joints; J_regressor rows average them
    anchors = np.arange(num_vertices - 5 * ANCHORS_PER_JOINT, num_vertices).reshape(5, ANCHORS_PER_JOINT)
    for j in range(5):
        v[anchors[j]] = JOINTS[j] + rng.uniform(-0.004, 0.004, size=(ANCHORS_PER_JOINT, 3))
        region[anchors[j]] = j
    weights = 0.8 * np.eye(5)[region] + 0.2 * rng.dirichlet(np.ones(5), size=num_vertices)
    weights[onehot] = np.eye(5)[region[onehot]]  # landmark lips: rigidly on one joint
    weights /= weights.sum(axis=1, keepdims=True)
    jrows = rng.dirichlet(np.ones(ANCHORS_PER_JOINT), size=5)  # convex weights over each joint's anchors
    return {"v_template": v, "weights": weights, "anchors": anchors, "jrows": jrows, "region": region}


def synthetic_template(seed: int = 0, num_vertices: int = NUM_VERTICES) -> np.ndarray:
    """The synthetic ``v_template`` ``[V, 3]`` (float64, metres) for ``seed``."""
    return _geometry(seed, num_vertices)["v_template"].copy()


def synthetic_flame_dict(seed: int = 0, num_vertices: int = NUM_VERTICES) -> dict[str, Any]:
    """The synthetic model as plain numpy arrays (``J_regressor`` dense ``[5, V]``); what the pickle holds."""
    g = _geometry(seed, num_vertices)
    rng = np.random.default_rng(seed + 1)
    nv = num_vertices
    jreg = np.zeros((5, nv))
    for j in range(5):
        jreg[j, g["anchors"][j]] = g["jrows"][j]
    a = rng.integers(0, nv, NUM_FACES)
    b = (a + rng.integers(1, nv // 2, NUM_FACES)) % nv
    c = (b + rng.integers(1, nv // 2, NUM_FACES)) % nv
    return {
        "v_template": g["v_template"].copy(),
        "f": np.stack([a, b, c], axis=1).astype(np.uint32),
        "shapedirs": rng.normal(0.0, 1e-3, size=(nv, 3, NUM_SHAPEDIRS)),
        "posedirs": rng.normal(0.0, 1e-4, size=(nv, 3, 36)),
        "J_regressor": jreg,
        "weights": g["weights"].copy(),
        "kintree_table": np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64),
        "J": jreg @ g["v_template"],
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }


# --- a Python-2 style protocol-2 pickler ------------------------------------------------------------------------------
class _GlobalRef:
    """A global written as ``GLOBAL module name`` without importing it."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __call__(self, *args: Any) -> Any:  # save_reduce wants a callable; never called
        raise RuntimeError("placeholder")


_RECONSTRUCTOR_STYLE = False  # set while writing: copy_reg._reconstructor (protocol 0/1 style) instead of NEWOBJ


def _reduce(obj: Any, state: dict[str, Any]) -> Any:
    if _RECONSTRUCTOR_STYLE:
        return (_GlobalRef("copy_reg", "_reconstructor"), (type(obj), _GlobalRef("__builtin__", "object"), None), state)
    return (copyreg.__newobj__, (type(obj),), state)


class _Ch:
    """Pickles as ``chumpy.ch.Ch`` with chumpy's ``__getstate__`` layout (``__dict__`` minus _parents/_cache)."""

    def __init__(self, x: np.ndarray):
        self.x = x

    def __reduce_ex__(self, protocol: int) -> Any:
        state = {
            "x": self.x,
            "_dirty_vars": set(),
            "_itr": None,
            "_depends_on_deps": {},
            "_make_dense": False,
            "_make_sparse": False,
        }
        return _reduce(self, state)


class _Csc:
    """Pickles as old scipy's ``scipy.sparse.csc.csc_matrix`` (state ``_shape, data, indices, indptr, maxprint``)."""

    def __init__(self, dense: np.ndarray):
        import scipy.sparse

        m = scipy.sparse.csc_matrix(dense)
        self.state = {
            "_shape": m.shape,
            "maxprint": 50,
            "format": "csc",
            "data": m.data,
            "indices": m.indices,
            "indptr": m.indptr,
        }

    def __reduce_ex__(self, protocol: int) -> Any:
        return _reduce(self, self.state)


class _Call:
    """A call ``module.name(arg)`` at load time (used to write a pickle with a forbidden global)."""

    def __init__(self, module: str, name: str, arg: Any):
        self.func, self.arg = _GlobalRef(module, name), arg


_CLASS_GLOBALS: dict[Any, tuple[str, str]] = {
    _Ch: ("chumpy.ch", "Ch"),
    _Csc: ("scipy.sparse.csc", "csc_matrix"),
    set: ("__builtin__", "set"),
}


class _Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Protocol 2 as Python 2's cPickle writes it: ``bytes``/``str`` as py2 ``str``, old module names."""

    dispatch = dict(pickle._Pickler.dispatch)  # type: ignore[attr-defined]

    def __init__(self, file: Any):
        super().__init__(file, protocol=2)

    def save(self, obj: Any, save_persistent_id: bool = True) -> None:
        if isinstance(obj, _GlobalRef):
            self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode("ascii"))
            return
        if isinstance(obj, type) and obj in _CLASS_GLOBALS:
            module, name = _CLASS_GLOBALS[obj]
            self.write(pickle.GLOBAL + f"{module}\n{name}\n".encode("ascii"))
            return
        super().save(obj, save_persistent_id)

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, np.ndarray):
            arr = np.ascontiguousarray(obj)
            state = (1, arr.shape, arr.dtype, False, arr.tobytes())
            return (
                _GlobalRef("numpy.core.multiarray", "_reconstruct"),
                (_GlobalRef("numpy", "ndarray"), (0,), b"b"),
                state,
            )
        if isinstance(obj, np.dtype):
            _, (descr, _align, _copy), state = obj.__reduce__()
            return (_GlobalRef("numpy", "dtype"), (descr, 0, 1), state)
        if isinstance(obj, _Call):
            return (obj.func, (obj.arg,))
        return NotImplemented

    def save_py2_str(self, obj: bytes | str) -> None:
        data = obj.encode("latin1") if isinstance(obj, str) else bytes(obj)
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str


def _dump_py2(obj: Any, path: str | Path) -> None:
    with open(path, "wb") as f:
        _Py2Pickler(f).dump(obj)


def write_synthetic_flame_pickle(
    path: str | Path,
    *,
    seed: int = 0,
    num_vertices: int = NUM_VERTICES,
    with_chumpy: bool = True,
    forbidden_global: bool | tuple[str, str, Any] = False,
    reconstructor_style: bool = False,
) -> dict[str, Any]:
    """Write a FLAME-format ``generic_model.pkl`` lookalike to ``path``; returns the plain arrays it holds.

    ``with_chumpy`` wraps ``v_template``, ``shapedirs`` and ``weights`` as ``chumpy.ch.Ch`` (as the official file
    does); ``J_regressor`` is always a scipy ``csc_matrix``. ``forbidden_global=(module, name, arg)`` (or ``True``
    for ``("posix", "system", "true")``) puts a call ``module.name(arg)`` first in the dict, as a malicious file
    would. ``reconstructor_style`` builds the Ch / csc objects with ``copy_reg._reconstructor(cls, object, None)``
    as protocols 0/1 do, instead of protocol 2's ``NEWOBJ``.
    """
    global _RECONSTRUCTOR_STYLE
    d = synthetic_flame_dict(seed, num_vertices)
    out: dict[str, Any] = {}
    if forbidden_global:
        module, name, arg = ("posix", "system", "true") if forbidden_global is True else forbidden_global
        out["bs_style"] = _Call(module, name, arg)
    for k, v in d.items():
        if k == "J_regressor":
            out[k] = _Csc(v)
        elif with_chumpy and k in ("v_template", "shapedirs", "weights"):
            out[k] = _Ch(v)
        elif k not in out:
            out[k] = v
    _RECONSTRUCTOR_STYLE = reconstructor_style
    try:
        _dump_py2(out, path)
    finally:
        _RECONSTRUCTOR_STYLE = False
    return d


def synthetic_masks(seed: int = 0, num_vertices: int = NUM_VERTICES) -> dict[str, np.ndarray]:
    """FLAME_masks.pkl-like regions of the synthetic template (``{name: int64 indices}``)."""
    g = _geometry(seed, num_vertices)
    v = g["v_template"]
    lip_pts = v[[i for i in (*MOUTH_UPPER, *MOUTH_LOWER, *LIP_CORNERS) if i < num_vertices]]
    dist = np.linalg.norm(v[:, None, :] - lip_pts[None], axis=2).min(axis=1) if len(lip_pts) else np.full(len(v), 1.0)
    face = (v[:, 2] > 0.03) & (v[:, 1] > -0.09)
    eye_l = np.linalg.norm(v - JOINTS[3], axis=1) < 0.03
    eye_r = np.linalg.norm(v - JOINTS[4], axis=1) < 0.03
    masks = {
        "lips": dist < 0.008,
        "face": face,
        "forehead": face & (v[:, 1] > 0.06),
        "eye_region": eye_l | eye_r,
        "left_eye_region": eye_l,
        "right_eye_region": eye_r,
        "nose": face & (np.abs(v[:, 0]) < 0.015) & (v[:, 1] > -0.03) & (v[:, 1] < 0.03),
        "scalp": v[:, 1] > 0.08,
        "neck": v[:, 1] < -0.085,
    }
    return {k: np.flatnonzero(m).astype(np.int64) for k, m in masks.items()}


def write_synthetic_masks_pickle(path: str | Path, *, seed: int = 0, num_vertices: int = NUM_VERTICES) -> dict:
    """Write a ``FLAME_masks.pkl`` lookalike (dict of int64 index arrays, py2 protocol 2); returns the dict."""
    masks = synthetic_masks(seed, num_vertices)
    _dump_py2(masks, path)
    return masks


def write_synthetic_eyelids(
    folder: str | Path, *, seed: int = 0, num_vertices: int = NUM_VERTICES
) -> tuple[Path, Path]:
    """Write ``l_eyelid.npy`` / ``r_eyelid.npy`` (float64 ``[V, 3]``: vertices near each eye move down)."""
    v = _geometry(seed, num_vertices)["v_template"]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, j in (("l_eyelid", 3), ("r_eyelid", 4)):
        near = np.clip(1.0 - np.linalg.norm(v - JOINTS[j], axis=1) / 0.02, 0.0, None)
        basis = np.zeros((num_vertices, 3))
        basis[:, 1] = -0.01 * near
        p = folder / f"{name}.npy"
        np.save(p, basis)
        paths.append(p)
    return paths[0], paths[1]


_CACHE_DIR: Path | None = None


def _cleanup() -> None:
    if _CACHE_DIR is not None:
        shutil.rmtree(_CACHE_DIR, ignore_errors=True)


@functools.lru_cache(maxsize=8)
def _converted(seed: int, with_masks: bool, with_eyelids: bool) -> Path:
    global _CACHE_DIR
    from a2llm_rt.face_tools.convert_flame import convert_flame

    if _CACHE_DIR is None:
        _CACHE_DIR = Path(tempfile.mkdtemp(prefix="a2llm_synthetic_flame_"))
        atexit.register(_cleanup)
    d = _CACHE_DIR / f"s{seed}_m{int(with_masks)}_e{int(with_eyelids)}"
    d.mkdir()
    write_synthetic_flame_pickle(d / "generic_model.pkl", seed=seed)
    masks = None
    if with_masks:
        masks = d / "FLAME_masks.pkl"
        write_synthetic_masks_pickle(masks, seed=seed)
    eyelids = write_synthetic_eyelids(d, seed=seed) if with_eyelids else None
    out = d / "flame.npz"
    convert_flame(d / "generic_model.pkl", out, masks=masks, eyelids=eyelids)
    return out


def synthetic_flame_npz(
    tmp_path: str | Path, *, seed: int = 0, with_masks: bool = True, with_eyelids: bool = True
) -> Path:
    """A converted synthetic FLAME ``.npz`` copied into ``tmp_path`` (conversion cached per process); its path."""
    src = _converted(seed, with_masks, with_eyelids)
    dst = Path(tmp_path) / f"synthetic_flame_s{seed}.npz"
    shutil.copyfile(src, dst)
    return dst
