"""Face regions of the ARKit face mesh, derived from the mesh itself (its topology and its blendshapes).

How each region is found (no hand-picked indices, so any mesh with ARKit's topology conventions works):

- **mouth contour**: the ARKit mesh is open at the mouth. Its boundary edges (edges of one triangle only) form loops:
  the outer rim, two eye holes and the mouth hole. The mouth loop is the inner loop whose vertices move most under
  ``jawOpen``; its vertices are the inner lip line.
- **lip_corners**: the mouth-loop vertices with the smallest and the largest x (left/right ends of the lip line).
- **mouth_upper / mouth_lower**: the loop minus its corners splits into two paths; the lower lip is the path that
  ``jawOpen`` moves down more. Each upper-path vertex is paired with the lower-path vertex nearest in x (neutral pose),
  so ``||upper - lower||`` is the local lip gap.
- **lips**: the mouth loop grown by ``LIP_RINGS`` edge rings over the triangle mesh (about 8 mm above and below the
  inner lip line on Apple's mesh, i.e. the lips and their border).
- **upper_face**: vertices that a ``brow*`` or ``eye*`` blendshape moves by more than ``UPPER_FACE_MIN_MOVE`` and that
  lie above (larger y than) ``lowest eye-hole vertex - eye-hole height`` (keeps brows, forehead, lids and the eye
  surroundings; drops the cheeks that ``eyeSquint`` pulls).
- **face**: every vertex that any blendshape moves by more than ``FACE_MIN_MOVE``.

Lengths are in the mesh's units; ``unit_to_mm`` is 1000 (Apple's mesh is in metres; we check the mesh is head-sized).
Results are cached per mesh content (:func:`arkit_regions`) and per folder (:func:`load_arkit_regions`).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

import numpy as np

from a2llm_rt.errors import InputError
from a2llm_rt.face.arkit_mesh import ArkitMesh
from a2llm_rt.face.layouts import ARKIT52_NAMES, ARKIT_INDEX
from a2llm_rt.face.regions import FaceRegions

LIP_RINGS = 3
UPPER_FACE_MIN_MOVE_M = 0.5e-3  # 0.5 mm
FACE_MIN_MOVE_M = 0.1e-3  # 0.1 mm

_CACHE: dict[str, FaceRegions] = {}


def boundary_loops(faces: np.ndarray) -> list[np.ndarray]:
    """Closed loops of boundary edges (edges used by one triangle), each an ordered ``[n]`` vertex array."""
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    u, c = np.unique(np.sort(e, axis=1), axis=0, return_counts=True)
    adj: dict[int, list[int]] = defaultdict(list)
    for a, b in u[c == 1]:
        adj[int(a)].append(int(b))
        adj[int(b)].append(int(a))
    seen: set[int] = set()
    loops = []
    for start in sorted(adj):
        if start in seen:
            continue
        loop, prev, cur = [start], -1, start
        seen.add(start)
        while True:
            nxt = [n for n in adj[cur] if n != prev and n not in seen]
            if not nxt:
                break
            prev, cur = cur, nxt[0]
            loop.append(cur)
            seen.add(cur)
        loops.append(np.asarray(loop, dtype=np.int64))
    return loops


def _grow_rings(faces: np.ndarray, seed: np.ndarray, rings: int) -> np.ndarray:
    """``seed`` plus every vertex within ``rings`` mesh edges of it (sorted)."""
    nb: dict[int, set[int]] = defaultdict(set)
    for a, b, c in faces:
        nb[a].update((b, c))
        nb[b].update((a, c))
        nb[c].update((a, b))
    region, front = set(int(i) for i in seed), set(int(i) for i in seed)
    for _ in range(rings):
        front = set().union(*(nb[v] for v in front)) - region
        region |= front
    return np.asarray(sorted(region), dtype=np.int64)


def _mouth_loop(mesh: ArkitMesh, loops: list[np.ndarray]) -> np.ndarray:
    jaw = np.linalg.norm(mesh.deltas[ARKIT_INDEX["jawOpen"]], axis=-1)  # [V]
    inner = [lp for lp in loops if len(lp) >= 6]
    if len(inner) < 2:
        raise InputError("the mesh has no mouth hole (boundary loop): cannot find the lips")
    # the outer rim also touches the jaw; the mouth loop moves most on average
    return max(inner, key=lambda lp: float(jaw[lp].mean()))


def _split_mouth(mesh: ArkitMesh, loop: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(upper path, lower path, corners [2]) of the mouth loop."""
    x = mesh.neutral[loop, 0]
    i_left, i_right = int(np.argmin(x)), int(np.argmax(x))
    a, b = sorted((i_left, i_right))
    path1 = loop[a + 1 : b]
    path2 = np.concatenate([loop[b + 1 :], loop[:a]])
    if len(path1) == 0 or len(path2) == 0:
        raise InputError("mouth contour has no vertices between its corners")
    dy = mesh.deltas[ARKIT_INDEX["jawOpen"], :, 1]
    upper, lower = (path1, path2) if dy[path1].mean() > dy[path2].mean() else (path2, path1)
    corners = np.asarray([loop[i_left], loop[i_right]], dtype=np.int64)
    return upper, lower, corners


