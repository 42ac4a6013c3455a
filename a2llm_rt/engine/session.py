"""One Session per avatar (per connected player): its conversation, its KV-cache row and its per-turn state.

Weights are shared by the :class:`~a2llm_rt.engine.engine.Engine`; everything that belongs to one conversation lives
here (sherpa-onnx's ``OnlineStream``): the chat history (token ids + audio chunks, and how many of them the cache row
already holds), the cache row index, the seeded sampling generator, and during a turn a
:class:`~a2llm_rt.engine.decode.TurnState` (clocks, motion history = the previous window's motion codes, motion
decoder streaming state, vocoder state).

Two ways to drive a session:

- synchronous (tests, the chat CLI): ``engine.submit(session, audio)`` then ``engine.step()`` until the turn's
  ``TurnEnd`` / ``Error`` comes out (``engine.run_turn`` does exactly that);
- threaded (the bridge server): ``for ev in session.respond(audio, cancel=event): ...`` from any thread; the engine's
  background loop batches every session's steps and routes events to each session's queue.

Cancelling (``engine.cancel(session)`` or setting respond's ``cancel`` event) ends the turn at the next step with a
``TurnEnd(reason="cancelled")``; the history closes the partial answer with ``<|EOT|>`` so the next turn continues
the conversation.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch

from a2llm_rt.audio import INPUT_SAMPLE_RATE
from a2llm_rt.engine.decode import TurnState
from a2llm_rt.engine.events import Error, Event, TurnEnd
from a2llm_rt.engine.sampling import SamplingConfig, make_generator
from a2llm_rt.models.prompt import ChatHistory

if TYPE_CHECKING:
    from a2llm_rt.engine.engine import Engine


class Session:
    """Per-avatar state. Create with :meth:`Engine.new_session`, never directly."""

    def __init__(
        self,
        engine: Engine,
        session_id: int,
        row: int,
        history: ChatHistory,
        sampling: SamplingConfig,
        system_prompt: str | None,
    ):
        self.engine = engine
        self.id = session_id
        self.row = row
        self.history = history
        self.system_prompt = system_prompt
        self.sampling = sampling
        self.generator: torch.Generator = make_generator(sampling.seed)
        self.turn: TurnState | None = None
        self.pending_audio: tuple[np.ndarray, int] | None = None
        """Audio submitted for the next turn (waveform, sample rate), prefilled at the next engine step."""
        self.pending_text: str | None = None
        """Typed text submitted for the next turn (``Engine.submit_text``), prefilled at the next engine step."""
        self.voice: str | None = None
        """The vocoder voice of this character's answers (None: the vocoder's default)."""
        self.context: str | None = None
        """Game context (``Engine.set_context``): a system message added before the next user turn when it changed."""
        self.context_sent: str | None = None
        """The context the history already holds (None after a reset, so it is sent again)."""
        self.pending_clock = None
        self.cancel_requested = False
        self.closed = False
        self.turns_done = 0
        self.events: queue.Queue[Event] = queue.Queue()
        """Events of the current turn when driven by the engine's background loop (:meth:`respond`)."""

    # ---- state -----------------------------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """A turn is waiting for its prefill or being generated."""
        return self.pending_audio is not None or self.pending_text is not None or self.turn is not None

    @property
    def cache_length(self) -> int:
        return int(self.engine.cache.lengths[self.row])

    def reset_conversation(self) -> None:
        """Forget the conversation (a fresh history with the system prompt, an empty cache row); used after a
        failure left the cache row and the history out of step, and when the history outgrows the cache."""
        self.history = ChatHistory(self.history.fmt, self.system_prompt)
        self.context_sent = None
        mask = torch.zeros(self.engine.cache.batch_size, dtype=torch.bool)
        mask[self.row] = True
        self.engine.cache.reset(mask)

    # ---- threaded API (the bridge) -----------------------------------------------------------------------------------
    def respond(
        self,
        audio: np.ndarray,
        sample_rate: int = INPUT_SAMPLE_RATE,
        cancel: threading.Event | None = None,
        poll_s: float = 0.02,
    ) -> Iterator[Event]:
        """Answer one utterance (``audio`` ``[n]`` float32 mono at ``sample_rate``; resampled to 16 kHz).

        Yields this turn's events, :class:`TurnEnd` or :class:`Error` last. Safe to call from many threads (one
        turn per session at a time); the engine's background loop batches all sessions. When ``cancel`` is set
        the turn stops within one decode step and ends with ``TurnEnd(reason="cancelled")``.
        """
        while not self.events.empty():  # stale events of an abandoned turn
            self.events.get_nowait()
        self.engine.submit(self, audio, sample_rate)
        self.engine.start_background()
        cancelled = False
        while True:
            if cancel is not None and cancel.is_set() and not cancelled:
                self.engine.cancel(self)
                cancelled = True
            try:
                ev = self.events.get(timeout=poll_s)
            except queue.Empty:
                continue
            yield ev
            if isinstance(ev, TurnEnd | Error):
                return

    def close(self) -> None:
        """Leave the engine: cancels a running turn and frees the cache row."""
        self.engine.close_session(self)

    # ---- moving a conversation to another engine (plugin_bridge.ray_source) ------------------------------------------
    def exchanges(self) -> int:
        """Completed (user utterance, answer) exchanges the history holds (0 after a reset)."""
        return sum(1 for t in self.history.turns if t.role == "assistant" and t.end is not None)

    def last_answer_ids(self) -> list[int]:
        """Token ids of the last completed answer after its opening (``<|BOT|>assistant\\n<tts_start>``), up to and
        including its closing ``<|EOT|>``: what :meth:`restore_conversation` needs to replay it."""
        last = next((t for t in reversed(self.history.turns) if t.role == "assistant" and t.end is not None), None)
        if last is None:
            return []
        opening = len(self.history.fmt.assistant_open(speech=True))
        return list(self.history.ids[last.start + opening : last.end])

    def restore_conversation(self, exchanges: list[tuple[np.ndarray | str, list[int]]]) -> None:
        """Replace the conversation with ``exchanges``: (user audio ``[n]`` float32 16 kHz, or a typed turn's text;
        answer ids from :meth:`last_answer_ids`) each, after the system prompt. The cache row is emptied; the next
        turn prefills the whole conversation with its own utterance (a conversation too long for the row starts over,
        as always).

        Used to continue a conversation on another engine after its engine died. Between turns only."""
        from a2llm_rt.engine.engine import MIN_INPUT_SAMPLES
        from a2llm_rt.models.prompt import prepare_waveform

        history = ChatHistory(self.history.fmt, self.system_prompt)
        for audio, answer in exchanges:
            if isinstance(audio, str):  # a typed turn
                history.add_user_text(audio)
            else:
                wave = prepare_waveform(np.asarray(audio, np.float32), 16000, self.engine.cfg.max_input_seconds)
                if wave.numel() < MIN_INPUT_SAMPLES:  # as the engine's prefill pads a short utterance
                    wave = torch.nn.functional.pad(wave, (0, MIN_INPUT_SAMPLES - wave.numel()))
                history.add_user_audio(wave)
            history.start_assistant(speech=True)
            history.append_generated(answer)
            history.end_assistant()
        with self.engine._lock:  # the cache is shared with the rows the background loop is stepping
            if self.busy:
                raise RuntimeError(f"session {self.id} has a turn running; restore between turns")
            self.reset_conversation()
            self.history = history
