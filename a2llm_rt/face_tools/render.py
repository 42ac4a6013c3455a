"""CPU software renderer of the ARKit face mesh, and contact sheets of chosen clip frames.

``python -m a2llm_rt.face_tools.render IN [--mesh ../shared/data/arkit_mesh] --frames 0,30,60 --out sheet.png
[--map M]``

Front view, orthographic: the mesh's x (the subject's left) goes to the image's right, y (up) to the image's top, and
the camera looks down -z (the face looks along +z). Triangles are rasterised in numpy with a z-buffer (every
triangle's bounding box expanded to (triangle, pixel) pairs at once, barycentric inside test at pixel centres, the
nearest pair per pixel wins) and shaded with smooth vertex normals: Lambert from one light in front, above and to the
subject's right, plus ambient. Back faces (seen through the mouth and eye openings) get a dark interior colour. The
framing is fixed by the neutral mesh, so motion (an opening jaw) shows as motion.

``arkit52`` / ``livelink61`` clips drive the mesh directly (Live Link's head/eye rotations are not applied);
``flame58`` clips go through :func:`a2llm_rt.face.flame_to_arkit.flame_to_arkit` (analytic jaw/eyelids, plus the
learned curves when ``--map`` names an :class:`~a2llm_rt.face.flame_to_arkit.ArkitMap`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from a2llm_rt.errors import InputError  # noqa: E402
from a2llm_rt.face.arkit_mesh import ArkitMesh  # noqa: E402
from a2llm_rt.face.clip import MotionClip  # noqa: E402
from a2llm_rt.face.flame_to_arkit import ArkitMap, flame_to_arkit  # noqa: E402
from a2llm_rt.face.layouts import ARKIT52_DIM  # noqa: E402
from a2llm_rt.utils.cli import cli_main
from a2llm_rt.utils.fileio import atomic_write  # noqa: E402

SKIN = np.array([0.87, 0.68, 0.58])
INTERIOR = np.array([0.30, 0.10, 0.10])
BACKGROUND = np.array([0.13, 0.14, 0.16])
LIGHT = np.array([-0.35, 0.45, 1.0]) / np.linalg.norm([-0.35, 0.45, 1.0])  # toward the light (subject's right, up)
AMBIENT = 0.22
DIFFUSE = 0.78


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals ``[V, 3]`` of ``vertices [V, 3]``, triangles ``faces [F, 3]`` (CCW = front)."""
    v = vertices[faces]  # [F, 3, 3]
    fn = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])  # [F, 3], length = 2 * area
    n = np.zeros_like(vertices, dtype=np.float64)
    for k in range(3):
        np.add.at(n, faces[:, k], fn)
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)


def framing(neutral: np.ndarray, width: int, height: int, margin: float = 0.06) -> tuple[np.ndarray, float]:
    """Centre ``[2]`` (mesh x, y) and scale (pixels per mesh unit) that fit the neutral mesh in the image."""
    lo, hi = neutral[:, :2].min(0), neutral[:, :2].max(0)
    size = hi - lo
    scale = min(width * (1 - 2 * margin) / size[0], height * (1 - 2 * margin) / size[1])
    return (lo + hi) / 2, float(scale)


