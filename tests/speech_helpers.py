"""Test speech from espeak-ng (installed by `make deb`): utterances at 16 kHz separated by known silences."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import wave
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

SAMPLE_RATE = 16000


def espeak(text: str) -> np.ndarray:
    """``text`` spoken by espeak-ng, float32 ``[n]`` at 16 kHz, trimmed to its first and last audible sample (so the
    truth of where speech starts and ends is exact). Skips the calling test when espeak-ng is not installed."""
    from scipy.signal import resample_poly

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (make deb installs it)")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "say.wav"
        subprocess.run(["espeak-ng", "-v", "en", "-w", str(path), text], check=True, capture_output=True, timeout=60)
        with wave.open(str(path)) as w:
            sr = w.getframerate()
            x = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768.0
    assert sr == 22050, sr
    x = resample_poly(x, 320, 441).astype(np.float32)  # 22050 -> 16000
    nz = np.flatnonzero(np.abs(x) > 1e-3)
    return x[nz[0] : nz[-1] + 1]


def conversation(
    texts: Sequence[str], gaps_s: Sequence[float], noise: float = 1e-3, seed: int = 0
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Utterances with ``gaps_s[0]`` of silence before, ``gaps_s[i + 1]`` after utterance ``i``, and faint white
    noise: (signal ``[n]`` in [-1, 1], ``[(start, end)]`` sample offsets of each utterance)."""
    assert len(gaps_s) == len(texts) + 1
    parts = [np.zeros(int(gaps_s[0] * SAMPLE_RATE), np.float32)]
    truth, pos = [], parts[0].size
    for text, gap in zip(texts, gaps_s[1:], strict=True):
        u = espeak(text)
        truth.append((pos, pos + u.size))
        parts += [u, np.zeros(int(gap * SAMPLE_RATE), np.float32)]
        pos += u.size + parts[-1].size
    sig = np.concatenate(parts)
    sig += np.random.default_rng(seed).normal(0, noise, sig.size).astype(np.float32)
    return np.clip(sig, -1, 1), truth
