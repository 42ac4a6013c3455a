"""The Engine: shared weights, one static KV cache with a row per session, and a step() that advances many
sessions in one batch (after moshi's ``LMGen`` and sherpa-onnx's ``OnlineRecognizer``).

Each :meth:`Engine.step`:

1. ends cancelled turns (``TurnEnd(reason="cancelled")``);
2. prefills the turns submitted since the last step (user audio -> mel -> encoder/adapter -> backbone prefill into the
   session's cache row), one session at a time;
3. runs ONE batched decode step over every cache row (idle rows are masked and do not advance; static shapes, so
   the step can be CUDA-graph captured, see :class:`~a2llm_rt.engine.decode.StepRunner`);
4. samples the next token of every generating session (logits masked to the TA4 slot's class, per-session
   sampling settings and generator), emitting text deltas and, at each group's end, vocoder audio;
5. runs the connector over every session whose window of ``W`` audio-position hidden states is full (batched),
   then the motion decoder over all of them in one call (every field of the decoder state is per session, so
   sessions at different points of their turns share it), through the engine's
   :class:`~a2llm_rt.engine.motion_backend.MotionBackend` (torch, onnxruntime or TensorRT), and emits face frames;
6. finishes turns that stopped (last partial window, decoder and vocoder flush, ``TurnEnd``).

Failures are per session: bad audio, a prompt too long for the cache, NaN frames -> an :class:`Error` event for that
session only; the others go on and the failed session stays usable. Sessions join (``new_session``) and leave
(``close_session``) between steps. A batched session decodes exactly as it would alone (tested with greedy
decoding): each row has its own positions and visible keys in the cache, and sampling is row-wise.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from pathlib import Path
from types import EllipsisType

import numpy as np
import torch

from a2llm_rt.audio import INPUT_SAMPLE_RATE
from a2llm_rt.config import Config
from a2llm_rt.engine.builders import Stack, build_tiny_stack, load_stack
from a2llm_rt.engine.decode import (
    StepRunner,
    TokenClasses,
    TurnState,
    connector_batch,
    face_layouts,
    pad_window,
    split_state,
    text_delta,
)
from a2llm_rt.engine.events import AudioChunk, Error, Event, FaceFrames, TextDelta, TurnEnd
from a2llm_rt.engine.motion_backend import MotionBackend, MotionBackendConfig, stack_motion_backend
from a2llm_rt.engine.nvtx import nvtx_range
from a2llm_rt.engine.sampling import (
    SamplingBatch,
    SamplingConfig,
    host_buffer,
    motion_uniforms,
    sample_motion_codes,
    sample_packed,
    upload,
)
from a2llm_rt.engine.session import Session
from a2llm_rt.engine.timing import TurnClock
from a2llm_rt.errors import A2LLMError, InputError
from a2llm_rt.models.motion_tokenizer import DecoderState
from a2llm_rt.models.prompt import DEFAULT_SYSTEM_PROMPT, ChatFormat, ChatHistory, prepare_waveform

log = logging.getLogger(__name__)

MIN_INPUT_SAMPLES = 1600  # 0.1 s at 16 kHz: shorter audio is padded with silence (the encoder needs a few frames)


@dataclasses.dataclass
class _SamplingPlan:
    """The sessions that sample this step, their slot kinds and class masks, and the packed settings."""

    rows: list[Session]
    slots: list[bool]
    masks: list[torch.Tensor]
    batch: SamplingBatch

    @property
    def n(self) -> int:
        return len(self.rows)

    @property
    def host(self) -> torch.Tensor:
        return self.batch.host

    @property
    def width(self) -> int:
        return self.batch.width


class EngineBusyError(A2LLMError, RuntimeError):
    """Every cache row is taken (the bridge answers SERVER_BUSY)."""


@dataclasses.dataclass
class EngineConfig(Config):
    """Limits and batching of an :class:`Engine`."""

    max_sessions: int = 4
    """Cache rows = sessions that can be open at once (all decode in one batch)."""
    max_len: int = 2048
    """Tokens per cache row (a session's whole conversation; it is forgotten when a new turn would not fit)."""
    max_new_tokens: int = 2000
    """Tokens per answer (checked at text slots, so an answer may end up to 4 tokens later)."""
    max_seconds: float = 30.0
    """Answer audio per turn (25 audio tokens per second)."""
    min_seconds: float = 0.0
    """Answer audio before the model may stop (stop ids and the audio padding code are masked until then)."""
    max_input_seconds: float = 600.0
    """Longest user utterance; longer audio is refused with an Error event."""
    min_free_tokens: int = 64
    """Room a cache row must keep after a prompt for the answer."""
    graph: str = "auto"
    """Decode-step execution: ``auto`` (CUDA graph on CUDA), ``cuda_graph``, ``compile``, ``none``."""
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT
    max_text_chars: int = 2000
    """Longest typed user turn (:meth:`Engine.submit_text`)."""
    max_persona_chars: int = 4000
    """Longest per-session system prompt (persona) passed to :meth:`Engine.new_session`."""
    max_context_chars: int = 1000
    """Longest game context (:meth:`Engine.set_context`)."""
    speech: bool = True
    """Spoken answers (``<tts_start>`` prefilled, TA4). Text-only answers are not supported by the engine yet."""
    sampling: SamplingConfig = dataclasses.field(default_factory=SamplingConfig)
    """Default sampling of new sessions (each session's seed is ``sampling.seed + session_id``)."""
    motion_backend: MotionBackendConfig = dataclasses.field(default_factory=MotionBackendConfig)
    """Runtime of the motion stack (connector + RVQ decoder): ``torch`` (the stack's modules), ``onnxruntime`` or
    ``tensorrt`` (an engines folder from ``python -m export.build_engines``, checked against its manifest)."""

    def validate(self) -> None:
        if self.max_sessions < 1 or self.max_len < 16 or self.max_new_tokens < 1:
            raise ValueError("max_sessions >= 1, max_len >= 16 and max_new_tokens >= 1 are required")
        if self.max_seconds <= 0 or self.min_seconds < 0 or self.min_seconds > self.max_seconds:
            raise ValueError("need 0 <= min_seconds <= max_seconds and max_seconds > 0")
        if min(self.max_text_chars, self.max_persona_chars, self.max_context_chars) < 1:
            raise ValueError("max_text_chars, max_persona_chars and max_context_chars must be positive")
        if self.max_input_seconds <= 0 or self.min_free_tokens < 1:
            raise ValueError("max_input_seconds and min_free_tokens must be positive")
        if not self.speech:
            raise ValueError("text-only answers are not supported by the engine yet (speech must be True)")


class Engine:
    """Shared weights + batched decoding of many :class:`Session` s. Thread-safe (one internal lock)."""

    def __init__(self, stack: Stack, config: EngineConfig | None = None):
        stack.check()
        self.cfg = config or EngineConfig()
        self.stack = stack
        # the motion stack's runtime from config (torch: the stack's own modules); InputError for a bad or tampered
        # engines folder
        self.motion_backend: MotionBackend = stack_motion_backend(stack, self.cfg.motion_backend)
        bb = stack.backbone
        self.layout = stack.layout
        self.device = stack.device
        self.cache = bb.new_cache(self.cfg.max_sessions, self.cfg.max_len)
        self.runner = StepRunner(bb, self.cache, self.cfg.graph)
        self.classes = TokenClasses(self.layout, self.device)
        self.fmt = ChatFormat(stack.tokenizer, self.layout, n_mels=bb.cfg.n_mels)
        voc = stack.vocoder
        self._voc_due: dict[int, Session] = {}  # sessions with codes for this step's one vocoder call
        self.code_rate = voc.sample_rate / voc.samples_per_code  # 25 Hz
        self.max_audio_tokens = math.ceil(self.cfg.max_seconds * self.code_rate)
        self.min_audio_tokens = math.ceil(self.cfg.min_seconds * self.code_rate)
        self.sessions: dict[int, Session] = {}
        self._free_rows = list(range(self.cfg.max_sessions))
        self._next_id = 0
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._stop = False

    # ---- construction ----------------------------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        backbone_dir: str | Path,
        motion_dir: str | Path,
        device: str = "cpu",
        config: EngineConfig | None = None,
        vocoder: str = "tone",
        prompt_wav: str | Path | None = None,
    ) -> Engine:
        """An engine over weights from directories (or ``tiny`` for either; see :func:`load_stack`)."""
        return cls(load_stack(backbone_dir, motion_dir, device=device, vocoder=vocoder, prompt_wav=prompt_wav), config)

    @classmethod
    def tiny(cls, seed: int = 0, config: EngineConfig | None = None, device: str = "cpu") -> Engine:
        """The test-sized engine with seeded random weights (runs on a CPU)."""
        return cls(build_tiny_stack(seed, device=device), config)

    # ---- sessions --------------------------------------------------------------------------------------------------
    def new_session(
        self,
        session_id: int | None = None,
        sampling: SamplingConfig | None = None,
        system_prompt: str | None | EllipsisType = ...,
        voice: str | None = None,
    ) -> Session:
        """Open a session on a free cache row (:class:`EngineBusyError` when none is left).

        ``system_prompt`` is the character's persona (default: the config's); a persona is untrusted text, checked
        by :meth:`ChatFormat.plain_text` against ``max_persona_chars`` before a row is taken. ``voice`` names one of
        the vocoder's voices (None: its default); an unknown one is refused before a row is taken.
        """
        known = self.stack.vocoder.voices
        if voice is not None and known and voice not in known:
            raise InputError(f"unknown voice {voice!r} (this server has {', '.join(sorted(known))})")
        prompt = self.cfg.system_prompt if system_prompt is ... else system_prompt
        if system_prompt is not ... and prompt is not None:
            prompt = self.fmt.plain_text(prompt, "persona", self.cfg.max_persona_chars)
        with self._lock:
            if session_id is None:
                while self._next_id in self.sessions:
                    self._next_id += 1
                session_id = self._next_id
                self._next_id += 1
            if session_id in self.sessions:
                raise InputError(f"session {session_id} is already open")
            if not self._free_rows:
                raise EngineBusyError(f"all {self.cfg.max_sessions} session slots are taken")
            row = self._free_rows.pop(0)
            mask = torch.zeros(self.cache.batch_size, dtype=torch.bool)
            mask[row] = True
            self.cache.reset(mask)
            if sampling is None:
                sampling = dataclasses.replace(self.cfg.sampling, seed=self.cfg.sampling.seed + session_id)
            s = Session(self, session_id, row, ChatHistory(self.fmt, prompt), sampling, prompt)
            s.voice = voice
            self.sessions[session_id] = s
            return s

    def close_session(self, session: Session) -> None:
        """Free the session's row (a running turn is dropped without events). Idempotent."""
        with self._lock:
            if session.closed:
                return
            session.closed = True
            session.turn = None
            session.pending_audio = None
            session.pending_text = None
            self.sessions.pop(session.id, None)
            mask = torch.zeros(self.cache.batch_size, dtype=torch.bool)
            mask[session.row] = True
            self.cache.reset(mask)
            self._free_rows.append(session.row)

    def submit(self, session: Session, audio: np.ndarray, sample_rate: int = INPUT_SAMPLE_RATE) -> None:
        """Queue a user utterance (``[n]`` or ``[channels, n]`` float/int16 PCM at ``sample_rate``) for the
        session's next turn; it is validated and prefilled at the next :meth:`step` (bad audio -> an Error event).

        Raises :class:`InputError` only for misuse: a closed session, or a turn already running.
        """
        with self._lock:
            if session.closed:
                raise InputError(f"session {session.id} is closed")
            if session.busy:
                raise InputError(f"session {session.id} already has a turn running; cancel it first")
            session.pending_audio = (audio, sample_rate)
            session.pending_clock = TurnClock()
            session.cancel_requested = False
            self._wake.notify_all()

    def submit_text(self, session: Session, text: str) -> None:
        """Queue a typed user turn (accessibility, chat boxes, tests), answered like audio with speech + face.

        The text becomes a human message of the Step-Audio-2 chat format (``<|BOT|>human\n{text}<|EOT|>``, see
        :meth:`ChatHistory.add_user_text`). :class:`InputError` for misuse (closed or busy session) and for bad text
        (not a string, empty, over ``max_text_chars``, control characters or chat control tokens); the session
        stays usable.
        """
        clean = self.fmt.plain_text(text, "text turn", self.cfg.max_text_chars)
        with self._lock:
            if session.closed:
                raise InputError(f"session {session.id} is closed")
            if session.busy:
                raise InputError(f"session {session.id} already has a turn running; cancel it first")
            session.pending_text = clean
            session.pending_clock = TurnClock()
            session.cancel_requested = False
            self._wake.notify_all()

    def set_context(self, session: Session, context: str | None) -> None:
        """Set (or clear with ``None`` / ``""``) the session's game context, e.g. "The player just lost the battle".

        It takes effect at the next turn, as a system message added to the conversation before that user turn
        (only when it changed since the last one sent), so the conversation and the KV cache are kept: nothing is
        re-prefilled. Allowed while a turn runs. :class:`InputError` for bad text (see :meth:`ChatFormat.plain_text`)
        or over ``max_context_chars``.
        """
        clean = None
        if context is not None:
            clean = self.fmt.plain_text(context, "game context", self.cfg.max_context_chars, allow_empty=True) or None
        with self._lock:
            if session.closed:
                raise InputError(f"session {session.id} is closed")
            session.context = clean

    def _open_turn(self, s: Session, add_user) -> None:
        """Add the changed game context (a system message), the user turn (``add_user()``) and the open answer."""
        if s.context != s.context_sent and s.context is not None:
            s.history.add_message("system", f"Game context: {s.context}")
        s.context_sent = s.context
        add_user()
        s.history.start_assistant(speech=True)

    def cancel(self, session: Session) -> None:
        """Stop the session's turn at the next step (``TurnEnd(reason="cancelled")``); no-op when idle.

        Lock-free on purpose: the background loop holds the engine lock while it steps, and a player's interruption
        must not wait behind a long answer. The flag is read by the next step and cleared by the next ``submit``.
        """
        if session.busy:
            session.cancel_requested = True

    @property
    def busy(self) -> bool:
        with self._lock:
            return any(s.busy for s in self.sessions.values())

    # ---- the step --------------------------------------------------------------------------------------------------
    def step(self) -> list[Event]:
        """Advance every busy session by one token (and prefill new turns). Returns the events, in order."""
        events: list[Event] = []
        with self._lock:
            sessions = list(self.sessions.values())
            for s in sessions:
                if s.cancel_requested:
                    s.cancel_requested = False
                    if s.turn is not None:
                        self._finish(s, "cancelled", events)
                    elif s.pending_audio is not None or s.pending_text is not None:
                        s.pending_audio = s.pending_text = None
                        events.append(TurnEnd(s.id, -1.0, -1.0, -1.0, {}, "cancelled"))
            prefilled: dict[int, torch.Tensor] = {}
            for s in sessions:
                if s.pending_audio is not None or s.pending_text is not None:
                    try:
                        prefilled[s.id] = self._prefill(s)
                    except Exception as e:  # noqa: BLE001 - any failure is this session's only
                        self._fail(s, e, events)
            decoding = [s for s in sessions if s.turn is not None and s.turn.next_input is not None]
            plan = self._plan([s for s in sessions if s.id in prefilled and s.turn is not None] + decoding, decoding)
            # ONE host->device copy per step: the decode step's ids/active and every row's sampling settings
            b = self.cache.batch_size
            head = [0.0] * (2 * b)  # ids [B], then active [B]
            for s in decoding:
                head[s.row], head[b + s.row] = float(s.turn.next_input), 1.0
            host = host_buffer((2 * b + plan.host.numel(),), torch.float64, self.device)
            host[: 2 * b] = torch.tensor(head, dtype=torch.float64)
            host[2 * b :] = plan.host.view(-1)
            dev = upload(host, self.device)
            packed = dev[2 * b :].view(plan.n, plan.width)
            logits: dict[int, torch.Tensor] = dict(prefilled)
            if decoding:
                try:
                    logits |= self._decode_step(decoding, dev[:b].long().view(b, 1), dev[b : 2 * b] > 0.5)
                except Exception as e:  # noqa: BLE001
                    for s in decoding:
                        self._fail(s, e, events)
            self._voc_due = {}
            if plan.n:
                self._sample(plan, packed, logits, events)
            ending = {s.id: s for s in sessions if s.turn is not None and s.turn.finished is not None}
            self._vocode_all([(s, False) for s in self._voc_due.values() if s.id not in ending]
                             + [(s, True) for s in ending.values()], events)  # ONE vocoder call for all sessions
            w = self.motion_backend.window
            ready = [s for s in sessions if s.turn is not None and len(s.turn.window) >= w]
            if ready:
                self._motion(ready, events)
            done = [s for s in sessions if s.turn is not None and s.turn.finished is not None]
            if done:
                self._flush_motion(done, events)  # batched over the turns that end together
                for s in done:
                    if s.turn is not None:
                        self._finish(s, s.turn.finished, events)
        return events

    def _prefill(self, s: Session) -> torch.Tensor:
        """Validate the pending audio (or take the pending text), add the user turn and the open assistant turn,
        prefill; -> logits ``[V]``."""
        clock = s.pending_clock
        if s.pending_text is not None:  # a typed turn (checked by submit_text)
            text, s.pending_text = s.pending_text, None

            def add_user() -> None:
                s.history.add_user_text(text)

            what = "the text"
        else:
            audio, sr = s.pending_audio
            s.pending_audio = None
            arr = np.asarray(audio)
            if arr.dtype == np.int16:
                arr = arr.astype(np.float32) / 32768.0
            if not np.issubdtype(arr.dtype, np.floating) and not np.issubdtype(arr.dtype, np.integer):
                raise InputError(f"audio must be numeric PCM, got dtype {arr.dtype}")
            arr = arr.astype(np.float32, copy=False)
            wave = prepare_waveform(arr, int(sr), self.cfg.max_input_seconds)
            if wave.numel() < MIN_INPUT_SAMPLES:
                wave = torch.nn.functional.pad(wave, (0, MIN_INPUT_SAMPLES - wave.numel()))

            def add_user() -> None:
                s.history.add_user_audio(wave)

            what = "shorter audio"
        self._open_turn(s, add_user)
        prompt = s.history.pending()
        room = self.cfg.max_len - self.cfg.min_free_tokens
        if s.cache_length + len(prompt.ids) > room:  # forget the conversation and retry with this turn alone
            log.info("session %d: conversation exceeds the cache row, starting over", s.id)
            s.reset_conversation()
            self._open_turn(s, add_user)
            prompt = s.history.pending()
            if len(prompt.ids) > room:
                s.reset_conversation()
                raise InputError(
                    f"the turn needs {len(prompt.ids)} prompt tokens; the cache row holds {self.cfg.max_len} "
                    f"(max_len) with {self.cfg.min_free_tokens} kept for the answer: use {what}"
                )
        with nvtx_range("prefill"):
            out = self.stack.backbone.prefill(
                prompt.tensor(self.device), self.cache, audio_mels=prompt.mels or None, rows=[s.row]
            )
        s.history.mark_consumed()
        clock.prefill_s = clock.elapsed_s
        sp = s.sampling
        t = TurnState(clock=clock)
        t.recent_text = type(t.recent_text)(maxlen=max(1, sp.text.penalty_window))
        t.recent_audio = type(t.recent_audio)(maxlen=max(1, sp.audio.penalty_window))
        t.voc_state = self.stack.vocoder.init_state(s.voice)
        t.dec_state = self.motion_backend.init_decode_state(1, self.device)
        s.turn = t
        return out.logits[0]

    def _decode_step(self, decoding: list[Session], ids: torch.Tensor, active: torch.Tensor) -> dict[int, torch.Tensor]:
        """One batched step; ids ``[B, 1]`` and active ``[B]`` already on the device. -> {session id: logits [V]}."""
        with nvtx_range("step"):
            logits, hidden = self.runner.run(ids, active)
        out = {}
        for s in decoding:
            t = s.turn
            fed, t.next_input = t.next_input, None
            t.steps += 1
            s.history.mark_consumed(s.history.consumed + 1)
            if self.layout.is_audio(fed):
                t.window.append(hidden[s.row])
            out[s.id] = logits[s.row]
        return out

    def _plan(self, candidates: list[Session], decoding: list[Session]) -> _SamplingPlan:
        """Host-only: which sessions sample this step (others reached a limit and finish), with their settings,
        slot masks and uniform draws packed for one upload. The cache lengths are known on the host (a row holds
        exactly its history's consumed tokens; a decoding row gains one this step), so nothing is read back."""
        fed = {s.id for s in decoding}
        rows, params, gens, masks, hist, slots = [], [], [], [], [], []
        for s in candidates:
            t = s.turn
            if t is None:
                continue
            text_slot = t.ta4.text_slot
            length = s.history.consumed + (1 if s.id in fed else 0)
            if length >= self.cfg.max_len - 1:
                t.finished = "context_full"
                continue
            if text_slot and t.new_tokens >= self.cfg.max_new_tokens:
                t.finished = "max_tokens"
                continue
            if text_slot and t.audio_tokens >= self.max_audio_tokens:
                t.finished = "max_seconds"
                continue
            may_stop = t.audio_tokens >= self.min_audio_tokens
            rows.append(s)
            p = s.sampling.text if text_slot else s.sampling.audio
            params.append(p)
            gens.append(s.generator)
            masks.append(self.classes.allowed(t.ta4, may_stop))
            hist.append(list(t.recent(text_slot)) if p.repetition_penalty != 1.0 else [])
            slots.append(text_slot)
        batch = SamplingBatch(params, gens, hist, self.layout.vocab_size, self.device)
        return _SamplingPlan(rows, slots, masks, batch)

    def _sample(
        self, plan: _SamplingPlan, packed: torch.Tensor, logits: dict[int, torch.Tensor], events: list[Event]
    ) -> None:
        """Sample the planned rows on the device; ONE device->host copy (tokens and finite flags together)."""
        keep = [i for i, s in enumerate(plan.rows) if s.turn is not None and s.id in logits]
        if not keep:
            return
        if len(keep) < plan.n:  # a session failed between planning and sampling (rare): drop its rows
            idx = torch.tensor(keep, device=packed.device)
            packed = packed.index_select(0, idx)
        rows = [plan.rows[i] for i in keep]
        x = torch.stack([logits[s.id] for s in rows])
        allowed = torch.stack([plan.masks[i] for i in keep])
        with nvtx_range("sample"):
            tokens = sample_packed(x, packed, allowed, plan.batch.any_stochastic, plan.batch.any_penalty)
            finite = torch.isfinite(x).all(-1)
            back = torch.stack([tokens, finite.long()]).tolist()
        for s, tok, ok, i in zip(rows, back[0], back[1], keep, strict=True):
            if not ok:  # a numeric failure fails its own session only
                self._fail(s, FloatingPointError("the backbone produced NaN/inf logits"), events)
                continue
            try:
                self._accept(s, int(tok), plan.slots[i], events)
            except Exception as e:  # noqa: BLE001
                self._fail(s, e, events)

    def _accept(self, s: Session, tok: int, text_slot: bool, events: list[Event]) -> None:
        """Record one sampled token: text delta / audio code / stop; push the vocoder at a group's end."""
        t = s.turn
        t.new_tokens += 1
        was_audio_slot = not t.ta4.text_slot
        t.ta4 = self.layout.ta4_advance(t.ta4, tok)  # the mask allowed it; raises on a broken stream
        kind = self.layout.token_class(tok)
        if kind == "stop":
            t.finished, t.stop_token = "eot", tok
            return
        if kind in ("text", "tts_pad"):
            if kind == "text":
                t.text_ids.append(tok)
                t.text_tokens += 1
                delta = text_delta(self.stack.tokenizer, t.text_ids, t.text_sent)
                if delta:
                    t.text_sent += delta
                    events.append(TextDelta(s.id, delta))
            t.recent_text.append(tok)
            if was_audio_slot:  # a short audio group: the audio ended
                self._vocode(s, events, final=False)
        else:
            if kind == "audio":
                t.vocoder_pending.append(tok - self.layout.audio_offset)
                t.audio_tokens += 1
                t.clock.mark_audio_token()
            t.recent_audio.append(tok)
            if t.ta4.text_slot:  # the group's audio is complete
                self._vocode(s, events, final=False)
        s.history.append_generated([tok])
        t.next_input = tok

    def _vocode(self, s: Session, events: list[Event], final: bool) -> None:
        """Queue the session's pending codes for the step's one vocoder call (:meth:`_vocode_all`); a turn's end
        outside the step's call (``final``) is pushed at once."""
        if final:
            self._vocode_all([(s, True)], events)
        else:
            self._voc_due[s.id] = s

    def _vocode_all(self, items: list[tuple[Session, bool]], events: list[Event]) -> None:
        """ONE vocoder call (``push_many``) for the sessions' pending codes (final: the turn ends); a stream that
        fails fails its own session only."""
        todo = [(s, final) for s, final in items if s.turn is not None
                and (s.turn.vocoder_pending or (final and not s.turn.voc_state.finished))]  # fmt: skip
        if not todo:
            return
        voc = self.stack.vocoder
        with nvtx_range("vocoder"):
            res = voc.push_many([(s.turn.vocoder_pending, s.turn.voc_state, final) for s, final in todo])
        for (s, _), r in zip(todo, res, strict=True):
            t = s.turn
            t.vocoder_pending = []
            if isinstance(r, Exception):
                self._fail(s, r, events)
                continue
            offset = t.voc_state.samples_out
            pcm, t.voc_state = r
            if pcm.size:
                t.audio_samples += int(pcm.size)
                events.append(AudioChunk(s.id, np.asarray(pcm, np.float32), int(offset), voc.sample_rate))

    # ---- motion ----------------------------------------------------------------------------------------------------
    def _motion(self, ready: list[Session], events: list[Event]) -> None:
        """Full windows of several sessions through the connector in one batch, codes sampled on the device, then
        the motion decoder in one batch (one download of frames)."""
        mb = self.motion_backend
        w = mb.window
        windows, prev = [], []
        for s in ready:
            windows.append(torch.stack(s.turn.window[:w]).to(mb.input_dtype))
            prev.append(s.turn.prev_codes)
            del s.turn.window[:w]
        try:
            with nvtx_range("connector"):
                logits = connector_batch(mb, windows, prev)
            codes = self._codes(ready, logits)
        except Exception as e:  # noqa: BLE001
            for s in ready:
                self._fail(s, e, events)
            return
        for i, s in enumerate(ready):
            s.turn.prev_codes = codes[i : i + 1]
        self._frames(ready, codes, w, events)

    def _codes(self, sessions: list[Session], logits: torch.Tensor) -> torch.Tensor:
        """Codes ``[n, T, N_q]`` (on the logits' device) of connector logits ``[n, T, N_q, K]``, one row per session
        with its own motion temperature, top-k and generator (uniforms drawn on the host, picked on the device)."""
        temps = [s.sampling.motion_temperature for s in sessions]
        if all(t <= 0 for t in temps):
            return logits.argmax(-1)
        n, t, q, _ = logits.shape
        host = host_buffer((n, 2 + t * q), torch.float64, logits.device)
        host[:, 2:] = motion_uniforms(t * q, temps, [s.generator for s in sessions])
        host[:, 0] = torch.tensor(temps, dtype=torch.float64)
        host[:, 1] = torch.tensor([float(s.sampling.motion_top_k) for s in sessions], dtype=torch.float64)
        dev = upload(host, logits.device)
        return sample_motion_codes(logits.float(), dev[:, 0], dev[:, 1], dev[:, 2:])

    def _frames(self, sessions: list[Session], codes: torch.Tensor | None, positions: int, events: list[Event]) -> None:
        """Decode ``codes`` ``[n, m, N_q]`` of the sessions (None: flush their decoders) in one batch and emit the
        frames that have audio. Every field of the decoder state is per session (the look-ahead counter too), so
        sessions at different points of their turns share the call; each gets its own count of frames."""
        try:
            with nvtx_range("decoder"):
                state = DecoderState.cat([s.turn.dec_state for s in sessions])
                if codes is None:
                    out, state = self.motion_backend.decode_flush(state)
                else:
                    out, state = self.motion_backend.decode_step(codes, state)
                # one download per batch: each row's frame count (exact in float32) packed before its frames
                b, m, d = out.frames.shape
                host = torch.cat([out.lengths.view(b, 1).float(), out.frames.float().reshape(b, m * d)], 1)
                host = host.cpu().numpy()
                lengths, frames = host[:, 0].astype(np.int64), host[:, 1:].reshape(b, m, d)
        except Exception as e:  # noqa: BLE001
            for s in sessions:
                self._fail(s, e, events)
            return
        for j, s in enumerate(sessions):
            s.turn.dec_state = split_state(state, j)
            try:
                self._emit_frames(s, frames[j, : lengths[j]], codes is not None, positions, events)
            except Exception as e:  # noqa: BLE001
                self._fail(s, e, events)

    def _emit_frames(self, s: Session, frames: np.ndarray, stepped: bool, positions: int, events: list[Event]) -> None:
        """Emit a session's decoded frames ``[m, D]`` that have audio (``stepped``: from a step, else a flush)."""
        t = s.turn
        t.face_frames_made += positions
        limit = t.face_frames_made if stepped else t.audio_tokens
        frames = frames[: max(0, min(limit, t.audio_tokens) - t.frames_out)]
        if frames.shape[0] == 0:
            return
        with nvtx_range("face"):
            flame, arkit, livelink = face_layouts(frames, self.stack.arkit_map)
        fps = self.motion_backend.fps
        events.append(FaceFrames(s.id, t.frames_out, fps, flame, arkit, livelink))
        t.frames_out += frames.shape[0]
        t.clock.mark_face_frame()

    def _flush_motion(self, sessions: list[Session], events: list[Event]) -> None:
        """End the motion of turns that finish: their last, partial windows (padded to a multiple of G, trimmed
        after decoding) through the connector and decoder, then the decoders' held-back frames (lookahead), batched
        over sessions with windows of the same length (the flush over all of them at once). A failure fails its
        sessions (``turn`` becomes None)."""
        mb = self.motion_backend
        by_len: dict[int, list[tuple[Session, torch.Tensor, int]]] = {}
        for s in sessions:
            t = s.turn
            t.motion_flushed = True
            if t.window:
                x, n = pad_window(t.window, mb.group)
                t.window = []
                by_len.setdefault(x.shape[0], []).append((s, x.to(mb.input_dtype), n))
        for w, items in by_len.items():
            group = [s for s, _, _ in items]
            try:
                with nvtx_range("connector"):
                    logits = connector_batch(mb, [x for _, x, _ in items], [s.turn.prev_codes for s in group])
                codes = self._codes(group, logits)
            except Exception as e:  # noqa: BLE001
                for s in group:
                    self._fail(s, e, events)
                continue
            for i, (s, _, n) in enumerate(items):
                s.turn.prev_codes = codes[i : i + 1]
                s.turn.face_frames_made -= w - n
            self._frames(group, codes, w, events)
        alive = [s for s in sessions if s.turn is not None]
        if alive:
            self._frames(alive, None, 0, events)  # the decoders' held-back frames

    # ---- ends ------------------------------------------------------------------------------------------------------
    def _finish(self, s: Session, reason: str, events: list[Event]) -> None:
        t = s.turn
        if reason != "cancelled":
            try:
                if not t.motion_flushed:
                    self._flush_motion([s], events)
                    if s.turn is None:  # the connector or decoder failed (an Error event was emitted)
                        return
                self._vocode(s, events, final=True)  # a no-op when the step's vocoder call ended the stream
                if s.turn is None:  # the vocoder failed (an Error event was emitted)
                    return
                delta = text_delta(self.stack.tokenizer, t.text_ids, t.text_sent, final=True)
                if delta:
                    t.text_sent += delta
                    events.append(TextDelta(s.id, delta))
            except Exception as e:  # noqa: BLE001
                self._fail(s, e, events)
                return
        close = t.stop_token if t.stop_token is not None else self.layout.tts_end
        if close is not None:
            s.history.append_generated([close])
        s.history.end_assistant()
        t.clock.stop()
        audio_s = t.audio_tokens / self.code_rate
        events.append(TurnEnd(s.id, t.clock.ttft_s, t.clock.ttfa_s, t.clock.rtf(audio_s), t.counts(), reason,
                              t.text_sent))  # fmt: skip
        s.turn = None
        s.turns_done += 1

    def _fail(self, s: Session, exc: BaseException, events: list[Event]) -> None:
        """End the session's turn with an Error event; the session stays usable (its conversation is forgotten
        unless the failure happened before the history changed)."""
        kind = "input" if isinstance(exc, InputError) else "internal"
        if kind == "internal":
            log.exception("session %d failed", s.id, exc_info=exc)
        touched = s.turn is not None or s.history.consumed != len(s.history.ids)
        s.turn = None
        s.pending_audio = s.pending_text = None
        if touched:
            s.reset_conversation()
        events.append(Error(s.id, str(exc), kind))

    # ---- drivers ---------------------------------------------------------------------------------------------------
    def run_until_idle(self, max_steps: int = 100_000) -> list[Event]:
        """Step until no session is busy; all events in order."""
        events: list[Event] = []
        for _ in range(max_steps):
            if not self.busy:
                break
            events += self.step()
        return events

    def run_turn(self, session: Session, audio: np.ndarray, sample_rate: int = INPUT_SAMPLE_RATE) -> list[Event]:
        """Synchronous single turn: submit and step until the engine is idle; the session's events in order."""
        self.submit(session, audio, sample_rate)
        return [e for e in self.run_until_idle() if e.session_id == session.id]

    def start_background(self) -> None:
        """Start the loop thread that steps while any session is busy and routes events to ``session.events``
        (used by :meth:`Session.respond`). Idempotent."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop = False
            self._thread = threading.Thread(target=self._loop, name="a2llm-engine", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._stop and not any(s.busy for s in self.sessions.values()):
                    self._wake.wait(0.5)
                if self._stop:
                    return
                try:
                    events = self.step()
                except Exception as e:  # noqa: BLE001 - never let the loop die
                    log.exception("engine step failed")
                    events = []
                    for s in list(self.sessions.values()):
                        if s.busy:
                            self._fail(s, e, events)
                for ev in events:
                    s = self.sessions.get(ev.session_id)
                    if s is not None:
                        s.events.put(ev)
            time.sleep(0)  # let threads waiting for the lock (submit, close, new sessions) in between steps

    def shutdown(self) -> None:
        """Stop the background loop (sessions stay open)."""
        with self._wake:
            self._stop = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