def render_mesh(
    vertices: np.ndarray,
    faces: np.ndarray,
    width: int = 300,
    height: int = 400,
    center: np.ndarray | None = None,
    scale: float | None = None,
) -> np.ndarray:
    """Render one mesh ``vertices [V, 3]`` (triangles ``faces [F, 3]``) to an RGB image ``[height, width, 3]`` uint8.

    ``center`` / ``scale`` fix the framing (see :func:`framing`); by default the mesh itself is framed.
    """
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    if v.ndim != 2 or v.shape[1] != 3 or not np.isfinite(v).all():
        raise InputError(f"vertices must be a finite [V, 3] array, got shape {list(v.shape)}")
    if center is None or scale is None:
        center, scale = framing(v, width, height)
    # image coordinates: column = x, row = -y (pixel centres at integer + 0.5); depth: larger z is nearer
    px = (v[:, 0] - center[0]) * scale + width / 2
    py = height / 2 - (v[:, 1] - center[1]) * scale
    pz = v[:, 2]
    normals = vertex_normals(v, f)

    tx, ty = px[f], py[f]  # [F, 3]
    # signed area in image space (rows go down, so a front-facing CCW triangle has negative area here)
    area = (tx[:, 1] - tx[:, 0]) * (ty[:, 2] - ty[:, 0]) - (tx[:, 2] - tx[:, 0]) * (ty[:, 1] - ty[:, 0])
    x0 = np.clip(np.floor(tx.min(1) - 0.5), 0, width - 1).astype(np.int64)
    x1 = np.clip(np.ceil(tx.max(1) - 0.5), 0, width - 1).astype(np.int64)
    y0 = np.clip(np.floor(ty.min(1) - 0.5), 0, height - 1).astype(np.int64)
    y1 = np.clip(np.ceil(ty.max(1) - 0.5), 0, height - 1).astype(np.int64)
    visible = (np.abs(area) > 1e-9) & (tx.max(1) >= 0) & (tx.min(1) < width) & (ty.max(1) >= 0) & (ty.min(1) < height)
    tri = np.nonzero(visible)[0]
    bw, bh = (x1 - x0 + 1)[tri], (y1 - y0 + 1)[tri]
    counts = bw * bh
    pair_tri = np.repeat(tri, counts)  # [P] triangle of each (triangle, pixel) pair
    local = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    pw = np.repeat(bw, counts)
    cx = x0[pair_tri] + local % pw
    cy = y0[pair_tri] + local // pw
    sx, sy = cx + 0.5, cy + 0.5

    # barycentric weights from edge functions E(a, b, c) = (b - a) x (c - a); area = E(v0, v1, v2)
    qx, qy = tx[pair_tri], ty[pair_tri]  # [P, 3]
    a = area[pair_tri]

    def edge(i: int, j: int) -> np.ndarray:
        return (qx[:, j] - qx[:, i]) * (sy - qy[:, i]) - (sx - qx[:, i]) * (qy[:, j] - qy[:, i])

    w0, w1 = edge(1, 2) / a, edge(2, 0) / a
    w2 = 1.0 - w0 - w1
    inside = (w0 >= -1e-9) & (w1 >= -1e-9) & (w2 >= -1e-9)
    pair_tri, cx, cy, w = pair_tri[inside], cx[inside], cy[inside], np.stack([w0, w1, w2], 1)[inside]  # w [P, 3]
    z = (pz[f[pair_tri]] * w).sum(1)

    # z-buffer: per pixel keep the nearest pair (largest z)
    pix = cy * width + cx
    order = np.lexsort((z, pix))
    pix_sorted = pix[order]
    last = np.ones(len(order), dtype=bool)
    last[:-1] = pix_sorted[1:] != pix_sorted[:-1]
    win = order[last]

    img = np.broadcast_to(BACKGROUND, (height * width, 3)).copy()
    wt = pair_tri[win]
    n = (normals[f[wt]] * w[win][:, :, None]).sum(1)
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    front = area[wt] < 0  # CCW in mesh space -> seen from the front
    lambert = np.clip(n @ LIGHT, 0.0, 1.0)
    shade = AMBIENT + DIFFUSE * lambert
    color = np.where(front[:, None], SKIN * shade[:, None], INTERIOR * (0.6 + 0.4 * np.abs(n[:, 2:3])))
    img[pix[win]] = color
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8).reshape(height, width, 3)


def clip_weights(clip: MotionClip, frames: Sequence[int], arkit_map: ArkitMap | None = None) -> np.ndarray:
    """ARKIT52 weights ``[N, 52]`` of the chosen frames of a clip in any layout."""
    idx = np.asarray(list(frames), dtype=np.int64)
    bad = idx[(idx < 0) | (idx >= clip.num_frames)]
    if len(bad):
        raise InputError(f"frame {int(bad[0])} is outside the clip (0..{clip.num_frames - 1})", clip.meta.get("source"))
    values = clip.values[idx]
    if clip.layout == "flame58":
        return flame_to_arkit(values, arkit_map)
    return np.clip(values[:, :ARKIT52_DIM], 0.0, 1.0)


