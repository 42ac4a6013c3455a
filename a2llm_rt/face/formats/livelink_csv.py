"""Live Link Face CSV: the take files the iPhone app records (``Timecode,BlendShapeCount,<61 curves>``).

- Curves are mapped BY NAME: the app's header orders JawRight/JawLeft and MouthRight/MouthLeft differently from
  the ARKit / LIVELINK61 enum order.
- ``Timecode`` is ``HH:MM:SS:FF.fff`` where ``FF.fff`` counts 60ths of a second (whatever the row rate).
- The rate is estimated from the timecodes (median step, snapped to a standard rate within 1 %); the first
  timecode goes to ``meta["timecode_start"]``, and steps over 1.5x the median are counted in ``meta["timecode_gaps"]``.
- Written exactly as the app writes it: its header order, ``BlendShapeCount`` 61, values with 10 decimals, ``\\n``.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import numpy as np

from a2llm_rt.errors import InputError
from a2llm_rt.face.clip import MotionClip
from a2llm_rt.face.layouts import LIVELINK61, LIVELINK61_DIM, LIVELINK_INDEX
from a2llm_rt.utils.fileio import atomic_write

# The curve order of the app's CSV header (differs from LIVELINK61 in Jaw/Mouth Left/Right).
LIVELINK_CSV_CURVES: tuple[str, ...] = (
    "EyeBlinkLeft", "EyeLookDownLeft", "EyeLookInLeft", "EyeLookOutLeft", "EyeLookUpLeft", "EyeSquintLeft",
    "EyeWideLeft", "EyeBlinkRight", "EyeLookDownRight", "EyeLookInRight", "EyeLookOutRight", "EyeLookUpRight",
    "EyeSquintRight", "EyeWideRight", "JawForward", "JawRight", "JawLeft", "JawOpen", "MouthClose", "MouthFunnel",
    "MouthPucker", "MouthRight", "MouthLeft", "MouthSmileLeft", "MouthSmileRight", "MouthFrownLeft",
    "MouthFrownRight", "MouthDimpleLeft", "MouthDimpleRight", "MouthStretchLeft", "MouthStretchRight",
    "MouthRollLower", "MouthRollUpper", "MouthShrugLower", "MouthShrugUpper", "MouthPressLeft", "MouthPressRight",
    "MouthLowerDownLeft", "MouthLowerDownRight", "MouthUpperUpLeft", "MouthUpperUpRight", "BrowDownLeft",
    "BrowDownRight", "BrowInnerUp", "BrowOuterUpLeft", "BrowOuterUpRight", "CheekPuff", "CheekSquintLeft",
    "CheekSquintRight", "NoseSneerLeft", "NoseSneerRight", "TongueOut",
    "HeadYaw", "HeadPitch", "HeadRoll", "LeftEyeYaw", "LeftEyePitch", "LeftEyeRoll",
    "RightEyeYaw", "RightEyePitch", "RightEyeRoll",
)  # fmt: skip
assert sorted(LIVELINK_CSV_CURVES) == sorted(LIVELINK61.names)
LIVELINK_CSV_HEADER: tuple[str, ...] = ("Timecode", "BlendShapeCount", *LIVELINK_CSV_CURVES)
STANDARD_RATES: tuple[float, ...] = (
    24000 / 1001, 24.0, 25.0, 30000 / 1001, 30.0, 48.0, 50.0, 60000 / 1001, 60.0, 90.0, 100.0, 120.0,
)  # fmt: skip
_TIMECODE = re.compile(r"^(\d{1,2}):(\d{2}):(\d{2}):(\d{1,2}(?:\.\d+)?)$")
_DAY = 86400.0


def parse_timecode(text: str) -> float:
    """``"13:13:04:31.652"`` -> seconds since midnight (the last field counts 60ths). Raises ValueError."""
    m = _TIMECODE.match(text.strip())
    if not m:
        raise ValueError(f"timecode {text!r} is not HH:MM:SS:FF.fff")
    h, mi, s, ff = int(m[1]), int(m[2]), int(m[3]), float(m[4])
    if mi >= 60 or s >= 60 or ff >= 60 or h >= 24:
        raise ValueError(f"timecode {text!r} has a field out of range")
    return h * 3600 + mi * 60 + s + ff / 60.0


def format_timecode(seconds: float) -> str:
    """Seconds since midnight -> ``"HH:MM:SS:FF.fff"`` (60ths, 3 decimals, wraps at 24 h)."""
    milli60 = round(seconds * 60_000) % round(_DAY * 60_000)
    secs, ff = divmod(milli60, 60_000)
    h, rest = divmod(secs, 3600)
    mi, s = divmod(rest, 60)
    return f"{h:02d}:{mi:02d}:{s:02d}:{ff // 1000:02d}.{ff % 1000:03d}"


def estimate_fps(times: np.ndarray) -> tuple[float | None, float | None, int]:
    """``times`` ``[T]`` seconds -> (fps snapped to a standard rate, raw estimate, number of gaps > 1.5 steps).

    The rates are None when the timecodes cannot tell (one row, or no forward step).
    """
    if times.size < 2:
        return None, None, 0
    dt = np.diff(times)
    dt = np.where(dt < -_DAY / 2, dt + _DAY, dt)  # midnight wrap
    positive = dt[dt > 0]
    if positive.size == 0:
        return None, None, 0
    step = float(np.median(positive))
    raw = 1.0 / step
    nearest = min(STANDARD_RATES, key=lambda r: abs(r - raw))
    fps = nearest if abs(nearest - raw) <= 0.01 * nearest else round(raw, 3)
    gaps = int(np.count_nonzero(dt > 1.5 * step))
    return fps, raw, gaps


def read_livelink_csv(path: str | Path, fps: float | None = None) -> MotionClip:
    """A Live Link Face CSV as a ``livelink61`` clip ``[T, 61]``; ``fps`` only when the timecodes cannot tell."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise InputError("file not found", path) from None
    except UnicodeDecodeError as e:
        raise InputError(f"not UTF-8 text (byte {e.start})", path) from None
    rows: list[tuple[int, list[str]]] = []  # (line number, cells), blank lines skipped
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        rows.extend((reader.line_num, r) for r in reader if any(r))
    except csv.Error as e:
        raise InputError(f"not a CSV file ({e})", path) from None
    if not rows:
        raise InputError("empty file (no CSV header)", path)
    header_line, header = rows[0]
    header = [h.strip() for h in header]
    if header[:2] != ["Timecode", "BlendShapeCount"]:
        raise InputError(f"line {header_line}: header must start with Timecode,BlendShapeCount, got {header[:2]}", path)
    names = header[2:]
    unknown = [n for n in names if n not in LIVELINK_INDEX]
    if unknown:
        raise InputError(f"line {header_line}: unknown curve names {unknown} (expected Live Link names)", path)
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"line {header_line}: duplicate curve names {dupes}", path)
    missing = [n for n in LIVELINK61.names if n not in names]
    if missing:
        raise InputError(f"line {header_line}: {len(names)} curves, Live Link Face CSV has 61; missing {missing}", path)
    body = rows[1:]
    if not body:
        raise InputError("no frames after the header", path)
    ncol = len(header)
    for line, r in body:
        if len(r) != ncol:
            raise InputError(f"line {line}: {len(r)} columns, the header has {ncol} (truncated or corrupt row)", path)
    try:
        cells = np.array([r[2:] for _, r in body], dtype=np.float64)
    except ValueError:
        cells = None
    if cells is None:  # find the bad cell for the message
        for line, r in body:
            for name, c in zip(names, r[2:], strict=True):
                try:
                    float(c)
                except ValueError:
                    raise InputError(f"line {line}: curve {name} has value {c!r}, not a number", path) from None
        raise InputError("unparseable values", path)  # unreachable in practice
    bad = ~np.isfinite(cells)
    if bad.any():
        t, d = np.argwhere(bad)[0]
        raise InputError(f"line {body[t][0]}: curve {names[d]} is {cells[t, d]} (NaN/inf)", path)
    for line, r in body:
        if r[1].strip() != str(LIVELINK61_DIM):
            raise InputError(f"line {line}: BlendShapeCount is {r[1]!r}, expected {LIVELINK61_DIM}", path)
    times = np.empty(len(body), dtype=np.float64)
    for i, (line, r) in enumerate(body):
        try:
            times[i] = parse_timecode(r[0])
        except ValueError as e:
            raise InputError(f"line {line}: {e}", path) from None
    values = np.zeros((len(body), LIVELINK61_DIM), dtype=np.float32)
    values[:, [LIVELINK_INDEX[n] for n in names]] = cells
    rate, raw, gaps = estimate_fps(times)
    meta: dict = {"source": str(path), "format": "livelink_csv", "timecode_start": body[0][1][0].strip()}
    if rate is None:
        if fps is None:
            raise InputError(
                "cannot estimate the frame rate from the timecodes (one frame or all equal); pass fps", path
            )
        rate = float(fps)
    else:
        meta["fps_from_timecodes"] = round(float(raw), 4)
    if gaps:
        meta["timecode_gaps"] = gaps  # dropped frames: the clip is NOT on a uniform grid there
    return MotionClip(values, float(rate), LIVELINK61.name, meta)


def write_livelink_csv(clip: MotionClip, path: str | Path) -> None:
    """Write a ``livelink61`` clip as the app does; timecodes start at ``meta["timecode_start"]`` (else 0)."""
    if clip.layout != LIVELINK61.name:
        raise InputError(f"Live Link Face CSV holds livelink61 frames, not {clip.layout}", path)
    clip.validate(path)
    start = 0.0
    if "timecode_start" in clip.meta:
        try:
            start = parse_timecode(str(clip.meta["timecode_start"]))
        except ValueError:
            start = 0.0
    order = [LIVELINK_INDEX[n] for n in LIVELINK_CSV_CURVES]
    vals = clip.values[:, order].astype(np.float64)
    lines = [",".join(LIVELINK_CSV_HEADER)]
    count = str(LIVELINK61_DIM)
    for k in range(clip.num_frames):
        tc = format_timecode(start + k / clip.fps)
        lines.append(f"{tc},{count}," + ",".join(f"{v:.10f}" for v in vals[k]))
    with atomic_write(path, "w") as f:
        f.write("\n".join(lines) + "\n")
