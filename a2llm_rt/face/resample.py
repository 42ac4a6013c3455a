"""Change a clip's frame rate by linear interpolation on a uniform time grid.

Input frame ``i`` sits at ``i / fps_in``; output frame ``k`` at ``k / fps_out``, for every ``k`` whose time lies
within the input span ``[0, (T - 1) / fps_in]`` (nothing is extrapolated). The duration is kept to within one
output frame: 4,030 frames at 30 fps become 3,358 at 25 fps.

Every curve is interpolated linearly, including LIVELINK61's head/eye rotations (radians): they are small
Euler angles far from the +-pi wrap, where linear interpolation is what Live Link itself does between frames.
FLAME58's axis-angle jaw/global poses are interpolated the same way (fine for the small angles of speech).
An output value always lies between its two neighbouring input values, so curves in [0, 1] stay in [0, 1].
"""

from __future__ import annotations

import numpy as np

from a2llm_rt.errors import InputError
from a2llm_rt.face.clip import MotionClip


def resample_times(num_frames: int, fps_in: float, fps_out: float) -> np.ndarray:
    """Positions of the output frames in input-frame units, ``[T_out]`` float64 in ``[0, T_in - 1]``."""
    if num_frames <= 0:
        return np.zeros(0, dtype=np.float64)
    last = (num_frames - 1) * fps_out / fps_in  # the last output index that still lies within the input span
    count = int(np.floor(last + 1e-9)) + 1
    pos = np.arange(count, dtype=np.float64) * (fps_in / fps_out)
    snapped = np.round(pos)
    pos = np.where(np.abs(pos - snapped) < 1e-9, snapped, pos)  # exact input frames stay exact
    return np.minimum(pos, num_frames - 1)


def resample_values(values: np.ndarray, fps_in: float, fps_out: float) -> np.ndarray:
    """``[T_in, D]`` frames at ``fps_in`` -> ``[T_out, D]`` float32 at ``fps_out`` (linear)."""
    v = np.asarray(values, dtype=np.float64)
    pos = resample_times(v.shape[0], fps_in, fps_out)
    if pos.size == 0:
        return np.zeros((0, v.shape[1]), dtype=np.float32)
    i0 = np.floor(pos).astype(np.int64)
    i1 = np.minimum(i0 + 1, v.shape[0] - 1)
    w = (pos - i0)[:, None]
    a, b = v[i0], v[i1]
    out = a * (1.0 - w) + b * w
    out = np.clip(out, np.minimum(a, b), np.maximum(a, b))  # never leave the neighbours' range (rounding)
    return out.astype(np.float32)


def resample(clip: MotionClip, fps: float) -> MotionClip:
    """The clip at ``fps`` (a new clip; ``clip`` itself when the rate is already ``fps``).

    ``meta`` is copied with ``resampled_from_fps`` added; ``meta['timecode_start']`` stays valid (frame 0 keeps
    its time).
    """
    if not (np.isfinite(fps) and fps > 0):
        raise InputError(f"target fps must be a positive number, got {fps}", clip.meta.get("source"))
    if float(fps) == float(clip.fps):
        return clip
    meta = dict(clip.meta)
    meta.setdefault("resampled_from_fps", clip.fps)
    return MotionClip(resample_values(clip.values, clip.fps, fps), float(fps), clip.layout, meta)
