"""One character's face stream: idle life, the crossfade into and out of answers, and the emotion on top.

:class:`CharacterFace` composes the three streaming pieces so that a server (not wired yet: see the README's "Game
characters" section) can call one ``step`` per tick for each session:

``idle frames`` (:class:`~a2llm_rt.face.idle.IdleGenerator`, listening while the player speaks)
-> ``crossfade`` with the answer's LIVELINK61 frames when there are any (:class:`~a2llm_rt.face.idle.Crossfader`)
-> ``emotion`` offset/gain (:class:`~a2llm_rt.face.emotion.EmotionBlender`, blended on changes).

The emotion is applied after the crossfade, so a mood shows between answers as well as during them. All state is per
session (:class:`CharacterFaceState`); ``step`` returns ``(frames [n, 61] float32, new_state)`` without modifying
the state it was given.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from a2llm_rt.errors import InputError
from a2llm_rt.face.emotion import EmotionBlender, EmotionState
from a2llm_rt.face.idle import Crossfader, CrossfadeState, IdleConfig, IdleGenerator, IdleState
from a2llm_rt.face.layouts import LIVELINK61_DIM
from a2llm_rt.streaming import StreamingState


@dataclasses.dataclass
class CharacterFaceState(StreamingState):
    idle: IdleState
    fade: CrossfadeState
    emotion: EmotionState


class CharacterFace:
    """Idle + crossfade + emotion for LIVELINK61 frames at the idle config's frame rate."""

    def __init__(
        self,
        idle: IdleConfig | None = None,
        emotions: EmotionBlender | None = None,
        crossfade_frames: int = 6,
    ):
        self.idle = IdleGenerator(idle)
        self.fade = Crossfader(crossfade_frames)
        self.emotion = emotions or EmotionBlender(fps=self.idle.cfg.fps)
        if self.emotion.fps != self.idle.cfg.fps:
            raise InputError(f"emotion blender runs at {self.emotion.fps} fps, the idle stream at {self.idle.cfg.fps}")

    def init_state(self, seed: int, emotion: str = "neutral", intensity: float = 0.0) -> CharacterFaceState:
        return CharacterFaceState(
            self.idle.init_state(seed), self.fade.init_state(), self.emotion.init_state(emotion, intensity)
        )

    def set_listening(self, state: CharacterFaceState, listening: bool) -> CharacterFaceState:
        return dataclasses.replace(state, idle=self.idle.set_listening(state.idle, listening))

    def set_emotion(self, state: CharacterFaceState, name: str, intensity: float) -> CharacterFaceState:
        """Blend to ``name`` at ``intensity`` (:class:`InputError` for an unknown name or a bad intensity)."""
        return dataclasses.replace(state, emotion=self.emotion.set_emotion(state.emotion, name, intensity))

    def step(
        self, n: int, state: CharacterFaceState, answer: np.ndarray | None = None
    ) -> tuple[np.ndarray, CharacterFaceState]:
        """The next ``n`` frames ``[n, 61]``; ``answer`` ``[n, 61]`` LIVELINK61 during an answer, else None."""
        if answer is not None:
            answer = np.asarray(answer, dtype=np.float32)
            if answer.shape != (n, LIVELINK61_DIM):
                raise InputError(f"answer frames must be [{n}, {LIVELINK61_DIM}] LIVELINK61, got {answer.shape}")
        idle, idle_st = self.idle.step(n, state.idle)
        mixed, fade_st = self.fade.step(idle, answer, state.fade)
        out, emo_st = self.emotion.step(mixed, state.emotion)
        return out, CharacterFaceState(idle_st, fade_st, emo_st)
