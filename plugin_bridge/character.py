"""Per-session game-character state of a protocol version 2 session (PROTOCOL.md §10): the character configuration,
its face (idle life + crossfade + emotion), and the hands-free microphone stream (resampling + Silero VAD).

The server (:mod:`plugin_bridge.server`) owns one :class:`CharacterSession` per v2 session. Everything here is plain
state plus small pure helpers; the server decides on which thread each piece runs:

- configuration checks (:func:`check_text`, :meth:`CharacterSession.prompt_context`) run on the main loop;
- :meth:`CharacterSession.face_turn_frames` runs on the turn's worker, :meth:`CharacterSession.idle_frames` on the main
  loop, never both at once for one session (``face_lock`` + ``face_turn``);
- :meth:`MicStream.feed` runs on a pool thread, one job at a time per session.
"""

from __future__ import annotations

import dataclasses
import struct
import threading
import unicodedata
from collections import deque
from collections.abc import Callable

import numpy as np

from a2llm_rt.audio import INPUT_SAMPLE_RATE
from a2llm_rt.audio_vad import WINDOW, BargeIn, SpeechEnd, SpeechStart, UtteranceSegmenter, VadState
from a2llm_rt.errors import InputError
from a2llm_rt.face.character_face import CharacterFace, CharacterFaceState
from a2llm_rt.face.emotion import EmotionBlender, EmotionState, EmotionTable, default_emotions
from a2llm_rt.face.idle import idle_to_layout
from a2llm_rt.face.layouts import get_layout
from plugin_bridge import protocol as P
from plugin_bridge.turn_source import convert_face

MAX_MIC_BACKLOG_S = 5.0
"""Mic audio waiting for the detector, per session: a client that sends faster than real time (or a stalled server)
gets ``Error(SERVER_BUSY)`` and its chunks dropped beyond this, instead of the server's memory growing."""
MIC_RATES = tuple(k * INPUT_SAMPLE_RATE for k in (1, 2, 3))
"""MicAudio rates the server takes (PROTOCOL.md §10.3): integer multiples of the detector's 16 kHz, decimated with a
streaming FIR; other rates (44.1 kHz) are resampled by the client."""
IDLE_BATCH = 2  # idle face frames per message (80 ms at 25 fps)
FADE_SAMPLES = 360  # the cancellation fade: 15 ms at 24 kHz (PROTOCOL.md §10.10)
DEFAULT_MODES = P.EMOTION_MODE_PROMPT | P.EMOTION_MODE_FACE


