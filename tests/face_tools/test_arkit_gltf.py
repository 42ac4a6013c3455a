"""GLB writer for ARKit heads: structure per the glTF 2.0 spec, morph targets named by ARKit curve, exact data."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from a2llm_rt.errors import InputError
from a2llm_rt.face.arkit_mesh import ArkitMesh
from a2llm_rt.face.layouts import ARKIT52_NAMES
from a2llm_rt.face_tools.arkit_gltf import (
    GLB_MAGIC,
    accessor_array,
    build_glb,
    main,
    read_glb,
    uv_sphere,
    vertex_normals,
    write_glb,
)


def tiny_mesh(missing: tuple[str, ...] = ("tongueOut",)) -> ArkitMesh:
    """A unit square in the XY plane (two CCW triangles facing +Z); curve i lifts vertex i % 4 by (i + 1) mm in Z."""
    neutral = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], np.float32)
    faces = np.array([[0, 1, 2], [0, 2, 3]], np.int64)
    deltas = np.zeros((52, 4, 3), np.float32)
    for i, name in enumerate(ARKIT52_NAMES):
        if name not in missing:
            deltas[i, i % 4, 2] = (i + 1) * 1e-3
    return ArkitMesh(neutral, deltas, faces, missing)


def test_glb_container_and_targets():
    mesh = tiny_mesh()
    data = build_glb(mesh, eyes=False)
    magic, version, total = struct.unpack_from("<III", data)
    assert (magic, version, total) == (GLB_MAGIC, 2, len(data)) and len(data) % 4 == 0
    doc, binary = read_glb(data)
    assert doc["asset"]["version"] == "2.0"
    assert doc["buffers"][0]["byteLength"] == len(binary)
    for view in doc["bufferViews"]:
        assert view["byteOffset"] % 4 == 0 and view["byteOffset"] + view["byteLength"] <= len(binary)
    m = doc["meshes"][0]
    names = m["extras"]["targetNames"]
    assert names == [n for n in ARKIT52_NAMES if n != "tongueOut"] and len(names) == 51
    prim = m["primitives"][0]
    assert len(prim["targets"]) == 51 == len(m["weights"])
    pos = accessor_array(doc, binary, prim["attributes"]["POSITION"])
    np.testing.assert_array_equal(pos, mesh.neutral)
    pacc = doc["accessors"][prim["attributes"]["POSITION"]]
    assert pacc["min"] == [0, 0, 0] and pacc["max"] == [1, 1, 0]  # required by the spec for POSITION
    np.testing.assert_array_equal(accessor_array(doc, binary, prim["indices"]).reshape(-1, 3), mesh.faces)
    np.testing.assert_allclose(accessor_array(doc, binary, prim["attributes"]["NORMAL"]), [[0, 0, 1]] * 4, atol=1e-6)
    for k, name in enumerate(names):
        i = ARKIT52_NAMES.index(name)
        d = accessor_array(doc, binary, prim["targets"][k]["POSITION"])
        np.testing.assert_array_equal(d, mesh.deltas[i])
        acc = doc["accessors"][prim["targets"][k]["POSITION"]]
        assert acc["max"][2] == pytest.approx((i + 1) * 1e-3)
        nd = accessor_array(doc, binary, prim["targets"][k]["NORMAL"])
        shape_n = vertex_normals(mesh.neutral + d, mesh.faces)
        np.testing.assert_allclose(np.asarray([[0, 0, 1]] * 4) + nd, shape_n, atol=1e-6)  # deltas of unit normals
        assert np.abs(nd).max() > 0  # a lifted corner tilts the normals


def test_include_missing_gives_52_zero_targets():
    doc, binary = read_glb(build_glb(tiny_mesh(), include_missing=True, eyes=False))
    prim = doc["meshes"][0]["primitives"][0]
    assert doc["meshes"][0]["extras"]["targetNames"] == list(ARKIT52_NAMES)
    tongue = prim["targets"][51]
    assert not accessor_array(doc, binary, tongue["POSITION"]).any()
    assert not accessor_array(doc, binary, tongue["NORMAL"]).any()


def test_normals_point_outward_and_are_unit():
    v, f = uv_sphere(8, 12)
    n = vertex_normals(v, f)
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-5)
    assert (np.sum(n * v, axis=1) > 0.9).all()  # a sphere's normals are its positions
    batched = vertex_normals(np.stack([v, 2 * v]), f)  # [2, V, 3]
    np.testing.assert_allclose(batched[1], n, atol=1e-5)


def test_bad_input_is_an_input_error():
    m = tiny_mesh()
    with pytest.raises(InputError):
        build_glb(ArkitMesh(m.neutral, m.deltas, np.zeros((0, 3), np.int64), m.missing))
    with pytest.raises(InputError):
        read_glb(b"glTF" + b"\0" * 16)


def test_real_mesh_cli_with_eyes(tmp_path: Path, arkit_mesh_dir: Path, capsys):
    out = tmp_path / "head.glb"
    assert main(["--mesh", str(arkit_mesh_dir), "--out", str(out)]) == 0
    assert "51 ARKit morph targets" in capsys.readouterr().out
    doc, binary = read_glb(out.read_bytes())
    mesh = ArkitMesh.load(arkit_mesh_dir)
    prim = doc["meshes"][0]["primitives"][0]
    np.testing.assert_array_equal(accessor_array(doc, binary, prim["attributes"]["POSITION"]), mesh.neutral)
    jaw = doc["meshes"][0]["extras"]["targetNames"].index("jawOpen")
    d = accessor_array(doc, binary, prim["targets"][jaw]["POSITION"])
    np.testing.assert_array_equal(d, mesh.deltas[ARKIT52_NAMES.index("jawOpen")])
    nodes = {n["name"]: n for n in doc["nodes"]}
    assert {"eyeLeft", "eyeRight", "mouthInterior"} <= set(nodes)
    assert nodes["eyeLeft"]["translation"][0] > 0 > nodes["eyeRight"]["translation"][0]  # subject's left at +X
    root = doc["nodes"][doc["scenes"][0]["nodes"][0]]
    assert len(root["children"]) == len(doc["nodes"]) - 1


def test_cli_bad_folder_exits_2(tmp_path: Path, capsys):
    assert main(["--mesh", str(tmp_path), "--out", str(tmp_path / "x.glb")]) == 2
    assert "Neutral.obj" in capsys.readouterr().err
    assert not (tmp_path / "x.glb").exists()


def test_write_glb_returns_counts(tmp_path: Path, arkit_mesh_dir: Path):
    assert write_glb(arkit_mesh_dir, tmp_path / "a" / "h.glb", include_missing=True) == (1220, 52)
