"""Per-turn clocks: TTFT (first audio token), TTFA (first face frame) and RTF (generation time / audio duration)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class TurnClock:
    """Started when a turn is submitted; the engine marks events as they happen (``time.perf_counter`` seconds)."""

    start: float = field(default_factory=time.perf_counter)
    first_audio_token: float | None = None
    first_face_frame: float | None = None
    end: float | None = None
    prefill_s: float = 0.0

    def mark_audio_token(self) -> None:
        if self.first_audio_token is None:
            self.first_audio_token = time.perf_counter()

    def mark_face_frame(self) -> None:
        if self.first_face_frame is None:
            self.first_face_frame = time.perf_counter()

    def stop(self) -> None:
        if self.end is None:
            self.end = time.perf_counter()

    @property
    def ttft_s(self) -> float:
        return -1.0 if self.first_audio_token is None else self.first_audio_token - self.start

    @property
    def ttfa_s(self) -> float:
        return -1.0 if self.first_face_frame is None else self.first_face_frame - self.start

    @property
    def elapsed_s(self) -> float:
        return (time.perf_counter() if self.end is None else self.end) - self.start

    def rtf(self, audio_seconds: float) -> float:
        """Generation time / answer duration (-1 when no audio was produced)."""
        return -1.0 if audio_seconds <= 0 else self.elapsed_s / audio_seconds
