"""Hands-free talk: a streaming utterance segmenter over Silero VAD, with speech-start/end events and barge-in.

The client streams the microphone continuously; :class:`UtteranceSegmenter` cuts it into utterances (one per player
turn) and says when it heard speech start and end, in 16 kHz sample offsets since the stream began.

Model: Silero VAD v5/v6 (snakers4/silero-vad, MIT), the ONNX file shipped inside the ``silero-vad`` PyPI package
(``silero_vad/data/silero_vad.onnx``), run here through onnxruntime directly: no torch hub, no download. Its
interface (documented by the package's ``OnnxWrapper``): at 16 kHz, windows of 512 samples (32 ms) preceded by the
previous window's last 64 samples, a recurrent state ``[2, B, 128]``; it returns one speech probability per window.

Segmentation (thresholds in :class:`VadConfig`; defaults follow the package's ``VADIterator`` /
``get_speech_timestamps`` except where a conversation needs otherwise, noted):

- a window is *speech* when its probability is ``>= threshold`` (0.5) and *silence* when ``< neg_threshold``
  (``threshold - 0.15``, Silero's hysteresis); in between, speech that has begun goes on;
- a candidate utterance begins at the first speech window; it becomes an utterance (``SpeechStart``) once its speech
  spans ``min_speech_ms`` (100 ms: Silero's 250 ms drops one-word answers such as "yes", 160 ms in espeak-ng's voice
  in the tests); a candidate whose speech stops for ``min_silence_ms`` before that is dropped
  (a click, a cough);
- an utterance ends (``SpeechEnd``) after ``min_silence_ms`` of silence (500 ms: Silero's 100 ms splits sentences at
  every pause, too eager for a conversational turn) or at ``max_utterance_s`` (30 s);
- reported boundaries are padded by ``speech_pad_ms`` (30 ms) on each side; ``SpeechEnd`` carries the utterance's
  samples (padding included), ready for ``Engine.submit``;
- **barge-in**: while the character answers (:meth:`UtteranceSegmenter.set_answering`), speech spanning
  ``barge_in_ms`` (64 ms, two windows) emits one ``BargeIn`` so the caller cancels the answer; it comes well before
  ``SpeechStart``. Hands-free needs echo cancellation or a headset: otherwise the character's own voice from the
  speakers triggers barge-in (the client should enable the platform's acoustic echo canceller, e.g. WebRTC's
  ``echoCancellation`` constraint, and otherwise mute the microphone while the character speaks).

Only 16 kHz mono is accepted (resample before; any other rate is an :class:`~a2llm_rt.errors.InputError`).

Streaming contract (:mod:`a2llm_rt.streaming`): the ONNX session is shared (:class:`SileroVad`, thread-safe), the
state is per session (:class:`VadState`); ``step(samples, state)`` returns ``(events, new_state)`` and leaves
``state`` untouched; any chunking of the same audio gives the same events (tested).
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import threading
from pathlib import Path

import numpy as np

from a2llm_rt.audio import INPUT_SAMPLE_RATE
from a2llm_rt.config import Config
from a2llm_rt.errors import InputError
from a2llm_rt.streaming import StreamingState

SAMPLE_RATE = INPUT_SAMPLE_RATE
WINDOW = 512  # samples per Silero window at 16 kHz (32 ms)
CONTEXT = 64  # samples of the previous window prepended to each window
STATE_SHAPE = (2, 1, 128)


def silero_model_path() -> Path:
    """The ONNX model inside the installed ``silero-vad`` package (:class:`InputError` when it is not installed)."""
    try:
        p = Path(str(importlib.resources.files("silero_vad") / "data" / "silero_vad.onnx"))
    except ModuleNotFoundError:
        raise InputError("the silero-vad package is not installed (pip install silero-vad)") from None
    if not p.is_file():
        raise InputError(f"Silero VAD model not found at {p} (reinstall silero-vad)")
    return p


class SileroVad:
    """Shared Silero VAD weights (one onnxruntime session); :meth:`prob` runs one window for one stream."""

    def __init__(self, path: str | Path | None = None, threads: int = 1):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.path = Path(path) if path is not None else silero_model_path()
        self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        names = {i.name for i in self.session.get_inputs()}
        if names != {"input", "state", "sr"}:
            raise InputError(f"not a Silero VAD v5+ model (inputs {sorted(names)})", self.path)

    def prob(self, window: np.ndarray, context: np.ndarray, state: np.ndarray) -> tuple[float, np.ndarray]:
        """Speech probability of a ``[512]`` window after ``[64]`` context samples; the new ``[2, 1, 128]`` state."""
        x = np.concatenate([context, window]).astype(np.float32)[None]
        out, new_state = self.session.run(
            None, {"input": x, "state": state, "sr": np.array(SAMPLE_RATE, dtype=np.int64)}
        )
        return float(out[0, 0]), new_state


_default_lock = threading.Lock()
_default: SileroVad | None = None


def default_vad() -> SileroVad:
    """One process-wide :class:`SileroVad` over the packaged model (created on first use)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = SileroVad()
        return _default


