"""Convert face-motion clips between file formats, layouts and frame rates.

    python -m a2llm_rt.face_tools.convert take.csv take.npz --fps 25
    python -m a2llm_rt.face_tools.convert take.npz take.json --layout arkit52
    python -m a2llm_rt.face_tools.convert rec.gesichter rec.csv

Formats are chosen by suffix (``.npz``, ``.csv`` Live Link Face, ``.json`` Audio2Face-style, ``.gesichter`` LLV);
see :mod:`a2llm_rt.face.io`. Output is written atomically. Bad input prints one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from a2llm_rt.errors import InputError
from a2llm_rt.face.clip import MotionClip
from a2llm_rt.face.io import FORMATS, convert_layout, load_clip, save_clip
from a2llm_rt.face.layouts import LAYOUTS
from a2llm_rt.face.resample import resample
from a2llm_rt.utils.cli import cli_main


def convert(
    src: str, dst: str, *, fps: float | None = None, layout: str | None = None, input_fps: float | None = None
) -> MotionClip:
    """Load ``src``, optionally change layout and resample to ``fps``, save ``dst``; returns the written clip."""
    if Path(dst).suffix.lower() not in FORMATS:  # fail before the work, not after it
        raise InputError(
            f"unknown output format {Path(dst).suffix or '(no suffix)'!r}; known: {', '.join(FORMATS)}", dst
        )
    clip = load_clip(src, fps=input_fps)
    if layout is not None:
        clip = convert_layout(clip, layout)
    if fps is not None:
        clip = resample(clip, fps)
    save_clip(clip, dst)
    return clip


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m a2llm_rt.face_tools.convert",
        description=f"Convert face-motion clips; formats by suffix: {', '.join(FORMATS)}.",
    )
    p.add_argument("input", help="input clip")
    p.add_argument("output", help="output clip (written atomically)")
    p.add_argument("--fps", type=float, default=None, help="resample to this frame rate (linear interpolation)")
    p.add_argument("--layout", choices=sorted(LAYOUTS), default=None, help="convert to this layout")
    p.add_argument("--input-fps", type=float, default=None, help="frame rate of the input when the file does not say")
    return p


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("fps", "input_fps"):
        v = getattr(args, name)
        if v is not None and not v > 0:
            raise InputError(f"--{name.replace('_', '-')} must be a positive number, got {v}")
    try:
        clip = convert(args.input, args.output, fps=args.fps, layout=args.layout, input_fps=args.input_fps)
    except OSError as e:  # the output folder is not writable, the disk is full, ...
        print(f"error: cannot write {args.output}: {e}", file=sys.stderr)
        return 1
    print(f"{args.output}: {clip.num_frames} frames, {clip.fps:g} fps, {clip.layout}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
