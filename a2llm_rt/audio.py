"""Audio I/O and the time base: read and write WAV files, resample, and the rates every other module imports.

Time base (ARCHITECTURE.md §2): the player's speech comes in at 16 kHz (:data:`INPUT_SAMPLE_RATE`), the answer's
speech goes out at 24 kHz (:data:`OUTPUT_SAMPLE_RATE`), face frames run at 25 fps (:data:`FACE_FPS`), and face frame
``k`` covers output samples ``[k * 960, (k + 1) * 960)`` (:data:`SAMPLES_PER_FRAME`).

- :func:`read_wav`: any WAV that ``scipy.io.wavfile`` reads (unsigned 8-bit, 16/24/32-bit integer PCM, 32/64-bit
  float, any channel count) as float32 in [-1, 1] (integer PCM: ``x / 2^(bits-1)``, 8-bit centred on 128; float
  files as stored), optionally mixed to mono and resampled. Errors are :class:`~a2llm_rt.errors.InputError`.
- :func:`write_wav` / :func:`wav_bytes`: mono 16-bit PCM (``round(clip(x, -1, 1) * 32767)``), written atomically.
- :func:`resample`: polyphase filter (``scipy.signal.resample_poly``) by the exact ratio ``dst / src`` reduced by
  their gcd; a float32 copy when the rates are equal. Callers bound the rates of untrusted input: the filter grows
  with ``max(src, dst) / gcd(src, dst)``.
"""

from __future__ import annotations

import io
import struct
import warnings
import wave
from math import gcd
from pathlib import Path

import numpy as np

from a2llm_rt.errors import InputError
from a2llm_rt.utils.fileio import atomic_write

INPUT_SAMPLE_RATE = 16_000
"""Player speech into the model (Hz): the audio encoder's log-mel runs at this rate."""
OUTPUT_SAMPLE_RATE = 24_000
"""Answer speech out of the vocoder (Hz)."""
FACE_FPS = 25.0
"""Face frames per second (one per audio token)."""
SAMPLES_PER_FRAME = 960
"""Output samples per face frame: ``OUTPUT_SAMPLE_RATE / FACE_FPS``."""
assert SAMPLES_PER_FRAME * FACE_FPS == OUTPUT_SAMPLE_RATE


def pcm_to_float(data: np.ndarray) -> np.ndarray:
    """Integer PCM (any signed or unsigned width) -> float32 in [-1, 1); float input is returned as float32.

    ``int16``: ``x / 32768``; ``int32`` (also 24-bit files, which scipy left-justifies into int32): ``x / 2^31``;
    ``uint8``: ``(x - 128) / 128``.
    """
    a = np.asarray(data)
    if a.dtype.kind in "iu":
        info = np.iinfo(a.dtype)
        mid = (int(info.max) + 1 + int(info.min)) // 2
        half = (int(info.max) - int(info.min) + 1) // 2
        return ((a.astype(np.float64) - mid) / half).astype(np.float32)
    if a.dtype.kind != "f":
        raise InputError(f"unsupported sample type {a.dtype}")
    return a.astype(np.float32)


def resample(samples: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """``[..., n]`` float audio at ``src_rate`` -> ``[..., m]`` float32 at ``dst_rate``, ``m = ceil(n * dst / src)``.

    Polyphase filter along the last axis with the exact ratio (``up = dst / g``, ``down = src / g``,
    ``g = gcd(src, dst)``); a float32 copy when the rates are equal.
    """
    src_rate, dst_rate = int(src_rate), int(dst_rate)
    if src_rate <= 0 or dst_rate <= 0:
        raise InputError(f"sample rates must be positive, got {src_rate} -> {dst_rate}")
    if src_rate == dst_rate:
        return np.array(samples, np.float32)
    from scipy.signal import resample_poly  # looked up per call: tests spy on it

    g = gcd(src_rate, dst_rate)
    return resample_poly(samples, dst_rate // g, src_rate // g, axis=-1).astype(np.float32)


def read_wav(
    path: str | Path,
    *,
    mono: bool = True,
    sample_rate: int | None = None,
    max_seconds: float | None = None,
) -> tuple[np.ndarray, int]:
    """(samples, rate) of a WAV file: ``[n]`` float32 (``mono``: channels averaged) or ``[channels, n]``.

    ``sample_rate`` resamples to that rate (and the returned rate is it); ``max_seconds`` refuses longer files
    before resampling. Refused with :class:`InputError`: a missing file, anything ``scipy.io.wavfile`` cannot read
    (not RIFF/WAVE, truncated, compressed codecs), a file with no samples, NaN or inf samples.
    """
    from scipy.io import wavfile

    path = Path(path)
    if not path.is_file():
        raise InputError("file not found", path)
    try:
        with warnings.catch_warnings():  # scipy warns about chunks it skips; the errors below are what matters
            warnings.simplefilter("ignore", wavfile.WavFileWarning)
            rate, data = wavfile.read(str(path))
    # scipy's reader fails on damaged headers with more than ValueError (found by tests/test_audio.py's fuzz test)
    except (ValueError, OSError, EOFError, struct.error, ArithmeticError, UnboundLocalError, MemoryError) as e:
        raise InputError(f"not a readable WAV file: {type(e).__name__}: {e}", path) from None
    x = pcm_to_float(data)
    if x.ndim == 2:
        x = x.mean(axis=1) if mono else np.ascontiguousarray(x.T)
    if x.shape[-1] == 0:
        raise InputError("the WAV file holds no audio", path)
    if not np.isfinite(x).all():
        raise InputError("the WAV file holds NaN or inf samples", path)
    if rate <= 0:
        raise InputError(f"bad sample rate {rate}", path)
    if max_seconds is not None and x.shape[-1] / rate > max_seconds:
        raise InputError(f"audio of {x.shape[-1] / rate:.1f} s exceeds the limit of {max_seconds:g} s", path)
    if sample_rate is not None and sample_rate != rate:
        return resample(x, rate, sample_rate), int(sample_rate)
    return x, int(rate)


def wav_bytes(samples: np.ndarray, sample_rate: int) -> bytes:
    """``[n]`` float samples -> the bytes of a mono 16-bit PCM WAV (``round(clip(x, -1, 1) * 32767)``)."""
    x = np.asarray(samples, dtype=np.float64).reshape(-1)
    if not np.isfinite(x).all():
        raise InputError("audio holds NaN or inf samples")
    pcm = (np.clip(x, -1.0, 1.0) * 32767.0).round().astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def write_wav(path: str | Path, samples: np.ndarray, sample_rate: int) -> None:
    """Mono 16-bit PCM WAV of ``[n]`` float samples in [-1, 1] (clipped), written atomically."""
    data = wav_bytes(samples, sample_rate)
    with atomic_write(path, "wb") as f:
        f.write(data)
