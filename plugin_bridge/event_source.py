"""What the bridge server drives: a :class:`TurnSource` that turns a user's utterance into a stream of events.

The server does not know about models. For every turn it calls ``source.run_turn(session_id, audio, cancel)`` on a
worker thread and forwards the events it yields:

- :class:`TextDelta` (text), :class:`AudioChunk` (``[n]`` float32 at 24 kHz + sample offset),
- :class:`FaceFrames` (first frame, fps, and ``[n, D]`` float32 frames in one or more layouts),
- :class:`TurnEnd` (timings), always last.

Two sources exist: :class:`ScriptedSource` (deterministic text, a tone and a face sweep; used by the tests, the
benchmark and ``--backbone tiny --motion tiny`` until the engine lands) and :class:`EngineSource`, the single
adapter to the real session engine (issue 4).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from a2llm_rt.face.layouts import ARKIT52, ARKIT_INDEX, FLAME58, LIVELINK61, LIVELINK_HEAD

OUTPUT_SAMPLE_RATE = 24000
INPUT_SAMPLE_RATE = 16000
FPS = 25.0
SAMPLES_PER_FRAME = 960  # 24000 / 25


# --- events --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class AudioChunk:
    pcm: np.ndarray  # [n] float32, 24 kHz mono
    sample_offset: int  # index of pcm[0] in the turn's answer audio


@dataclass(frozen=True)
class FaceFrames:
    """``frames`` maps a layout name (``flame58``, ``arkit52``, ``livelink61``) to ``[n, D]`` float32 frames.

    Every layout present holds the same ``n`` frames ``first_frame .. first_frame + n - 1``.
    """

    first_frame: int
    frames: dict[str, np.ndarray]
    fps: float = FPS

    @property
    def num_frames(self) -> int:
        return int(next(iter(self.frames.values())).shape[0])


@dataclass(frozen=True)
class TurnEnd:
    ttft_s: float = -1.0  # time to first text, from the turn start (-1 = not measured)
    ttfa_s: float = -1.0  # time to first audio
    rtf: float = -1.0  # generation time / answer duration


Event = TextDelta | AudioChunk | FaceFrames | TurnEnd


class TurnSource(Protocol):
    """The interface the server drives. Implementations must be safe to call from many threads at once."""

    layouts: tuple[str, ...]  # face layouts the source can produce (names from a2llm_rt.face.layouts)

    def open_session(self, session_id: int) -> None:
        """A client joined; allocate per-session state (KV cache slot, conversation history)."""

    def close_session(self, session_id: int) -> None:
        """The client left or expired; free its state. Called at most once per opened session."""

    def run_turn(self, session_id: int, audio: np.ndarray, cancel: threading.Event) -> Iterator[Event]:
        """Answer one utterance: ``audio`` is ``[n]`` float32 16 kHz mono. Yields events, ``TurnEnd`` last.

        Must stop soon (within one decode step) after ``cancel`` is set; it may then return without a TurnEnd.
        """
        ...


def convert_face(frames: dict[str, np.ndarray], layout: str) -> np.ndarray | None:
    """Frames in ``layout`` from what a source produced: livelink61 <-> arkit52 by slicing / zero head+eyes.

    Returns ``[n, D]`` float32, or None when the layout cannot be derived (flame58 only comes from flame58).
    """
    if layout in frames:
        return frames[layout]
    if layout == "arkit52" and "livelink61" in frames:
        return np.ascontiguousarray(frames["livelink61"][:, :52])
    if layout == "livelink61" and "arkit52" in frames:
        a = frames["arkit52"]
        return np.concatenate([a, np.zeros((a.shape[0], 9), np.float32)], axis=1)
    return None


# --- scripted source -----------------------------------------------------------------------------------------------
@dataclass
class ScriptedSource:
    """Deterministic stand-in for the engine: a few text deltas, a 220 Hz tone and a jaw/smile sweep at 25 fps.

    Every ``frames_per_event`` frames (default 5 = one motion token, 200 ms) it yields, in the engine's order, the
    next text delta (while any are left), the window's audio ``[frames_per_event * 960]`` and its face frames in
    flame58, arkit52 and livelink61. ``pace`` = 1.0 sleeps so that events leave in real time (0 = as fast as
    possible). Frame ``k`` is a pure function of ``k``, so tests can check every value a client receives.
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
        """``[n]`` float32 samples ``start .. start + n - 1`` of the scripted answer (a 220 Hz tone, 0.3 peak)."""
        t = (np.arange(start, start + n, dtype=np.float64)) / OUTPUT_SAMPLE_RATE
        env = 0.5 + 0.5 * np.sin(2 * math.pi * 2.0 * t)
        return (0.3 * env * np.sin(2 * math.pi * 220.0 * t)).astype(np.float32)

    @staticmethod
    def face(first: int, n: int) -> dict[str, np.ndarray]:
        """Frames ``first .. first + n - 1``: ``{"arkit52": [n, 52], "livelink61": [n, 61], "flame58": [n, 58]}``."""
        k = np.arange(first, first + n, dtype=np.float64)[:, None]
        phase = 2 * math.pi * k / FPS
        ar = np.zeros((n, ARKIT52.dim), np.float64)
        ar[:, ARKIT_INDEX["jawOpen"]] = 0.5 + 0.5 * np.sin(2 * phase)[:, 0] * 0.8
        ar[:, ARKIT_INDEX["mouthSmileLeft"]] = ar[:, ARKIT_INDEX["mouthSmileRight"]] = 0.3 + 0.2 * np.cos(phase)[:, 0]
        ar[:, ARKIT_INDEX["eyeBlinkLeft"]] = ar[:, ARKIT_INDEX["eyeBlinkRight"]] = ((k[:, 0] % 75) < 3) * 1.0
        ll = np.zeros((n, LIVELINK61.dim), np.float64)
        ll[:, :52] = ar
        ll[:, LIVELINK_HEAD.start] = 0.1 * np.sin(phase / 4)[:, 0]  # head yaw, radians
        fl = np.zeros((n, FLAME58.dim), np.float64)
        fl[:, 0] = np.sin(phase)[:, 0]
        fl[:, 50] = 0.2 * ar[:, ARKIT_INDEX["jawOpen"]]  # jaw_x, radians
        return {
            "flame58": fl.astype(np.float32),
            "arkit52": ar.astype(np.float32),
            "livelink61": ll.astype(np.float32),
        }

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
        while frame < total:
            if cancel.is_set():
                return
            if self.fail_after_frames is not None and frame >= self.fail_after_frames:
                raise RuntimeError(f"scripted failure after {frame} frames")
            n = min(self.frames_per_event, total - frame)
            if self.pace > 0:  # event for frames [frame, frame + n) is due when frame `frame` starts playing
                due = t0 + self.first_delay_s + frame / FPS / self.pace
                delay = due - time.monotonic()
                if delay > 0 and cancel.wait(delay):
                    return
            if deltas:
                if ttft < 0:
                    ttft = time.monotonic() - t0
                yield TextDelta(deltas.pop(0))
            if ttfa < 0:
                ttfa = time.monotonic() - t0
            yield AudioChunk(self.audio(frame * SAMPLES_PER_FRAME, n * SAMPLES_PER_FRAME), frame * SAMPLES_PER_FRAME)
            face = self.face(frame, n)
            yield FaceFrames(frame, {k: v for k, v in face.items() if k in self.layouts})
            frame += n
        if deltas:  # text longer than the audio: flush the rest
            yield TextDelta("".join(deltas))
        elapsed = time.monotonic() - t0
        yield TurnEnd(ttft_s=ttft, ttfa_s=ttfa, rtf=elapsed / (total / FPS))


