"""Adapter for Step-Audio-2's token2wav (CosyVoice2 flow matching + HiFT) behind the :class:`Vocoder` interface.

Not runnable in this repository's tests: it needs the user's copy of

- the checkpoint folder ``token2wav/`` (``flow.pt``, ``flow.yaml``, ``hift.pt``, ``campplus.onnx``,
  ``speech_tokenizer_v2_25hz.onnx``) from Step-Audio-2-mini, and
- Step-Audio2's ``token2wav.py`` (github.com/stepfun-ai/Step-Audio2) with its dependencies (``s3tokenizer``,
  ``flashcosyvoice``, ``hyperpyyaml``, ``onnxruntime``, ``torchaudio``), on ``sys.path`` or in a folder passed as
  ``code_dir``.

That code is imported lazily, only by :meth:`Token2WavVocoder.from_directory`; without it the call raises
:class:`Token2WavUnavailableError` saying what to install. (Its ``flow.yaml`` is read by hyperpyyaml, which builds
Python objects: only point it at a checkpoint you trust.)

Backend interface used (Step-Audio2's ``Token2wav``; streaming methods as in its streaming version)::

    backend = Token2wav(model_dir, float16=False)
    backend.set_stream_cache(prompt_wav)        # sets backend.stream_cache (flow) and backend.hift_cache_dict
    pcm16 = backend.stream(codes, prompt_wav=prompt_wav, last_chunk=False)   # int16 LE bytes at 24 kHz
    wav_bytes = backend(codes, prompt_wav)      # whole utterance as a WAV file (non-streaming fallback)

Streaming (as the reference driver does it): codes are buffered; whenever ``chunk_codes + lookahead_codes``
(25 + 3) are present, the first 28 go to ``stream(..., last_chunk=False)`` and the buffer drops the first 25
(the 3 look-ahead codes are fed again with the next chunk); the final push sends what is left with
``last_chunk=True``. The backend keeps its caches on the instance, so this adapter swaps each stream's caches in
and out around every call (under a lock): weights shared, state per session.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import importlib.util
import io
import sys
import threading
import wave
from pathlib import Path
from typing import Any

import numpy as np
import torch

from a2llm_rt.engine.vocoder import Codes, Vocoder, VocoderState
from a2llm_rt.errors import A2LLMError, InputError

REQUIRED_FILES = ("flow.pt", "flow.yaml", "hift.pt", "campplus.onnx", "speech_tokenizer_v2_25hz.onnx")
CHUNK_CODES = 25
PRE_LOOKAHEAD = 3

INSTALL_HINT = (
    "Step-Audio-2's token2wav is not installed. To use it: clone https://github.com/stepfun-ai/Step-Audio2, "
    "install its requirements (s3tokenizer, flashcosyvoice, hyperpyyaml, onnxruntime, torchaudio), and pass the "
    "clone's folder as code_dir (or put it on PYTHONPATH). Without it, use the built-in test vocoder (ToneVocoder)."
)


class Token2WavUnavailableError(A2LLMError, RuntimeError):
    """Step-Audio-2's token2wav code (or one of its dependencies) cannot be imported."""


@dataclasses.dataclass
class Token2WavState(VocoderState):
    """Per-stream state: buffered codes and this stream's copies of the backend's flow and HiFT caches."""

    buffer: list[int] = dataclasses.field(default_factory=list)
    """Codes received but not yet synthesised (includes the look-ahead codes of the last chunk)."""
    flow_cache: Any = None
    """The flow model's streaming cache (``backend.stream_cache``) for this stream."""
    hift_cache: Any = None
    """HiFT's overlap cache (``backend.hift_cache_dict``) for this stream."""


