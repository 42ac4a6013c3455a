"""Plot face-motion curves against time (matplotlib, Agg backend): one panel per curve, one line per clip.

``python -m a2llm_rt.face_tools.plot IN --curves jawOpen,eyeBlinkLeft --out curves.png [--start S --end S]``

``IN`` is any clip file :func:`a2llm_rt.face.io.load_clip` reads (.npz, Live Link .csv, .json, .gesichter). Curve
names may be ARKit camelCase (``jawOpen``) or Live Link PascalCase (``JawOpen``) for ARKit / Live Link clips, and the
layout's own names for FLAME58 (``exp00`` .. ``exp49``, ``jaw_x``, ``global_y``, ``eyelid_left``, ...).
:func:`plot_curves` compares several clips (e.g. input vs reconstruction) on the same axes.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from a2llm_rt.errors import InputError  # noqa: E402
from a2llm_rt.face.clip import MotionClip  # noqa: E402
from a2llm_rt.face.layouts import (  # noqa: E402
    ARKIT52_NAMES,
    ARKIT_INDEX,
    LIVELINK61_NAMES,
    arkit_to_livelink_name,
    livelink_to_arkit_name,
)
from a2llm_rt.utils.cli import cli_main
from a2llm_rt.utils.fileio import atomic_write  # noqa: E402

DEFAULT_CURVES = {"arkit52": "jawOpen,eyeBlinkLeft", "livelink61": "jawOpen,eyeBlinkLeft", "flame58": "jaw_x,exp00"}


def _canonical(name: str) -> str:
    """The display name of a curve: ARKit camelCase for the 52 blendshapes, else the name itself."""
    if name in ARKIT_INDEX:
        return name
    try:
        return livelink_to_arkit_name(name)
    except KeyError:
        return name


def resolve_curve(clip: MotionClip, name: str) -> int | None:
    """Index of curve ``name`` in ``clip``'s layout (camelCase or PascalCase accepted), None when it has no such curve.

    Raises :class:`InputError` listing close matches when ``name`` is no known curve name in any spelling.
    """
    names = clip.names
    candidates = [name, _canonical(name)]
    if name in ARKIT_INDEX:
        candidates.append(arkit_to_livelink_name(name))
    for c in candidates:
        if c in names:
            return names.index(c)
    lower = {n.lower(): i for i, n in enumerate(names)}
    if name.lower() in lower:
        return lower[name.lower()]
    known = set(names) | set(ARKIT52_NAMES) | set(LIVELINK61_NAMES)
    if name in known or _canonical(name) in known:
        return None  # a real curve name, just not in this clip's layout
    pool = sorted({_canonical(n) for n in names} | set(ARKIT52_NAMES))
    close = difflib.get_close_matches(name, pool, n=5, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; {clip.layout} curves are {', '.join(names[:8])}, ..."
    raise InputError(f"unknown curve name {name!r}{hint}", clip.meta.get("source"))


def _window(clip: MotionClip, start: float | None, end: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Times ``[n]`` (s) and values ``[n, D]`` of the frames within ``[start, end]`` seconds."""
    t = np.arange(clip.num_frames) / clip.fps
    keep = np.ones_like(t, dtype=bool)
    if start is not None:
        keep &= t >= start - 1e-9
    if end is not None:
        keep &= t <= end + 1e-9
    return t[keep], clip.values[keep]


