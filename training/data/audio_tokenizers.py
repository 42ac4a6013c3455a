"""Pluggable answer-audio tokenizers: 24 kHz waveform -> 25 Hz integer codes (one per motion frame).

The real backbone uses CosyVoice2 codes (``speech_tokenizer_v2_25hz.onnx``, 6561 codes); plug it in with
``module:attribute`` (a class or factory called without arguments) that follows :class:`AudioTokenizer`.
:class:`BandEnergyTokenizer` is the built-in one for tests and synthetic data: deterministic, no weights, and its
codes carry the frame's loudness and brightness (so a motion model can learn from them).
"""

from __future__ import annotations

import importlib
import math
from typing import Protocol, runtime_checkable

import numpy as np

from a2llm_rt.errors import InputError

TOKEN_RATE = 25.0


@runtime_checkable
class AudioTokenizer(Protocol):
    """Waveform -> 25 Hz codes. ``encode`` returns ``[ceil(N * 25 / sample_rate)]`` int64 codes in
    ``[0, codebook_size)``."""

    codebook_size: int

    def encode(self, wave: np.ndarray, sample_rate: int) -> np.ndarray: ...


class BandEnergyTokenizer:
    """Built-in test tokenizer: per 40 ms frame, ``code = energy_level * n_bright + brightness_level``.

    ``energy_level``: frame RMS in dB, quantized in ``n_energy`` steps over [-60, 0] dBFS; ``brightness_level``:
    zero-crossing rate quantized in ``n_bright`` steps. ``codebook_size = n_energy * n_bright``.
    """

    def __init__(self, n_energy: int = 8, n_bright: int = 8):
        self.n_energy = n_energy
        self.n_bright = n_bright
        self.codebook_size = n_energy * n_bright

    def encode(self, wave: np.ndarray, sample_rate: int) -> np.ndarray:
        w = np.asarray(wave, dtype=np.float64).reshape(-1)
        hop = sample_rate / TOKEN_RATE
        n = max(1, math.ceil(len(w) / hop))
        codes = np.empty(n, dtype=np.int64)
        for k in range(n):
            f = w[int(round(k * hop)) : int(round((k + 1) * hop))]
            if f.size == 0:
                f = np.zeros(1)
            db = 20 * np.log10(np.sqrt(np.mean(f * f)) + 1e-9)
            e = int(np.clip((db + 60.0) / 60.0 * self.n_energy, 0, self.n_energy - 1))
            zcr = np.mean(np.abs(np.diff(np.sign(f)))) / 2 if f.size > 1 else 0.0
            b = int(np.clip(zcr * 2 * self.n_bright, 0, self.n_bright - 1))
            codes[k] = e * self.n_bright + b
        return codes


def load_audio_tokenizer(spec: str | None) -> AudioTokenizer:
    """``None``/``"builtin"``: :class:`BandEnergyTokenizer`; ``"package.module:attr"``: ``attr()`` from that module."""
    if spec in (None, "", "builtin"):
        return BandEnergyTokenizer()
    mod, _, attr = spec.partition(":")
    if not attr:
        raise InputError(f"audio tokenizer {spec!r} must be 'builtin' or 'package.module:attribute'")
    try:
        obj = getattr(importlib.import_module(mod), attr)()
    except (ImportError, AttributeError) as e:
        raise InputError(f"cannot load audio tokenizer {spec!r}: {e}") from None
    if not isinstance(obj, AudioTokenizer):
        raise InputError(f"audio tokenizer {spec!r} has no codebook_size / encode(wave, sample_rate)")
    return obj
