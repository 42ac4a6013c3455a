"""What the bridge server drives: a :class:`TurnSource` that turns a user's utterance into a stream of events.

The server does not know about models. For every turn it calls ``source.run_turn(session_id, audio, cancel)`` on a
worker thread and forwards the events it yields:

- :class:`TextDelta` (text), :class:`AudioChunk` (``[n]`` float32 at 24 kHz + sample offset),
- :class:`FaceFrames` (first frame, fps, and ``[n, D]`` float32 frames in one or more layouts),
- :class:`TurnEnd` (timings), always last.

A source reports a failed turn by raising (:class:`TurnError` for a failure it knows about; the server answers
``TURN_FAILED``) and a full house by raising :class:`SourceBusyError` from ``open_session`` (``SERVER_BUSY``).

Two sources exist: :class:`EngineSource`, the adapter to the real session engine (``a2llm_rt.engine``; the default
of ``python -m plugin_bridge.serve``, also for ``--backbone tiny --motion tiny``), and :class:`ScriptedSource`
(deterministic text, a tone and a face sweep: tests that check exact values, the benchmark, ``serve --scripted``).
"""

from __future__ import annotations

import functools
import math
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from a2llm_rt.engine.motion_backend import MotionBackendConfig

from a2llm_rt.face.layouts import ARKIT52, ARKIT_INDEX, FLAME58, LIVELINK61, LIVELINK_HEAD

OUTPUT_SAMPLE_RATE = 24000
INPUT_SAMPLE_RATE = 16000
FPS = 25.0
SAMPLES_PER_FRAME = 960  # 24000 / 25
MAX_FACE_LEAD_S = 0.5  # an aligned engine turn never sends face frames further ahead of its audio (PROTOCOL.md 4.5)


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
    ttft_s: float = -1.0  # A2-LLM §6.1 TTFT: turn start -> first generated audio token (s; -1 = not measured)
    ttfa_s: float = -1.0  # A2-LLM §6.1 TTFA: turn start -> first facial motion frame
    rtf: float = -1.0  # A2-LLM §6.1 RTF: generation time / duration of the synthesized speech
    cancelled: bool = False  # the source stopped the turn early (the server reports TurnEnd(CANCELLED))


Event = TextDelta | AudioChunk | FaceFrames | TurnEnd


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


# --- game characters (protocol v2): what the server asks of a source -----------------------------------------------
@dataclass
class CharacterLimits:
    """Longest persona / game context / typed turn a source takes, in Unicode code points."""

    persona: int = 4000
    context: int = 1000
    text: int = 2000


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


# --- scripted source -----------------------------------------------------------------------------------------------
_TONE_PERIOD = 12000  # samples: the 220 Hz tone times its 2 Hz envelope repeats every 0.5 s
_FACE_PERIOD = 300  # frames: the least common multiple of the face sweeps' periods (25, 75 and 100 frames)


@functools.cache
def _tone_period() -> np.ndarray:
    """One period ``[12000]`` float32 of the scripted answer's audio (computed once: the benchmark's server would
    otherwise spend most of its time making test tones)."""
    t = np.arange(_TONE_PERIOD, dtype=np.float64) / OUTPUT_SAMPLE_RATE
    env = 0.5 + 0.5 * np.sin(2 * math.pi * 2.0 * t)
    return (0.3 * env * np.sin(2 * math.pi * 220.0 * t)).astype(np.float32)


@functools.cache
def _face_period() -> dict[str, np.ndarray]:
    """One period (300 frames) of the scripted face in each layout."""
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
    out = {"flame58": fl.astype(np.float32), "arkit52": ar.astype(np.float32), "livelink61": ll.astype(np.float32)}
    for v in out.values():
        v.flags.writeable = False  # shared by every turn
    return out