def plot_curves(
    clips: Sequence[MotionClip],
    curves: Sequence[str],
    out: str | Path,
    labels: Sequence[str] | None = None,
    title: str | None = None,
    start: float | None = None,
    end: float | None = None,
    dpi: int = 120,
) -> Path:
    """Plot ``curves`` of each clip against time (s) into the PNG ``out``; one panel per curve, one line per clip.

    ``labels`` name the clips in the legend (default: their file names); ``title`` defaults to the first clip's file
    name. A clip that lacks a curve (a FLAME58 clip asked for ``jawOpen``) is left out of that panel; a curve in no
    clip, or an unknown name, raises :class:`InputError`. ``start`` / ``end`` cut the time axis (seconds).
    """
    clips = list(clips)
    curves = [c.strip() for c in curves if c.strip()]
    if not clips:
        raise InputError("plot_curves needs at least one clip")
    if not curves:
        raise InputError("no curves to plot")
    if labels is None:
        labels = [Path(str(c.meta.get("source", f"clip {i}"))).name for i, c in enumerate(clips)]
    if len(labels) != len(clips):
        raise InputError(f"{len(labels)} labels for {len(clips)} clips")
    if start is not None and end is not None and end <= start:
        raise InputError(f"--end ({end}) must be after --start ({start})")
    index = [[resolve_curve(c, name) for c in clips] for name in curves]  # [curve][clip]
    for name, idx in zip(curves, index, strict=True):
        if all(i is None for i in idx):
            raise InputError(f"no clip has the curve {name!r} (layouts: {sorted({c.layout for c in clips})})")
    windows = [_window(c, start, end) for c in clips]
    if all(len(t) == 0 for t, _ in windows):
        raise InputError(f"no frames between {start} s and {end} s")

    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, axes = plt.subplots(len(curves), 1, figsize=(11, 1.2 + 1.9 * len(curves)), sharex=True, squeeze=False)
    for row, (name, idx) in enumerate(zip(curves, index, strict=True)):
        ax = axes[row, 0]
        lo, hi = np.inf, -np.inf
        for k, ((t, v), i) in enumerate(zip(windows, idx, strict=True)):
            if i is None or len(t) == 0:
                continue
            y = v[:, i]
            lo, hi = min(lo, float(y.min())), max(hi, float(y.max()))
            style = "-" if k == 0 else ("--" if k == 1 else ":")
            ax.plot(t, y, style, color=colors[k % len(colors)], lw=1.4, label=labels[k])
        display = _canonical(name) if name in ARKIT_INDEX or _canonical(name) in ARKIT_INDEX else name
        ax.set_ylabel(display, fontsize=10)
        if lo >= -1e-6 and hi <= 1 + 1e-6 and display in ARKIT_INDEX:
            ax.set_ylim(-0.04, 1.04)  # blendshape weights live in [0, 1]
        ax.grid(True, alpha=0.35, lw=0.6)
        ax.spines[["top", "right"]].set_visible(False)
        if row == 0 and (len(clips) > 1 or labels[0]):
            ax.legend(loc="upper right", fontsize=8, frameon=False, ncol=min(len(clips), 4))
    axes[-1, 0].set_xlabel("time (s)")
    first = clips[0]
    if title is None:
        title = Path(str(first.meta.get("source", "clip"))).name
    fig.suptitle(f"{title}  ({first.layout}, {first.fps:g} fps)", fontsize=12)
    fig.tight_layout()
    out = Path(out)
    with atomic_write(out, "wb") as f:
        fig.savefig(f, format="png", dpi=dpi)
    plt.close(fig)
    return out


@cli_main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m a2llm_rt.face_tools.plot", description="Plot face curves against time.")
    p.add_argument("input", metavar="IN", help="clip file (.npz, .csv, .json, .gesichter)")
    p.add_argument("--curves", default=None, help="comma-separated curve names (default jawOpen,eyeBlinkLeft)")
    p.add_argument("--out", required=True, help="output PNG")
    p.add_argument("--start", type=float, default=None, help="first second to show")
    p.add_argument("--end", type=float, default=None, help="last second to show")
    p.add_argument("--title", default=None, help="figure title (default: the file name)")
    args = p.parse_args(argv)
    from a2llm_rt.face.io import load_clip

    clip = load_clip(args.input)
    curves = (args.curves or DEFAULT_CURVES[clip.layout]).split(",")
    out = plot_curves([clip], curves, args.out, labels=[""], title=args.title, start=args.start, end=args.end)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
