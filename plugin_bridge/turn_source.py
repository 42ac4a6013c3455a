"""What the bridge server drives: a :class:`TurnSource` that turns a user's utterance into a stream of events.

The server does not know about models. For every turn it calls ``source.run_turn(session_id, audio, cancel)`` on a
worker thread and forwards the events it yields, which are the engine's own (:mod:`a2llm_rt.engine.events`, the one
event vocabulary; :mod:`plugin_bridge.protocol` encodes them):

- :class:`TextDelta` (text), :class:`AudioChunk` (``[n]`` float32 at 24 kHz + sample offset),
- :class:`FaceFrames` (first frame, fps, ``[n, D]`` float32 frames in arkit52 / livelink61 and flame58 when present),
- :class:`TurnEnd` (timings; ``reason == "cancelled"`` when the source stopped early), always last.

A source yields its events as fast as it makes them; it never sleeps to pace them. Its ``pace`` attribute asks the
server to release audio and face no faster than ``pace`` x real time (0 = as made): the server's one scheduler does
that for every turn of every session (``plugin_bridge.server``), so no thread waits per turn.

A source reports a failed turn by raising (:class:`TurnError` for a failure it knows about; the server answers
``TURN_FAILED``) and a full house by raising :class:`SourceBusyError` from ``open_session`` (``SERVER_BUSY``).

The sources: :class:`~plugin_bridge.engine_source.EngineSource` (the session engine in this process),
:class:`~plugin_bridge.ray_source.RaySource` (engines as Ray actors, each running an ``EngineSource``) and
:class:`~plugin_bridge.scripted_source.ScriptedSource` (deterministic text, tone and face sweep: tests that check
exact values, the benchmark, ``serve --scripted``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from a2llm_rt.audio import FACE_FPS, INPUT_SAMPLE_RATE, OUTPUT_SAMPLE_RATE, SAMPLES_PER_FRAME
from a2llm_rt.engine.events import AudioChunk, Event, FaceFrames, TextDelta, TurnEnd

FPS = FACE_FPS  # the time base is a2llm_rt.audio's: run_turn receives INPUT_SAMPLE_RATE audio

__all__ = [
    "FPS", "INPUT_SAMPLE_RATE", "OUTPUT_SAMPLE_RATE", "SAMPLES_PER_FRAME", "AudioChunk", "CharacterLimits", "Event",
    "FaceFrames", "SourceBusyError", "TextDelta", "TurnEnd", "TurnError", "TurnSource", "convert_face",
    "event_position",
]  # fmt: skip


class TurnError(RuntimeError):
    """The source failed this turn (the server answers ``Error(TURN_FAILED)`` + ``TurnEnd(FAILED)``).

    ``kind``: ``input`` (the user's audio was refused) or ``internal``. The session stays usable.
    """

    def __init__(self, message: str, kind: str = "internal"):
        super().__init__(message)
        self.kind = kind


class SourceBusyError(RuntimeError):
    """``open_session``: no room for another session (the server answers ``Error(SERVER_BUSY)``)."""


class TurnSource(Protocol):
    """The interface the server drives. Implementations must be safe to call from many threads at once."""

    layouts: tuple[str, ...]  # face layouts the source can produce (names from a2llm_rt.face.layouts)
    pace: float  # release audio/face at most this many times real time (0 = as made); applied by the server

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
    """Frames in ``layout`` from a ``FaceFrames.frames`` dict: livelink61 <-> arkit52 by slicing / zero head+eyes.

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


# --- game characters (protocol v2): what the server asks of a source -----------------------------------------------
@dataclass
class CharacterLimits:
    """Longest persona / game context / typed turn a source takes, in Unicode code points."""

    persona: int = 4000
    context: int = 1000
    text: int = 2000


def event_position(e: Event) -> int | None:
    """The answer sample an event's content starts at (audio: its offset; face: its first frame's first sample), or
    None for events without a place in the answer's time line (text, the end)."""
    if isinstance(e, AudioChunk):
        return int(e.sample_offset)
    if isinstance(e, FaceFrames):
        return int(e.first_frame) * SAMPLES_PER_FRAME
    return None