@dataclass
class ScriptedSource(_ScriptedCharacters):
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
        """``[n]`` float32 samples ``start .. start + n - 1`` of the scripted answer (a 220 Hz tone, 0.3 peak)."""
        return _tone_period()[np.arange(start, start + n) % _TONE_PERIOD]

    @staticmethod
    def face(first: int, n: int) -> dict[str, np.ndarray]:
        """Frames ``first .. first + n - 1``: ``{"arkit52": [n, 52], "livelink61": [n, 61], "flame58": [n, 58]}``."""
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
                yield TextDelta(deltas.pop(0))
            if ttft < 0:  # the script's audio "token" and face motion exist when their first event is made
                ttft = time.monotonic() - t0
            yield AudioChunk(self.audio(frame * SAMPLES_PER_FRAME, n * SAMPLES_PER_FRAME), frame * SAMPLES_PER_FRAME)
            face = self.face(frame, n)
            if ttfa < 0:
                ttfa = time.monotonic() - t0
            yield FaceFrames(frame, {k: v for k, v in face.items() if k in self.layouts})
            frame += n
        if deltas:  # text longer than the audio: flush the rest
            yield TextDelta("".join(deltas))
        elapsed = time.monotonic() - t0
        yield TurnEnd(ttft_s=ttft, ttfa_s=ttfa, rtf=elapsed / (total / FPS))


# --- the real engine -----------------------------------------------------------------------------------------------
class _Pacer:
    """Holds events back until their place in the answer is due: sample ``offset`` at ``t0 + offset / rate / pace``,
    where ``t0`` is set by the first event (``pace`` 0 = no waiting)."""

    def __init__(self, pace: float, cancel: threading.Event):
        self.pace = pace
        self.cancel = cancel
        self.t0: float | None = None

    def wait(self, offset: int) -> bool:
        """Wait until sample ``offset`` is due; False when the turn was cancelled (before or while waiting)."""
        if self.cancel.is_set():
            return False
        if self.pace <= 0:
            return True
        at = offset / OUTPUT_SAMPLE_RATE / self.pace
        now = time.monotonic()
        if self.t0 is None:
            self.t0 = now - at
        delay = self.t0 + at - now
        return not (delay > 0 and self.cancel.wait(delay))


_CONTROL = dict.fromkeys([*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F])


def clean_text(text: str) -> str:
    """``text`` as valid UTF-8 without C0 control characters other than tab, newline and carriage return.

    Random test models emit any byte; clients that hold text as C strings (the native core) must never see a NUL.
    """
    return text.encode("utf-8", "replace").decode("utf-8").translate(_CONTROL)


@dataclass
class EngineOptions:
    """How :meth:`EngineSource.load` builds the engine (``tiny`` models get short answers so that tests stay fast)."""

    device: str = "cpu"
    vocoder: str = "tone"
    """``tone`` (the test vocoder) or a Step-Audio-2 token2wav directory."""
    prompt_wav: str | None = None
    """Reference voice for token2wav."""
    voices: tuple[tuple[str, str], ...] = ()
    """Named token2wav voices (name, prompt wav or voice file); the first is the default."""
    seed: int = 0
    """Seed of the tiny random weights; session ``n`` samples with seed ``seed + n``."""
    sessions: int = 8
    """Engine cache rows = sessions open at once (they all decode in one batch)."""
    max_seconds: float | None = None
    """Answer audio per turn (None: 3 s for tiny models, 30 s for real weights)."""
    min_seconds: float | None = None
    """Answer audio before the model may stop (None: 2 s for tiny models, 0 for real weights)."""
    max_len: int | None = None
    """Tokens per cache row (None: 2048 tiny, 8192 real)."""
    motion_backend: MotionBackendConfig | None = None
    """Runtime of the motion stack (None: torch)."""


