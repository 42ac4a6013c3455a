"""Vocoder interface (audio codes -> PCM, streaming with look-ahead) and the built-in *test* vocoder.

Audio codes arrive at 25 Hz; each code stands for ``samples_per_code`` = 960 samples of 24 kHz mono float32 PCM, so
code k covers output samples ``[k*960, (k+1)*960)`` (the motion frames use the same clock).

Streaming contract (:mod:`a2llm_rt.streaming`, host-side: one state per stream; a Session owns one)::

    state = vocoder.init_state(voice)
    pcm, state = vocoder.push(codes_a, state)              # may return fewer samples than codes_a cover
    pcm, state = vocoder.push(codes_b, state)              # ... the rest comes with later pushes
    pcm, state = vocoder.flush(state)                      # all audio of all codes is out; the stream is finished
    # concatenated pushes == vocoder.synthesize(codes_a + codes_b)

``push`` is the contract's ``step``, ``flush`` its ``flush`` (``push(codes, state, final=True)`` is a push and the
flush in one call); the PCM's length is the stream's output length. :class:`VocoderState` derives
:class:`~a2llm_rt.streaming.StreamingState` as a host-side state: a vocoder's state is per stream and ragged (a
numpy tail of any length, a code buffer, or token2wav's caches whose lengths depend on the voice and the progress),
so states hold one stream each and refuse the batch operations (``reset``: start a new stream with ``init_state``);
sessions are batched at step time by ``push_many``.

- ``lookahead_codes``: how many codes after a code the vocoder needs before it can emit that code's audio;
- ``chunk_codes``: the granularity at which it emits (1: every code; token2wav: 25);
- ``state.codes_in`` / ``state.samples_out`` count what went in and came out (sample offsets for AudioChunk events);
- ``push`` / ``flush`` never modify the state passed in: continue with the returned one (a failed push leaves the
  stream as it was);
- ``push_many([(codes, state, final), ...])`` is every stream's push of one engine step in one call (the engine makes
  one per step); each item gets ``(pcm, state)`` or the exception that failed that stream alone.

:class:`ToneVocoder` is a **test vocoder**: it does not speak. It turns each code into a harmonic tone with a
vowel-like spectral envelope, so tiny random models produce audible, code-dependent sound and the whole pipeline can
run without Step-Audio-2's token2wav (see :mod:`a2llm_rt.speech` for the real one).
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from a2llm_rt.audio import OUTPUT_SAMPLE_RATE
from a2llm_rt.errors import InputError
from a2llm_rt.streaming import StreamingState

CODE_RATE = 25  # audio codes per second (the vocoder's own rate; the time base is a2llm_rt.audio's)
SAMPLES_PER_CODE = OUTPUT_SAMPLE_RATE // CODE_RATE  # 960

Codes = Sequence[int] | np.ndarray | torch.Tensor


@dataclasses.dataclass
class VocoderState(StreamingState):
    """Per-stream vocoder state (host-side: one stream, no batch operations; see the module docstring). Subclasses
    add their own fields."""

    codes_in: int = 0
    """Codes pushed so far."""
    samples_out: int = 0
    """PCM samples returned so far (the sample offset of the next returned chunk)."""
    finished: bool = False
    """True after a ``final`` push; a finished stream accepts no more codes."""


class Vocoder(ABC):
    """Audio codes -> 24 kHz float32 PCM, whole-sequence or streaming. Weights shared, state per stream."""

    sample_rate: int = OUTPUT_SAMPLE_RATE
    samples_per_code: int = SAMPLES_PER_CODE
    lookahead_codes: int = 0
    chunk_codes: int = 1
    n_codes: int = 6561
    voices: Mapping[str, object] | tuple[str, ...] = ()
    """The voices a session may choose, by name (empty: one voice, and the choice is ignored)."""

    @abstractmethod
    def init_state(self, voice: str | None = None) -> VocoderState:
        """A fresh state for one stream (one turn of one session) in ``voice`` (a name from :attr:`voices`; None:
        the default). :class:`~a2llm_rt.errors.InputError` for an unknown voice."""

    @abstractmethod
    def push(self, codes: Codes, state: VocoderState, final: bool = False) -> tuple[np.ndarray, VocoderState]:
        """Feed the next codes ([n] ints, n >= 0); return (newly available PCM float32 [m], new state).

        With ``final=True`` everything still held back is flushed and the stream is finished.
        """

    def flush(self, state: VocoderState) -> tuple[np.ndarray, VocoderState]:
        """The streaming contract's flush: everything still held back (PCM float32 [m]) and the finished state."""
        return self.push(np.zeros(0, np.int64), state, final=True)

    def push_many(self, items: Sequence[tuple[Codes, VocoderState, bool]]
                  ) -> list[tuple[np.ndarray, VocoderState] | Exception]:
        """Several streams' pushes in one call (the engine makes one per step): items (codes, state, final); per
        item, in order, ``(pcm, new state)`` as :meth:`push` returns it, or the exception that failed that stream
        alone (the others go on). This default pushes item by item; a vocoder that batches overrides it."""
        out: list[tuple[np.ndarray, VocoderState] | Exception] = []
        for codes, state, final in items:
            try:
                out.append(self.push(codes, state, final))
            except Exception as e:  # noqa: BLE001 - that stream's failure only
                out.append(e)
        return out

    def init_states(self, batch_size: int) -> list[VocoderState]:
        """``batch_size`` independent fresh states."""
        return [self.init_state() for _ in range(batch_size)]

    def synthesize(self, codes: Codes) -> np.ndarray:
        """Whole-sequence synthesis: PCM float32 [m] for codes [n] (equals the concatenated streaming output)."""
        pcm, _ = self.push(codes, self.init_state(), final=True)
        return pcm

    def check_codes(self, codes: Codes) -> np.ndarray:
        """Codes as a 1-D int64 array; :class:`InputError` on a wrong shape or an out-of-range code."""
        if isinstance(codes, torch.Tensor):
            codes = codes.detach().cpu().numpy()
        arr = np.asarray(codes)
        if arr.size == 0:
            return np.zeros(0, dtype=np.int64)
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
            raise InputError(f"vocoder codes must be a 1-D integer sequence, got shape {arr.shape} {arr.dtype}")
        if arr.min() < 0 or arr.max() >= self.n_codes:
            raise InputError(f"vocoder codes must be in [0, {self.n_codes}), got [{arr.min()}, {arr.max()}]")
        return arr.astype(np.int64)


