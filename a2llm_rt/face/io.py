"""Load and save face-motion clips in every format we support, chosen by the file suffix.

=============  ==========================================  ===============  ==========================
suffix         format                                      loads as         writes
=============  ==========================================  ===============  ==========================
``.npz``       ours: values [T, D], fps, layout, meta      its own layout   any layout
``.csv``       Live Link Face take (iPhone app)            livelink61       livelink61 (arkit52 padded)
``.json``      Audio2Face-style blendshape export          arkit52          arkit52 (rotations dropped)
``.gesichter`` LLV recording of Live Link Face UDP packets livelink61       livelink61 (arkit52 padded)
=============  ==========================================  ===============  ==========================

Saving converts between ``arkit52`` and ``livelink61`` where a format needs it (``arkit52 -> livelink61`` sets the
9 head/eye rotations to 0; ``livelink61 -> arkit52`` drops them). FLAME58 <-> ARKit is a fitted mapping, not a
layout change: use ``a2llm_rt.face.flame_to_arkit``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from a2llm_rt.errors import InputError
from a2llm_rt.face.clip import MotionClip
from a2llm_rt.face.formats.a2f_json import read_a2f_json, write_a2f_json
from a2llm_rt.face.formats.gesichter import read_gesichter, write_gesichter
from a2llm_rt.face.formats.livelink_csv import read_livelink_csv, write_livelink_csv
from a2llm_rt.face.formats.npz_clip import read_npz_clip, write_npz_clip
from a2llm_rt.face.layouts import ARKIT52, ARKIT52_DIM, FLAME58, LIVELINK61, LIVELINK61_DIM, get_layout

Reader = Callable[[Path, "float | None"], MotionClip]
Writer = Callable[[MotionClip, Path], None]

# suffix -> (reader, writer, layouts the writer accepts: None = any, else the layout it needs)
FORMATS: dict[str, tuple[Reader, Writer, str | None]] = {
    ".npz": (read_npz_clip, write_npz_clip, None),
    ".csv": (read_livelink_csv, write_livelink_csv, LIVELINK61.name),
    ".json": (read_a2f_json, write_a2f_json, ARKIT52.name),
    ".gesichter": (read_gesichter, write_gesichter, LIVELINK61.name),
}


def _format(path: Path) -> tuple[Reader, Writer, str | None]:
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise InputError(f"unknown clip format {suffix or '(no suffix)'!r}; known: {', '.join(FORMATS)}", path)
    return FORMATS[suffix]


def convert_layout(clip: MotionClip, layout: str) -> MotionClip:
    """The same frames in another layout. Returns ``clip`` itself when it already has ``layout``.

    - ``livelink61 -> arkit52``: drops the 9 rotation curves (``[T, 61] -> [T, 52]``).
    - ``arkit52 -> livelink61``: appends 9 rotations of 0 (``[T, 52] -> [T, 61]``).
    - ``flame58 <-> arkit52 / livelink61``: raises :class:`InputError` (use ``a2llm_rt.face.flame_to_arkit``).
    """
    where = clip.meta.get("source")
    try:
        target = get_layout(layout).name
    except KeyError as e:
        raise InputError(str(e.args[0]), where) from None
    if target == clip.layout:
        return clip
    if FLAME58.name in (target, clip.layout):
        raise InputError(
            f"cannot convert {clip.layout} to {target} by layout: FLAME58 <-> ARKit is a fitted mapping; "
            "use a2llm_rt.face.flame_to_arkit",
            where,
        )
    meta = dict(clip.meta)
    meta["converted_from_layout"] = clip.layout
    if clip.layout == LIVELINK61.name and target == ARKIT52.name:
        values = clip.values[:, :ARKIT52_DIM].copy()  # [T, 52]
    else:  # arkit52 -> livelink61
        values = np.zeros((clip.num_frames, LIVELINK61_DIM), dtype=np.float32)  # [T, 61]
        values[:, :ARKIT52_DIM] = clip.values
    return MotionClip(values, clip.fps, target, meta)


def load_clip(path: str | Path, *, fps: float | None = None, layout: str | None = None) -> MotionClip:
    """Read a clip, choosing the format by suffix (``.npz``, ``.csv``, ``.json``, ``.gesichter``).

    ``fps`` is used only when the file itself has no rate (a one-row CSV, a JSON without ``exportFps``, ...);
    to change the rate, call :func:`a2llm_rt.face.resample.resample`. ``layout`` converts on load
    (see :func:`convert_layout`). Every problem raises :class:`InputError` naming the file.
    """
    path = Path(path)
    reader, _, _ = _format(path)
    if fps is not None and not (np.isfinite(fps) and fps > 0):
        raise InputError(f"fps must be a positive number, got {fps}", path)
    if not path.is_file():
        raise InputError("file not found" if not path.exists() else "not a file", path)
    clip = reader(path, fps)
    clip.meta.setdefault("source", str(path))
    return convert_layout(clip, layout) if layout is not None else clip


def save_clip(clip: MotionClip, path: str | Path) -> None:
    """Write a clip, choosing the format by suffix; atomic (a temp file renamed into place).

    Converts ``arkit52`` <-> ``livelink61`` when the format needs it (CSV and ``.gesichter`` hold livelink61,
    JSON holds arkit52); a ``flame58`` clip can only go to ``.npz``.
    """
    path = Path(path)
    _, writer, needs = _format(path)
    if needs is not None and clip.layout != needs:
        if clip.layout == FLAME58.name:
            raise InputError(
                f"a flame58 clip cannot be written as {path.suffix} ({needs}); save .npz, or map it to ARKit "
                "first with a2llm_rt.face.flame_to_arkit",
                path,
            )
        clip = convert_layout(clip, needs)
    writer(clip, path)