class TextRefused(Exception):
    """A persona / context / text refused with ``code`` (``TEXT_TOO_LONG`` or ``BAD_TEXT``) and a message."""

    def __init__(self, code: P.ErrorCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def check_text(text: str, what: str, max_chars: int, allow_empty: bool) -> str:
    """``text`` normalised as the engine will (NFC, stripped); :class:`TextRefused` when empty (unless allowed), over
    ``max_chars`` code points, or holding control characters other than newline and tab. The engine's own check
    (chat control tokens) comes after this one."""
    if len(text) > 4 * max_chars + 64:  # refuse a huge string before normalising it (it may be megabytes)
        raise TextRefused(P.ErrorCode.TEXT_TOO_LONG, f"{what} has {len(text)} characters; the limit is {max_chars}")
    t = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n").strip()
    if not t and not allow_empty:
        raise TextRefused(P.ErrorCode.BAD_TEXT, f"{what} is empty")
    if len(t) > max_chars:
        raise TextRefused(P.ErrorCode.TEXT_TOO_LONG, f"{what} has {len(t)} characters; the limit is {max_chars}")
    if any(unicodedata.category(ch) == "Cc" and ch not in "\n\t" for ch in t):
        raise TextRefused(P.ErrorCode.BAD_TEXT, f"{what} holds control characters")
    return t


@dataclasses.dataclass
class Emotion:
    name: str = "neutral"
    intensity: float = 0.0


class Decimator:
    """Streaming ``rate`` -> 16 kHz for integer ratios (1, 2, 3): a linear-phase low-pass FIR (cutoff 7.2 kHz, state
    carried across chunks) and every ``d``-th sample. Any chunking gives the same output. Delay: ``(taps - 1) / 2``
    input samples (0.5 ms at 48 kHz), ignored in the reported stream offsets."""

    def __init__(self, rate: int):
        from scipy.signal import firwin

        if rate not in MIC_RATES:
            raise ValueError(f"rate {rate} is not 16, 32 or 48 kHz")
        self.d = rate // INPUT_SAMPLE_RATE
        self.taps = firwin(16 * self.d + 1, 7200.0, fs=rate) if self.d > 1 else None
        self.zi = np.zeros(0 if self.taps is None else self.taps.size - 1)
        self.phase = 0  # input samples to skip before the next kept one

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """``[n]`` float32 at ``rate`` -> ``[m]`` float32 at 16 kHz."""
        if self.taps is None or x.size == 0:
            return x.astype(np.float32, copy=False)
        from scipy.signal import lfilter

        y, self.zi = lfilter(self.taps, 1.0, x.astype(np.float64), zi=self.zi)
        out = y[self.phase :: self.d]
        self.phase = (self.phase - x.size) % self.d
        return out.astype(np.float32)


@dataclasses.dataclass
class MicEvent:
    """A detector event in mic stream offsets at the client's rate (PROTOCOL.md §10.8)."""

    event: SpeechStart | SpeechEnd | BargeIn
    start: int  # SpeechStart/SpeechEnd: the utterance's start; BargeIn: where the speech began
    end: int  # SpeechEnd: the utterance's end (else = start)
    detected: int  # mic stream samples the detector had consumed when the event came out


class MicStream:
    """One session's hands-free microphone: contiguity checks (main loop), resampling + VAD (:meth:`feed`, a pool
    thread, one job at a time)."""

    def __init__(self, segmenter: UtteranceSegmenter):
        self.seg = segmenter
        self.rate = 0
        self.received = 0  # samples of the current stream accepted (client rate)
        self.generation = 0
        self.queue: deque[tuple[int, int, np.ndarray, bool]] = deque()  # (generation, rate, [n] float32, end)
        self.busy = False  # a feed job is scheduled or running (guarded by qlock)
        self.qlock = threading.Lock()
        self.answering = False  # set by the main loop: a turn of this session runs (speech then barges in)
        self._state: VadState | None = None
        self._decim: Decimator | None = None
        self._fed16 = 0  # 16 kHz samples given to the detector in this stream
        self._rate = INPUT_SAMPLE_RATE  # the client rate of the stream being fed
        self._gen_fed = -1
        self.lock = threading.Lock()

    def accept(self, msg: P.MicAudio) -> tuple[P.ErrorCode, str] | None:
        """Main loop: check one chunk and queue it; returns ``(code, message)`` when it is refused (dropped)."""
        if msg.sample_rate not in MIC_RATES:
            rates = ", ".join(str(r) for r in MIC_RATES)
            return P.ErrorCode.UNSUPPORTED_RATE, (
                f"MicAudio at {msg.sample_rate} Hz is not supported (use one of {rates} Hz); chunk dropped"
            )
        x = msg.as_float32()
        if x.size and float(np.abs(x).max()) > 1.0:
            return P.ErrorCode.BAD_VALUE, "MicAudio F32 samples must lie in [-1.0, 1.0]; chunk dropped"
        if msg.sample_offset == 0:
            self.generation += 1
            self.rate, self.received = msg.sample_rate, 0
        elif self.rate == 0 or msg.sample_offset != self.received or msg.sample_rate != self.rate:
            return P.ErrorCode.BAD_VALUE, (
                f"MicAudio out of sequence: expected offset {self.received} at {self.rate} Hz, got "
                f"{msg.sample_offset} at {msg.sample_rate} Hz; chunk dropped (start a new stream at offset 0)"
            )
        with self.qlock:
            backlog = sum(q[2].size / q[1] for q in self.queue)
        if backlog + x.size / msg.sample_rate > MAX_MIC_BACKLOG_S:
            return P.ErrorCode.SERVER_BUSY, (
                f"more than {MAX_MIC_BACKLOG_S:g} s of MicAudio waits for the voice-activity detector (send in real "
                "time); chunk dropped: restart the stream at offset 0"
            )
        self.received += int(x.size)
        item = (self.generation, msg.sample_rate, np.array(x, np.float32), msg.end_of_stream)
        if msg.end_of_stream:
            self.rate, self.received = 0, 0  # the next chunk must start a new stream
        with self.qlock:
            self.queue.append(item)
        return None

    def claim(self) -> bool:
        """Main loop: True when the caller must schedule a :meth:`feed` job (none is scheduled or running)."""
        with self.qlock:
            if self.busy or not self.queue:
                return False
            self.busy = True
            return True

    def _pop(self) -> tuple[int, int, np.ndarray, bool] | None:
        with self.qlock:
            if self.queue:
                return self.queue.popleft()
            self.busy = False
            return None

    def feed(self, post: Callable[[list[MicEvent]], None]) -> None:
        """Pool thread: run every queued chunk through the detector, one 32 ms window at a time (so an event's
        ``detected`` offset is exact to the window), and hand the events to ``post`` (in order: under the lock)."""
        out: list[MicEvent] = []
        with self.lock:
            while (item := self._pop()) is not None:
                gen, rate, x, end = item
                if gen != self._gen_fed:  # a new stream: fresh detector, fresh resampler
                    self._gen_fed = gen
                    self._state = self.seg.init_state()
                    self._decim = Decimator(rate)
                    self._fed16 = 0
                    self._rate = rate
                y = self._decim(x)
                for i in range(0, y.size, WINDOW):
                    if self._state.answering != self.answering:
                        self._state = self.seg.set_answering(self._state, self.answering)
                    w = y[i : i + WINDOW]
                    evs, self._state = self.seg.step(w, self._state)
                    self._fed16 += w.size
                    out += [self._event(e) for e in evs]
                if end:
                    evs, self._state = self.seg.flush(self._state)
                    out += [self._event(e) for e in evs]
                    self._gen_fed = -1
            if out:
                post(out)

    def _event(self, e: SpeechStart | SpeechEnd | BargeIn) -> MicEvent:
        c = self.to_client
        if isinstance(e, SpeechEnd):
            return MicEvent(e, c(e.start), c(e.end), c(self._fed16))
        return MicEvent(e, c(e.sample), c(e.sample), c(self._fed16))

    def to_client(self, s16: int) -> int:
        """A 16 kHz detector offset as a mic stream offset at the client's rate."""
        return s16 * self._rate // INPUT_SAMPLE_RATE


class CharacterSession:
    """The v2 state of one bridge session (PROTOCOL.md §10)."""

    def __init__(
        self,
        sid: int,
        layouts: tuple[int, ...],
        idle: bool,
        face: CharacterFace,
        emotions: EmotionTable,
        segmenter: UtteranceSegmenter | None,
        seed: int,
    ):
        self.sid = sid
        self.layouts = tuple(lid for lid in layouts if lid)
        self.idle = idle and bool(self.layouts)
        self.emotions = emotions
        self.persona = ""
        self.voice = ""
        self.modes = DEFAULT_MODES
        self.default = Emotion()
        self.next_turn: Emotion | None = None  # SetEmotion(NEXT_TURN), used by the next turn that starts
        self.turn_emotion: Emotion | None = None  # the emotion of the running turn when it is not the default
        self.context = ""  # the game's context text
        self.face = face
        self.blender: EmotionBlender = face.emotion
        self.face_lock = threading.Lock()
        self.face_state: CharacterFaceState = face.init_state(seed)
        self.emotion_state: EmotionState = self.blender.init_state()  # sessions without idle: emotion only
        self.face_turn = 0  # the turn whose frames own the face now (0: the idle stream)
        self.listening = False
        self.idle_frame = 0  # idle frames sent so far (FaceFrames.first_frame of the next idle message)
        self.idle_t0: float | None = None  # monotonic time of idle frame `idle_base`; None = idle paused
        self.idle_base = 0
        self.mic = MicStream(segmenter) if segmenter is not None else None
        self.next_server_turn = P.SERVER_TURN_BIT
        self.speech_turn = 0  # the server turn id of the utterance being heard (SpeechStarted sent)
        self.last_sent_face: np.ndarray | None = None  # [61] or [52]: the last turn frame a client got
        self.last_sample = 0.0  # the last answer audio sample a client got (the fade starts from it)

    # --- emotion -----------------------------------------------------------------------------------------------
    def active_emotion(self) -> Emotion:
        return self.turn_emotion or self.default

    def prompt_context(self, max_chars: int) -> str | None:
        """The engine's game context: the game's text, then (PROMPT mode) the active emotion's instruction."""
        parts = [self.context] if self.context else []
        e = self.active_emotion()
        if self.modes & P.EMOTION_MODE_PROMPT and e.intensity > 0:
            parts.append(self.emotions.instruction(e.name, e.intensity))
        text = "\n".join(p for p in parts if p)
        return text[:max_chars] or None

    def apply_face_emotion(self) -> None:
        """Blend the face toward the active emotion (FACE mode; neutral at 0 otherwise)."""
        e = self.active_emotion()
        name, i = (e.name, e.intensity) if self.modes & P.EMOTION_MODE_FACE else ("neutral", 0.0)
        with self.face_lock:
            st = self.face_state.emotion
            if (st.name, st.intensity) != (name, i):
                self.face_state = self.face.set_emotion(self.face_state, name, i)
            es = self.emotion_state
            if (es.name, es.intensity) != (name, i):
                self.emotion_state = self.blender.set_emotion(es, name, i)

    # --- face ----------------------------------------------------------------------------------------------------
    def turn_face(
        self, tid: int, frames: dict[str, np.ndarray], names: list[str], cancel: threading.Event
    ) -> list[tuple[str, np.ndarray]]:
        """Worker: one face event of turn ``tid`` (``frames`` as the source made them) in each layout of ``names``,
        through the character's face: crossfade from idle + emotion (LIVELINK61 / ARKIT52; FLAME58 unchanged).
        Layouts that cannot be made from ``frames`` are left out. A cancelled turn never takes the face back from
        the idle stream (``cancel`` is checked under the lock the main loop takes to resume idle)."""
        out: list[tuple[str, np.ndarray]] = []
        ll = convert_face(frames, "livelink61")
        done = None
        if ll is not None and any(n != "flame58" for n in names):
            with self.face_lock:
                if cancel.is_set():
                    pass
                elif self.idle and self.face_turn in (0, tid):
                    self.face_turn = tid
                    done, self.face_state = self.face.step(ll.shape[0], self.face_state, answer=ll)
                elif not self.idle:
                    done, self.emotion_state = self.blender.step(ll, self.emotion_state)
            if done is None:  # the face belongs to another turn (a late frame of a cancelled one): unprocessed
                done = ll
        for n in names:
            v = convert_face(frames, n) if n == "flame58" or done is None else idle_to_layout(done, n)
            if v is not None:
                out.append((n, v))
        return out

    def idle_frames(self, now: float, fps: float) -> tuple[int, np.ndarray] | None:
        """Main loop: the idle frames due by ``now`` (``(first_frame, [n, 61])``, n >= IDLE_BATCH) or None."""
        with self.face_lock:
            if not self.idle or self.face_turn != 0 or self.idle_t0 is None or now < self.idle_t0:
                return None
            due = int((now - self.idle_t0) * fps) + 1 - (self.idle_frame - self.idle_base)
            if due < IDLE_BATCH:
                return None
            due = min(due, 25)  # after a stall: catch up by at most a second at once
            frames, self.face_state = self.face.step(due, self.face_state)
            first = self.idle_frame
            self.idle_frame += due
            if due == 25:
                self.idle_t0, self.idle_base = now, self.idle_frame
            return first, frames

    def resume_idle(self, at: float, last_frame: np.ndarray | None = None) -> None:
        """Main loop: the turn is over; the idle stream resumes at monotonic time ``at``. ``last_frame`` ``[61]``:
        the last turn frame the client got (a cancelled turn), so the fade back to idle starts from it."""
        with self.face_lock:
            self.face_turn = 0
            held = self.face_state.fade.last_answer
            if last_frame is not None and held is not None:
                held = held.copy()
                held[: last_frame.shape[0]] = last_frame  # arkit52: the head and eyes stay as generated
                fade = dataclasses.replace(self.face_state.fade, last_answer=held)
                self.face_state = dataclasses.replace(self.face_state, fade=fade)
            self.last_sent_face = None
            self.idle_t0, self.idle_base = at, self.idle_frame

    def set_listening(self, on: bool) -> None:
        with self.face_lock:
            self.listening = on
            self.face_state = self.face.set_listening(self.face_state, on)

    def layout_names(self) -> list[str]:
        return [get_layout(lid).name for lid in self.layouts]


def make_face(fps: float) -> tuple[CharacterFace, EmotionTable]:
    """The shared face pipeline and emotion table (one per server)."""
    table = default_emotions()
    return CharacterFace(emotions=EmotionBlender(table, fps=fps)), table


def fade_out(samples: np.ndarray | None, last: float, n: int = FADE_SAMPLES) -> np.ndarray:
    """The cancellation fade ``[n]`` float32: ``samples`` (the answer's next, unsent audio) or, when there is none,
    the last sample held, times a linear ramp from 1 to 0 (PROTOCOL.md §10.10)."""
    ramp = np.linspace(1.0, 0.0, n, dtype=np.float32)
    if samples is not None and samples.size >= n:
        src = samples[:n].astype(np.float32)
    else:
        src = np.full(n, last, np.float32)
        if samples is not None and samples.size:
            src[: samples.size] = samples
    return (src * ramp).astype(np.float32)


def check_voice(voice: str, voices: tuple[str, ...]) -> None:
    """:class:`InputError` unless ``voice`` is empty or one of ``voices``."""
    if voice and voice not in voices:
        have = ", ".join(voices) if voices else "one unnamed voice (send an empty voice name)"
        raise InputError(f"unknown voice {voice!r} (this server has {have})")


def note_sent(cs: CharacterSession, kind: int, payload: bytes) -> None:
    """Main loop, for each message of a turn that left: remember the last audio sample and the last ARKit /
    Live Link face frame the client got (the cancellation fade and the fade back to idle start from them)."""
    if kind == P.Kind.AUDIO_CHUNK:
        n = struct.unpack_from("<I", payload, 16)[0]
        if n:
            if payload[0] == P.AudioFormat.F32:
                cs.last_sample = struct.unpack_from("<f", payload, 20 + 4 * (n - 1))[0]
            else:
                cs.last_sample = struct.unpack_from("<h", payload, 20 + 2 * (n - 1))[0] / 32768.0
    elif kind == P.Kind.FACE_FRAMES and payload[12] in (2, 3):  # arkit52, livelink61
        dims, n = struct.unpack_from("<HI", payload, 14)
        cs.last_sent_face = np.frombuffer(payload, "<f4", count=dims, offset=20 + 4 * dims * (n - 1)).copy()
