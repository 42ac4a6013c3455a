"""Token sequences of FLAME-QA samples for the backbone, per task, with motion targets at the answer's audio tokens.

Layouts (Step-Audio-2 chat format; the prompt is built by ``a2llm_rt.models.prompt.ChatHistory``, the class the
engine prefills from, with the same system message, so a sample's prompt ids are the engine's prefill ids;
``<interleave>`` is upstream's TA4 stream of :meth:`TokenLayout.interleave`)::

    AQAA   system (DEFAULT_SYSTEM_PROMPT) <|BOT|>human\\n <audio> <|EOT|> <|BOT|>assistant\\n <interleave(...)> <|EOT|>
    Repeat  system "Repeat ..." + the same, the answer being the question's words spoken back
    TTS    system "Read ..." <|BOT|>human\\n {question_text} <|EOT|> <|BOT|>assistant\\n <interleave(...)> <|EOT|>
    ASR     system "Transcribe ..." <|BOT|>human\\n <audio> <|EOT|> <|BOT|>assistant\\n {answer_text} <|EOT|>

Loss labels cover the assistant's tokens after ``<tts_start>`` (which inference prefills) and its ``<|EOT|>``;
``labels[t]`` is the target of ``input_ids[t]`` (the loss shifts by one). Motion alignment: the ``k``-th answer audio
code sits at ``audio_positions[k]``; motion frame ``k`` (and motion token ``k // G``) is predicted from the hidden
state there. Frames are cut to a whole number of motion tokens: ``T = (min(codes, frames) // G) * G``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from a2llm_rt.errors import InputError
from a2llm_rt.models.prompt import DEFAULT_SYSTEM_PROMPT, ChatFormat, ChatHistory
from a2llm_rt.models.token_layout import TokenLayout
from a2llm_rt.models.tokenizer import TextTokenizer
from training.data.audio_tokenizers import AudioTokenizer, check_audio_tokenizer
from training.data.format import ANSWER_SR, FlameQASample, sample_problems

IGNORE = -100
SYSTEM_PROMPTS: dict[str, str | None] = {
    "aqaa": DEFAULT_SYSTEM_PROMPT,
    "repeat": "Repeat what the user says.",
    "tts": "Read the user's text aloud.",
    "asr": "Transcribe the user's speech.",
}


@dataclasses.dataclass
class BuiltSample:
    """A sample ready for the model (all tensors on CPU).

    Attributes:
        input_ids: ``[L]`` int64.
        labels: ``[L]`` int64, ``-100`` where no loss.
        mels: one ``[n_mels, T_i]`` per ``<audio_start>`` block of ``input_ids``.
        audio_positions: ``[T]`` int64 index in ``input_ids`` of answer audio code ``k`` (T multiple of G; may be 0).
        motion: ``[T, D]`` float32 motion frames aligned to ``audio_positions`` (None without motion).
        motion_codes: ``[T/G, N_q]`` int64 (None when neither stored nor a motion tokenizer was given).
    """

    key: str
    task: str
    input_ids: torch.Tensor
    labels: torch.Tensor
    mels: list[torch.Tensor]
    audio_positions: torch.Tensor
    motion: torch.Tensor | None
    motion_codes: torch.Tensor | None
    emotion: str | None = None


class SequenceBuilder:
    """Builds :class:`BuiltSample` from :class:`FlameQASample` for one tokenizer + token layout.

    ``audio_tokenizer`` turns ``answer_audio`` into codes when a sample has no ``answer_codes`` (refused when it
    cannot make this layout's codes: a toy for a real backbone, another codebook size); ``motion_tokenizer``
    (a :class:`~a2llm_rt.models.motion_tokenizer.MotionTokenizer`) makes ``motion_codes`` when a sample has none.
    """

    def __init__(
        self,
        tokenizer: TextTokenizer,
        layout: TokenLayout,
        audio_tokenizer: AudioTokenizer | None = None,
        motion_tokenizer=None,
        group: int = 5,
        n_mels: int = 128,
        system_prompts: dict[str, str | None] | None = None,
    ):
        if audio_tokenizer is not None:
            check_audio_tokenizer(audio_tokenizer, layout)
        self.fmt = ChatFormat(tokenizer, layout, n_mels=n_mels)
        self.layout = layout
        self.audio_tokenizer = audio_tokenizer
        self.motion_tokenizer = motion_tokenizer
        self.group = group
        self.n_mels = n_mels
        self.system_prompts = dict(SYSTEM_PROMPTS if system_prompts is None else system_prompts)

    # ---- pieces --------------------------------------------------------------------------------------------------
    def answer_codes(self, s: FlameQASample) -> np.ndarray:
        if s.answer_codes is not None:
            codes = np.asarray(s.answer_codes, dtype=np.int64)
        elif s.answer_audio is not None:
            if self.audio_tokenizer is None:
                raise InputError(f"sample {s.key}: answer audio needs an audio tokenizer (none given)")
            codes = np.asarray(self.audio_tokenizer.encode(s.answer_audio, ANSWER_SR), dtype=np.int64)
        else:
            raise InputError(f"sample {s.key}: no answer audio or codes")
        if len(codes) and (codes.min() < 0 or codes.max() >= self.layout.audio_codes):
            raise InputError(
                f"sample {s.key}: audio codes outside [0, {self.layout.audio_codes}) of layout {self.layout.name!r}"
            )
        return codes

    def _motion_codes(self, s: FlameQASample, motion: np.ndarray) -> torch.Tensor | None:
        t = motion.shape[0]
        if s.motion_codes is not None:
            return torch.as_tensor(np.asarray(s.motion_codes)[: t // self.group], dtype=torch.long)
        if self.motion_tokenizer is None or t == 0:
            return None
        with torch.no_grad():
            m = torch.as_tensor(motion, dtype=torch.float32)[None]
            return self.motion_tokenizer.encode(m)[0].to(torch.long).cpu()

    # ---- whole samples -------------------------------------------------------------------------------------------
    def build(self, s: FlameQASample) -> BuiltSample:
        """The token sequence of ``s`` (raises :class:`InputError` on a sample the validator would reject)."""
        problems = sample_problems(s, self.group)
        if problems:
            raise InputError(f"sample {s.key}: " + "; ".join(problems))
        fmt, lay = self.fmt, self.layout
        hist = ChatHistory(fmt, self.system_prompts.get(s.task))
        if s.task == "tts":
            hist.add_user_text(s.question_text or "")
        else:
            hist.add_user_audio(torch.as_tensor(s.question_audio, dtype=torch.float32))
        hist.start_assistant(speech=s.task != "asr")
        prompt, mels = hist.ids, hist.mels
        if s.task == "asr":
            answer = fmt.encode(s.answer_text) + [lay.special("eot")]
            ids = prompt + answer
            labels = [IGNORE] * len(prompt) + answer
            return BuiltSample(
                s.key, s.task, torch.tensor(ids), torch.tensor(labels), mels, torch.zeros(0, dtype=torch.long),
                None, None, s.emotion,
            )  # fmt: skip
        codes = self.answer_codes(s)
        motion = np.asarray(s.motion, dtype=np.float32)
        t = (min(len(codes), len(motion)) // self.group) * self.group
        motion = motion[:t]
        stream = lay.interleave(fmt.encode(s.answer_text), codes.tolist())[1:]  # the prompt ends in <tts_start>
        answer = stream + [lay.special("eot")]
        ids = prompt + answer
        labels = [IGNORE] * len(prompt) + answer
        start = len(prompt)
        positions = [start + i for i, tok in enumerate(stream) if lay.is_audio(tok)][:t]
        return BuiltSample(
            key=s.key,
            task=s.task,
            input_ids=torch.tensor(ids, dtype=torch.long),
            labels=torch.tensor(labels, dtype=torch.long),
            mels=mels,
            audio_positions=torch.tensor(positions, dtype=torch.long),
            motion=torch.from_numpy(motion),
            motion_codes=self._motion_codes(s, motion),
            emotion=s.emotion,
        )


@dataclasses.dataclass
class Batch:
    """Right-padded batch of :class:`BuiltSample`.

    input_ids / labels / attention_mask ``[B, L]``; mels: chunks in row-major order; audio_positions ``[B, T]``
    (0 where padded); motion_codes ``[B, T/G, N_q]`` (``-100`` where padded); frame_mask ``[B, T]`` bool.
    """

    input_ids: torch.Tensor
    labels: torch.Tensor
    attention_mask: torch.Tensor
    mels: list[torch.Tensor]
    audio_positions: torch.Tensor
    motion_codes: torch.Tensor | None
    frame_mask: torch.Tensor
    keys: list[str]

    def to(self, device: torch.device | str) -> Batch:
        return dataclasses.replace(
            self,
            input_ids=self.input_ids.to(device),
            labels=self.labels.to(device),
            attention_mask=self.attention_mask.to(device),
            mels=[m.to(device) for m in self.mels],
            audio_positions=self.audio_positions.to(device),
            motion_codes=None if self.motion_codes is None else self.motion_codes.to(device),
            frame_mask=self.frame_mask.to(device),
        )


def collate(samples: list[BuiltSample], pad_id: int, group: int = 5, n_q: int | None = None) -> Batch:
    """Pad a list of built samples into a :class:`Batch` (``n_q`` sets the code depth when no sample has codes)."""
    b = len(samples)
    length = max(len(s.input_ids) for s in samples)
    ids = torch.full((b, length), pad_id, dtype=torch.long)
    labels = torch.full((b, length), IGNORE, dtype=torch.long)
    mask = torch.zeros((b, length), dtype=torch.long)
    t = max(len(s.audio_positions) for s in samples)
    t = max(group, -(-t // group) * group)
    pos = torch.zeros((b, t), dtype=torch.long)
    fmask = torch.zeros((b, t), dtype=torch.bool)
    depth = next((s.motion_codes.shape[1] for s in samples if s.motion_codes is not None), n_q)
    codes = None if depth is None else torch.full((b, t // group, depth), IGNORE, dtype=torch.long)
    mels: list[torch.Tensor] = []
    for i, s in enumerate(samples):
        n = len(s.input_ids)
        ids[i, :n], labels[i, :n], mask[i, :n] = s.input_ids, s.labels, 1
        k = len(s.audio_positions)
        pos[i, :k], fmask[i, :k] = s.audio_positions, True
        if codes is not None and s.motion_codes is not None:
            codes[i, : s.motion_codes.shape[0]] = s.motion_codes
        mels += s.mels
    return Batch(ids, labels, mask, mels, pos, codes, fmask, [s.key for s in samples])
