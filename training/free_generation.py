"""Free generation of answers from a trained A2-LLM stage, as the A2-LLM paper evaluates (§6.3).

The model answers each held-out *question* on its own: the engine (:class:`~a2llm_rt.engine.engine.Engine`, the
deployed decode loop) runs over the stage's weights (the backbone with the stage's LoRA merged in, its connector, the
recipe's motion tokenizer and a vocoder), so text, speech and face are the model's own, nothing is teacher-forced.
:func:`write_answers` keeps each answer as ``{key}.wav`` (the speech an audio-driven pseudo-oracle is run on),
``{key}.npz`` (the face, in the motion tokenizer's layout) and ``{key}.txt``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from a2llm_rt.audio import write_wav
from a2llm_rt.errors import InputError
from a2llm_rt.face.clip import MotionClip
from a2llm_rt.utils.fileio import atomic_write
from training.data.format import QUESTION_SR, FlameQASample


@dataclasses.dataclass
class GeneratedAnswer:
    """One freely generated answer.

    Attributes:
        key: the held-out sample's key.
        text: the answer text.
        audio: ``[n]`` float32 speech at ``sample_rate`` (24 kHz).
        sample_rate: of ``audio``.
        motion: the face at 25 fps in the motion tokenizer's layout (``flame58`` or ``arkit52``), ``[T, D]``.
        arkit52: ``[T, 52]`` the same face in ARKit weights.
        reason: why the answer ended (``eot``, ``max_tokens``, ...).
    """

    key: str
    text: str
    audio: np.ndarray
    sample_rate: int
    motion: MotionClip
    arkit52: np.ndarray
    reason: str


def stage_stack(recipe, stage: int, *, vocoder: str = "tone", prompt_wav: str | Path | None = None, device="cpu"):
    """The engine :class:`~a2llm_rt.engine.builders.Stack` of a trained stage (LoRA merged into the backbone)."""
    from a2llm_rt.engine.builders import Stack, load_vocoder
    from a2llm_rt.models.lora import merge_lora
    from training.train_a2llm import load_stage_model
    from training.train_tokenizer import load_tokenizer

    if not recipe.model.motion_tokenizer:
        raise InputError("the recipe names no motion_tokenizer: cannot decode motion")
    model, tok = load_stage_model(recipe, Path(recipe.out), stage)
    backbone = merge_lora(model.peft[0])
    motion = load_tokenizer(recipe.model.motion_tokenizer, device)
    stack = Stack(
        backbone=backbone.to(device).eval(),
        tokenizer=tok,
        connector=model.connector.to(device).eval(),
        motion=motion,
        vocoder=load_vocoder(vocoder, backbone.layout.audio_codes, prompt_wav),
    )
    stack.check()
    return stack


def generate_answers(
    stack, samples: list[FlameQASample], *, engine_config=None, seed: int = 0, progress: bool = False
) -> tuple[list[GeneratedAnswer], list[str]]:
    """Answer every sample's spoken question (samples without question audio are skipped, and said so).

    Returns (answers, notes). Each question is a fresh session (no conversation history); sampling is the engine's
    default with a per-sample seed, so a rerun gives the same answers. A turn that fails is noted and skipped.
    """
    from tqdm import tqdm

    from a2llm_rt.engine.engine import Engine, EngineConfig
    from a2llm_rt.engine.events import AudioChunk, Error, FaceFrames, TextDelta, TurnEnd

    engine = Engine(stack, engine_config or EngineConfig(max_sessions=1))
    layout = stack.motion.cfg.layout
    answers: list[GeneratedAnswer] = []
    notes: list[str] = []
    skipped = [s.key for s in samples if s.question_audio is None]
    if skipped:
        notes.append(f"{len(skipped)} samples have no spoken question (e.g. {skipped[0]!r}): not generated")
    todo = [s for s in samples if s.question_audio is not None]
    for i, s in enumerate(tqdm(todo, desc="generating", unit="answer", disable=not progress)):
        sampling = dataclasses.replace(engine.cfg.sampling, seed=seed + i)
        session = engine.new_session(sampling=sampling)
        try:
            with torch.no_grad():
                events = engine.run_turn(session, s.question_audio, QUESTION_SR)
        finally:
            engine.close_session(session)
        text, audio, frames, arkit, end = [], [], [], [], None
        for ev in events:
            if isinstance(ev, TextDelta):
                text.append(ev.text)
            elif isinstance(ev, AudioChunk):
                audio.append((ev.sample_offset, ev.pcm))
            elif isinstance(ev, FaceFrames):
                frames.append(ev.flame58 if layout == "flame58" else ev.arkit52)
                arkit.append(ev.arkit52)
            elif isinstance(ev, Error):
                notes.append(f"{s.key}: generation failed: {ev}")
            elif isinstance(ev, TurnEnd):
                end = ev
        if end is None or not frames:
            if end is not None:
                notes.append(f"{s.key}: the answer has no face frames ({end.reason})")
            continue
        sr = stack.vocoder.sample_rate
        pcm = np.concatenate([p for _, p in sorted(audio, key=lambda x: x[0])]) if audio else np.zeros(0, np.float32)
        motion = np.concatenate(frames).astype(np.float32)
        answers.append(
            GeneratedAnswer(
                key=s.key,
                text="".join(text),
                audio=pcm.astype(np.float32),
                sample_rate=sr,
                motion=MotionClip(motion, float(stack.motion.cfg.fps), layout),
                arkit52=np.concatenate(arkit).astype(np.float32),
                reason=end.reason,
            )
        )
    return answers, notes


def write_answers(answers: list[GeneratedAnswer], folder: str | Path) -> Path:
    """``{key}.wav`` / ``{key}.npz`` / ``{key}.txt`` per answer in ``folder`` (run the pseudo-oracle on the wavs)."""
    from a2llm_rt.face.io import save_clip

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for a in answers:
        if not a.key or "/" in a.key or "\\" in a.key or a.key.startswith("."):
            raise InputError(f"sample key {a.key!r} cannot name a file")
        write_wav(folder / f"{a.key}.wav", a.audio, a.sample_rate)
        save_clip(a.motion, folder / f"{a.key}.npz")
        with atomic_write(folder / f"{a.key}.txt", "w") as f:
            f.write(a.text + "\n")
    return folder
