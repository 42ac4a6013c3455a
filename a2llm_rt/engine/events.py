"""Typed events the engine emits for each session, in generation order.

One turn of one session yields, interleaved as they become available:

- :class:`TextDelta` (new answer text),
- :class:`AudioChunk` (``[n]`` float32 PCM at 24 kHz, stamped with the sample offset of ``pcm[0]`` in the answer),
- :class:`FaceFrames` (25 fps frames ``first_frame .. first_frame + n - 1``; frame ``k`` covers audio samples
  ``[k*960, (k+1)*960)``), in FLAME58 (when the motion tokenizer works in FLAME) and ARKIT52 / LIVELINK61,

and finally exactly one of :class:`TurnEnd` (timings and counts; also after a cancel) or :class:`Error`
(the turn failed; the session stays usable).

These are the project's one event vocabulary: the bridge's sources (``plugin_bridge.turn_source``) yield them too, and
the wire protocol (``plugin_bridge.protocol.encode_event``) encodes them; nothing redefines them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# the time base lives in a2llm_rt.audio; re-exported here for the events' users
from a2llm_rt.audio import FACE_FPS as FACE_FPS
from a2llm_rt.audio import INPUT_SAMPLE_RATE as INPUT_SAMPLE_RATE
from a2llm_rt.audio import OUTPUT_SAMPLE_RATE as OUTPUT_SAMPLE_RATE
from a2llm_rt.audio import SAMPLES_PER_FRAME as SAMPLES_PER_FRAME


@dataclass(frozen=True)
class TextDelta:
    session_id: int
    text: str


@dataclass(frozen=True)
class AudioChunk:
    session_id: int
    pcm: np.ndarray  # [n] float32, 24 kHz mono
    sample_offset: int  # index of pcm[0] in the turn's answer audio
    sample_rate: int = OUTPUT_SAMPLE_RATE


@dataclass(frozen=True)
class FaceFrames:
    """Frames ``first_frame .. first_frame + n - 1`` at ``fps``; every layout present holds the same ``n`` frames."""

    session_id: int
    first_frame: int
    fps: float
    flame58: np.ndarray | None  # [n, 58] float32 (None when the motion tokenizer works in ARKit)
    arkit52: np.ndarray  # [n, 52] float32 in [0, 1]
    livelink61: np.ndarray  # [n, 61] float32 (ARKit52 + head and eye rotations in radians)

    @property
    def num_frames(self) -> int:
        return int(self.arkit52.shape[0])

    @property
    def frames(self) -> dict[str, np.ndarray]:
        """Layout name -> ``[n, D]`` frames (the bridge's ``FaceFrames.frames``)."""
        out = {"arkit52": self.arkit52, "livelink61": self.livelink61}
        if self.flame58 is not None:
            out = {"flame58": self.flame58, **out}
        return out


@dataclass(frozen=True)
class TurnEnd:
    """Last event of a turn. Times in seconds from the turn's submission; -1 = did not happen.

    ``reason``: ``eot`` (the model ended its answer), ``max_tokens``, ``max_seconds``, ``context_full`` or
    ``cancelled``. ``counts``: ``text_tokens``, ``audio_tokens``, ``face_frames``, ``audio_samples``, ``steps``.
    """

    session_id: int
    ttft_s: float  # time to the first audio token
    ttfa_s: float  # time to the first face frame
    rtf: float  # generation time / answer audio duration
    counts: dict[str, int] = field(default_factory=dict)
    reason: str = "eot"
    text: str = ""  # the whole answer text

    @property
    def cancelled(self) -> bool:
        """The turn was stopped early (``reason == "cancelled"``)."""
        return self.reason == "cancelled"


@dataclass(frozen=True)
class Error:
    """The session's turn failed (``kind`` ``input``: bad user audio or a prompt too long; ``internal``: a bug or a
    numeric failure). Only this session is affected; it stays usable for the next turn."""

    session_id: int
    message: str
    kind: str = "internal"


Event = TextDelta | AudioChunk | FaceFrames | TurnEnd | Error
