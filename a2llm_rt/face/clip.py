"""``MotionClip``: a face-motion sequence in one layout, with its frame rate. Every file format reads into it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from a2llm_rt.errors import InputError
from a2llm_rt.face.layouts import Layout, get_layout


@dataclass
class MotionClip:
    """A face-motion sequence.

    Attributes:
        values: ``[T, D]`` float32 frames, ``D`` = the layout's dim (58, 52 or 61).
        fps: frames per second (> 0).
        layout: layout name (``"flame58"``, ``"arkit52"`` or ``"livelink61"``).
        meta: free-form provenance (source file, subject, timecode of frame 0, ...); JSON-serialisable values.
    """

    values: np.ndarray
    fps: float
    layout: str
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float32)
        self.validate()

    @property
    def spec(self) -> Layout:
        return get_layout(self.layout)

    @property
    def names(self) -> tuple[str, ...]:
        return self.spec.names

    @property
    def num_frames(self) -> int:
        return int(self.values.shape[0])

    @property
    def duration(self) -> float:
        """Seconds covered by the clip (``T / fps``)."""
        return self.num_frames / self.fps

    def curve(self, name: str) -> np.ndarray:
        """``[T]`` values of one named curve."""
        return self.values[:, self.spec.index(name)]

    def validate(self, path: str | Path | None = None) -> None:
        """Raise :class:`InputError` (naming ``path`` or ``meta['source']``) on a bad shape, fps or non-finite value."""
        where = path if path is not None else self.meta.get("source")
        try:
            lay = get_layout(self.layout)
        except KeyError as e:
            raise InputError(str(e.args[0]), where) from None
        v = self.values
        if v.ndim != 2 or v.shape[1] != lay.dim:
            raise InputError(f"{lay.name} frames must have shape [T, {lay.dim}], got {list(v.shape)}", where)
        if not (np.isfinite(self.fps) and self.fps > 0):
            raise InputError(f"fps must be a positive number, got {self.fps}", where)
        bad = ~np.isfinite(v)
        if bad.any():
            t, d = np.argwhere(bad)[0]
            raise InputError(
                f"non-finite value {v[t, d]} in frame {t}, curve {lay.names[d]!r} ({int(bad.sum())} bad values)", where
            )
