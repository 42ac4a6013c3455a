"""The scripted :class:`~plugin_bridge.turn_source.TurnSource`: deterministic text, a 220 Hz tone and a jaw/smile
sweep at 25 fps, every value a pure function of its position in the answer (tests that check exact values, the
bridge benchmark, ``python -m plugin_bridge.serve --scripted``)."""

from __future__ import annotations

import functools
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from a2llm_rt.face.layouts import ARKIT52, ARKIT_INDEX, FLAME58, LIVELINK61, LIVELINK_HEAD
from plugin_bridge.turn_source import (
    FPS,
    OUTPUT_SAMPLE_RATE,
    SAMPLES_PER_FRAME,
    AudioChunk,
    CharacterLimits,
    Event,
    FaceFrames,
    TextDelta,
    TurnEnd,
)


class _ScriptedCharacters:
    """Protocol v2 character calls of :class:`ScriptedSource`: stored for tests, never affecting the script."""

    voices: tuple[str, ...] = ()
    limits = CharacterLimits()

    def check_text(self, text: str, what: str, max_chars: int, allow_empty: bool = False) -> str:
        return text.strip()

    def configure(self, session_id: int, persona: str | None, voice: str | None) -> bool:
        """Set the session's persona (None: default) and voice; True when the conversation was reset."""
        state = self.characters.setdefault(session_id, {})  # type: ignore[attr-defined]
        reset = state.get("persona") != persona
        state.update(persona=persona, voice=voice)
        return reset

    def set_context(self, session_id: int, text: str | None) -> None:
        self.characters.setdefault(session_id, {})["context"] = text  # type: ignore[attr-defined]


_TONE_PERIOD = 12000  # samples: the 220 Hz tone times its 2 Hz envelope repeats every 0.5 s
_FACE_PERIOD = 300  # frames: the least common multiple of the face sweeps' periods (25, 75 and 100 frames)


@functools.cache
def _tone_period() -> np.ndarray:
    """Two periods ``[24000]`` float32 of the scripted answer's audio (computed once: the benchmark's server would
    otherwise spend most of its time making test tones; two, so that any window up to a period is a slice)."""
    t = np.arange(_TONE_PERIOD, dtype=np.float64) / OUTPUT_SAMPLE_RATE
    env = 0.5 + 0.5 * np.sin(2 * math.pi * 2.0 * t)
    one = (0.3 * env * np.sin(2 * math.pi * 220.0 * t)).astype(np.float32)
    two = np.concatenate([one, one])
    two.flags.writeable = False  # shared by every turn
    return two


@functools.cache
def _face_period() -> dict[str, np.ndarray]:
    """Two periods (600 frames) of the scripted face in each layout (any window up to a period is a slice)."""
    k = np.arange(_FACE_PERIOD, dtype=np.float64)[:, None]
    phase = 2 * math.pi * k / FPS
    ar = np.zeros((_FACE_PERIOD, ARKIT52.dim), np.float64)
    ar[:, ARKIT_INDEX["jawOpen"]] = 0.5 + 0.5 * np.sin(2 * phase)[:, 0] * 0.8
    ar[:, ARKIT_INDEX["mouthSmileLeft"]] = ar[:, ARKIT_INDEX["mouthSmileRight"]] = 0.3 + 0.2 * np.cos(phase)[:, 0]
    ar[:, ARKIT_INDEX["eyeBlinkLeft"]] = ar[:, ARKIT_INDEX["eyeBlinkRight"]] = ((k[:, 0] % 75) < 3) * 1.0
    ll = np.zeros((_FACE_PERIOD, LIVELINK61.dim), np.float64)
    ll[:, :52] = ar
    ll[:, LIVELINK_HEAD.start] = 0.1 * np.sin(phase / 4)[:, 0]  # head yaw, radians
    fl = np.zeros((_FACE_PERIOD, FLAME58.dim), np.float64)
    fl[:, 0] = np.sin(phase)[:, 0]
    fl[:, 50] = 0.2 * ar[:, ARKIT_INDEX["jawOpen"]]  # jaw_x, radians
    layouts = {"flame58": fl, "arkit52": ar, "livelink61": ll}
    out = {k: np.concatenate([v, v]).astype(np.float32) for k, v in layouts.items()}
    for v in out.values():
        v.flags.writeable = False  # shared by every turn
    return out