def compute_arkit_regions(mesh: ArkitMesh) -> FaceRegions:
    """Derive the :class:`FaceRegions` of an ARKit mesh (see the module docstring for how). Not cached."""
    width = float(np.ptp(mesh.neutral[:, 0]))
    if not 0.05 < width < 0.5:
        raise InputError(f"ARKit mesh is {width:.4g} units wide: expected a head in metres (about 0.15)")
    loops = boundary_loops(mesh.faces)
    mouth = _mouth_loop(mesh, loops)
    upper_path, lower_path, corners = _split_mouth(mesh, mouth)

    xu, xl = mesh.neutral[upper_path, 0], mesh.neutral[lower_path, 0]
    pair = np.abs(xu[:, None] - xl[None, :]).argmin(axis=1)
    mouth_upper, mouth_lower = upper_path, lower_path[pair]

    lips = _grow_rings(mesh.faces, mouth, LIP_RINGS)

    move = np.linalg.norm(mesh.deltas, axis=-1)  # [52, V]
    upper_shapes = [i for i, n in enumerate(ARKIT52_NAMES) if n.startswith(("brow", "eye"))]
    moved_upper = move[upper_shapes].max(axis=0) > UPPER_FACE_MIN_MOVE_M
    # eye holes: boundary loops other than the mouth that are much narrower than the mesh (not the outer rim)
    span = float(np.ptp(mesh.neutral[:, 0]))
    eye_holes = [lp for lp in loops if lp is not mouth and len(lp) >= 6 and np.ptp(mesh.neutral[lp, 0]) < 0.5 * span]
    if eye_holes:
        ey = mesh.neutral[np.concatenate(eye_holes), 1]
        y_min = float(ey.min() - np.ptp(ey))
    else:
        y_min = float(mesh.neutral[mouth, 1].max())
    upper_face = np.nonzero(moved_upper & (mesh.neutral[:, 1] > y_min))[0]

    face = np.nonzero(move.max(axis=0) > FACE_MIN_MOVE_M)[0]
    return FaceRegions(
        lips=lips,
        face=face,
        upper_face=upper_face,
        mouth_upper=mouth_upper,
        mouth_lower=mouth_lower,
        lip_corners=corners,
        unit_to_mm=1000.0,
    )


def _mesh_key(mesh: ArkitMesh) -> str:
    h = hashlib.sha1()
    for a in (mesh.neutral, mesh.deltas, mesh.faces):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def arkit_regions(mesh: ArkitMesh) -> FaceRegions:
    """The :class:`FaceRegions` of ``mesh``, cached by the mesh's content."""
    key = _mesh_key(mesh)
    if key not in _CACHE:
        _CACHE[key] = compute_arkit_regions(mesh)
    return _CACHE[key]


@lru_cache(maxsize=4)
def _load(folder: str) -> tuple[ArkitMesh, FaceRegions]:
    mesh = ArkitMesh.load(folder)
    return mesh, arkit_regions(mesh)


def load_arkit_regions(folder: str | Path) -> tuple[ArkitMesh, FaceRegions]:
    """Load the ARKit mesh in ``folder`` and its regions, cached per (resolved) folder."""
    return _load(str(Path(folder).resolve()))
