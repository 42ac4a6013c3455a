"""The A2-LLM paper's motion metrics (App. C, eq. 11-17) of a face-motion file against a reference, or its UFD alone.

Usage::

    python -m a2llm_rt.face_tools.metrics --pred pred.npz --ref ref.csv [--fps 25] [--json] [--out metrics.json] \\
        [--flame flame.npz] [--mesh ../shared/data/arkit_mesh] [--max-lag-s 0.5]
    python -m a2llm_rt.face_tools.metrics --pred pred.npz [--flame flame.npz | --mesh DIR]   # reference-free: UFD only

Files are read with :func:`a2llm_rt.face.io.load_clip` (our ``.npz``, Live Link Face ``.csv``, Audio2Face ``.json``,
``.gesichter``). Both clips go to the frame rate ``--fps`` (default: the reference's) by linear resampling, then to
vertices:

- ``arkit52`` / ``livelink61`` clips through the ARKit face mesh (``--mesh``; default ``../shared/data/arkit_mesh``
  beside the repository, or ``$A2LLM_SHARED_DATA/arkit_mesh``); Live Link's head/eye rotations are dropped, so head
  motion does not count; regions from :mod:`a2llm_rt.face.arkit_regions`, UFD template = the neutral mesh;
- ``flame58`` clips through the user's FLAME model (``--flame flame.npz``, made by
  ``a2llm_rt.face_tools.convert_flame``) with the global (head) rotation set to 0, like the ARKit path; UFD template =
  FLAME with all 58 parameters 0.

Both files must be on the same mesh (map FLAME to ARKit first with ``a2llm_rt.face.flame_to_arkit``). The metric
definitions are in :mod:`a2llm_rt.face.motion_metrics`. Without ``--ref`` only the reference-free UFD (eq. 12) is
reported. Output: a table, or with ``--json`` one JSON object (NaN as
``null``) on stdout or, with ``--out``, written atomically. Bad input: a one-line error and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from a2llm_rt.errors import InputError
from a2llm_rt.face.layouts import FLAME_GLOBAL
from a2llm_rt.face.motion_metrics import MotionMetrics, compute_metrics, format_table, reference_free_ufd
from a2llm_rt.face.regions import FaceRegions
from a2llm_rt.utils.cli import cli_main
from a2llm_rt.utils.fileio import atomic_write_json

REPO = Path(__file__).resolve().parents[2]
FLAME_CHUNK = 256


def default_mesh_dir() -> Path:
    """``$A2LLM_SHARED_DATA/arkit_mesh`` when that variable is set, else ``<repo>/../shared/data/arkit_mesh``."""
    base = os.environ.get("A2LLM_SHARED_DATA")
    return (Path(base) if base else REPO.parent / "shared" / "data") / "arkit_mesh"


def _mesh_kind(layout: str) -> str:
    return "flame" if layout == "flame58" else "arkit"


def _no_head(values: np.ndarray) -> np.ndarray:
    """FLAME58 frames ``[T, 58]`` with the global (head) rotation zeroed: the metrics measure the face, not the head."""
    v = np.array(values, dtype=np.float32)
    v[:, FLAME_GLOBAL] = 0.0
    return v


def _flame_vertices(model, values: np.ndarray) -> np.ndarray:
    """``[T, 58]`` FLAME58 frames -> ``[T, V, 3]`` float32 vertices, in chunks (progress bar on long clips)."""
    import torch

    out = []
    starts = range(0, len(values), FLAME_CHUNK)
    for s in tqdm(starts, desc="FLAME", unit="chunk", disable=len(starts) < 4, file=sys.stderr):
        chunk = np.ascontiguousarray(values[s : s + FLAME_CHUNK], dtype=np.float32)
        with torch.no_grad():
            v = model.forward(torch.from_numpy(chunk))
        v = v.detach().cpu().numpy() if torch.is_tensor(v) else np.asarray(v)
        out.append(v.astype(np.float32))
    return np.concatenate(out, axis=0)


@dataclass
class MetricMesh:
    """A face mesh that turns clips into zero-pose vertices for the metrics: ``vertices(clip) -> [T, V, 3]``, its
    regions and its neutral face (``template`` ``[V, 3]``, the ``V_neu`` of UFD)."""

    kind: str  # "flame" or "arkit" (or a caller's own, e.g. a proxy mesh)
    regions: FaceRegions
    template: np.ndarray
    to_vertices: Callable[[np.ndarray], np.ndarray]
    """``[T, D]`` frames of the mesh's layout -> ``[T, V, 3]``."""
    layout: str

    def vertices(self, clip) -> np.ndarray:
        """``[T, V, 3]`` vertices of a clip (converted to the mesh's layout; FLAME's head rotation zeroed)."""
        if _mesh_kind(clip.layout) != self.kind and self.kind in ("flame", "arkit"):
            raise InputError(
                f"a {clip.layout} clip cannot be shown on the {self.kind} mesh; map FLAME to ARKit first "
                "(a2llm_rt.face.flame_to_arkit)"
            )
        if self.layout == "flame58":
            return self.to_vertices(_no_head(clip.values))
        from a2llm_rt.face.io import convert_layout

        return self.to_vertices(convert_layout(clip, self.layout).values)


