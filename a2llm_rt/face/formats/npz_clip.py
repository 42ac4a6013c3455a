"""Our own clip file: ``.npz`` with ``values`` ``[T, D]`` float32, ``fps``, ``layout`` (string), optional ``meta_json``.

Read with ``allow_pickle=False``: no object arrays, ever. ``layout`` may be missing (inferred from ``D``: 58, 52, 61);
``fps`` may be missing only when the caller passes one.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from a2llm_rt.errors import InputError
from a2llm_rt.face.clip import MotionClip
from a2llm_rt.face.layouts import layout_for_dim
from a2llm_rt.utils.fileio import atomic_save_npz


def _scalar(arrays: dict[str, np.ndarray], key: str, path: Path) -> np.ndarray:
    a = arrays[key]
    if a.shape not in ((), (1,)):
        raise InputError(f"{key!r} must be a scalar, got shape {list(a.shape)}", path)
    return a.reshape(())


def read_npz_clip(path: str | Path, fps: float | None = None) -> MotionClip:
    """Load a clip saved by :func:`write_npz_clip` (or any npz with the same keys)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise InputError("file not found", path) from None
    except Exception as e:  # numpy raises many types on a corrupt zip or header (ValueError, BadZipFile, TokenError)
        raise InputError(f"not a readable .npz clip ({type(e).__name__}: {e})", path) from None
    if "values" not in arrays:
        raise InputError(f"no 'values' array (keys: {sorted(arrays)})", path)
    values = arrays["values"]
    if values.ndim != 2:
        raise InputError(f"'values' must have shape [T, D], got {list(values.shape)}", path)
    if not (np.issubdtype(values.dtype, np.floating) or np.issubdtype(values.dtype, np.integer)):
        raise InputError(f"'values' must be numeric, got dtype {values.dtype}", path)
    if values.shape[0] == 0:
        raise InputError("'values' has no frames", path)
    if "layout" in arrays:
        lay = _scalar(arrays, "layout", path)
        if lay.dtype.kind not in "US":
            raise InputError(f"'layout' must be a string, got dtype {lay.dtype}", path)
        layout = str(lay.item().decode() if isinstance(lay.item(), bytes) else lay.item())
    else:
        try:
            layout = layout_for_dim(values.shape[1]).name
        except KeyError as e:
            raise InputError(str(e.args[0]), path) from None
    if "fps" in arrays:
        f = _scalar(arrays, "fps", path)
        if f.dtype.kind not in "fiu":
            raise InputError(f"'fps' must be a number, got dtype {f.dtype}", path)
        rate = float(f)
    elif fps is not None:
        rate = float(fps)
    else:
        raise InputError("no 'fps' in the file; pass fps", path)
    meta: dict = {}
    if "meta_json" in arrays:
        m = _scalar(arrays, "meta_json", path)
        try:
            meta = json.loads(str(m.item()))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InputError(f"'meta_json' is not valid JSON ({e})", path) from None
        if not isinstance(meta, dict):
            raise InputError("'meta_json' must hold a JSON object", path)
    meta["source"] = str(path)
    try:
        clip = MotionClip(values.astype(np.float32), rate, layout, meta)
    except InputError as e:
        raise InputError(e.problem, path) from None
    return clip


def write_npz_clip(clip: MotionClip, path: str | Path) -> None:
    """Save a clip (any layout) atomically; ``meta`` must be JSON-serialisable."""
    clip.validate(path)
    try:
        meta_json = json.dumps(clip.meta, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise InputError(f"clip meta is not JSON-serialisable ({e})", path) from None
    atomic_save_npz(
        path,
        values=np.ascontiguousarray(clip.values, dtype=np.float32),
        fps=np.array(float(clip.fps), dtype=np.float64),
        layout=np.array(clip.layout),
        meta_json=np.array(meta_json),
    )
