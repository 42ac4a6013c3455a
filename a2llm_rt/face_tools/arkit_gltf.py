"""ARKit face mesh -> GLB (binary glTF 2.0) with one morph target per ARKit curve, written by hand (struct + json).

``python -m a2llm_rt.face_tools.arkit_gltf --mesh ../shared/data/arkit_mesh --out head.glb`` reads a folder of ARKit OBJ
shapes (``Neutral.obj`` + ``<arkitName>.obj``, see :mod:`a2llm_rt.face.arkit_mesh`) and writes one mesh whose morph
targets are named by ARKit curve in ``mesh.extras.targetNames`` (the convention three.js, Blender and Babylon read),
so any glTF viewer that drives ARKit-named morph targets (the browser viewer in ``plugin_bridge/web``) can animate it.

The GLB holds: the neutral positions ``[V, 3]`` and smooth vertex normals, triangle indices, and per curve a POSITION
delta ``[V, 3]`` and a NORMAL delta ``[V, 3]`` (normal of the shape minus normal of the neutral). Curves without a shape
file (``tongueOut`` in Apple's set) are left out unless ``include_missing`` asks for zero targets, so the reference
folder gives 51 targets. Units are the OBJ's (metres for Apple's mesh); +Y is up and the face looks along +Z, which is
glTF's convention too.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from a2llm_rt.errors import InputError
from a2llm_rt.face.arkit_mesh import ArkitMesh
from a2llm_rt.face.layouts import ARKIT52_NAMES
from a2llm_rt.utils.cli import cli_main
from a2llm_rt.utils.fileio import atomic_write

GLB_MAGIC = 0x46546C67  # b"glTF"
GLB_VERSION = 2
CHUNK_JSON = 0x4E4F534A  # b"JSON"
CHUNK_BIN = 0x004E4942  # b"BIN\0"
ARRAY_BUFFER = 34962
ELEMENT_ARRAY_BUFFER = 34963
FLOAT = 5126
UNSIGNED_SHORT = 5123
UNSIGNED_INT = 5125
TRIANGLES = 4
SKIN_RGBA = (0.58, 0.38, 0.29, 1.0)  # linear base colour of the default material


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted smooth normals ``[V, 3]`` float32 (unit length; ``+Z`` for a vertex in no triangle).

    Args:
        vertices: ``[V, 3]`` positions; a leading batch is allowed: ``[..., V, 3]`` -> ``[..., V, 3]``.
        faces: ``[F, 3]`` triangle vertex indices, counter-clockwise seen from the outside.
    """
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64)
    lead, nv = v.shape[:-2], v.shape[-2]
    vb = v.reshape(-1, nv, 3)  # [B, V, 3]
    a, b, c = vb[:, f[:, 0]], vb[:, f[:, 1]], vb[:, f[:, 2]]
    fn = np.cross(b - a, c - a)  # [B, F, 3], length = 2 * area
    n = np.zeros((vb.shape[0] * nv, 3))
    offs = (np.arange(vb.shape[0]) * nv)[:, None]  # [B, 1]
    for k in range(3):
        np.add.at(n, (offs + f[None, :, k]).reshape(-1), fn.reshape(-1, 3))
    length = np.linalg.norm(n, axis=-1, keepdims=True)
    out = np.where(length > 1e-20, n / np.maximum(length, 1e-30), np.array([0.0, 0.0, 1.0]))
    return out.reshape(*lead, nv, 3).astype(np.float32)


def uv_sphere(n_lat: int = 40, n_lon: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """Unit sphere around +Z: vertices ``[(n_lat + 1) * (n_lon + 1), 3]`` float32 and CCW triangles ``[F, 3]``."""
    th = np.linspace(0.0, np.pi, n_lat + 1)[:, None]  # angle from +Z
    ph = np.linspace(0.0, 2 * np.pi, n_lon + 1)[None, :]
    v = np.stack([np.sin(th) * np.cos(ph), np.sin(th) * np.sin(ph), np.cos(th) + 0 * ph], -1).reshape(-1, 3)
    i = np.arange(n_lat)[:, None] * (n_lon + 1) + np.arange(n_lon)[None, :]  # [n_lat, n_lon]
    a, b, c, d = i, i + n_lon + 1, i + n_lon + 2, i + 1
    faces = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)])
    keep = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])
    return v.astype(np.float32), faces[keep]