def metric_mesh(kind: str, *, flame: str | Path | None = None, mesh: str | Path | None = None) -> MetricMesh:
    """The mesh of ``kind`` (``flame``: your converted FLAME ``.npz``; ``arkit``: the ARKit mesh folder)."""
    if kind == "flame":
        if flame is None:
            raise InputError("FLAME58 clips need the FLAME model: pass --flame flame.npz (see convert_flame)")
        try:
            from a2llm_rt.face.flame import FlameModel
        except ImportError as e:
            raise InputError(f"FLAME support is not available in this install ({e})") from None
        model = FlameModel.from_npz(flame)
        try:
            regions = model.regions
        except ValueError as e:
            raise InputError(str(e), flame) from None
        template = _flame_vertices(model, np.zeros((1, 58), np.float32))[0]
        return MetricMesh("flame", regions, template, lambda v: _flame_vertices(model, v), "flame58")
    if kind != "arkit":
        raise InputError(f"unknown mesh kind {kind!r} (flame or arkit)")
    from a2llm_rt.face.arkit_regions import load_arkit_regions

    folder = Path(mesh) if mesh is not None else default_mesh_dir()
    if not (folder / "Neutral.obj").is_file():
        hint = "" if mesh is not None else " (default location); pass --mesh DIR"
        raise InputError(f"ARKit clips need the ARKit face mesh (Neutral.obj + blendshape OBJs){hint}", folder)
    arkit_mesh, regions = load_arkit_regions(folder)
    return MetricMesh("arkit", regions, arkit_mesh.neutral, arkit_mesh.vertices, "arkit52")


def clips_to_vertices(
    pred, ref, *, flame: str | Path | None, mesh: str | Path | None
) -> tuple[np.ndarray, np.ndarray, FaceRegions, np.ndarray]:
    """(pred ``[T, V, 3]``, ref ``[T', V, 3]``, regions, template ``[V, 3]``) of two clips on the same mesh."""
    kinds = {_mesh_kind(pred.layout), _mesh_kind(ref.layout)}
    if len(kinds) != 1:
        raise InputError(
            f"pred is {pred.layout} but ref is {ref.layout}: they live on different meshes; map FLAME to ARKit first "
            "(a2llm_rt.face.flame_to_arkit) and compare ARKit clips"
        )
    m = metric_mesh(kinds.pop(), flame=flame, mesh=mesh)
    return m.vertices(pred), m.vertices(ref), m.regions, m.template


def evaluate_files(
    pred_path: str | Path,
    ref_path: str | Path,
    *,
    fps: float | None = None,
    flame: str | Path | None = None,
    mesh: str | Path | None = None,
    max_lag_s: float = 0.5,
) -> tuple[MotionMetrics, dict]:
    """Metrics of the clip at ``pred_path`` against the one at ``ref_path``, and a dict of what was compared."""
    from a2llm_rt.face.io import load_clip
    from a2llm_rt.face.resample import resample

    pred = load_clip(pred_path)
    ref = load_clip(ref_path)
    target = float(fps) if fps is not None else float(ref.fps)
    info = {
        "pred": str(pred_path),
        "ref": str(ref_path),
        "pred_layout": pred.layout,
        "ref_layout": ref.layout,
        "pred_fps": float(pred.fps),
        "ref_fps": float(ref.fps),
        "mesh": _mesh_kind(pred.layout),
    }
    pred, ref = resample(pred, target), resample(ref, target)
    vp, vr, regions, template = clips_to_vertices(pred, ref, flame=flame, mesh=mesh)
    return compute_metrics(vp, vr, regions, target, template=template, max_lag_s=max_lag_s), info