class EngineSource:
    """:class:`TurnSource` over the session engine (``a2llm_rt.engine.Engine``); weights shared, one engine session
    (cache row) per bridge session, all sessions' decode steps batched by the engine's background loop.

    Engine events map 1:1 onto the bridge's: ``TextDelta`` -> :class:`TextDelta`, ``AudioChunk`` ->
    :class:`AudioChunk`, ``FaceFrames`` -> :class:`FaceFrames` (its ``.frames`` dict), ``TurnEnd`` ->
    :class:`TurnEnd` (``reason == "cancelled"`` -> ``cancelled=True``), ``Error`` -> raise :class:`TurnError`.

    ``pace`` > 0 holds each audio chunk / face window back until its place in the answer is due in (real time /
    pace) from the first one, as a model running at real time would deliver it (tiny random models generate
    many times faster than real time; 0 = forward as fast as generated).

    ``align`` (default) holds each audio chunk back until the face frames covering it have gone out: the motion
    stack answers a window of ``W`` audio positions at a time, so the engine's face runs up to ``W`` frames behind
    its audio; aligned, a client that plays audio on arrival always has the face for the instant it plays (the
    first audio then leaves with the first face frames, the engine's TTFA). Face frames, in turn, wait while they
    would start more than :data:`MAX_FACE_LEAD_S` past the audio already released (the vocoder holds audio back) and
    no held audio waits for them, so a client's face buffer needs at most that lead, or one audio chunk when chunks
    are longer. Text is never held.
    """

    def __init__(self, engine: object, pace: float = 0.0, align: bool = True, settle_timeout_s: float = 10.0):
        if pace < 0:
            raise ValueError(f"pace must be >= 0, got {pace}")
        stack = engine.stack  # type: ignore[attr-defined]
        rate = int(stack.vocoder.sample_rate)
        fps = float(stack.motion.cfg.fps)
        if rate != OUTPUT_SAMPLE_RATE or fps != FPS:
            raise ValueError(
                f"the bridge streams {OUTPUT_SAMPLE_RATE} Hz audio and {FPS:g} fps faces; "
                f"this engine makes {rate} Hz and {fps:g} fps"
            )
        self.engine = engine
        self.pace = float(pace)
        self.align = align
        self.settle_timeout_s = settle_timeout_s
        flame = stack.motion.cfg.layout == "flame58"
        self.layouts: tuple[str, ...] = ("flame58", "arkit52", "livelink61") if flame else ("arkit52", "livelink61")
        self._sessions: dict[int, tuple[object, threading.Lock]] = {}
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls,
        backbone: str | Path,
        motion: str | Path,
        options: EngineOptions | None = None,
        pace: float = 0.0,
        align: bool = True,
    ) -> EngineSource:
        """An engine over ``backbone`` / ``motion`` (directories, or ``tiny`` for seeded random test models).

        Raises :class:`~a2llm_rt.errors.InputError` for unusable weight folders.
        """
        from a2llm_rt.engine.builders import load_stack
        from a2llm_rt.engine.engine import Engine, EngineConfig
        from a2llm_rt.engine.motion_backend import MotionBackendConfig

        o = options or EngineOptions()
        tiny = str(backbone) == "tiny"
        max_s = o.max_seconds if o.max_seconds is not None else (3.0 if tiny else 30.0)
        min_s = o.min_seconds if o.min_seconds is not None else (min(2.0, max_s) if tiny else 0.0)
        max_len = o.max_len if o.max_len is not None else (2048 if tiny else 8192)
        cfg = EngineConfig(
            max_sessions=o.sessions, max_seconds=max_s, min_seconds=min_s, max_len=max_len,
            motion_backend=o.motion_backend or MotionBackendConfig(),
        )  # fmt: skip
        cfg.sampling.seed = o.seed
        cfg.validate()
        stack = load_stack(
            backbone,
            motion,
            device=o.device,
            vocoder=o.vocoder,
            prompt_wav=o.prompt_wav,
            seed=o.seed,
            voices=dict(o.voices),
        )
        return cls(Engine(stack, cfg), pace=pace, align=align)

    @property
    def max_sessions(self) -> int:
        return int(self.engine.cfg.max_sessions)  # type: ignore[attr-defined]

    def open_session(self, session_id: int) -> None:
        from a2llm_rt.engine.engine import EngineBusyError

        try:
            session = self.engine.new_session(session_id=session_id)  # type: ignore[attr-defined]
        except EngineBusyError as e:
            raise SourceBusyError(str(e)) from None
        with self._lock:
            self._sessions[session_id] = (session, threading.Lock())

    def close_session(self, session_id: int) -> None:
        with self._lock:
            entry = self._sessions.pop(session_id, None)
        if entry is not None:
            entry[0].close()  # type: ignore[attr-defined]  # drops a running turn; its worker sees session.closed

    def close(self) -> None:
        """Close every session and stop the engine's background loop."""
        with self._lock:
            ids = list(self._sessions)
        for sid in ids:
            self.close_session(sid)
        self.engine.shutdown()  # type: ignore[attr-defined]

    # --- game characters (protocol v2) ---------------------------------------------------------------------------
    @property
    def voices(self) -> tuple[str, ...]:
        """The vocoder's voice names, its default first (empty: one unnamed voice, e.g. the tone vocoder)."""
        voc = self.engine.stack.vocoder  # type: ignore[attr-defined]
        names = tuple(voc.voices)
        default = getattr(voc, "default_voice", None)
        return (default, *(n for n in names if n != default)) if default in names else names

    @property
    def limits(self) -> CharacterLimits:
        c = self.engine.cfg  # type: ignore[attr-defined]
        return CharacterLimits(c.max_persona_chars, c.max_context_chars, c.max_text_chars)

    def check_text(self, text: str, what: str, max_chars: int, allow_empty: bool = False) -> str:
        """The engine's check of untrusted text (:class:`~a2llm_rt.errors.InputError`: control tokens, ...)."""
        return self.engine.fmt.plain_text(text, what, max_chars, allow_empty)  # type: ignore[attr-defined]

    def _session(self, session_id: int) -> tuple[object, threading.Lock]:
        from a2llm_rt.errors import InputError

        with self._lock:
            entry = self._sessions.get(session_id)
        if entry is None:
            raise InputError(f"session {session_id} is not open")
        return entry

    def configure(self, session_id: int, persona: str | None, voice: str | None) -> bool:
        """Persona (None: the engine's default) and voice (None: the default) of a session, between turns. A changed
        persona reopens the engine session on the same id (a new conversation; the game context is kept); returns
        True then. :class:`~a2llm_rt.errors.InputError` for bad text or an unknown voice (nothing changed)."""
        from a2llm_rt.errors import InputError

        session, turn_lock = self._session(session_id)
        known = self.engine.stack.vocoder.voices  # type: ignore[attr-defined]
        if voice is not None and known and voice not in known:
            raise InputError(f"unknown voice {voice!r}")
        default = self.engine.cfg.system_prompt  # type: ignore[attr-defined]
        if persona is not None:
            persona = self.check_text(persona, "persona", self.limits.persona)
        if (persona if persona is not None else default) == session.system_prompt:  # type: ignore[attr-defined]
            session.voice = voice  # type: ignore[attr-defined]  # read when the next turn starts
            return False
        context = session.context  # type: ignore[attr-defined]
        with turn_lock:  # a cancelled turn of this session has settled
            session.close()  # type: ignore[attr-defined]
            new = self.engine.new_session(  # type: ignore[attr-defined]
                session_id=session_id, system_prompt=persona if persona is not None else ..., voice=voice
            )
            new.context = context
            with self._lock:
                self._sessions[session_id] = (new, turn_lock)
        return True

    def set_context(self, session_id: int, text: str | None) -> None:
        """The game context for the next turns (no reset); :class:`~a2llm_rt.errors.InputError` for bad text."""
        session, _ = self._session(session_id)
        self.engine.set_context(session, text)  # type: ignore[attr-defined]

    def run_turn(self, session_id: int, audio: np.ndarray, cancel: threading.Event) -> Iterator[Event]:
        """The engine's events for one utterance (``[n]`` float32 16 kHz), converted; see the class docstring."""
        with self._lock:
            entry = self._sessions.get(session_id)
        if entry is None:
            raise TurnError(f"session {session_id} is not open")
        session, turn_lock = entry
        with turn_lock:  # the previous turn of this session has settled (its TurnEnd consumed)
            yield from self._turn(session, audio, cancel)

    def _turn(self, session: object, audio: np.ndarray, cancel: threading.Event) -> Iterator[Event]:
        from a2llm_rt.engine import events as E
        from a2llm_rt.errors import InputError

        q = session.events  # type: ignore[attr-defined]
        while not q.empty():  # stale events (none expected: every turn settles before the next)
            q.get_nowait()
        try:
            if isinstance(audio, str):  # a typed turn (protocol v2 UserText)
                self.engine.submit_text(session, audio)  # type: ignore[attr-defined]
            else:
                self.engine.submit(session, audio, INPUT_SAMPLE_RATE)  # type: ignore[attr-defined]
        except InputError as e:
            raise TurnError(str(e), "input") from None
        self.engine.start_background()  # type: ignore[attr-defined]
        settled = False
        asked_cancel = False
        pacer = _Pacer(self.pace, cancel)
        held: list[AudioChunk] = []  # audio waiting for the face frames that cover it (align)
        faces: list[FaceFrames] = []  # face frames waiting for audio within MAX_FACE_LEAD_S of them (align)
        face_end = 0  # answer samples covered by the face frames released so far
        audio_end = 0  # answer samples of the audio released so far
        lead = round(MAX_FACE_LEAD_S * OUTPUT_SAMPLE_RATE)
        try:
            while True:
                if cancel.is_set() and not asked_cancel:
                    self.engine.cancel(session)  # type: ignore[attr-defined]
                    asked_cancel = True
                if session.closed:  # type: ignore[attr-defined]  # closed under us: the engine dropped the turn
                    settled = True
                    return
                try:
                    e = q.get(timeout=0.02)
                except queue.Empty:
                    continue
                if isinstance(e, E.Error):
                    settled = True
                    raise TurnError(f"{e.kind} error: {e.message}", e.kind)
                if isinstance(e, E.TurnEnd):
                    settled = True
                    rest = sorted(
                        [
                            *((a, a.sample_offset) for a in held),
                            *((f, f.first_frame * SAMPLES_PER_FRAME) for f in faces),
                        ],
                        key=lambda x: x[1],
                    )
                    for out, offset in rest:  # the answer's last audio and face, in answer order
                        if pacer.wait(offset):
                            yield out
                    yield TurnEnd(float(e.ttft_s), float(e.ttfa_s), float(e.rtf), cancelled=e.reason == "cancelled")
                    return
                if isinstance(e, E.TextDelta):
                    text = clean_text(e.text)
                    if text:
                        yield TextDelta(text)
                    continue
                ready: list[tuple[Event, int]] = []  # (event, its first answer sample)
                if isinstance(e, E.AudioChunk):
                    held.append(AudioChunk(np.asarray(e.pcm, np.float32).reshape(-1), int(e.sample_offset)))
                elif isinstance(e, E.FaceFrames):
                    frames = {k: np.asarray(v, np.float32) for k, v in e.frames.items()}
                    faces.append(FaceFrames(int(e.first_frame), frames, float(e.fps)))
                moved = True
                while moved:  # release alternately: audio covered by face, face within `lead` of the audio
                    moved = False
                    while faces and (
                        not self.align
                        or faces[0].first_frame * SAMPLES_PER_FRAME <= audio_end + lead
                        or (held and held[0].sample_offset + held[0].pcm.shape[0] > face_end)  # audio waits for it
                    ):
                        f = faces.pop(0)
                        ready.append((f, f.first_frame * SAMPLES_PER_FRAME))
                        face_end = (f.first_frame + f.num_frames) * SAMPLES_PER_FRAME
                        moved = True
                    while held and (not self.align or held[0].sample_offset + held[0].pcm.shape[0] <= face_end):
                        a = held.pop(0)
                        ready.append((a, a.sample_offset))
                        audio_end = a.sample_offset + a.pcm.shape[0]
                        moved = True
                for out, offset in ready:
                    if not pacer.wait(offset):
                        break  # cancelled: the next pass asks the engine to stop, then waits for its TurnEnd
                    yield out
        finally:
            if not settled:  # the consumer stopped early: end the engine's turn before this session's next one
                self._settle(session, q)

    def _settle(self, session: object, q: object) -> None:
        from a2llm_rt.engine import events as E

        self.engine.cancel(session)  # type: ignore[attr-defined]
        deadline = time.monotonic() + self.settle_timeout_s
        while time.monotonic() < deadline and not session.closed:  # type: ignore[attr-defined]
            try:
                e = q.get(timeout=0.02)  # type: ignore[attr-defined]
            except queue.Empty:
                continue
            if isinstance(e, E.TurnEnd | E.Error):
                return


def make_source(
    backbone: str,
    motion: str,
    scripted: bool = False,
    engine: EngineOptions | None = None,
    pace: float = 0.0,
    align: bool = True,
    **script: object,
) -> TurnSource:
    """``scripted`` -> :class:`ScriptedSource` (``script`` keyword overrides, e.g. ``seconds``; ``pace`` applies);
    otherwise :class:`EngineSource` over ``backbone`` / ``motion`` (directories or ``tiny``)."""
    if scripted:
        return ScriptedSource(pace=pace, **script)  # type: ignore[arg-type]
    return EngineSource.load(backbone, motion, engine, pace=pace, align=align)