def _clone(obj: Any) -> Any:
    if torch.is_tensor(obj):
        return obj.clone()
    if isinstance(obj, dict):
        return {k: _clone(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_clone(v) for v in obj)
    return copy.deepcopy(obj)


def pcm_to_float32(out: Any) -> np.ndarray:
    """A backend's chunk output -> float32 [m]: int16 LE bytes, a WAV file's bytes, or a float array / tensor."""
    if isinstance(out, (bytes, bytearray, memoryview)):
        raw = bytes(out)
        if raw[:4] == b"RIFF":
            with wave.open(io.BytesIO(raw), "rb") as w:
                if w.getsampwidth() != 2 or w.getnchannels() != 1:
                    raise ValueError("token2wav returned a WAV that is not 16-bit mono")
                raw = w.readframes(w.getnframes())
        return np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32767.0
    if torch.is_tensor(out):
        out = out.detach().float().cpu().numpy()
    return np.asarray(out, dtype=np.float32).reshape(-1)


class Token2WavVocoder(Vocoder):
    """Step-Audio-2's token2wav as a streaming :class:`Vocoder` (24 kHz; 25-code chunks + 3 look-ahead codes).

    ``backend`` is a Step-Audio2 ``Token2wav`` instance (or anything with the same methods; the tests use a fake).
    If it has no ``stream`` method, synthesis happens in one piece on the final push (``streaming`` is False).
    """

    n_codes = 6561

    def __init__(self, backend: Any, prompt_wav: str | Path, chunk_codes: int = CHUNK_CODES, lookahead_codes: int = -1):
        self.backend = backend
        self.prompt_wav = str(prompt_wav)
        self.chunk_codes = chunk_codes
        if lookahead_codes < 0:
            flow = getattr(backend, "flow", None)
            lookahead_codes = int(getattr(flow, "pre_lookahead_len", PRE_LOOKAHEAD))
        self.lookahead_codes = lookahead_codes
        self.streaming = callable(getattr(backend, "stream", None))
        self._lock = threading.Lock()
        self._template: tuple[Any, Any] | None = None

    @classmethod
    def from_directory(
        cls,
        model_dir: str | Path,
        prompt_wav: str | Path,
        code_dir: str | Path | None = None,
        float16: bool = False,
    ) -> Token2WavVocoder:
        """Load Step-Audio-2's token2wav from ``model_dir`` (the checkpoint's ``token2wav/`` folder).

        prompt_wav: the reference voice (a WAV file; Step-Audio2 ships ``assets/default_female.wav``).
        code_dir: folder holding Step-Audio2's ``token2wav.py`` (default: import ``token2wav`` from ``sys.path``).
        Raises :class:`InputError` for a missing folder / file and :class:`Token2WavUnavailableError` when the
        token2wav code or its dependencies are not installed.
        """
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise InputError("token2wav directory not found", model_dir)
        missing = [f for f in REQUIRED_FILES if not (model_dir / f).is_file()]
        if missing:
            raise InputError(f"not a Step-Audio-2 token2wav directory: missing {', '.join(missing)}", model_dir)
        if not Path(prompt_wav).is_file():
            raise InputError("prompt wav not found", prompt_wav)
        token2wav_cls = load_token2wav_class(code_dir)
        backend = token2wav_cls(str(model_dir), float16=float16)
        return cls(backend, prompt_wav)

    # -- state ------------------------------------------------------------------------------------------------------
    def init_state(self) -> Token2WavState:
        if not self.streaming:
            return Token2WavState()
        with self._lock:
            if self._template is None:
                self.backend.set_stream_cache(self.prompt_wav)
                self._template = (_clone(self.backend.stream_cache), _clone(self.backend.hift_cache_dict))
            flow, hift = self._template
            return Token2WavState(flow_cache=_clone(flow), hift_cache=_clone(hift))

    # -- streaming --------------------------------------------------------------------------------------------------
    def push(self, codes: Codes, state: Token2WavState, final: bool = False) -> tuple[np.ndarray, Token2WavState]:
        if state.finished:
            raise ValueError("this vocoder stream is finished (final=True was pushed); start a new state")
        arr = self.check_codes(codes)
        buffer = state.buffer + arr.tolist()
        state = dataclasses.replace(state, buffer=buffer, codes_in=state.codes_in + arr.shape[0])
        chunks: list[np.ndarray] = []
        if not self.streaming:
            if final and buffer:
                chunks.append(pcm_to_float32(self.backend(buffer, self.prompt_wav)))
                buffer = []
        else:
            step, need = self.chunk_codes, self.chunk_codes + self.lookahead_codes
            while len(buffer) >= need:
                chunks.append(self._stream(buffer[:need], state, last=False))
                buffer = buffer[step:]
            if final and buffer:
                chunks.append(self._stream(buffer, state, last=True))
                buffer = []
        pcm = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
        state.buffer = buffer
        state.samples_out += pcm.shape[0]
        state.finished = final
        return pcm, state

    def _stream(self, codes: list[int], state: Token2WavState, last: bool) -> np.ndarray:
        """One backend call with this stream's caches swapped in; updates ``state``'s caches."""
        with self._lock:
            self.backend.stream_cache = state.flow_cache
            self.backend.hift_cache_dict = state.hift_cache
            out = self.backend.stream(codes, prompt_wav=self.prompt_wav, last_chunk=last)
            state.flow_cache = self.backend.stream_cache
            state.hift_cache = self.backend.hift_cache_dict
        return pcm_to_float32(out)


def load_token2wav_class(code_dir: str | Path | None = None, module: str = "token2wav", name: str = "Token2wav"):
    """Import Step-Audio2's ``Token2wav`` class lazily (from ``code_dir/token2wav.py`` or ``sys.path``).

    Raises :class:`Token2WavUnavailableError` with installation instructions when it or a dependency is missing.
    """
    try:
        if code_dir is not None:
            code_dir = Path(code_dir)
            path = code_dir / f"{module}.py"
            if not path.is_file():
                raise InputError(f"no {module}.py here (expected Step-Audio2's repository folder)", code_dir)
            if str(code_dir) not in sys.path:
                sys.path.insert(0, str(code_dir))  # its own sibling imports (e.g. device_utils)
            spec = importlib.util.spec_from_file_location(f"_stepaudio2_{module}", path)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
        else:
            mod = importlib.import_module(module)
    except ImportError as e:
        raise Token2WavUnavailableError(f"{INSTALL_HINT} (import failed: {e})") from e
    cls = getattr(mod, name, None)
    if cls is None:
        raise Token2WavUnavailableError(f"{INSTALL_HINT} ({mod.__name__} has no class {name})")
    return cls
