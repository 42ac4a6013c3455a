"""The interim demo (``make demo``) until the full engine exists: a real Live Link Face capture, drawn and measured.

``python -m a2llm_rt.demo --out demo_out [--capture CSV] [--mesh DIR] [--seconds 20]``

1. reads ``../shared/data/arkit_capture/livelinkface_rom_3.csv`` (a 134 s, 30 fps iPhone capture; beside the
   repository, or under ``$A2LLM_SHARED_DATA``) and resamples it to the engine's 25 fps;
2. picks the liveliest ~20 s stretch and plots jawOpen, eyeBlinkLeft, mouthSmileLeft and browInnerUp
   (``curves.png``);
3. renders frames of that stretch on Apple's ARKit face mesh, mouth closed and open among them (``sheet.png``);
4. prints the motion metrics of the stretch against itself delayed by 2 frames (so Peak Align reads 80 ms, LVE and
   MOD show what a 2-frame lag costs) and writes them to ``metrics.json``.

Exit code 2 with a clear message when the capture or mesh is missing.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from a2llm_rt.errors import InputError
from a2llm_rt.face.plot import resolve_curve

REPO = Path(__file__).resolve().parents[1]
DEMO_CURVES = ("jawOpen", "eyeBlinkLeft", "mouthSmileLeft", "browInnerUp")
FPS = 25.0
DELAY_FRAMES = 2


def shared_data_dir() -> Path:
    """``$A2LLM_SHARED_DATA`` when set, else ``<repo>/../shared/data``."""
    base = os.environ.get("A2LLM_SHARED_DATA")
    return Path(base) if base else REPO.parent / "shared" / "data"


def liveliest_window(values: np.ndarray, length: int) -> int:
    """First frame of the ``length``-frame window of ``values [T, C]`` with the largest summed per-curve std."""
    t = len(values)
    if t <= length:
        return 0
    c = np.concatenate([np.zeros((1, values.shape[1])), np.cumsum(values, 0)])
    c2 = np.concatenate([np.zeros((1, values.shape[1])), np.cumsum(values.astype(np.float64) ** 2, 0)])
    mean = (c[length:] - c[:-length]) / length  # [T - length + 1, C]
    var = (c2[length:] - c2[:-length]) / length - mean**2
    return int(np.argmax(np.sqrt(np.maximum(var, 0)).sum(1)))


def pick_frames(clip, start: int, stop: int) -> list[tuple[int, str]]:
    """``(frame, why)`` of telling frames in ``[start, stop)``: mouth closed and open, blink, smile, brows up."""
    seg = clip.values[start:stop]
    col = {n: resolve_curve(clip, n) for n in DEMO_CURVES}
    jaw = seg[:, col["jawOpen"]]
    picks = [
        (int(np.argmin(jaw)), "mouth closed"),
        (int(np.argmax(jaw)), "mouth open"),
        (int(np.argmax(seg[:, col["eyeBlinkLeft"]])), "left eye blink"),
        (int(np.argmax(seg[:, col["mouthSmileLeft"]])), "smile (left)"),
        (int(np.argmax(seg[:, col["browInnerUp"]])), "brows up"),
    ]
    seen: dict[int, str] = {}
    for f, why in picks:
        seen.setdefault(start + f, why)
    return sorted(seen.items())


def run(out: Path, capture: Path, mesh_dir: Path, seconds: float = 20.0) -> dict:
    """Write ``curves.png``, ``sheet.png`` and ``metrics.json`` under ``out``; return the metrics as a dict."""
    from a2llm_rt.face.arkit_mesh import ArkitMesh
    from a2llm_rt.face.arkit_regions import arkit_regions
    from a2llm_rt.face.io import load_clip
    from a2llm_rt.face.motion_metrics import compute_metrics, format_table
    from a2llm_rt.face.plot import plot_curves
    from a2llm_rt.face.render import contact_sheet, render_frames
    from a2llm_rt.face.resample import resample
    from a2llm_rt.utils.fileio import atomic_write_json

    raw = load_clip(capture)
    clip = resample(raw, FPS)
    print(f"capture: {capture.name}: {raw.num_frames} frames at {raw.fps:g} fps -> {clip.num_frames} at {FPS:g} fps")

    length = min(clip.num_frames, int(round(seconds * FPS)))
    cols = [resolve_curve(clip, n) for n in DEMO_CURVES]
    start = liveliest_window(clip.values[:, cols], length)
    stop = start + length
    t0, t1 = start / FPS, (stop - 1) / FPS
    print(f"stretch: {t0:.1f} s .. {t1:.1f} s ({length} frames)")

    out.mkdir(parents=True, exist_ok=True)
    curves_png = plot_curves(
        [clip], DEMO_CURVES, out / "curves.png", labels=[f"{capture.name} at {FPS:g} fps"],
        title=f"{capture.name}: {t0:.0f}-{t1:.0f} s", start=t0, end=t1,
    )  # fmt: skip

    mesh = ArkitMesh.load(mesh_dir)
    chosen = pick_frames(clip, start, stop)
    weights = np.clip(clip.values[[f for f, _ in chosen], :52], 0, 1)
    images = render_frames(mesh, weights)
    captions = [f"frame {f} · {f / FPS:.2f} s\n{why}" for f, why in chosen]
    sheet_png = contact_sheet(images, captions, out / "sheet.png", f"{capture.name} on the ARKit mesh ({FPS:g} fps)")

    ref = mesh.vertices(np.clip(clip.values[start:stop, :52], 0, 1))  # [T, V, 3]
    pred = np.concatenate([np.repeat(ref[:1], DELAY_FRAMES, 0), ref[:-DELAY_FRAMES]])  # ref delayed by 2 frames
    metrics = compute_metrics(pred, ref, arkit_regions(mesh), FPS, template=mesh.neutral)
    print(f"\nmotion metrics: the stretch against itself delayed by {DELAY_FRAMES} frames ({DELAY_FRAMES * 40} ms)")
    print(format_table(metrics))
    metrics_json = out / "metrics.json"
    atomic_write_json(metrics_json, {"pred": f"ref delayed by {DELAY_FRAMES} frames", **metrics.to_dict()})

    print("\noutputs:")
    for what, path in (("curves", curves_png), ("contact sheet", sheet_png), ("metrics", metrics_json)):
        print(f"  {what:<14} {path.resolve()}")
    return metrics.to_dict()


def main(argv: list[str] | None = None) -> int:
    data = shared_data_dir()
    p = argparse.ArgumentParser(prog="python -m a2llm_rt.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    p.add_argument("--capture", default=str(data / "arkit_capture" / "livelinkface_rom_3.csv"), help="Live Link CSV")
    p.add_argument("--mesh", default=str(data / "arkit_mesh"), help="ARKit mesh folder")
    p.add_argument("--seconds", type=float, default=20.0, help="length of the stretch to show (default 20)")
    args = p.parse_args(argv)
    capture, mesh_dir = Path(args.capture), Path(args.mesh)
    for what, path in (("capture", capture), ("ARKit mesh folder", mesh_dir)):
        if not path.exists():
            print(
                f"error: the demo {what} {path} is missing: the demo needs the shared data folder beside the "
                "repository (../shared/data) or A2LLM_SHARED_DATA pointing at it",
                file=sys.stderr,
            )
            return 2
    if not (args.seconds > 1.0):
        print(f"error: --seconds must be more than 1, got {args.seconds}", file=sys.stderr)
        return 2
    try:
        run(Path(args.out), capture, mesh_dir, args.seconds)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