def evaluate_file_reference_free(
    pred_path: str | Path, *, fps: float | None = None, flame: str | Path | None = None, mesh: str | Path | None = None
) -> dict:
    """Eq. 12 (UFD) of the clip at ``pred_path`` alone, in canonical zero pose: ``{"ufd": ..., "num_frames": ...}``."""
    from a2llm_rt.face.io import load_clip
    from a2llm_rt.face.resample import resample

    pred = load_clip(pred_path)
    target = float(fps) if fps is not None else float(pred.fps)
    pred = resample(pred, target)
    m = metric_mesh(_mesh_kind(pred.layout), flame=flame, mesh=mesh)
    vp = m.vertices(pred)
    regions, template = m.regions, m.template
    return {
        "pred": str(pred_path),
        "pred_layout": pred.layout,
        "mesh": _mesh_kind(pred.layout),
        "fps": target,
        "num_frames": int(len(vp)),
        "ufd": reference_free_ufd(vp, regions, template),
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m a2llm_rt.face_tools.metrics",
        description="The A2-LLM paper's motion metrics (MOD, UFD, correlations, Liveliness Ratio, Peak Align; "
        "eq. 11-17) and our extras (LVE, cross-correlation lag) of a predicted face-motion file against a "
        "reference; without --ref, the reference-free UFD only.",
    )
    p.add_argument("--pred", required=True, help="predicted clip (.npz, Live Link .csv, Audio2Face .json, .gesichter)")
    p.add_argument("--ref", default=None, help="reference clip (omit for the reference-free UFD alone)")
    p.add_argument("--fps", type=float, default=None, help="compare at this rate (default: the reference's)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--out", default=None, help="write the JSON to this file (atomically) instead of stdout")
    p.add_argument("--flame", default=None, help="FLAME model .npz (needed for flame58 clips)")
    p.add_argument("--mesh", default=None, help=f"ARKit mesh folder (default: {default_mesh_dir()})")
    p.add_argument(
        "--max-lag-s",
        type=float,
        default=0.5,
        help="search range of the extra cross-correlation lag in seconds (default 0.5; Peak Align has none)",
    )
    return p


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.fps is not None and not (np.isfinite(args.fps) and args.fps > 0):
        raise InputError(f"--fps must be a positive number, got {args.fps}")
    if args.ref is None:
        res = evaluate_file_reference_free(args.pred, fps=args.fps, flame=args.flame, mesh=args.mesh)
        if args.out is not None:
            atomic_write_json(args.out, res)
            print(f"wrote {args.out}", file=sys.stderr)
        if args.json and args.out is None:
            print(json.dumps(res, indent=2, allow_nan=False))
        elif not args.json:
            print(f"pred: {res['pred']} ({res['pred_layout']}, {res['num_frames']} frames at {res['fps']:g} fps)")
            print(f"UFD (eq. 12, reference-free): {res['ufd']:.4f} (x1e5 m, higher = livelier upper face)")
        return 0
    metrics, info = evaluate_files(
        args.pred, args.ref, fps=args.fps, flame=args.flame, mesh=args.mesh, max_lag_s=args.max_lag_s
    )
    result = {**info, **metrics.to_dict()}
    if args.out is not None:
        atomic_write_json(args.out, result)
        if not args.json:
            print(format_table(metrics))
        print(f"wrote {args.out}", file=sys.stderr)
    elif args.json:
        print(json.dumps(result, indent=2, allow_nan=False))
    else:
        print(f"pred: {info['pred']} ({info['pred_layout']}, {info['pred_fps']:g} fps)")
        print(f"ref:  {info['ref']} ({info['ref_layout']}, {info['ref_fps']:g} fps)")
        print(format_table(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
