"""Audio I/O for curation: read a wav (PCM 8/16/24/32-bit or float) as mono float32, resample, write PCM16 wav."""

from __future__ import annotations

import io
import wave
from math import gcd
from pathlib import Path

import numpy as np

from a2llm_rt.errors import InputError
from a2llm_rt.utils.fileio import atomic_write

AUDIO_SUFFIXES = (".wav",)


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """(mono float32 ``[N]`` in [-1, 1], sample rate). :class:`InputError` on an unreadable or empty file."""
    path = Path(path)
    try:
        from scipy.io import wavfile

        sr, data = wavfile.read(str(path))
    except (OSError, ValueError) as e:
        raise InputError(f"unreadable wav: {e}", path) from None
    a = np.asarray(data)
    if a.dtype.kind in "iu":
        info = np.iinfo(a.dtype)
        a = (a.astype(np.float64) - (info.max + 1 + info.min) / 2) / ((info.max - info.min + 1) / 2)
    a = a.astype(np.float32)
    if a.ndim == 2:
        a = a.mean(1)
    if a.size == 0:
        raise InputError("empty audio", path)
    if not np.isfinite(a).all():
        raise InputError("audio holds NaN/inf samples", path)
    return a, int(sr)


def resample_audio(a: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Polyphase resampling ``[N]`` -> ``[N * sr_out / sr_in]`` float32."""
    if sr_in == sr_out:
        return np.asarray(a, dtype=np.float32)
    from scipy.signal import resample_poly

    g = gcd(sr_in, sr_out)
    return resample_poly(np.asarray(a, dtype=np.float64), sr_out // g, sr_in // g).astype(np.float32)


def wav_bytes(a: np.ndarray, sr: int) -> bytes:
    pcm = (np.clip(np.asarray(a, dtype=np.float64), -1, 1) * 32767).round().astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def write_wav(path: str | Path, a: np.ndarray, sr: int) -> None:
    """Mono PCM16 wav, atomically."""
    with atomic_write(path, "wb") as f:
        f.write(wav_bytes(a, sr))
