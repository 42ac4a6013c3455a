"""Small FLAME-QA samples built in code for the training tests (random audio and motion, seeded)."""

from __future__ import annotations

import numpy as np

from training.data.format import ANSWER_SR, QUESTION_SR, SAMPLES_PER_FRAME, FlameQASample


def make_sample(
    key: str, task: str = "aqaa", frames: int = 20, layout: str = "arkit52", seed: int = 0
) -> FlameQASample:
    """A valid sample of ``task``: 0.5 s question audio, ``frames`` answer frames of audio and motion."""
    rng = np.random.default_rng(seed)
    dim = 52 if layout == "arkit52" else 58
    q_audio = (0.1 * rng.standard_normal(QUESTION_SR // 2)).astype(np.float32)
    a_audio = (0.2 * rng.standard_normal(frames * SAMPLES_PER_FRAME)).astype(np.float32)
    motion = rng.uniform(0, 1, (frames, dim)).astype(np.float32)
    s = FlameQASample(
        key=key,
        task=task,
        question_text="How are you today?",
        answer_text="I am fine, thank you.",
        question_audio=None if task == "tts" else q_audio,
        answer_audio=None if task == "asr" else a_audio,
        motion=None if task == "asr" else motion,
        motion_layout=layout,
        emotion="happy",
        meta={"source": "test", "seed": seed},
    )
    assert ANSWER_SR == 24000
    return s
