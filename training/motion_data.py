"""Face-motion training data for the tokenizer: clips from files, a held-out tail, random windows, mirroring.

Files: our ``.npz`` clips, Live Link Face ``.csv`` takes, Audio2Face ``.json`` exports (and ``.gesichter``
recordings), read by :func:`a2llm_rt.face.io.load_clip`, converted to the tokenizer's layout (Live Link's 9
rotation curves are dropped for ``arkit52``) and resampled to its frame rate (25 fps). A folder stands for the
clip files in it. The last ``holdout`` fraction of every clip is the validation split; training samples
fixed-length windows at random offsets, mirrored left/right with probability 1/2 where the layout has a mirror
(``ARKIT52_MIRROR``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from a2llm_rt.config import Config
from a2llm_rt.errors import InputError
from a2llm_rt.face.io import FORMATS, load_clip
from a2llm_rt.face.layouts import get_layout
from a2llm_rt.face.resample import resample


@dataclass
class MotionDataConfig(Config):
    """How clips become training windows."""

    window: int = 50
    """Frames per training window (a multiple of the tokenizer's G)."""
    holdout: float = 0.2
    """Fraction of every clip's tail kept out of training (the validation split)."""
    mirror: bool = True
    """Mirror windows left/right with probability 1/2 when the layout allows it."""
    mix_prob: float = 0.0
    """Probability of replacing a window by a convex mix ``l*a + (1-l)*b`` of two windows (l ~ U(0, 1)): blendshape
    weights and FLAME expression parameters combine linearly, so a mix is plausible motion (mixup for motion)."""
    scale_range: tuple[float, float] = (1.0, 1.0)
    """Each window is scaled about the neutral pose (0) by a factor drawn uniformly from this range (ARKit weights
    are clipped to [0, 1] afterwards)."""
    region_mix_prob: float = 0.0
    """Probability of composing a window from independent windows per face region (arkit52 only): the eye curves
    of one window, the brow curves of a second, the rest (jaw, mouth, cheeks, nose, tongue) of a third. Regions of
    the face move largely independently, so the compositions are plausible motion the capture may never show."""

    def validate(self) -> None:
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        if not 0 <= self.holdout < 1:
            raise ValueError(f"holdout must be in [0, 1), got {self.holdout}")
        if not 0 <= self.mix_prob <= 1:
            raise ValueError(f"mix_prob must be in [0, 1], got {self.mix_prob}")
        if len(self.scale_range) != 2 or not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ValueError(f"scale_range must be (low, high) with 0 < low <= high, got {self.scale_range}")
        if not 0 <= self.region_mix_prob <= 1:
            raise ValueError(f"region_mix_prob must be in [0, 1], got {self.region_mix_prob}")


def face_region_groups(layout: str) -> list[np.ndarray]:
    """Curve indices of the independently moving face regions of ``layout``: eyes, brows, the rest (arkit52 only)."""
    if layout != "arkit52":
        raise InputError(f"region mixing needs the arkit52 layout, not {layout}")
    names = get_layout(layout).names
    eyes = [i for i, n in enumerate(names) if n.startswith("eye")]
    brows = [i for i, n in enumerate(names) if n.startswith("brow")]
    rest = [i for i in range(len(names)) if i not in eyes and i not in brows]
    return [np.asarray(g) for g in (eyes, brows, rest)]


def expand_paths(paths: list[str | Path]) -> list[Path]:
    """Files as given; a folder becomes its clip files (sorted, known suffixes only)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in FORMATS)
            if not found:
                raise InputError(f"no clip files ({', '.join(FORMATS)}) in folder", p)
            out.extend(found)
        else:
            out.append(p)
    if not out:
        raise InputError("no data files given")
    return out


def load_motion(path: str | Path, layout: str, fps: float) -> np.ndarray:
    """Frames ``[T, D]`` float32 of one file in ``layout`` at ``fps`` (InputError naming the file on any problem)."""
    clip = load_clip(path, layout=layout)
    clip = resample(clip, fps)
    clip.validate(path)
    return clip.values


def split_tail(values: np.ndarray, holdout: float) -> tuple[np.ndarray, np.ndarray]:
    """(head, tail) of ``[T, D]`` frames; the tail holds ``round(holdout * T)`` frames."""
    n_hold = int(round(holdout * len(values)))
    return values[: len(values) - n_hold], values[len(values) - n_hold :]


class MotionDataset:
    """Clips ``[T_i, D]`` of one layout, sampled as windows ``[B, window, D]``."""

    def __init__(
        self,
        clips: list[np.ndarray],
        layout: str,
        window: int,
        mirror: bool = True,
        mix_prob: float = 0.0,
        scale_range: tuple[float, float] = (1.0, 1.0),
        region_mix_prob: float = 0.0,
    ):
        self.layout = layout
        self.region_mix_prob = region_mix_prob
        self.regions = face_region_groups(layout) if region_mix_prob > 0 else []
        self.window = window
        self.mix_prob = mix_prob
        self.scale_range = tuple(scale_range)
        self.clip_range = (0.0, 1.0) if layout == "arkit52" else None
        lay = get_layout(layout)
        self.mirror = np.asarray(lay.mirror) if (mirror and lay.mirror is not None) else None
        self.clips = [c for c in clips if len(c) >= window]
        if len(self.clips) < len(clips):
            warnings.warn(
                f"{len(clips) - len(self.clips)} clip(s) shorter than the {window}-frame window skipped", stacklevel=2
            )
        if not self.clips:
            raise InputError(f"no clip has at least {window} frames (the training window)")
        starts = np.array([len(c) - window + 1 for c in self.clips], dtype=np.float64)
        self._p = starts / starts.sum()

    @classmethod
    def from_files(
        cls, paths: list[str | Path], layout: str, fps: float, cfg: MotionDataConfig, split: str = "train"
    ) -> MotionDataset:
        """Load ``paths`` and keep the ``train`` head or the ``val`` tail of every clip."""
        clips = []
        for p in expand_paths(paths):
            head, tail = split_tail(load_motion(p, layout, fps), cfg.holdout)
            clips.append(head if split == "train" else tail)
        if split != "train":
            return cls(clips, layout, cfg.window, mirror=False)
        return cls(clips, layout, cfg.window, cfg.mirror, cfg.mix_prob, cfg.scale_range, cfg.region_mix_prob)

    @property
    def num_frames(self) -> int:
        return sum(len(c) for c in self.clips)

    def stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-curve mean and std ``[D]`` over all frames (mirrored too when mirroring is on)."""
        x = np.concatenate(self.clips, 0)
        if self.mirror is not None:
            x = np.concatenate([x, x[:, self.mirror]], 0)
        return x.mean(0), x.std(0)

    def _crop(self, rng: np.random.Generator) -> np.ndarray:
        clip = self.clips[int(rng.choice(len(self.clips), p=self._p))]
        s = int(rng.integers(0, len(clip) - self.window + 1))
        w = clip[s : s + self.window]
        if self.mirror is not None and rng.random() < 0.5:
            w = w[:, self.mirror]
        return w

    def sample(self, batch_size: int, rng: np.random.Generator) -> np.ndarray:
        """``[B, window, D]`` float32 windows: random clip and offset, mirrored with probability 1/2, optionally
        mixed with a second window, composed per face region and scaled (see :class:`MotionDataConfig`)."""
        out = np.empty((batch_size, self.window, self.clips[0].shape[1]), dtype=np.float32)
        lo, hi = self.scale_range
        for i in range(batch_size):
            w = self._crop(rng)
            if self.mix_prob > 0 and rng.random() < self.mix_prob:
                lam = rng.random()
                w = lam * w + (1 - lam) * self._crop(rng)
            if self.region_mix_prob > 0 and rng.random() < self.region_mix_prob:
                w = w.copy()
                for idx in self.regions[1:]:
                    w[:, idx] = self._crop(rng)[:, idx]
            if hi > lo or lo != 1.0:
                w = w * rng.uniform(lo, hi)
            if self.clip_range is not None:
                w = np.clip(w, *self.clip_range)
            out[i] = w
        return out

    def windows(self) -> np.ndarray:
        """All non-overlapping windows ``[N, window, D]`` in order (for validation)."""
        out = [c[s : s + self.window] for c in self.clips for s in range(0, len(c) - self.window + 1, self.window)]
        return np.stack(out).astype(np.float32)
