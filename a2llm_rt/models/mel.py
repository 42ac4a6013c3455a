"""Log-mel features of Step-Audio-2's audio input, in torch (no librosa).

Exactly the recipe of stepfun-ai/Step-Audio2 ``utils.log_mel_spectrogram`` (Whisper's, with 128 bins and a right
pad of 479 samples): ``torch.stft(n_fft=400, hop=160, periodic Hann, center=True reflect)``, the last frame
dropped, power spectrum, slaney mel filterbank (librosa defaults: slaney mel scale, slaney area normalisation,
0 Hz .. 8 kHz), ``log10(max(x, 1e-10))``, floor at ``max - 8``, then ``(x + 4) / 4``.

A waveform of ``N`` samples gives ``(N + 479) // 160`` frames. Audio longer than 25 s is cut into 25 s chunks,
each with its own features and its own ``<audio_start> ... <audio_end>`` block (see ``prompt.py``).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from a2llm_rt.audio import INPUT_SAMPLE_RATE
from a2llm_rt.errors import InputError

SAMPLE_RATE = INPUT_SAMPLE_RATE
N_FFT = 400
HOP = 160
PAD_SAMPLES = 479
CHUNK_SECONDS = 25.0


def hz_to_mel_slaney(f: np.ndarray | float) -> np.ndarray:
    """Slaney's mel scale (Auditory Toolbox; librosa ``htk=False``): linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    f_sp = 200.0 / 3.0
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    lin = f / f_sp
    log = min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep
    return np.where(f >= min_log_hz, log, lin)


def mel_to_hz_slaney(m: np.ndarray | float) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f_sp = 200.0 / 3.0
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


@functools.lru_cache(maxsize=8)
def _filterbank_np(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    fft_freqs = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    mel_pts = np.linspace(hz_to_mel_slaney(fmin), hz_to_mel_slaney(fmax), n_mels + 2)
    hz_pts = mel_to_hz_slaney(mel_pts)
    fdiff = np.diff(hz_pts)
    ramps = hz_pts[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (hz_pts[2 : n_mels + 2] - hz_pts[:n_mels]))[:, None]  # slaney area normalisation
    weights.setflags(write=False)
    return weights


def slaney_mel_filterbank(
    n_mels: int = 128, sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, fmin: float = 0.0, fmax: float | None = None
) -> torch.Tensor:
    """Mel filterbank ``[n_mels, n_fft // 2 + 1]`` float32, equal to ``librosa.filters.mel`` with its defaults."""
    fmax = sample_rate / 2.0 if fmax is None else fmax
    return torch.from_numpy(_filterbank_np(sample_rate, n_fft, n_mels, float(fmin), float(fmax)).astype(np.float32))


def mel_frames(n_samples: int, padding: int = PAD_SAMPLES) -> int:
    """Number of mel frames for a waveform of ``n_samples`` samples."""
    return (n_samples + padding) // HOP


def log_mel_spectrogram(audio: torch.Tensor, n_mels: int = 128, padding: int = PAD_SAMPLES) -> torch.Tensor:
    """Log-mel features of one mono 16 kHz waveform.

    audio: ``[N]`` float (any float dtype; computed in float32 on its device). Returns ``[n_mels, (N + padding)
    // 160]`` float32. Raises :class:`InputError` on an empty waveform or NaN/inf samples.
    """
    if audio.ndim != 1:
        raise InputError(f"log_mel_spectrogram wants one mono waveform [N], got shape {tuple(audio.shape)}")
    if audio.numel() == 0:
        raise InputError("empty waveform")
    audio = audio.to(torch.float32)
    if not torch.isfinite(audio).all():
        raise InputError("waveform holds NaN or inf samples")
    if padding > 0:
        audio = torch.nn.functional.pad(audio, (0, padding))
    window = torch.hann_window(N_FFT, device=audio.device)
    stft = torch.stft(audio, N_FFT, HOP, window=window, return_complex=True)  # [201, frames + 1]
    power = stft[..., :-1].abs() ** 2
    mel = slaney_mel_filterbank(n_mels).to(audio.device) @ power  # [n_mels, frames]
    log_spec = torch.clamp(mel, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


def split_chunks(audio: torch.Tensor, chunk_seconds: float = CHUNK_SECONDS, sample_rate: int = SAMPLE_RATE) -> list:
    """Cut ``[N]`` into consecutive chunks of ``chunk_seconds`` (the last one shorter); list of ``[n_i]`` views."""
    step = int(round(chunk_seconds * sample_rate))
    return [audio[i : i + step] for i in range(0, audio.shape[0], step)]


def chunked_log_mel(
    audio: torch.Tensor, n_mels: int = 128, chunk_seconds: float = CHUNK_SECONDS, sample_rate: int = SAMPLE_RATE
) -> list[torch.Tensor]:
    """Features of each 25 s chunk of ``[N]``: a list of ``[n_mels, T_i]`` (as Step-Audio-2 feeds long audio)."""
    return [log_mel_spectrogram(c, n_mels) for c in split_chunks(audio, chunk_seconds, sample_rate)]
