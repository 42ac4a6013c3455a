"""Log-mel features: the slaney filterbank, frame count, a numpy reference and a pure tone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from a2llm_rt.errors import InputError
from a2llm_rt.models.mel import (
    chunked_log_mel,
    hz_to_mel_slaney,
    log_mel_spectrogram,
    mel_frames,
    mel_to_hz_slaney,
    slaney_mel_filterbank,
)


def _reference_filterbank(n_mels: int, sr: int = 16000, n_fft: int = 400) -> np.ndarray:
    """Triangles written out with loops from Slaney's definition (independent of the vectorised code)."""

    def hz2mel(f):
        return 3.0 * f / 200.0 if f < 1000.0 else 15.0 + 27.0 * np.log(f / 1000.0) / np.log(6.4)

    def mel2hz(m):
        return 200.0 * m / 3.0 if m < 15.0 else 1000.0 * np.exp((m - 15.0) * np.log(6.4) / 27.0)

    top = hz2mel(sr / 2)
    edges = [mel2hz(top * i / (n_mels + 1)) for i in range(n_mels + 2)]
    freqs = [k * sr / n_fft for k in range(n_fft // 2 + 1)]
    w = np.zeros((n_mels, len(freqs)))
    for m in range(n_mels):
        lo, c, hi = edges[m], edges[m + 1], edges[m + 2]
        for k, f in enumerate(freqs):
            if lo < f < hi:
                w[m, k] = (f - lo) / (c - lo) if f <= c else (hi - f) / (hi - c)
        w[m] *= 2.0 / (hi - lo)
    return w


def _reference_log_mel(x: np.ndarray, n_mels: int) -> np.ndarray:
    x = np.pad(x.astype(np.float64), (0, 479))
    x = np.pad(x, (200, 200), mode="reflect")
    n_frames = 1 + (len(x) - 400) // 160
    win = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)  # periodic Hann
    frames = np.stack([x[i * 160 : i * 160 + 400] * win for i in range(n_frames)])
    power = (np.abs(np.fft.rfft(frames, axis=1)) ** 2).T[:, :-1]
    mel = _reference_filterbank(n_mels) @ power
    log = np.log10(np.maximum(mel, 1e-10))
    log = np.maximum(log, log.max() - 8.0)
    return (log + 4.0) / 4.0


def test_slaney_scale_and_filterbank():
    assert hz_to_mel_slaney(1000.0) == pytest.approx(15.0)
    assert hz_to_mel_slaney(500.0) == pytest.approx(7.5)
    assert mel_to_hz_slaney(hz_to_mel_slaney(3000.0)) == pytest.approx(3000.0)
    fb = slaney_mel_filterbank(128)
    assert fb.shape == (128, 201) and fb.dtype == torch.float32
    np.testing.assert_allclose(fb.numpy(), _reference_filterbank(128), rtol=1e-5, atol=1e-7)


def test_log_mel_matches_numpy_reference():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(16000) * 0.1).astype(np.float32)
    got = log_mel_spectrogram(torch.from_numpy(x))
    assert got.shape == (128, mel_frames(16000)) == (128, 102)
    np.testing.assert_allclose(got.numpy(), _reference_log_mel(x, 128), atol=2e-4)


def test_pure_tone_peaks_in_its_mel_bin():
    f0 = 1500.0
    t = np.arange(8000) / 16000.0
    mel = log_mel_spectrogram(torch.from_numpy(np.sin(2 * np.pi * f0 * t).astype(np.float32)))
    mid = mel[:, 10:-10].mean(1)
    edges = mel_to_hz_slaney(np.linspace(0, hz_to_mel_slaney(8000.0), 130))
    want = int(np.argmin(np.abs(edges[1:-1] - f0)))  # the bin whose centre is nearest the tone
    assert abs(int(mid.argmax()) - want) <= 1
    assert float(mel.max()) == pytest.approx(float(mel.max()))  # finite
    assert float(mel.min()) >= float(mel.max()) - 2.0 - 1e-6  # floor at max - 8 (in log10) -> 2 after /4


def test_chunks_and_bad_input():
    chunks = chunked_log_mel(torch.zeros(16000 * 26) + 0.01)
    assert [c.shape[1] for c in chunks] == [mel_frames(400000), mel_frames(16000)] == [2502, 102]
    with pytest.raises(InputError):
        log_mel_spectrogram(torch.zeros(0))
    with pytest.raises(InputError, match="NaN"):
        log_mel_spectrogram(torch.tensor([0.0, float("nan")] * 100))
