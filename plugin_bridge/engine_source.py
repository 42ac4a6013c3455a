""":class:`EngineSource`: the :class:`~plugin_bridge.turn_source.TurnSource` over the session engine
(``a2llm_rt.engine``) in this process; also what every Ray replica runs (:mod:`plugin_bridge.ray_source`), so both
sources deliver one event path: the engine's events, text cleaned for C-string clients, audio aligned behind the face
frames that cover it. Pacing is the server's (:attr:`EngineSource.pace`)."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from a2llm_rt.config import Config
from a2llm_rt.engine import events as E
from plugin_bridge.turn_source import (
    FPS,
    INPUT_SAMPLE_RATE,
    OUTPUT_SAMPLE_RATE,
    SAMPLES_PER_FRAME,
    CharacterLimits,
    Event,
    SourceBusyError,
    TurnError,
)

if TYPE_CHECKING:
    from a2llm_rt.engine.engine import EngineConfig

MAX_FACE_LEAD_S = 0.5  # an aligned engine turn never sends face frames further ahead of its audio (PROTOCOL.md 4.5)

_CONTROL = dict.fromkeys([*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F])


def clean_text(text: str) -> str:
    """``text`` as valid UTF-8 without C0 control characters other than tab, newline and carriage return.

    Random test models emit any byte; clients that hold text as C strings (the native core) must never see a NUL.
    """
    return text.encode("utf-8", "replace").decode("utf-8").translate(_CONTROL)


@dataclass
class StackOptions(Config):
    """How :meth:`EngineSource.load` loads the models (the arguments of ``a2llm_rt.engine.builders.load_stack``);
    the engine's limits and batching are its :class:`~a2llm_rt.engine.engine.EngineConfig`."""

    device: str = "cpu"
    vocoder: str = "tone"
    """``tone`` (the test vocoder) or a Step-Audio-2 token2wav directory."""
    prompt_wav: str | None = None
    """Reference voice for token2wav."""
    voices: tuple[tuple[str, str], ...] = ()
    """Named token2wav voices (name, prompt wav or voice file); the first is the default."""
    seed: int = 0
    """Seed of the tiny random weights."""
    speech_engines: str | None = None
    """A speech engines folder for the token2wav (python -m export.speech_export; + export.speech_trt)."""
    speech_backend: str = "auto"
    """What runs the token2wav's estimator and HiFT: auto, torch, onnxruntime or tensorrt (a2llm_rt.speech.backend)."""

    def validate(self) -> None:
        if self.speech_backend != "auto":
            from a2llm_rt.speech.backend import BACKENDS  # imports torch: only for a non-default choice

            if self.speech_backend not in BACKENDS:
                raise ValueError(f"unknown speech backend {self.speech_backend!r} (one of {', '.join(BACKENDS)})")


class _Aligner:
    """Orders one turn's audio behind the face frames covering it (see :class:`EngineSource`); text passes."""

    def __init__(self, align: bool):
        self.align = align
        self.held: list[E.AudioChunk] = []  # audio waiting for the face frames that cover it
        self.faces: list[E.FaceFrames] = []  # face frames waiting for audio within MAX_FACE_LEAD_S of them
        self.face_end = 0  # answer samples covered by the face frames released so far
        self.audio_end = 0  # answer samples of the audio released so far
        self.lead = round(MAX_FACE_LEAD_S * OUTPUT_SAMPLE_RATE)

    def push(self, e: E.AudioChunk | E.FaceFrames) -> list[Event]:
        """Take one audio chunk or face window; returns what may go out now, in order."""
        (self.held if isinstance(e, E.AudioChunk) else self.faces).append(e)  # type: ignore[arg-type]
        ready: list[Event] = []
        moved = True
        while moved:  # release alternately: audio covered by face, face within `lead` of the audio
            moved = False
            while self.faces and (
                not self.align
                or self.faces[0].first_frame * SAMPLES_PER_FRAME <= self.audio_end + self.lead
                or (self.held and self.held[0].sample_offset + self.held[0].pcm.shape[0] > self.face_end)
            ):
                f = self.faces.pop(0)
                ready.append(f)
                self.face_end = (f.first_frame + f.num_frames) * SAMPLES_PER_FRAME
                moved = True
            while self.held and (
                not self.align or self.held[0].sample_offset + self.held[0].pcm.shape[0] <= self.face_end
            ):
                a = self.held.pop(0)
                ready.append(a)
                self.audio_end = a.sample_offset + a.pcm.shape[0]
                moved = True
        return ready

    def rest(self) -> list[Event]:
        """At the end of the turn: everything still held, in answer order."""
        rest = sorted(
            [*((a, a.sample_offset) for a in self.held), *((f, f.first_frame * SAMPLES_PER_FRAME) for f in self.faces)],
            key=lambda x: x[1],
        )
        self.held, self.faces = [], []
        return [e for e, _ in rest]