def render_frames(mesh: ArkitMesh, weights: np.ndarray, width: int = 300, height: int = 400) -> list[np.ndarray]:
    """Render ARKIT52 ``weights [N, 52]`` on ``mesh``, framed by its neutral pose: N images ``[H, W, 3]`` uint8."""
    center, scale = framing(mesh.neutral, width, height)
    verts = mesh.vertices(np.asarray(weights, dtype=np.float32))  # [N, V, 3]
    return [render_mesh(v, mesh.faces, width, height, center, scale) for v in verts]


def contact_sheet(
    images: Sequence[np.ndarray], captions: Sequence[str], out: str | Path, title: str = "", columns: int = 6
) -> Path:
    """Compose rendered frames with captions into one PNG ``out`` (matplotlib)."""
    n = len(images)
    if n == 0:
        raise InputError("no frames to put on the sheet")
    cols = min(n, columns)
    rows = -(-n // cols)
    h, w = images[0].shape[:2]
    extra = 0.25 * max(c.count("\n") + 1 for c in captions) + (0.4 if title else 0.0)
    fig, axes = plt.subplots(
        rows, cols, figsize=(cols * w / 110, rows * (h / 110 + extra)), squeeze=False, layout="constrained"
    )
    fig.patch.set_facecolor("white")
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < n:
            ax.imshow(images[k], interpolation="lanczos")
            ax.set_title(captions[k], fontsize=9)
    if title:
        fig.suptitle(title, fontsize=11)
    out = Path(out)
    with atomic_write(out, "wb") as fobj:
        fig.savefig(fobj, format="png", dpi=110)
    plt.close(fig)
    return out


def render_sheet(
    clip: MotionClip,
    mesh: ArkitMesh,
    frames: Sequence[int],
    out: str | Path,
    arkit_map: ArkitMap | None = None,
    title: str | None = None,
    width: int = 300,
    height: int = 400,
) -> Path:
    """Contact sheet of ``frames`` of ``clip`` on the ARKit ``mesh``, captioned with frame index and time."""
    frames = list(frames)
    images = render_frames(mesh, clip_weights(clip, frames, arkit_map), width, height)
    captions = [f"frame {i}  ·  {i / clip.fps:.2f} s" for i in frames]
    if title is None:
        title = f"{Path(str(clip.meta.get('source', 'clip'))).name}  ({clip.layout}, {clip.fps:g} fps)"
    return contact_sheet(images, captions, out, title)


def _parse_frames(text: str) -> list[int]:
    try:
        frames = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise InputError(f"--frames must be comma-separated frame numbers, got {text!r}") from None
    if not frames:
        raise InputError("--frames names no frame")
    return frames


@cli_main
def main(argv: list[str] | None = None) -> int:
    from a2llm_rt.face_tools.metrics import default_mesh_dir

    p = argparse.ArgumentParser(
        prog="python -m a2llm_rt.face_tools.render", description="Render clip frames on a mesh."
    )
    p.add_argument("input", metavar="IN", help="clip file (.npz, .csv, .json, .gesichter)")
    p.add_argument("--mesh", default=str(default_mesh_dir()), help="ARKit mesh folder (default: %(default)s)")
    p.add_argument("--frames", default="0", help="comma-separated frame indices (default 0)")
    p.add_argument("--out", required=True, help="output PNG")
    p.add_argument("--map", default=None, help="ArkitMap .npz for FLAME58 clips (default: analytic curves only)")
    p.add_argument("--size", default="300x400", help="frame size WxH in pixels (default 300x400)")
    args = p.parse_args(argv)
    from a2llm_rt.face.io import load_clip

    try:
        width, height = (int(s) for s in args.size.lower().split("x"))
    except ValueError:
        raise InputError(f"--size must look like 300x400, got {args.size!r}") from None
    if not (16 <= width <= 4096 and 16 <= height <= 4096):
        raise InputError(f"--size out of range: {args.size}")
    frames = _parse_frames(args.frames)
    clip = load_clip(args.input)
    mesh = ArkitMesh.load(args.mesh)
    amap = ArkitMap.load(args.map) if args.map else None
    out = render_sheet(clip, mesh, frames, args.out, amap, width=width, height=height)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