@dataclasses.dataclass
class VadConfig(Config):
    """Thresholds of the utterance segmenter (see the module docstring for their sources)."""

    threshold: float = 0.5
    """Speech probability at or above which a window is speech."""
    neg_threshold: float | None = None
    """Probability below which a window is silence; None = ``max(threshold - 0.15, 0.01)`` (Silero's default)."""
    min_speech_ms: float = 100.0
    """Speech an utterance must span before ``SpeechStart`` (shorter bursts are dropped)."""
    min_silence_ms: float = 500.0
    """Silence that ends an utterance."""
    speech_pad_ms: float = 30.0
    """Padding added on each side of a reported utterance."""
    max_utterance_s: float = 30.0
    """Longest utterance; longer speech is cut here (``SpeechEnd(reason="max_length")``)."""
    barge_in_ms: float = 64.0
    """Speech that, while the character answers, emits ``BargeIn``."""

    def validate(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        if self.neg_threshold is not None and not 0.0 < self.neg_threshold <= self.threshold:
            raise ValueError("neg_threshold must be in (0, threshold]")
        if not 0.0 <= self.min_speech_ms <= 5000.0 or not 32.0 <= self.min_silence_ms <= 10000.0:
            raise ValueError("min_speech_ms must be in [0, 5000] and min_silence_ms in [32, 10000]")
        if not 0.0 <= self.speech_pad_ms <= 1000.0 or not 1.0 <= self.max_utterance_s <= 600.0:
            raise ValueError("speech_pad_ms must be in [0, 1000] and max_utterance_s in [1, 600]")
        if not 0.0 <= self.barge_in_ms <= 2000.0:
            raise ValueError("barge_in_ms must be in [0, 2000]")

    @property
    def silence_threshold(self) -> float:
        return self.neg_threshold if self.neg_threshold is not None else max(self.threshold - 0.15, 0.01)


# ---- events --------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SpeechStart:
    """An utterance began at ``sample`` (16 kHz offset since the stream began, padding included)."""

    sample: int


@dataclasses.dataclass(frozen=True)
class SpeechEnd:
    """The utterance ``[start, end)`` ended; ``audio`` holds its float32 samples; ``reason`` is ``silence``,
    ``max_length`` or ``flush`` (the stream ended)."""

    start: int
    end: int
    audio: np.ndarray
    reason: str = "silence"


@dataclasses.dataclass(frozen=True)
class BargeIn:
    """The player spoke while the character answered; ``sample`` is where that speech began."""

    sample: int


VadEvent = SpeechStart | SpeechEnd | BargeIn


@dataclasses.dataclass
class VadState(StreamingState):
    """One microphone stream's segmenter state (numpy arrays and plain values; never modified in place)."""

    model_state: np.ndarray
    """Silero's recurrent state ``[2, 1, 128]``."""
    context: np.ndarray
    """The last 64 samples of the previous window ``[64]``."""
    pending: np.ndarray
    """Samples not yet forming a full window ``[< 512]``."""
    offset: int = 0
    """Samples consumed by windows so far (= the start of the next window)."""
    chunks: tuple[np.ndarray, ...] = ()
    """Audio kept for the current/next utterance, starting at ``buf_start``."""
    buf_start: int = 0
    candidate: int | None = None
    """Start of the first speech window of the current candidate or utterance."""
    last_speech_end: int = 0
    """End of the most recent speech window."""
    triggered: bool = False
    """SpeechStart was emitted for the current utterance."""
    silence_start: int | None = None
    floor: int = 0
    """End of the previous utterance: utterances never overlap (padding included)."""
    answering: bool = False
    barge_in_sent: bool = False


class UtteranceSegmenter:
    """Cuts a 16 kHz microphone stream into utterances (see the module docstring)."""

    def __init__(self, config: VadConfig | None = None, vad: SileroVad | None = None):
        self.cfg = config or VadConfig()
        self.vad = vad or default_vad()
        ms = SAMPLE_RATE // 1000
        self.min_speech = int(self.cfg.min_speech_ms * ms)
        self.min_silence = int(self.cfg.min_silence_ms * ms)
        self.pad = int(self.cfg.speech_pad_ms * ms)
        self.max_len = int(self.cfg.max_utterance_s * SAMPLE_RATE)
        self.barge_in = int(self.cfg.barge_in_ms * ms)

    def init_state(self) -> VadState:
        return VadState(
            model_state=np.zeros(STATE_SHAPE, np.float32),
            context=np.zeros(CONTEXT, np.float32),
            pending=np.zeros(0, np.float32),
        )

    def set_answering(self, state: VadState, answering: bool) -> VadState:
        """A new state that knows whether the character is answering (speech then emits ``BargeIn``)."""
        return dataclasses.replace(state, answering=bool(answering), barge_in_sent=False)

    # ---- input -----------------------------------------------------------------------------------------------------
    @staticmethod
    def _check(samples: np.ndarray, sample_rate: int) -> np.ndarray:
        if sample_rate != SAMPLE_RATE:
            raise InputError(
                f"the voice-activity detector takes 16000 Hz audio, got {sample_rate} Hz (resample the microphone "
                "stream to 16 kHz first)"
            )
        x = np.asarray(samples)
        if x.ndim != 1:
            raise InputError(f"microphone audio must be mono [n], got shape {x.shape}")
        if x.dtype == np.int16:
            return x.astype(np.float32) / 32768.0
        if not np.issubdtype(x.dtype, np.floating):
            raise InputError(f"microphone audio must be float32 or int16 PCM, got {x.dtype}")
        x = x.astype(np.float32, copy=False)
        if x.size and (not np.isfinite(x).all() or np.abs(x).max() > 1.0):
            raise InputError("microphone audio must be finite float PCM in [-1, 1]")
        return x

    # ---- the step --------------------------------------------------------------------------------------------------
    def step(
        self, samples: np.ndarray, state: VadState, sample_rate: int = SAMPLE_RATE
    ) -> tuple[list[VadEvent], VadState]:
        """Consume the next microphone chunk (``[n]`` float32 in [-1, 1] or int16, any n); -> (events, new state)."""
        x = self._check(samples, sample_rate)
        st = dataclasses.replace(state)
        events: list[VadEvent] = []
        if x.size:
            st.chunks = (*st.chunks, x)
        data = np.concatenate([st.pending, x]) if st.pending.size else x
        n_win = data.size // WINDOW
        for k in range(n_win):
            w = data[k * WINDOW : (k + 1) * WINDOW]
            p, st.model_state = self.vad.prob(w, st.context, st.model_state)
            st.context = w[-CONTEXT:].copy()
            self._window(p, st, events)
            st.offset += WINDOW
        st.pending = data[n_win * WINDOW :].copy()
        self._trim(st)
        return events, st

    def flush(self, state: VadState) -> tuple[list[VadEvent], VadState]:
        """End of the stream: ends an utterance in progress (``reason="flush"``) and returns a fresh state."""
        events: list[VadEvent] = []
        if state.triggered:
            end = max(state.last_speech_end, state.silence_start or 0)
            events.append(self._end(state, end, "flush"))
        return events, self.init_state()

    def _window(self, p: float, st: VadState, events: list[VadEvent]) -> None:
        c = self.cfg
        o, end_w = st.offset, st.offset + WINDOW
        if p >= c.threshold:
            st.silence_start = None
            if st.candidate is None:
                st.candidate = o
            st.last_speech_end = end_w
            self._maybe_start(st, events)
        elif st.candidate is not None and st.silence_start is None:
            if p < c.silence_threshold:
                st.silence_start = o
            else:  # hysteresis: speech goes on until the probability falls below neg_threshold (as in Silero)
                st.last_speech_end = end_w
                self._maybe_start(st, events)
        if st.candidate is None:
            return
        if not st.triggered:
            # a burst too short to be an utterance: dropped once no speech came for min_silence (whatever the
            # probabilities in between, so a candidate never holds audio forever)
            if end_w - st.last_speech_end >= self.min_silence:
                self._reset_candidate(st)
        elif st.silence_start is not None and end_w - st.silence_start >= self.min_silence:
            events.append(self._end(st, st.silence_start, "silence"))
        elif end_w + WINDOW - self._start(st) > self.max_len:  # the next window would pass the limit
            events.append(self._end(st, end_w - self.pad, "max_length"))

    def _maybe_start(self, st: VadState, events: list[VadEvent]) -> None:
        """BargeIn / SpeechStart once the candidate's speech spans ``barge_in_ms`` / ``min_speech_ms``."""
        span = st.last_speech_end - st.candidate
        if st.answering and not st.barge_in_sent and span >= self.barge_in:
            st.barge_in_sent = True
            events.append(BargeIn(st.candidate))
        if not st.triggered and span >= self.min_speech:
            st.triggered = True
            events.append(SpeechStart(self._start(st)))

    def _start(self, st: VadState) -> int:
        return max(st.floor, st.candidate - self.pad)

    def _end(self, st: VadState, speech_end: int, reason: str) -> SpeechEnd:
        start = self._start(st)
        end = speech_end + self.pad
        audio = np.concatenate(st.chunks) if st.chunks else np.zeros(0, np.float32)
        seg = audio[start - st.buf_start : end - st.buf_start].copy()
        st.floor = start + seg.size
        self._reset_candidate(st)
        return SpeechEnd(start, start + seg.size, seg, reason)

    def _reset_candidate(self, st: VadState) -> None:
        st.candidate = None
        st.triggered = False
        st.silence_start = None
        st.barge_in_sent = False

    def _trim(self, st: VadState) -> None:
        """Keep only the audio a future utterance can need (its padding before the next window) when idle."""
        if st.candidate is not None or not st.chunks:
            return
        keep_from = max(0, st.offset - self.pad)
        total = sum(c.size for c in st.chunks)
        if keep_from > st.buf_start:
            audio = np.concatenate(st.chunks)[keep_from - st.buf_start :]
            st.chunks = (audio,) if audio.size else ()
            st.buf_start = keep_from if audio.size else st.buf_start + total
