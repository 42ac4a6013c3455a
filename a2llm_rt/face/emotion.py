"""Emotion control for a character: a documented table of emotions and a streaming offset/gain on ARKit frames.

The defaults live in a data file, :file:`a2llm_rt/face/emotions.json` (one entry per emotion: ``adjective``,
``instruction``, ``offsets``, ``gains``; its ``about`` field gives the sources). An emotion acts two ways, each usable
on its own:

a. **in the prompt** (the A2-LLM way, so speech and face follow it through the model):
   :meth:`EmotionTable.instruction` gives a sentence such as ``"Emotion: very happy. Speak with a warm, cheerful..."``
   that the caller adds to the session's system prompt or game context;
b. **on the output** (the Audio2Face way, for a designer's exact control): :class:`EmotionBlender` applies, at
   intensity ``i`` in [0, 1], ``value = clip(x * (1 + (gain - 1) * i) + offset * i, 0, 1)`` per ARKit curve to
   ARKIT52 or LIVELINK61 frames (Live Link's head/eye rotations pass through unchanged). A change of emotion or
   intensity blends over ``blend_ms`` (300 ms by default, smoothstep) from whatever is applied at that moment, so
   switching mid-answer never pops.

FLAME58 frames carry expressions in FLAME's learned space, where no per-curve table maps cleanly: convert them with
:func:`a2llm_rt.face.flame_to_arkit.flame_to_livelink` first (the blender refuses 58-value frames with that advice).

Streaming contract (:mod:`a2llm_rt.streaming`): the table is shared, :class:`EmotionState` is per session,
``step(frames, state)`` returns ``(frames, new_state)`` without touching ``state``; chunking does not change the output.
"""

from __future__ import annotations

import dataclasses
import json
import math
from functools import lru_cache
from pathlib import Path

import numpy as np

from a2llm_rt.errors import InputError
from a2llm_rt.face.layouts import ARKIT52_DIM, ARKIT_INDEX, FLAME58_DIM, LIVELINK61_DIM
from a2llm_rt.streaming import StreamingState

EMOTIONS_FILE = Path(__file__).with_name("emotions.json")
MAX_OFFSET = 0.6
GAIN_RANGE = (0.0, 2.0)
BLEND_MS_RANGE = (0.0, 5000.0)
MAX_INSTRUCTION_CHARS = 300


@dataclasses.dataclass(frozen=True)
class Emotion:
    """One emotion's defaults. ``offset`` / ``gain`` are ``[52]`` float32 in ARKIT52 order (0 / 1 where unset)."""

    name: str
    adjective: str
    instruction: str
    offset: np.ndarray
    gain: np.ndarray

    def at(self, intensity: float) -> tuple[np.ndarray, np.ndarray]:
        """(offset, gain) ``[52]`` at ``intensity`` (checked to lie in [0, 1])."""
        i = check_intensity(intensity)
        return (self.offset * i).astype(np.float32), (1.0 + (self.gain - 1.0) * i).astype(np.float32)


def check_intensity(intensity: float) -> float:
    """``intensity`` as a float; :class:`InputError` unless it is a finite number in [0, 1]."""
    if isinstance(intensity, bool) or not isinstance(intensity, int | float | np.floating | np.integer):
        raise InputError(f"emotion intensity must be a number in [0, 1], got {intensity!r}")
    x = float(intensity)
    if not math.isfinite(x) or not 0.0 <= x <= 1.0:
        raise InputError(f"emotion intensity must be in [0, 1], got {x}")
    return x


