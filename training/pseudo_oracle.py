"""Pseudo-oracle faces for the A2-LLM paper's evaluation protocol (§6.3).

A2-LLM speaks its own answers, so the recorded ground-truth face of a held-out sample does not fit the generated
speech (the paper's "Generative Gap"). The paper therefore measures the generated motion against a *pseudo-oracle*:
the face an audio-driven model (DiffPoseTalk in the paper) computes from the *same* speech A2-LLM synthesised.

:class:`PseudoOracle` is that interface: given a sample key and the generated speech, return the reference motion
(a :class:`~a2llm_rt.face.clip.MotionClip`) or None when it has none. One implementation is bundled,
:class:`PrecomputedOracle`, which reads files the user computed beforehand (DiffPoseTalk is not bundled): run your
audio-driven model on the ``{key}.wav`` files that ``python -m training.eval_a2llm`` writes to its generation folder
and save each result as ``ORACLE_DIR/{key}.npz`` (our clip format, ``layout`` flame58 or arkit52, any frame rate; a
Live Link ``.csv`` or Audio2Face ``.json`` works too). Any other model plugs in as ``module:attribute`` naming an
object (or a zero-argument factory of one) with the same ``name`` and ``motion`` members.
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from a2llm_rt.errors import InputError
from a2llm_rt.face.clip import MotionClip

ORACLE_SUFFIXES = (".npz", ".csv", ".json")
# an oracle clip whose length differs from the generated speech by more than this was not made from that speech
MAX_DURATION_MISMATCH_S = 0.2


@runtime_checkable
class PseudoOracle(Protocol):
    """An audio-driven face model standing in for ground truth (§6.3)."""

    name: str
    """What the reference is (e.g. ``DiffPoseTalk``), reported with the metrics."""

    def motion(self, key: str, audio: np.ndarray, sample_rate: int) -> MotionClip | None:
        """The reference motion for the generated speech ``audio`` ``[n]`` float32 of sample ``key``; None when
        this oracle has none for it."""
        ...


class PrecomputedOracle:
    """Reads ``{key}.npz`` (or ``.csv`` / ``.json``) from ``directory``: motion an audio-driven model computed from
    the generated ``{key}.wav`` files beforehand. A clip whose duration differs from the speech by more than
    :data:`MAX_DURATION_MISMATCH_S` is refused with :class:`InputError` (it was computed from other audio)."""

    def __init__(self, directory: str | Path, name: str = "precomputed"):
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise InputError("pseudo-oracle folder does not exist", self.directory)
        self.name = name

    def path(self, key: str) -> Path | None:
        if not key or "/" in key or "\\" in key or key.startswith("."):
            raise InputError(f"sample key {key!r} cannot name a file")
        for suffix in ORACLE_SUFFIXES:
            p = self.directory / f"{key}{suffix}"
            if p.is_file():
                return p
        return None

    def motion(self, key: str, audio: np.ndarray, sample_rate: int) -> MotionClip | None:
        from a2llm_rt.face.io import load_clip

        p = self.path(key)
        if p is None:
            return None
        clip = load_clip(p)
        speech_s = len(audio) / float(sample_rate)
        clip_s = clip.num_frames / float(clip.fps)
        if math.fabs(speech_s - clip_s) > MAX_DURATION_MISMATCH_S:
            raise InputError(
                f"pseudo-oracle motion lasts {clip_s:.2f} s but the generated speech {speech_s:.2f} s: it was not "
                "computed from this answer's speech (rerun the audio-driven model on the new .wav files)",
                p,
            )
        return clip


def load_oracle(spec: str, name: str | None = None) -> PseudoOracle:
    """``precomputed:DIR`` (or a plain existing folder) -> :class:`PrecomputedOracle`; ``module:attribute`` -> that
    object (called first when it is a class or factory). InputError when it does not implement the interface."""
    if spec.startswith("precomputed:") or Path(spec).is_dir():
        folder = spec.split(":", 1)[1] if spec.startswith("precomputed:") else spec
        return PrecomputedOracle(folder, name or "precomputed")
    mod_name, sep, attr = spec.partition(":")
    if not sep or not mod_name or not attr:
        raise InputError(f"pseudo-oracle {spec!r}: give precomputed:DIR or module:attribute")
    try:
        obj = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as e:
        raise InputError(f"pseudo-oracle {spec!r} cannot be loaded: {e}") from None
    if isinstance(obj, type) or (callable(obj) and not isinstance(obj, PseudoOracle)):
        try:
            obj = obj()  # a class or a zero-argument factory
        except TypeError as e:
            raise InputError(f"pseudo-oracle {spec!r} cannot be created without arguments: {e}") from None
    if not isinstance(obj, PseudoOracle):
        raise InputError(f"pseudo-oracle {spec!r} has no `name` and `motion(key, audio, sample_rate)`")
    if name:
        obj.name = name
    return obj