@dataclass
class ScriptedSource(_ScriptedCharacters):
    """Deterministic stand-in for the engine: a few text deltas, a 220 Hz tone and a jaw/smile sweep at 25 fps.

    Every ``frames_per_event`` frames (default 5 = one motion token, 200 ms) it yields, in the engine's order, the
    next text delta (while any are left), the window's audio ``[frames_per_event * 960]`` and its face frames
    (flame58 when in ``layouts``, arkit52, livelink61). Events are made at once; ``pace`` = 1.0 asks the server to
    release them in real time (0 = as fast as possible). Frame ``k`` is a pure function of ``k``, so tests can check
    every value a client receives.
    """

    seconds: float = 2.0  # answer duration
    frames_per_event: int = 5
    pace: float = 0.0
    text: str = "Hello there! I am a scripted answer from the a2llm bridge."
    first_delay_s: float = 0.0  # simulated prefill time before the first event
    layouts: tuple[str, ...] = ("flame58", "arkit52", "livelink61")
    fail_after_frames: int | None = None  # raise RuntimeError after this many frames (tests TURN_FAILED)
    _open: set[int] = field(default_factory=set, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    characters: dict[int, dict] = field(default_factory=dict, repr=False)  # protocol v2 calls, for tests

    def open_session(self, session_id: int) -> None:
        with self._lock:
            self._open.add(session_id)

    def close_session(self, session_id: int) -> None:
        with self._lock:
            self._open.discard(session_id)

    @property
    def num_open(self) -> int:
        with self._lock:
            return len(self._open)

    @staticmethod
    def audio(start: int, n: int) -> np.ndarray:
        """``[n]`` float32 samples ``start .. start + n - 1`` of the scripted answer (a 220 Hz tone, 0.3 peak); a
        read-only view for windows up to 0.5 s."""
        tone = _tone_period()
        if n <= _TONE_PERIOD:
            s = start % _TONE_PERIOD
            return tone[s : s + n]
        return tone[np.arange(start, start + n) % _TONE_PERIOD]

    @staticmethod
    def face(first: int, n: int) -> dict[str, np.ndarray]:
        """Frames ``first .. first + n - 1``: ``{"arkit52": [n, 52], "livelink61": [n, 61], "flame58": [n, 58]}``."""
        if n <= _FACE_PERIOD:
            s = first % _FACE_PERIOD
            return {name: v[s : s + n] for name, v in _face_period().items()}
        idx = np.arange(first, first + n) % _FACE_PERIOD
        return {name: v[idx] for name, v in _face_period().items()}

    def deltas(self) -> list[str]:
        words = self.text.split(" ")
        return [w if i == 0 else " " + w for i, w in enumerate(words)]

    def run_turn(self, session_id: int, audio: np.ndarray, cancel: threading.Event) -> Iterator[Event]:
        t0 = time.monotonic()
        if self.first_delay_s > 0 and cancel.wait(self.first_delay_s):
            return
        total = max(1, round(self.seconds * FPS))
        deltas = self.deltas()
        ttft = ttfa = -1.0
        frame = 0
        flame = "flame58" in self.layouts
        while frame < total:
            if cancel.is_set():
                return
            if self.fail_after_frames is not None and frame >= self.fail_after_frames:
                raise RuntimeError(f"scripted failure after {frame} frames")
            n = min(self.frames_per_event, total - frame)
            if deltas:
                yield TextDelta(session_id, deltas.pop(0))
            if ttft < 0:  # the script's audio "token" and face motion exist when their first event is made
                ttft = time.monotonic() - t0
            pcm = self.audio(frame * SAMPLES_PER_FRAME, n * SAMPLES_PER_FRAME)
            yield AudioChunk(session_id, pcm, frame * SAMPLES_PER_FRAME)
            face = self.face(frame, n)
            if ttfa < 0:
                ttfa = time.monotonic() - t0
            yield FaceFrames(session_id, frame, FPS, face["flame58"] if flame else None, face["arkit52"],
                             face["livelink61"])  # fmt: skip
            frame += n
        if deltas:  # text longer than the audio: flush the rest
            yield TextDelta(session_id, "".join(deltas))
        elapsed = time.monotonic() - t0
        counts = {"face_frames": total, "audio_samples": total * SAMPLES_PER_FRAME}
        yield TurnEnd(session_id, ttft, ttfa, elapsed / (total / FPS), counts, "eot", self.text)