class EmotionTable:
    """The emotions of a data file, by name (validated on load)."""

    def __init__(self, emotions: dict[str, Emotion], blend_ms: float):
        self.emotions = emotions
        self.blend_ms = blend_ms

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.emotions)

    def get(self, name: str) -> Emotion:
        """The emotion called ``name``; :class:`InputError` listing the known names otherwise."""
        if not isinstance(name, str) or name not in self.emotions:
            raise InputError(f"unknown emotion {name!r}; known: {', '.join(self.names)}")
        return self.emotions[name]

    def instruction(self, name: str, intensity: float = 1.0) -> str:
        """The prompt sentence for ``name`` at ``intensity``: ``""`` at intensity 0, otherwise e.g.
        ``"Emotion: slightly sad. Speak slowly and softly..."`` (slightly < 0.34 <= plain < 0.67 <= very)."""
        emo = self.get(name)
        i = check_intensity(intensity)
        if i == 0.0:
            return ""
        if emo.name == "neutral":
            return f"Emotion: neutral. {emo.instruction}"
        degree = "slightly " if i < 0.34 else ("" if i < 0.67 else "very ")
        return f"Emotion: {degree}{emo.adjective}. {emo.instruction}"

    @classmethod
    def from_file(cls, path: str | Path) -> EmotionTable:
        """Load and validate an emotions file (the format of :data:`EMOTIONS_FILE`)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError("file not found", path) from None
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(f"not a JSON file ({e})", path) from None
        return cls.from_dict(data, source=path)

    @classmethod
    def from_dict(cls, data: dict, source: str | Path | None = None) -> EmotionTable:
        if not isinstance(data, dict) or data.get("format") != "a2llm-emotions" or data.get("version") != 1:
            raise InputError("not an a2llm-emotions file of version 1", source)
        blend = data.get("blend_ms")
        if not isinstance(blend, int | float) or not BLEND_MS_RANGE[0] <= blend <= BLEND_MS_RANGE[1]:
            raise InputError(f"blend_ms must be a number in {list(BLEND_MS_RANGE)}, got {blend!r}", source)
        table = data.get("emotions")
        if not isinstance(table, dict) or "neutral" not in table:
            raise InputError("'emotions' must be an object that holds at least 'neutral'", source)
        out = {}
        for name, e in table.items():
            out[name] = _parse_emotion(name, e, source)
        return cls(out, float(blend))


def _parse_emotion(name: str, e: object, source: str | Path | None) -> Emotion:
    where = f"emotion {name!r}"
    if not isinstance(e, dict) or set(e) != {"adjective", "instruction", "offsets", "gains"}:
        raise InputError(f"{where}: needs exactly adjective, instruction, offsets, gains", source)
    for key in ("adjective", "instruction"):
        if not isinstance(e[key], str) or not 0 < len(e[key]) <= MAX_INSTRUCTION_CHARS:
            raise InputError(f"{where}: {key} must be a string of 1..{MAX_INSTRUCTION_CHARS} characters", source)
    offset = np.zeros(ARKIT52_DIM, np.float32)
    gain = np.ones(ARKIT52_DIM, np.float32)
    for key, arr, lo, hi in (("offsets", offset, -MAX_OFFSET, MAX_OFFSET), ("gains", gain, *GAIN_RANGE)):
        if not isinstance(e[key], dict):
            raise InputError(f"{where}: {key} must map ARKit curve names to numbers", source)
        for curve, v in e[key].items():
            if curve not in ARKIT_INDEX:
                raise InputError(f"{where}: {key}: {curve!r} is not an ARKit curve name", source)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or not lo <= v <= hi:
                raise InputError(f"{where}: {key}.{curve} = {v!r} is outside [{lo}, {hi}]", source)
            arr[ARKIT_INDEX[curve]] = v
    return Emotion(name, e["adjective"], e["instruction"], offset, gain)


@lru_cache(maxsize=1)
def default_emotions() -> EmotionTable:
    """The table shipped in :data:`EMOTIONS_FILE` (loaded once)."""
    return EmotionTable.from_file(EMOTIONS_FILE)


@dataclasses.dataclass
class EmotionState(StreamingState):
    """One session's applied emotion: the blend from ``start`` to ``target`` (offset, gain ``[52]`` each)."""

    start_offset: np.ndarray
    start_gain: np.ndarray
    target_offset: np.ndarray
    target_gain: np.ndarray
    progress: int = 0
    """Frames into the current blend (``>= total`` when it is done)."""
    total: int = 0
    name: str = "neutral"
    intensity: float = 0.0

    def current(self) -> tuple[np.ndarray, np.ndarray]:
        """The (offset, gain) applied at this point of the blend."""
        w = 1.0 if self.progress >= self.total else _smoothstep(self.progress / self.total)
        return (
            self.start_offset + (self.target_offset - self.start_offset) * w,
            self.start_gain + (self.target_gain - self.start_gain) * w,
        )