# vowel formants (F1, F2) in Hz: a, e, i, o, u
_VOWELS = ((730.0, 1090.0), (530.0, 1840.0), (270.0, 2290.0), (570.0, 840.0), (300.0, 870.0))


@dataclasses.dataclass
class ToneState(VocoderState):
    """State of :class:`ToneVocoder`: the last code's tone, the oscillator phase and the held-back tail."""

    prev_code: int = -1
    """Code of the last synthesised segment (-1: none yet, the first segment fades in from silence)."""
    phase: float = 0.0
    """Fundamental's phase in radians at the end of the last segment (kept in [0, 2 pi))."""
    pending: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, dtype=np.float64))
    """Synthesised samples (float64) not yet returned: the last ``crossfade`` ones, faded out on the final push."""


class ToneVocoder(Vocoder):
    """TEST VOCODER (not speech): each code becomes 40 ms of a harmonic tone, so tiny models make audible sound.

    Code ``c`` maps to a fundamental ``f0 = 100 Hz * 2**((c % 14) / 12)``, a vowel-like formant envelope
    (``(c // 14) % 5`` picks a, e, i, o or u) over up to 24 harmonics, and a loudness ``(c // 70) % 3``.
    The oscillator phase runs on across codes and chunks (no clicks); at the start of each code the pitch and
    the harmonic amplitudes glide linearly from the previous code's over ``crossfade`` samples; the very first
    code fades in from silence and the final one fades out. Output is exactly ``960 * n`` samples for ``n`` codes,
    and any chunking of the codes gives bit-identical audio to :meth:`synthesize` (each code's segment is computed
    on its own from the carried state, and the last ``crossfade`` samples are held back until the next push so
    the final fade-out can be applied).
    """

    lookahead_codes = 0
    chunk_codes = 1

    def __init__(self, n_codes: int = 6561, amplitude: float = 0.25, crossfade: int = 240, n_harmonics: int = 24):
        if not 0 < crossfade <= SAMPLES_PER_CODE:
            raise ValueError(f"crossfade must be in (0, {SAMPLES_PER_CODE}], got {crossfade}")
        self.n_codes = n_codes
        self.amplitude = amplitude
        self.crossfade = crossfade
        self.n_harmonics = n_harmonics
        n = SAMPLES_PER_CODE
        self._ramp = np.minimum(np.arange(1, n + 1, dtype=np.float64) / crossfade, 1.0)  # [960] 0..1 then 1
        self._fade_out = np.linspace(1.0, 0.0, crossfade, dtype=np.float64)
        self._h = np.arange(1, n_harmonics + 1, dtype=np.float64)[:, None]  # [H, 1]

    def tone(self, code: int) -> tuple[float, np.ndarray]:
        """(f0 in Hz, harmonic amplitudes [H]) of one code; the amplitudes sum to the code's loudness."""
        f0 = 100.0 * 2.0 ** ((code % 14) / 12.0)
        f1, f2 = _VOWELS[(code // 14) % 5]
        loud = self.amplitude * (0.6 + 0.2 * ((code // 70) % 3))
        freqs = self._h[:, 0] * f0
        env = 1.0 / (1.0 + ((freqs - f1) / 120.0) ** 2) + 0.6 / (1.0 + ((freqs - f2) / 180.0) ** 2)
        env = env + 0.05 / self._h[:, 0]  # a little spectral tilt so every harmonic is present
        env[freqs > 0.45 * OUTPUT_SAMPLE_RATE] = 0.0
        return f0, env * (loud / env.sum())

    def init_state(self, voice: str | None = None) -> ToneState:
        return ToneState()  # a test vocoder: one "voice" whatever is asked

    def _segment(self, code: int, prev_code: int, phase: float) -> tuple[np.ndarray, float]:
        """One code's 960 samples (float64) and the phase after them."""
        f0, w = self.tone(code)
        if prev_code < 0:
            f_prev, w_prev = f0, np.zeros_like(w)
        else:
            f_prev, w_prev = self.tone(prev_code)
        r = self._ramp
        freq = f_prev + (f0 - f_prev) * r  # [960]
        ph = phase + (2.0 * math.pi / OUTPUT_SAMPLE_RATE) * np.cumsum(freq)  # phase after each sample
        amps = w_prev[:, None] * (1.0 - r) + w[:, None] * r  # [H, 960]
        seg = (amps * np.sin(self._h * ph)).sum(0)
        return seg, float(math.fmod(ph[-1], 2.0 * math.pi))

    def push(self, codes: Codes, state: ToneState, final: bool = False) -> tuple[np.ndarray, ToneState]:
        if state.finished:
            raise ValueError("this vocoder stream is finished (final=True was pushed); start a new state")
        arr = self.check_codes(codes)
        parts = [state.pending]
        prev, phase = state.prev_code, state.phase
        for c in arr.tolist():
            seg, phase = self._segment(c, prev, phase)
            parts.append(seg)
            prev = c
        audio = np.concatenate(parts)
        if final:
            k = min(self.crossfade, audio.shape[0])
            if k and prev >= 0:
                audio[-k:] *= self._fade_out[self.crossfade - k :]
            out, pending = audio, audio[:0]
        else:
            keep = min(self.crossfade, audio.shape[0])
            out, pending = audio[: audio.shape[0] - keep], audio[audio.shape[0] - keep :]
        out = out.astype(np.float32)
        new = ToneState(
            codes_in=state.codes_in + arr.shape[0],
            samples_out=state.samples_out + out.shape[0],
            finished=final,
            prev_code=prev,
            phase=phase,
            pending=pending.copy(),
        )
        return out, new