# --- the real engine -----------------------------------------------------------------------------------------------
class EngineSource:
    """Adapter from the session engine of issue 4 (``a2llm_rt.engine``) to :class:`TurnSource`. To be filled in.

    Expected engine API (what this adapter will call once the engine exists)::

        engine = a2llm_rt.engine.Engine.load(backbone_dir, motion_dir, device="cuda")  # weights shared
        session = engine.new_session()                 # per-user state: KV cache slot, history
        for ev in session.respond(audio_16k, cancel=cancel_event):   # audio_16k: [n] float32 16 kHz mono
            # ev is one of (all per turn, in generation order):
            #   engine.TextEvent(text: str)
            #   engine.AudioEvent(pcm: [n] float32 24 kHz, sample_offset: int)
            #   engine.FaceEvent(first_frame: int, fps: 25.0, flame58: [n, 58] | None, arkit52: [n, 52] | None,
            #                    livelink61: [n, 61] | None)
            #   engine.TurnTimings(ttft_s, ttfa_s, rtf)  (last)
        session.close()

    Many sessions call ``respond`` from different threads; the engine batches their decode steps.
    """

    layouts: tuple[str, ...] = ("flame58", "arkit52", "livelink61")

    def __init__(self, backbone_dir: str | Path, motion_dir: str | Path, device: str = "cpu"):
        try:
            from a2llm_rt import engine as engine_mod

            self._engine = engine_mod.Engine.load(backbone_dir, motion_dir, device=device)  # type: ignore[attr-defined]
        except (ImportError, AttributeError) as e:
            raise NotImplementedError(
                "the session engine (a2llm_rt.engine.Engine) is not available yet; use --backbone tiny --motion tiny"
            ) from e
        self._sessions: dict[int, object] = {}
        self._lock = threading.Lock()

    def open_session(self, session_id: int) -> None:
        with self._lock:
            self._sessions[session_id] = self._engine.new_session()

    def close_session(self, session_id: int) -> None:
        with self._lock:
            s = self._sessions.pop(session_id, None)
        if s is not None:
            s.close()  # type: ignore[attr-defined]

    def run_turn(self, session_id: int, audio: np.ndarray, cancel: threading.Event) -> Iterator[Event]:
        with self._lock:
            session = self._sessions[session_id]
        for ev in session.respond(audio, cancel=cancel):  # type: ignore[attr-defined]
            name = type(ev).__name__
            if name == "TextEvent":
                yield TextDelta(ev.text)
            elif name == "AudioEvent":
                yield AudioChunk(np.asarray(ev.pcm, np.float32), int(ev.sample_offset))
            elif name == "FaceEvent":
                frames = {
                    k: np.asarray(getattr(ev, k), np.float32) for k in self.layouts if getattr(ev, k, None) is not None
                }
                yield FaceFrames(int(ev.first_frame), frames, float(ev.fps))
            elif name == "TurnTimings":
                yield TurnEnd(float(ev.ttft_s), float(ev.ttfa_s), float(ev.rtf))


def make_source(backbone: str, motion: str, **scripted: object) -> TurnSource:
    """``tiny``/``tiny`` -> :class:`ScriptedSource` (keyword overrides apply); directories -> :class:`EngineSource`."""
    if backbone == "tiny" and motion == "tiny":
        return ScriptedSource(**scripted)  # type: ignore[arg-type]
    return EngineSource(backbone, motion)