class EngineSource:
    """:class:`~plugin_bridge.turn_source.TurnSource` over the session engine (``a2llm_rt.engine.Engine``); weights
    shared, one engine session (cache row) per bridge session, all sessions' decode steps batched by the engine's
    background loop.

    It yields the engine's own events (``Error`` becomes a raised :class:`TurnError`), with text cleaned of control
    characters (:func:`clean_text`).

    ``pace`` > 0 asks the server to release each audio chunk / face window when its place in the answer is due
    (real time / pace from the first one), as a model running at real time would deliver it (tiny random models
    generate many times faster than real time; 0 = forward as fast as generated).

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
        stack: StackOptions | None = None,
        config: EngineConfig | None = None,
        pace: float = 0.0,
        align: bool = True,
    ) -> EngineSource:
        """An engine over ``backbone`` / ``motion`` (directories, or ``tiny`` for seeded random test models) with
        ``config`` (None: :func:`a2llm_rt.engine.presets.engine_config` for ``backbone``).

        Raises :class:`~a2llm_rt.errors.InputError` for unusable weight folders.
        """
        from a2llm_rt.engine.builders import load_stack
        from a2llm_rt.engine.engine import Engine
        from a2llm_rt.engine.presets import engine_config

        o = stack or StackOptions()
        cfg = config if config is not None else engine_config(backbone)
        cfg.validate()
        models = load_stack(backbone, motion, device=o.device, vocoder=o.vocoder, prompt_wav=o.prompt_wav,
                            seed=o.seed, voices=dict(o.voices), speech_engines=o.speech_engines,
                            speech_backend=o.speech_backend)  # fmt: skip
        return cls(Engine(models, cfg), pace=pace, align=align)

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

    def run_turn(self, session_id: int, audio: np.ndarray | str, cancel: threading.Event) -> Iterator[Event]:
        """The engine's events for one utterance (``[n]`` float32 16 kHz, or a typed turn's text); see the class
        docstring."""
        with self._lock:
            entry = self._sessions.get(session_id)
        if entry is None:
            raise TurnError(f"session {session_id} is not open")
        session, turn_lock = entry
        with turn_lock:  # the previous turn of this session has settled (its TurnEnd consumed)
            yield from self._turn(session, audio, cancel)

    def _turn(self, session: object, audio: np.ndarray | str, cancel: threading.Event) -> Iterator[Event]:
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
        aligner = _Aligner(self.align)
        try:
            while True:
                if cancel.is_set() and not asked_cancel:
                    self.engine.cancel(session)  # type: ignore[attr-defined]
                    asked_cancel = True
                if session.closed:  # type: ignore[attr-defined]  # closed under us: the engine dropped the turn
                    settled = True
                    return
                try:
                    e = q.get(timeout=0.05)
                except queue.Empty:
                    continue
                if isinstance(e, E.Error):
                    settled = True
                    raise TurnError(f"{e.kind} error: {e.message}", e.kind)
                if isinstance(e, E.TurnEnd):
                    settled = True
                    yield from aligner.rest()  # the answer's last audio and face, in answer order
                    yield e
                    return
                if isinstance(e, E.TextDelta):
                    text = clean_text(e.text)
                    if text:
                        yield e if text == e.text else E.TextDelta(e.session_id, text)
                    continue
                if isinstance(e, E.AudioChunk | E.FaceFrames):
                    yield from aligner.push(e)
        finally:
            if not settled:  # the consumer stopped early: end the engine's turn before this session's next one
                self._settle(session, q)

    def _settle(self, session: object, q: object) -> None:
        self.engine.cancel(session)  # type: ignore[attr-defined]
        deadline = time.monotonic() + self.settle_timeout_s
        while time.monotonic() < deadline and not session.closed:  # type: ignore[attr-defined]
            try:
                e = q.get(timeout=0.02)  # type: ignore[attr-defined]
            except queue.Empty:
                continue
            if isinstance(e, E.TurnEnd | E.Error):
                return