def _smoothstep(u: float) -> float:
    return u * u * (3.0 - 2.0 * u)


class EmotionBlender:
    """Applies a per-session emotion to ARKIT52 ``[n, 52]`` or LIVELINK61 ``[n, 61]`` frames, blending changes."""

    def __init__(self, table: EmotionTable | None = None, fps: float = 25.0, blend_ms: float | None = None):
        self.table = table or default_emotions()
        if not 1.0 <= fps <= 240.0:
            raise InputError(f"fps must be in [1, 240], got {fps}")
        ms = self.table.blend_ms if blend_ms is None else blend_ms
        if not BLEND_MS_RANGE[0] <= ms <= BLEND_MS_RANGE[1]:
            raise InputError(f"blend_ms must be in {list(BLEND_MS_RANGE)}, got {ms}")
        self.fps = fps
        self.blend_frames = max(0, round(ms / 1000.0 * fps))

    def init_state(self, name: str = "neutral", intensity: float = 0.0) -> EmotionState:
        """A session that starts in ``name`` at ``intensity`` (no blend from nothing)."""
        off, gain = self.table.get(name).at(intensity)
        return EmotionState(off, gain, off, gain, 0, 0, name, check_intensity(intensity))

    def set_emotion(self, state: EmotionState, name: str, intensity: float = 1.0) -> EmotionState:
        """A new state that blends from what is applied now to ``name`` at ``intensity`` over the blend time.

        :class:`InputError` for an unknown emotion or an intensity outside [0, 1] (``state`` stays valid)."""
        off, gain = self.table.get(name).at(intensity)
        cur_off, cur_gain = state.current()
        return EmotionState(cur_off, cur_gain, off, gain, 0, self.blend_frames, name, check_intensity(intensity))

    def step(self, frames: np.ndarray, state: EmotionState) -> tuple[np.ndarray, EmotionState]:
        """``frames`` ``[n, 52|61]`` -> (frames with the emotion applied, float32; the new state)."""
        x = np.asarray(frames, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] not in (ARKIT52_DIM, LIVELINK61_DIM):
            hint = (
                " (convert FLAME58 with flame_to_livelink first)" if x.ndim == 2 and x.shape[1] == FLAME58_DIM else ""
            )
            raise InputError(f"emotion applies to ARKIT52 [n, 52] or LIVELINK61 [n, 61] frames, got {x.shape}{hint}")
        if not np.isfinite(x).all():
            raise InputError("face frames hold NaN or inf")
        n = x.shape[0]
        st = dataclasses.replace(state)
        out = x.copy()
        if st.progress >= st.total:  # steady: one vectorised apply
            off, gain = st.current()
            out[:, :ARKIT52_DIM] = x[:, :ARKIT52_DIM] * gain + off
        else:
            for i in range(n):
                st.progress += 1
                off, gain = st.current()
                out[i, :ARKIT52_DIM] = x[i, :ARKIT52_DIM] * gain + off
        np.clip(out[:, :ARKIT52_DIM], 0.0, 1.0, out=out[:, :ARKIT52_DIM])
        if st.progress >= st.total:
            st.start_offset, st.start_gain = st.target_offset, st.target_gain
            st.progress = st.total = 0
        return out, st
