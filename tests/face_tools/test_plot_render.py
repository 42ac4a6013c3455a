"""Curve plots and the software renderer: names, PNG output, orientation, z-buffer, the real ARKit mesh."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from a2llm_rt.errors import InputError
from a2llm_rt.face.clip import MotionClip
from a2llm_rt.face.io import save_clip
from a2llm_rt.face.layouts import ARKIT_INDEX
from a2llm_rt.face_tools import plot, render
from a2llm_rt.face_tools.render import BACKGROUND, INTERIOR, render_mesh


def _arkit_clip(t: int = 100, fps: float = 25.0, phase: float = 0.0) -> MotionClip:
    v = np.zeros((t, 52), dtype=np.float32)
    time = np.arange(t) / fps
    v[:, ARKIT_INDEX["jawOpen"]] = 0.5 + 0.5 * np.sin(2 * np.pi * time + phase)
    v[:, ARKIT_INDEX["eyeBlinkLeft"]] = (np.arange(t) % 40 < 4).astype(np.float32)
    return MotionClip(v, fps, "arkit52", {"source": "synthetic.npz"})


def _png_size(path) -> tuple[int, int]:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


# --- plot -----------------------------------------------------------------------------------------------------------
def test_resolve_curve_names():
    ark = _arkit_clip()
    ll = MotionClip(np.zeros((3, 61)), 30, "livelink61")
    flame = MotionClip(np.zeros((3, 58)), 25, "flame58")
    assert plot.resolve_curve(ark, "jawOpen") == plot.resolve_curve(ark, "JawOpen") == ARKIT_INDEX["jawOpen"]
    assert plot.resolve_curve(ll, "jawOpen") == plot.resolve_curve(ll, "JawOpen") == ARKIT_INDEX["jawOpen"]
    assert plot.resolve_curve(ll, "HeadYaw") == 52
    assert plot.resolve_curve(flame, "jaw_x") == 50
    assert plot.resolve_curve(flame, "jawOpen") is None  # a real curve, not in this layout
    with pytest.raises(InputError, match="did you mean jawOpen"):
        plot.resolve_curve(ark, "jawOpn")


def test_plot_curves_comparison(tmp_path):
    a, b = _arkit_clip(), _arkit_clip(phase=0.5)
    out = plot.plot_curves([a, b], ["jawOpen", "EyeBlinkLeft"], tmp_path / "cmp.png", labels=["input", "recon"])
    w, h = _png_size(out)
    assert w > 600 and h > 300
    with pytest.raises(InputError, match="no frames"):
        plot.plot_curves([a], ["jawOpen"], tmp_path / "x.png", start=100.0, end=200.0)
    with pytest.raises(InputError, match="labels"):
        plot.plot_curves([a, b], ["jawOpen"], tmp_path / "x.png", labels=["one"])
    assert not (tmp_path / "x.png").exists()


def test_plot_cli(tmp_path, capsys):
    clip_path = tmp_path / "take.npz"
    save_clip(_arkit_clip(), clip_path)
    out = tmp_path / "curves.png"
    rc = plot.main([str(clip_path), "--curves", "jawOpen,eyeBlinkLeft", "--out", str(out), "--start", "1"])
    assert rc == 0 and _png_size(out)[0] > 600
    assert plot.main([str(clip_path), "--curves", "mouthSmileLft", "--out", str(out)]) == 2
    assert "did you mean mouthSmileLeft" in capsys.readouterr().err
    assert plot.main([str(tmp_path / "missing.npz"), "--out", str(out)]) == 2


# --- render ---------------------------------------------------------------------------------------------------------
def _quad(x0, x1, y0, y1, z, ccw=True):
    v = np.array([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]], dtype=np.float64)
    f = np.array([[0, 1, 2], [0, 2, 3]]) if ccw else np.array([[0, 2, 1], [0, 3, 2]])
    return v, f


def test_render_orientation():
    # a small square in the upper-right quadrant of mesh space (x > 0, y > 0) must land top-right in the image
    v, f = _quad(0.5, 1.0, 0.5, 1.0, 0.0)
    v = np.concatenate([v, [[-1.0, -1.0, 0.0]]])  # an unused vertex widens the framing to [-1, 1]^2
    img = render_mesh(v, f, 100, 100, center=np.array([0.0, 0.0]), scale=50.0)
    assert img.shape == (100, 100, 3) and img.dtype == np.uint8
    fg = np.any(img != np.round(BACKGROUND * 255).astype(np.uint8), axis=2)
    rows, cols = np.nonzero(fg)
    assert rows.max() < 50 and cols.min() >= 50  # top half, right half
    assert 500 < fg.sum() < 700  # 25 x 25 px square


def test_render_zbuffer_nearest_wins():
    front, ff = _quad(-1, 1, -1, 1, 0.0, ccw=True)  # front-facing, skin
    back, bf = _quad(-0.5, 0.5, -0.5, 0.5, 0.5, ccw=False)  # back-facing, interior colour
    v = np.concatenate([front, back])
    faces = np.concatenate([ff, bf + 4])
    kw = dict(width=64, height=64, center=np.array([0.0, 0.0]), scale=30.0)
    centre = render_mesh(v, faces, **kw)[32, 32] / 255.0
    assert np.allclose(centre, INTERIOR * (0.6 + 0.4), atol=0.01)  # the nearer (back-facing) quad is seen
    v2 = v.copy()
    v2[4:, 2] = -0.5  # now behind the front quad
    centre2 = render_mesh(v2, faces, **kw)[32, 32] / 255.0
    assert centre2[0] > 0.6 and not np.allclose(centre2, INTERIOR, atol=0.05)


def test_render_real_mesh_mouth_opens(arkit_mesh_dir):
    from a2llm_rt.face.arkit_mesh import ArkitMesh

    mesh = ArkitMesh.load(arkit_mesh_dir)
    w = np.zeros((2, 52), dtype=np.float32)
    w[1, ARKIT_INDEX["jawOpen"]] = 1.0
    closed, opened = render.render_frames(mesh, w, 150, 200)
    bg = np.round(BACKGROUND * 255).astype(np.uint8)
    hole_closed = np.all(closed == bg, axis=2)
    hole_open = np.all(opened == bg, axis=2)
    new_hole = hole_open & ~hole_closed  # background now visible through the opened mouth
    rows, cols = np.nonzero(new_hole)
    assert new_hole.sum() > 300
    assert rows.mean() > 0.6 * 200  # in the lower part of the face: up is up
    assert abs(cols.mean() - 75) < 10  # centred left-right
    # the eyes (holes in the mesh) sit in the upper half of the neutral face
    face_rows = np.nonzero(~hole_closed.all(axis=1))[0]
    inner = hole_closed[face_rows.min() + 20 : face_rows.max() - 20, 30:120]
    eye_rows = np.nonzero(inner.any(axis=1))[0] + face_rows.min() + 20
    assert eye_rows.min() < 100


def test_render_cli_flame_clip(tmp_path, arkit_mesh_dir, capsys):
    v = np.zeros((10, 58), dtype=np.float32)
    v[5, 50] = 0.35  # jaw open -> jawOpen = 1
    save_clip(MotionClip(v, 25, "flame58"), tmp_path / "flame.npz")
    out = tmp_path / "sheet.png"
    rc = render.main([str(tmp_path / "flame.npz"), "--mesh", str(arkit_mesh_dir), "--frames", "0,5", "--out", str(out)])
    assert rc == 0
    w, h = _png_size(out)
    assert w > 300 and h > 300
    rc = render.main([str(tmp_path / "flame.npz"), "--mesh", str(arkit_mesh_dir), "--frames", "0,10", "--out", "x.png"])
    assert rc == 2 and "frame 10 is outside the clip" in capsys.readouterr().err
    weights = render.clip_weights(MotionClip(v, 25, "flame58"), [0, 5])
    assert weights[1, ARKIT_INDEX["jawOpen"]] == pytest.approx(1.0) and weights[0].sum() == 0
