"""Shared helpers of the engine tests: tiny engines, test audio, event filters."""

from __future__ import annotations

import numpy as np

from a2llm_rt.engine.engine import Engine, EngineConfig
from a2llm_rt.engine.events import AudioChunk, Error, FaceFrames, TextDelta, TurnEnd
from a2llm_rt.engine.sampling import SamplingConfig


def tone(seconds: float, freq: float = 220.0, sr: int = 16000, amp: float = 0.3) -> np.ndarray:
    """``[seconds * sr]`` float32 sine."""
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def greedy_engine(max_sessions: int = 4, max_seconds: float = 1.2, min_seconds: float = 0.8, **kw) -> Engine:
    cfg = EngineConfig(
        max_sessions=max_sessions,
        max_seconds=max_seconds,
        min_seconds=min_seconds,
        max_len=kw.pop("max_len", 1024),
        sampling=SamplingConfig.greedy(),
        **kw,
    )
    return Engine.tiny(0, cfg)


def of(events: list, kind: type, session_id: int | None = None) -> list:
    return [e for e in events if isinstance(e, kind) and (session_id is None or e.session_id == session_id)]


def summary(events: list, session_id: int) -> dict:
    """What a session received in a turn: text, PCM, face frames (arkit52), the end event."""
    pcm = [e.pcm for e in of(events, AudioChunk, session_id)]
    face = [e.arkit52 for e in of(events, FaceFrames, session_id)]
    return {
        "text": "".join(e.text for e in of(events, TextDelta, session_id)),
        "pcm": np.concatenate(pcm) if pcm else np.zeros(0, np.float32),
        "face": np.concatenate(face) if face else np.zeros((0, 52), np.float32),
        "end": (of(events, TurnEnd, session_id) or [None])[-1],
        "error": (of(events, Error, session_id) or [None])[-1],
    }
