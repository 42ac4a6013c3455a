"""The ARKit face mesh: a neutral OBJ plus one OBJ per blendshape, evaluated as ``neutral + sum_i w_i * delta_i``.

The folder holds ``Neutral.obj`` and ``<arkitName>.obj`` files (camelCase ARKit names, same topology); curves with no
file (``tongueOut`` in the reference set) get a zero delta and are listed in ``missing``. Units are those of the
files (metres for Apple's mesh).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from a2llm_rt.errors import InputError
from a2llm_rt.face.layouts import ARKIT52_DIM, ARKIT52_NAMES


def read_obj(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Vertices ``[V, 3]`` float32 and triangles ``[F, 3]`` int64 (0-based) of an OBJ file.

    Polygons are fan-triangulated; texture/normal indices (``f 1/2/3``) are ignored.
    """
    path = Path(path)
    verts: list[list[float]] = []
    faces: list[list[int]] = []
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise InputError(f"cannot read OBJ: {e.strerror}", path) from None
    for lineno, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        try:
            if parts[0] == "v":
                verts.append([float(x) for x in parts[1:4]])
            elif parts[0] == "f":
                idx = [int(p.split("/")[0]) for p in parts[1:]]
                idx = [i - 1 if i > 0 else len(verts) + i for i in idx]
                faces.extend([idx[0], idx[k], idx[k + 1]] for k in range(1, len(idx) - 1))
        except (ValueError, IndexError):
            raise InputError(f"malformed OBJ line {lineno}: {line!r}", path) from None
    v = np.asarray(verts, dtype=np.float32).reshape(-1, 3)
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if len(v) == 0:
        raise InputError("OBJ file has no vertices", path)
    if len(f) and (f.min() < 0 or f.max() >= len(v)):
        raise InputError("OBJ face refers to a vertex that does not exist", path)
    if not np.isfinite(v).all():
        raise InputError("OBJ file has non-finite vertex coordinates", path)
    return v, f


@dataclass
class ArkitMesh:
    """Neutral mesh and per-curve deltas in ARKIT52 order.

    Attributes:
        neutral: ``[V, 3]`` float32.
        deltas: ``[52, V, 3]`` float32 (shape minus neutral; zeros for missing curves).
        faces: ``[F, 3]`` int64.
        missing: ARKit names without a shape file.
    """

    neutral: np.ndarray
    deltas: np.ndarray
    faces: np.ndarray
    missing: tuple[str, ...]

    @property
    def num_vertices(self) -> int:
        return int(self.neutral.shape[0])

    @classmethod
    def load(cls, folder: str | Path) -> ArkitMesh:
        folder = Path(folder)
        if not (folder / "Neutral.obj").is_file():
            raise InputError("no Neutral.obj: not an ARKit mesh folder", folder)
        neutral, faces = read_obj(folder / "Neutral.obj")
        deltas = np.zeros((ARKIT52_DIM, *neutral.shape), dtype=np.float32)
        missing = []
        for i, name in enumerate(ARKIT52_NAMES):
            p = folder / f"{name}.obj"
            if not p.is_file():
                missing.append(name)
                continue
            v, _ = read_obj(p)
            if v.shape != neutral.shape:
                raise InputError(f"has {len(v)} vertices but Neutral.obj has {len(neutral)}", p)
            deltas[i] = v - neutral
        return cls(neutral, deltas, faces, tuple(missing))

    def vertices(self, weights: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Vertices ``[..., V, 3]`` for ARKIT52 weights ``[..., 52]`` (numpy in, numpy out; torch in, torch out)."""
        if weights.shape[-1] != ARKIT52_DIM:
            raise InputError(f"ARKit weights must have {ARKIT52_DIM} values per frame, got {weights.shape[-1]}")
        if torch.is_tensor(weights):
            d = torch.as_tensor(self.deltas, device=weights.device, dtype=weights.dtype)
            n = torch.as_tensor(self.neutral, device=weights.device, dtype=weights.dtype)
            return n + torch.einsum("...k,kvc->...vc", weights, d)
        w = np.asarray(weights, dtype=np.float32)
        return self.neutral + np.einsum("...k,kvc->...vc", w, self.deltas)