def eye_colors(v: np.ndarray, iris_rgb: tuple[float, float, float] = (0.20, 0.33, 0.45)) -> np.ndarray:
    """Linear RGBA per vertex ``[V, 4]`` of a unit eyeball looking along +Z: pupil, iris (with a darker rim), sclera."""
    ang = np.arccos(np.clip(v[:, 2], -1.0, 1.0))  # [V] radians from the gaze axis
    iris = np.asarray(iris_rgb, np.float32)
    col = np.empty((len(v), 4), np.float32)
    col[:, 3] = 1.0
    col[:, :3] = (0.80, 0.77, 0.74)  # sclera
    t = np.clip((ang - 0.18) / 0.32, 0.0, 1.0)[:, None]  # 0 at the pupil edge, 1 at the limbus
    in_iris = ang < 0.50
    col[in_iris, :3] = (iris * (1.15 - 0.6 * t))[in_iris]
    col[ang < 0.18, :3] = 0.01  # pupil
    return col


def _eye_holes(v: np.ndarray, faces: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Boundary loops of the mask (centroid ``[3]``, extent ``[3]``), largest first: outline, mouth, eyes."""
    e = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    uniq, count = np.unique(e, axis=0, return_counts=True)
    border = uniq[count == 1]
    parent = {int(x): int(x) for x in border.reshape(-1)}

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in border:
        parent[find(int(a))] = find(int(b))
    groups: dict[int, list[int]] = {}
    for x in parent:
        groups.setdefault(find(x), []).append(x)
    loops = sorted(groups.values(), key=len, reverse=True)
    return [(v[g].mean(0), v[g].max(0) - v[g].min(0)) for g in loops]


@dataclass
class _Bin:
    """Accumulates the binary chunk: one bufferView + accessor per array, each 4-byte aligned."""

    data: bytearray
    views: list[dict]
    accessors: list[dict]

    def add(self, array: np.ndarray, *, kind: str, target: int, min_max: bool = False) -> int:
        a = np.ascontiguousarray(array)
        ctype = {np.dtype("<f4"): FLOAT, np.dtype("<u2"): UNSIGNED_SHORT, np.dtype("<u4"): UNSIGNED_INT}[a.dtype]
        while len(self.data) % 4:
            self.data.append(0)
        raw = a.tobytes()
        self.views.append({"buffer": 0, "byteOffset": len(self.data), "byteLength": len(raw), "target": target})
        self.data += raw
        acc: dict = {
            "bufferView": len(self.views) - 1,
            "componentType": ctype,
            "count": int(a.shape[0]),
            "type": kind,
        }
        if min_max:
            acc["min"] = [float(x) for x in a.min(axis=0)] if a.size else [0.0] * a.shape[1]
            acc["max"] = [float(x) for x in a.max(axis=0)] if a.size else [0.0] * a.shape[1]
        self.accessors.append(acc)
        return len(self.accessors) - 1


def build_glb(
    mesh: ArkitMesh,
    *,
    include_missing: bool = False,
    name: str = "a2llm_arkit_head",
    color: tuple[float, float, float, float] = SKIN_RGBA,
    eyes: bool = True,
) -> bytes:
    """The GLB file's bytes for ``mesh`` (neutral ``[V, 3]``, deltas ``[52, V, 3]``, faces ``[F, 3]``).

    Morph targets follow ARKIT52 order, skipping ``mesh.missing`` unless ``include_missing`` (then all 52, missing
    ones as zero deltas). Their names are in ``meshes[0].extras.targetNames``. With ``eyes``, a mask with two eye
    holes and a mouth hole (Apple's topology) also gets eyeballs (nodes ``eyeLeft`` / ``eyeRight``, the subject's
    left at +X, gaze along +Z, rotatable by the Live Link eye curves) and a dark mouth interior.
    """
    v = np.asarray(mesh.neutral, np.float32)  # [V, 3]
    faces = np.asarray(mesh.faces, np.int64)  # [F, 3]
    if v.ndim != 2 or v.shape[1] != 3 or len(v) == 0:
        raise InputError(f"neutral mesh must be [V, 3] with V > 0, got {list(v.shape)}")
    if faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0:
        raise InputError(f"faces must be [F, 3] with F > 0, got {list(faces.shape)}")
    names = [n for n in ARKIT52_NAMES if include_missing or n not in mesh.missing]
    idx = [ARKIT52_NAMES.index(n) for n in names]
    deltas = np.asarray(mesh.deltas, np.float32)[idx]  # [K, V, 3]
    n0 = vertex_normals(v, faces)  # [V, 3]
    shapes_n = vertex_normals(v[None] + deltas, faces) if len(idx) else np.zeros((0, *v.shape), np.float32)
    normal_deltas = shapes_n - n0[None]  # [K, V, 3]
    missing = set(mesh.missing)
    for k, n in enumerate(names):
        if n in missing:
            normal_deltas[k] = 0.0

    b = _Bin(bytearray(), [], [])
    index_dtype = "<u2" if len(v) <= 0xFFFF else "<u4"
    i_acc = b.add(faces.reshape(-1).astype(index_dtype), kind="SCALAR", target=ELEMENT_ARRAY_BUFFER)
    p_acc = b.add(v.astype("<f4"), kind="VEC3", target=ARRAY_BUFFER, min_max=True)
    n_acc = b.add(n0.astype("<f4"), kind="VEC3", target=ARRAY_BUFFER)
    targets = []
    for k in range(len(names)):
        tp = b.add(deltas[k].astype("<f4"), kind="VEC3", target=ARRAY_BUFFER, min_max=True)
        tn = b.add(normal_deltas[k].astype("<f4"), kind="VEC3", target=ARRAY_BUFFER)
        targets.append({"POSITION": tp, "NORMAL": tn})
    primitive: dict = {
        "attributes": {"POSITION": p_acc, "NORMAL": n_acc},
        "indices": i_acc,
        "material": 0,
        "mode": TRIANGLES,
    }
    if targets:
        primitive["targets"] = targets
    meshes: list[dict] = [
        {"name": name, "primitives": [primitive], "weights": [0.0] * len(names), "extras": {"targetNames": names}}
    ]
    materials: list[dict] = [
        {
            "name": "skin",
            "pbrMetallicRoughness": {
                "baseColorFactor": [float(c) for c in color],
                "metallicFactor": 0.0,
                "roughnessFactor": 0.6,
            },
            "doubleSided": True,
        }
    ]
    nodes: list[dict] = [{"name": name, "mesh": 0}]
    holes = _eye_holes(v, faces) if eyes else []
    if len(holes) == 4:  # outline, mouth, two eyes: Apple's ARKit face topology
        sv, sf = uv_sphere()
        s_idx = b.add(sf.reshape(-1).astype("<u2"), kind="SCALAR", target=ELEMENT_ARRAY_BUFFER)
        s_pos = b.add(sv, kind="VEC3", target=ARRAY_BUFFER, min_max=True)
        s_col = b.add(eye_colors(sv), kind="VEC4", target=ARRAY_BUFFER)
        eye_attr = {"POSITION": s_pos, "NORMAL": s_pos, "COLOR_0": s_col}
        meshes.append({"name": "eyeball", "primitives": [{"attributes": eye_attr, "indices": s_idx, "material": 1}]})
        mouth_attr = {"POSITION": s_pos, "NORMAL": s_pos}
        mouth_prim = {"attributes": mouth_attr, "indices": s_idx, "material": 2}
        meshes.append({"name": "mouthInterior", "primitives": [mouth_prim]})
        materials.append({"name": "eye", "pbrMetallicRoughness": {"metallicFactor": 0.0, "roughnessFactor": 0.12}})
        materials.append(
            {
                "name": "mouth",
                "pbrMetallicRoughness": {
                    "baseColorFactor": [0.035, 0.006, 0.008, 1.0],
                    "metallicFactor": 0.0,
                    "roughnessFactor": 0.9,
                },
            }
        )
        (mouth_c, mouth_ext), eye_a, eye_b = holes[1], holes[2], holes[3]
        for label, (c, ext) in (("eyeLeft", max(eye_a, eye_b, key=lambda h: h[0][0])),
                                ("eyeRight", min(eye_a, eye_b, key=lambda h: h[0][0]))):  # fmt: skip
            r = float(0.53 * ext[0])  # eyeball radius from the eye opening's width (~12 mm for Apple's mesh)
            nodes.append(
                {"name": label, "mesh": 1, "translation": [float(c[0]), float(c[1]), float(c[2] - 0.62 * r)],
                 "scale": [r, r, r]}
            )  # fmt: skip
        w = float(mouth_ext[0])
        nodes.append(
            {"name": "mouthInterior", "mesh": 2, "scale": [0.6 * w, 0.8 * w, 0.5 * w],
             "translation": [float(mouth_c[0]), float(mouth_c[1] - 0.45 * w), float(mouth_c[2] - 0.75 * w)]}
        )  # fmt: skip
    while len(b.data) % 4:
        b.data.append(0)
    root = {"name": f"{name}_root", "children": list(range(len(nodes)))}
    gltf = {
        "asset": {"version": "2.0", "generator": "a2llm_rt.face_tools.arkit_gltf"},
        "scene": 0,
        "scenes": [{"name": name, "nodes": [len(nodes)]}],
        "nodes": [*nodes, root],
        "meshes": meshes,
        "materials": materials,
        "buffers": [{"byteLength": len(b.data)}],
        "bufferViews": b.views,
        "accessors": b.accessors,
    }
    js = json.dumps(gltf, separators=(",", ":")).encode("utf-8")
    js += b" " * (-len(js) % 4)
    total = 12 + 8 + len(js) + 8 + len(b.data)
    return b"".join(
        [
            struct.pack("<III", GLB_MAGIC, GLB_VERSION, total),
            struct.pack("<II", len(js), CHUNK_JSON),
            js,
            struct.pack("<II", len(b.data), CHUNK_BIN),
            bytes(b.data),
        ]
    )


def read_glb(data: bytes) -> tuple[dict, bytes]:
    """Split a GLB into its JSON document and binary chunk (checks magic, version and chunk lengths)."""
    if len(data) < 20:
        raise InputError(f"GLB is {len(data)} bytes, too short")
    magic, version, total = struct.unpack_from("<III", data, 0)
    if magic != GLB_MAGIC or version != GLB_VERSION:
        raise InputError(f"not a glTF 2.0 binary (magic {magic:#x}, version {version})")
    if total != len(data):
        raise InputError(f"GLB header says {total} bytes, file has {len(data)}")
    pos, doc, binary = 12, None, b""
    while pos < total:
        if pos + 8 > total:
            raise InputError("GLB chunk header is truncated")
        length, ctype = struct.unpack_from("<II", data, pos)
        chunk = data[pos + 8 : pos + 8 + length]
        if len(chunk) != length or length % 4:
            raise InputError("GLB chunk length is wrong or not 4-byte aligned")
        if ctype == CHUNK_JSON and doc is None:
            doc = json.loads(chunk.decode("utf-8"))
        elif ctype == CHUNK_BIN:
            binary = chunk
        pos += 8 + length
    if doc is None:
        raise InputError("GLB has no JSON chunk")
    return doc, binary


def accessor_array(doc: dict, binary: bytes, index: int) -> np.ndarray:
    """Accessor ``index`` of a GLB read by :func:`read_glb` as a numpy array (``[count]`` or ``[count, n]``)."""
    acc = doc["accessors"][index]
    view = doc["bufferViews"][acc["bufferView"]]
    dtype = {FLOAT: "<f4", UNSIGNED_SHORT: "<u2", UNSIGNED_INT: "<u4"}[acc["componentType"]]
    width = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}[acc["type"]]
    start = view["byteOffset"] + acc.get("byteOffset", 0)
    a = np.frombuffer(binary, dtype, acc["count"] * width, start)
    return a if width == 1 else a.reshape(-1, width)


def write_glb(mesh_dir: str | Path, out: str | Path, *, include_missing: bool = False) -> tuple[int, int]:
    """Convert an ARKit OBJ folder into ``out``; returns ``(vertices, morph targets)``."""
    mesh = ArkitMesh.load(mesh_dir)
    data = build_glb(mesh, include_missing=include_missing)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out, "wb") as f:
        f.write(data)
    return mesh.num_vertices, 52 if include_missing else 52 - len(mesh.missing)


@cli_main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m a2llm_rt.face_tools.arkit_gltf", description=__doc__.splitlines()[0])
    ap.add_argument("--mesh", required=True, type=Path, help="folder with Neutral.obj and <arkitName>.obj shapes")
    ap.add_argument("--out", required=True, type=Path, help="output .glb file")
    ap.add_argument("--all-52", action="store_true", help="also write zero targets for curves without a shape file")
    args = ap.parse_args(argv)
    n_v, n_t = write_glb(args.mesh, args.out, include_missing=args.all_52)
    print(f"wrote {args.out}: {n_v} vertices, {n_t} ARKit morph targets")
    return 0


if __name__ == "__main__":
    sys.exit(main())
