"""Audio2Face-style blendshape JSON: ``{"exportFps", "facsNames", "numPoses", "numFrames", "weightMat"}``.

``weightMat`` is ``[numFrames][numPoses]``; ``facsNames`` are ARKit camelCase names (Live Link PascalCase names are
accepted too) mapped BY NAME into ``arkit52``. Unknown or duplicate names are an error; ARKit curves the file lacks
are 0 and listed in ``meta["a2f_missing_curves"]``. Written with the 52 ARKit names in ARKit order, one frame a line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from a2llm_rt.errors import InputError
from a2llm_rt.face.clip import MotionClip
from a2llm_rt.face.layouts import ARKIT52, ARKIT52_DIM, ARKIT52_NAMES, ARKIT_INDEX, livelink_to_arkit_name
from a2llm_rt.utils.fileio import atomic_write


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _arkit_name(name: Any) -> str | None:
    if not isinstance(name, str):
        return None
    if name in ARKIT_INDEX:
        return name
    try:
        return livelink_to_arkit_name(name)
    except KeyError:
        return None


def read_a2f_json(path: str | Path, fps: float | None = None) -> MotionClip:
    """An Audio2Face-style JSON export as an ``arkit52`` clip ``[T, 52]``; ``fps`` only when ``exportFps`` is absent."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError("file not found", path) from None
    if not raw.strip():
        raise InputError("empty file", path)
    try:
        doc = json.loads(raw.decode("utf-8-sig"), parse_constant=_reject_constant)
    except UnicodeDecodeError as e:
        raise InputError(f"not UTF-8 text (byte {e.start})", path) from None
    except json.JSONDecodeError as e:
        raise InputError(f"not valid JSON: {e.msg} at line {e.lineno} column {e.colno} (truncated?)", path) from None
    except ValueError as e:  # NaN / Infinity
        raise InputError(f"invalid JSON number: {e}", path) from None
    if not isinstance(doc, dict):
        raise InputError(f"top level must be a JSON object, got {type(doc).__name__}", path)
    for key in ("facsNames", "weightMat"):
        if key not in doc:
            raise InputError(f"missing key {key!r} (keys: {sorted(doc)})", path)
    names = doc["facsNames"]
    if not isinstance(names, list) or not names:
        raise InputError("'facsNames' must be a non-empty list of curve names", path)
    mapped = [_arkit_name(n) for n in names]
    unknown = [n for n, m in zip(names, mapped, strict=True) if m is None]
    if unknown:
        raise InputError(f"unknown facsNames {unknown[:10]} (expected ARKit names such as 'jawOpen')", path)
    dupes = sorted({m for m in mapped if mapped.count(m) > 1})
    if dupes:
        raise InputError(f"duplicate facsNames {dupes}", path)
    if "numPoses" in doc and doc["numPoses"] != len(names):
        raise InputError(f"numPoses is {doc['numPoses']!r} but facsNames has {len(names)} names", path)
    mat = doc["weightMat"]
    if not isinstance(mat, list):
        raise InputError("'weightMat' must be a list of frames", path)
    if "numFrames" in doc and doc["numFrames"] != len(mat):
        raise InputError(f"numFrames is {doc['numFrames']!r} but weightMat has {len(mat)} frames", path)
    if not mat:
        raise InputError("no frames ('weightMat' is empty)", path)
    for t, row in enumerate(mat):
        if not isinstance(row, list) or len(row) != len(names):
            got = f"{len(row)} values" if isinstance(row, list) else type(row).__name__
            raise InputError(f"frame {t}: weightMat row has {got}, expected {len(names)}", path)
        if not all(_is_number(x) for x in row):
            bad = next(x for x in row if not _is_number(x))
            raise InputError(f"frame {t}: weightMat holds {bad!r}, not a number", path)
    try:
        cells = np.array(mat, dtype=np.float64)
    except OverflowError:  # an integer too large for a float
        raise InputError("weightMat holds a number too large for a float", path) from None
    bad = ~np.isfinite(cells) | (np.abs(cells) > np.finfo(np.float32).max)
    if bad.any():
        t, d = np.argwhere(bad)[0]
        raise InputError(f"frame {t}: curve {names[d]} is {cells[t, d]} (not a finite float32)", path)
    if "exportFps" in doc:
        rate = doc["exportFps"]
        if not _is_number(rate) or not 0 < rate < 1e6:
            raise InputError(f"exportFps must be a positive number, got {rate!r}", path)
    elif fps is not None:
        rate = fps
    else:
        raise InputError("no 'exportFps' in the file; pass fps", path)
    values = np.zeros((len(mat), ARKIT52_DIM), dtype=np.float32)
    values[:, [ARKIT_INDEX[m] for m in mapped]] = cells
    meta: dict = {"source": str(path), "format": "a2f_json"}
    missing = [n for n in ARKIT52_NAMES if n not in mapped]
    if missing:
        meta["a2f_missing_curves"] = missing  # set to 0
    return MotionClip(values, float(rate), ARKIT52.name, meta)


def write_a2f_json(clip: MotionClip, path: str | Path) -> None:
    """Write an ``arkit52`` clip as Audio2Face-style JSON, atomically (float32 values round-trip exactly)."""
    if clip.layout != ARKIT52.name:
        raise InputError(f"Audio2Face JSON holds arkit52 frames, not {clip.layout}", path)
    clip.validate(path)
    fps: float | int = int(clip.fps) if float(clip.fps).is_integer() else float(clip.fps)
    rows = ",\n".join("    [" + ",".join(f"{float(v):.9g}" for v in row) + "]" for row in clip.values)
    head = {"exportFps": fps, "numPoses": ARKIT52_DIM, "numFrames": clip.num_frames}
    parts = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in head.items()]
    parts.append(f'  "facsNames": {json.dumps(list(ARKIT52_NAMES))}')
    parts.append('  "weightMat": [\n' + rows + "\n  ]")
    with atomic_write(path, "w") as f:
        f.write("{\n" + ",\n".join(parts) + "\n}\n")
