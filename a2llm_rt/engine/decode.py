"""The decode loop's pieces: TA4 token classes, per-turn state, the batched (optionally graph-captured) decode step,
and the motion path (hidden-state windows -> connector -> motion codes -> streaming decoder -> face frames).

Token stream of a spoken answer (after ``<tts_start>``, which the prompt prefills): each step masks the logits to
the token classes the layout's TA4 grammar allows next (:meth:`TokenLayout.ta4_allowed`, the streams upstream's
``build_tts_interleave_data`` builds: 1 text token then up to 4 audio codes per group, text-only groups once the
audio has ended, ``<tts_pad>`` once the text has ended, the audio padding code only after the real codes), and the
turn's :class:`~a2llm_rt.models.token_layout.TA4Cursor` advances with each sampled token, so the interleave holds
whatever the weights are. Choices that end the audio (stops, the padding code, text in an audio slot) are masked out
until ``min_audio_tokens`` audio tokens exist. Every sampled
token is fed back at the next step; the stop token is not (the history closes the turn, see ``prompt.py``).

Hidden states are tapped at audio positions only: the backbone's tapped state at the position whose *input* is an
audio code (returned by the step that feeds the code, as in a teacher-forced training forward), so face frame ``k``
belongs to audio code ``k`` and covers output samples ``[k*960, (k+1)*960)``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections import deque
from typing import TYPE_CHECKING

import numpy as np
import torch

from a2llm_rt.engine.timing import TurnClock
from a2llm_rt.errors import InputError
from a2llm_rt.face.flame_to_arkit import ArkitMap, flame_to_arkit, flame_to_livelink
from a2llm_rt.models.kv_cache import KVCache
from a2llm_rt.models.token_layout import TA4Cursor, TokenLayout

if TYPE_CHECKING:
    from a2llm_rt.engine.motion_backend import MotionBackend

GRAPH_MODES = ("none", "cuda_graph", "compile", "auto")

log = logging.getLogger(__name__)


# ---- token classes ------------------------------------------------------------------------------------------------
class TokenClasses:
    """Boolean id masks ``[V]`` of the TA4 token classes of a layout (on the model's device), combined per step.

    The classes are :meth:`TokenLayout.token_class`'s: ``text`` (text ids, no specials), ``tts_pad``, ``audio``
    (real codes), ``audio_pad`` and ``stop`` (``<|EOT|>``, ``<tts_end>``); which of them a step allows is the
    layout's TA4 grammar (:meth:`TokenLayout.ta4_allowed`), so the mask logic lives in one place.
    """

    def __init__(self, layout: TokenLayout, device: torch.device | str):
        v = layout.vocab_size
        ids = torch.arange(v)
        self.layout = layout
        self.eot = layout.special("eot")
        self.tts_end = layout.tts_end
        self.tts_pad = layout.special("tts_pad")
        self.audio_pad = layout.audio_pad_id
        text = ids < layout.text_end
        for f in ("bot", "eot", "pad", "audio_start", "audio_end", "audio_patch", "tts_start", "tts_end", "tts_pad"):
            t = getattr(layout, f)
            if t is not None:
                text[t] = False
        stop = torch.zeros(v, dtype=torch.bool)
        stop[[i for i in (self.eot, self.tts_end) if i is not None]] = True
        pad = torch.zeros(v, dtype=torch.bool)
        pad[self.tts_pad] = True
        audio_pad = torch.zeros(v, dtype=torch.bool)
        if self.audio_pad is not None:
            audio_pad[self.audio_pad] = True
        self.classes = {"text": text, "tts_pad": pad, "audio": layout.audio_mask(ids), "audio_pad": audio_pad,
                        "stop": stop}  # fmt: skip
        self.device = torch.device(device)
        self._cache: dict[frozenset, torch.Tensor] = {}

    def mask(self, classes: frozenset[str]) -> torch.Tensor:
        """The ``[V]`` mask of the union of ``classes`` (cached per set); only stops when that would be empty."""
        m = self._cache.get(classes)
        if m is None:
            m = torch.zeros(self.layout.vocab_size, dtype=torch.bool)
            for c in classes:
                m |= self.classes[c]
            if not m.any():
                m = self.classes["stop"].clone()
            m = m.to(self.device)
            self._cache[classes] = m
        return m

    def allowed(self, cursor: TA4Cursor, may_stop: bool) -> torch.Tensor:
        """The ``[V]`` mask of the next token after a stream at ``cursor`` (``may_stop``: enough audio to end)."""
        return self.mask(self.layout.ta4_allowed(cursor, may_stop))


# ---- per-turn state -----------------------------------------------------------------------------------------------
@dataclasses.dataclass
class TurnState:
    """Everything one session's current turn carries between engine steps."""

    clock: TurnClock
    ta4: TA4Cursor = dataclasses.field(default_factory=TA4Cursor)
    """Where the generated TA4 stream stands (the grammar of :meth:`TokenLayout.ta4_allowed`)."""
    next_input: int | None = None
    """Sampled token waiting to be fed at the next step."""
    text_ids: list[int] = dataclasses.field(default_factory=list)
    text_sent: str = ""
    audio_tokens: int = 0
    text_tokens: int = 0
    new_tokens: int = 0
    steps: int = 0
    recent_text: deque = dataclasses.field(default_factory=lambda: deque(maxlen=64))
    recent_audio: deque = dataclasses.field(default_factory=lambda: deque(maxlen=64))
    vocoder_pending: list[int] = dataclasses.field(default_factory=list)
    voc_state: object | None = None
    window: list[torch.Tensor] = dataclasses.field(default_factory=list)
    """Tapped hidden states ``[d]`` of audio positions not yet given to the connector."""
    prev_codes: torch.Tensor | None = None
    """``[1, W/G, N_q]`` motion codes of the previous window (None: the turn's first window)."""
    dec_state: object | None = None
    frames_out: int = 0
    """Face frames emitted so far (the next FaceFrames' first_frame)."""
    face_frames_made: int = 0
    """Face frames the decoder produced so far (some may be trimmed at the end)."""
    audio_samples: int = 0
    motion_flushed: bool = False
    """The turn's last window and the decoder's held-back frames went out (the turn is ending)."""
    finished: str | None = None
    stop_token: int | None = None

    def counts(self) -> dict[str, int]:
        return {
            "text_tokens": self.text_tokens,
            "audio_tokens": self.audio_tokens,
            "face_frames": self.frames_out,
            "audio_samples": self.audio_samples,
            "steps": self.steps,
            "new_tokens": self.new_tokens,
        }

    def recent(self, text_slot: bool) -> deque:
        return self.recent_text if text_slot else self.recent_audio


def text_delta(tokenizer, ids: list[int], sent: str, final: bool = False) -> str:
    """The text decoded from ``ids`` beyond ``sent``; held back while it ends in a partial UTF-8 character."""
    if not ids:
        return ""
    full = tokenizer.decode(ids)
    if not final and full.endswith("\ufffd"):
        return ""
    return full[len(sent) :] if full.startswith(sent) else full


# ---- the decode step ----------------------------------------------------------------------------------------------
def mark_static(*tensors: torch.Tensor) -> bool:
    """Tell ``torch.compile`` that these tensors keep their address (the static KV cache, the step's input
    buffers), so ``mode="reduce-overhead"`` may CUDA-graph a step that mutates them in place instead of
    "skipping cudagraphs due to mutated inputs". False when this torch has no ``mark_static_address``."""
    mark = getattr(getattr(torch, "_dynamo", None), "mark_static_address", None)
    if mark is None:
        return False
    for t in tensors:
        mark(t)
    return True


class StepRunner:
    """One batched decode step over every cache row: ``run(ids [B, 1], active [B]) -> (logits [B, V], hidden [B, d])``.

    Modes: ``none`` (eager), ``cuda_graph`` (an explicit ``torch.cuda.CUDAGraph`` captured once over the static
    cache; inputs are copied into static buffers and the graph replayed), ``compile`` (``torch.compile`` with
    ``mode="reduce-overhead"``, the cache and input buffers marked static so it can use CUDA graphs), ``auto``
    (``cuda_graph`` on CUDA, else ``none``). The cache must never be reallocated while a graph holds it (the engine
    allocates it once; prefill and reset work in place).

    Any CUDA device, not only the current one: capture, warm-up and replay run under ``torch.cuda.device(dev)`` with
    streams created on ``dev`` (a graph captured on the wrong device's stream records nothing). The first replay is
    checked: when the active rows' cache lengths did not advance by one, the graph is dropped with a warning and the
    step re-run eagerly. A capture or compile that raises also falls back to eager (``mode`` becomes ``none``,
    ``fallback`` says why).

    The CUDA paths cannot run on the CPU-only development machines: they are written to the CUDA-graph rules (static
    shapes, no host sync inside ``backbone.step``, warm-up on a side stream with every row inactive so the warm-up
    changes no cache length) and exercised by the ``gpu``-marked tests and ``tools/gpu_check.sh``.
    """

    def __init__(self, backbone, cache: KVCache, mode: str = "auto"):
        if mode not in GRAPH_MODES:
            raise InputError(f"unknown graph mode {mode!r}; known: {GRAPH_MODES}")
        dev = cache.k.device
        if mode == "auto":
            mode = "cuda_graph" if dev.type == "cuda" else "none"
        if mode in ("cuda_graph", "compile") and dev.type != "cuda":
            raise InputError(f"graph mode {mode!r} needs the model on a CUDA device, not {dev}")
        self.backbone = backbone
        self.cache = cache
        self.device = dev
        self.mode = mode
        self.requested = mode
        self.fallback: str | None = None
        """Why the runner fell back to eager (None: it runs the requested mode)."""
        self._graph: torch.cuda.CUDAGraph | None = None
        self._verified = False
        self._fn = backbone.step
        b = cache.batch_size
        self._ids = torch.zeros(b, 1, dtype=torch.long, device=dev)
        self._active = torch.zeros(b, dtype=torch.bool, device=dev)
        self._out: tuple[torch.Tensor, torch.Tensor] | None = None
        if mode == "compile":
            if not mark_static(cache.k, cache.v, cache.lengths, self._ids, self._active):
                log.warning("this torch has no torch._dynamo.mark_static_address: compile mode may skip CUDA graphs")
            self._fn = torch.compile(backbone.step, mode="reduce-overhead", dynamic=False)

    def _device_ctx(self):
        return torch.cuda.device(self.device) if self.device.type == "cuda" else contextlib.nullcontext()

    def _fall_back(self, why: str) -> None:
        log.warning("decode step: %s; falling back to eager (graph mode %r)", why, self.requested)
        self.fallback = why
        self.mode = "none"
        self._graph = None
        self._out = None
        self._fn = self.backbone.step

    @torch.no_grad()
    def capture(self, warmup: int = 3) -> None:
        """Capture the graph (``cuda_graph`` mode); called lazily by the first :meth:`run`. Falls back to eager
        (with a warning) when capture raises."""
        if self.mode != "cuda_graph" or self._graph is not None:
            return
        try:
            self._capture(warmup)
        except Exception as e:  # noqa: BLE001 - any capture failure: run eagerly instead
            self._fall_back(f"CUDA-graph capture failed ({type(e).__name__}: {e})")

    def _capture(self, warmup: int) -> None:
        dev = self.device
        with torch.cuda.device(dev):
            self._ids.zero_()
            self._active.zero_()  # no row advances during warm-up and capture
            main = torch.cuda.current_stream(dev)
            side = torch.cuda.Stream(device=dev)
            side.wait_stream(main)
            with torch.cuda.stream(side):
                for _ in range(warmup):
                    self.backbone.step(self._ids, self.cache, self._active)
            main.wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            # an explicit capture stream on dev: torch.cuda.graph's default one is made on whatever device is
            # current the first time, once per process; thread_local: another thread's CUDA calls (a server's)
            # neither break nor join the capture
            with torch.cuda.graph(graph, stream=torch.cuda.Stream(device=dev), capture_error_mode="thread_local"):
                out = self.backbone.step(self._ids, self.cache, self._active)
            self._out = (out[0], out[1])
            self._graph = graph

    @torch.no_grad()
    def run(self, ids: torch.Tensor, active: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mode == "cuda_graph":
            self.capture()
        if self.mode == "cuda_graph":
            with self._device_ctx():
                self._ids.copy_(ids, non_blocking=True)
                self._active.copy_(active, non_blocking=True)
                if self._verified:
                    self._graph.replay()
                    logits, hidden = self._out
                    return logits.clone(), hidden.clone()
                before = self.cache.lengths.clone()
                self._graph.replay()
                logits, hidden = self._out
                advanced = torch.equal(self.cache.lengths - before, self._active.long())  # one host sync, once
                if advanced or not bool(self._active.any()):
                    self._verified = bool(self._active.any())
                    return logits.clone(), hidden.clone()
                self.cache.lengths.copy_(before)
                self._fall_back(f"the captured graph did not advance the cache on {self.device} (captured empty?)")
        if self.mode == "compile":
            try:
                with self._device_ctx():
                    self._ids.copy_(ids, non_blocking=True)
                    self._active.copy_(active, non_blocking=True)
                    logits, hidden = self._fn(self._ids, self.cache, self._active)
                    return logits.clone(), hidden.clone()
            except Exception as e:  # noqa: BLE001 - a compile failure (first call): run eagerly instead
                if self._verified:
                    raise
                self._fall_back(f"torch.compile failed ({type(e).__name__}: {e})")
            finally:
                self._verified = self.mode == "compile"
        logits, hidden = self.backbone.step(ids, self.cache, active)
        return logits, hidden


# ---- motion path --------------------------------------------------------------------------------------------------
def pad_window(hidden: list[torch.Tensor], group: int) -> tuple[torch.Tensor, int]:
    """Stack ``n`` hidden states ``[d]`` to ``[ceil(n/G)*G, d]`` (repeating the last one); returns it and ``n``."""
    n = len(hidden)
    x = torch.stack(hidden, 0)
    short = (-n) % group
    if short:
        x = torch.cat([x, x[-1:].expand(short, -1)], 0)
    return x, n


def face_layouts(frames: np.ndarray, arkit_map: ArkitMap | None) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Decoder frames ``[n, D]`` (D = 58 FLAME or 52 ARKit) -> (flame58 | None, arkit52 ``[n, 52]``,
    livelink61 ``[n, 61]``) float32. ``FloatingPointError`` on NaN/inf (an internal failure, not bad input)."""
    frames = np.asarray(frames, dtype=np.float32)
    if not np.isfinite(frames).all():
        raise FloatingPointError("the motion decoder produced NaN or inf frames")
    if frames.shape[-1] == 58:
        return frames, flame_to_arkit(frames, arkit_map), flame_to_livelink(frames, arkit_map)
    if frames.shape[-1] == 52:
        ar = np.clip(frames, 0.0, 1.0)
        return None, ar, np.concatenate([ar, np.zeros((ar.shape[0], 9), np.float32)], 1)
    raise InputError(f"motion frames must have 58 (FLAME) or 52 (ARKit) values, got {frames.shape[-1]}")


def connector_batch(
    backend: MotionBackend, windows: list[torch.Tensor], prev: list[torch.Tensor | None]
) -> torch.Tensor:
    """Connector logits for several sessions' windows of equal length, through the engine's motion backend.

    windows: ``[W', d]`` each; prev: each session's previous-window codes ``[1, W/G, N_q]`` or None (first window).
    Returns ``[n, W'/G, N_q, K]``.
    """
    x = torch.stack(windows, 0)
    dev = x.device
    if all(p is None for p in prev):
        return backend.connector_step(x, None)
    cfg = backend.connector_cfg
    n = cfg.tokens_per_window
    if any(p is not None and p.shape[1] != n for p in prev):  # a short previous window: run one by one
        return torch.cat([backend.connector_step(x[i : i + 1], prev[i]) for i in range(len(prev))], 0)
    codes = torch.stack([torch.zeros(n, cfg.n_q, dtype=torch.long, device=dev) if p is None else p[0] for p in prev])
    first = [p is None for p in prev]  # known on the host: no upload or read-back unless a row starts a turn
    return backend.connector_step(x, codes, torch.tensor(first, device=dev) if any(first) else None)


def split_state(state, i: int):
    """Batch entry ``i`` of a batched streaming state as its own state (views ``[i : i + 1]`` of the tensors; the
    inverse of ``type(state).cat`` without an index upload)."""
    kw = {}
    for f in dataclasses.fields(state):
        v = getattr(state, f.name)
        kw[f.name] = v[i : i + 1] if torch.is_tensor(v) else v
    return type(state)(**kw)
