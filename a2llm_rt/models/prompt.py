"""Step-Audio-2 chat prompts and the per-session multi-turn history.

Format (stepfun-ai/Step-Audio2 ``stepaudio2.py`` ``StepAudio2.apply_chat_template``):

- each message is ``<|BOT|>{role}\\n{content}<|EOT|>`` with roles ``system``, ``human`` (the user), ``assistant``;
  a text message is tokenized as one string;
- user audio: ``<|BOT|>human\\n`` then, per 25 s chunk, ``<audio_start>`` + ``<audio_patch>`` x n + ``<audio_end>``
  (n = :func:`~a2llm_rt.models.audio_encoder.audio_placeholder_count` of the chunk's mel frames), then ``<|EOT|>``;
- a spoken answer is prefilled ``<|BOT|>assistant\\n<tts_start>`` and left open; a text answer ``<|BOT|>assistant\\n``;
- multi-turn: the assistant's generated tokens (text, ``<tts_pad>``, audio codes, ``<tts_end>``) stay in the history
  and the turn is closed with ``<|EOT|>`` (the reference re-sends ``<tts_start>`` + the tokens + ``<|EOT|>``; the
  vLLM chat template writes a spoken answer as ``<|BOT|>assistant\n`` + the TA4 stream + ``<|EOT|>``, compared in
  ``tests/models/test_prompt_parity.py`` against ``tests/fixtures/upstream/chat_template.json``).
- one prompt for training and inference: ``training.data.builders`` builds a sample's prompt with this module's
  :class:`ChatHistory` and the same :data:`DEFAULT_SYSTEM_PROMPT` as the engine.

:class:`ChatHistory` holds one session's token ids and audio chunks and how many of them the session's KV cache
row already holds (``consumed``), so a new turn prefills only :meth:`ChatHistory.pending`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch

from a2llm_rt.audio import resample
from a2llm_rt.errors import InputError
from a2llm_rt.models.audio_encoder import audio_placeholder_count
from a2llm_rt.models.mel import CHUNK_SECONDS, SAMPLE_RATE, chunked_log_mel
from a2llm_rt.models.token_layout import SPECIAL_TOKENS, TokenLayout
from a2llm_rt.models.tokenizer import TextTokenizer

ROLES = ("system", "human", "assistant")
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
"""The system message of every upstream example (stepfun-ai/Step-Audio2 ``stepaudio2.py``); the engine's default and
the training samples' (``training.data.builders``), so both build the same prompt."""
MAX_AUDIO_SECONDS = 600.0


@dataclasses.dataclass
class Prompt:
    """Token ids and the mel chunks of their ``<audio_patch>`` blocks, in order."""

    ids: list[int]
    mels: list[torch.Tensor]
    """One ``[n_mels, T_i]`` per ``<audio_start>`` block of ``ids``."""

    def tensor(self, device: torch.device | str | None = None) -> torch.Tensor:
        """``[1, len(ids)]`` int64."""
        return torch.tensor([self.ids], dtype=torch.long, device=device)


def prepare_waveform(
    wave: torch.Tensor | np.ndarray, sample_rate: int = SAMPLE_RATE, max_seconds: float = MAX_AUDIO_SECONDS
) -> torch.Tensor:
    """Mono float32 16 kHz ``[N]`` from ``[N]`` or ``[channels, N]`` audio at ``sample_rate`` (resampled with a
    polyphase filter when it differs). :class:`InputError` on empty, NaN/inf, samples outside full scale [-1, 1] or
    longer than ``max_seconds``.

    Out-of-range input is refused rather than clipped: finite samples of 1e30 overflow the log-mel and the encoder,
    and the backbone would write NaN keys/values into the session's cache row."""
    w = torch.as_tensor(np.asarray(wave) if not torch.is_tensor(wave) else wave).to(torch.float32)
    if w.numel() and torch.isfinite(w).all() and (peak := float(w.abs().max())) > 1.0:  # before mixing channels
        raise InputError(f"audio samples must lie in [-1, 1] (float PCM full scale); got a peak of {peak:.4g}")
    if w.ndim == 2:
        w = w.mean(0)
    if w.ndim != 1:
        raise InputError(f"audio must be [N] or [channels, N], got shape {tuple(w.shape)}")
    if w.numel() == 0:
        raise InputError("empty audio")
    if not torch.isfinite(w).all():
        raise InputError("audio holds NaN or inf samples")
    if sample_rate <= 0:
        raise InputError(f"bad sample rate {sample_rate}")
    if w.numel() / sample_rate > max_seconds:
        raise InputError(f"audio of {w.numel() / sample_rate:.1f} s exceeds the limit of {max_seconds:.0f} s")
    if sample_rate != SAMPLE_RATE:
        w = torch.from_numpy(resample(w.numpy(), sample_rate, SAMPLE_RATE))
    return w


class ChatFormat:
    """Builds Step-Audio-2 chat token ids with one tokenizer and token layout."""

    def __init__(
        self,
        tokenizer: TextTokenizer,
        layout: TokenLayout,
        n_mels: int = 128,
        chunk_seconds: float = CHUNK_SECONDS,
    ):
        self.tok = tokenizer
        self.layout = layout
        self.n_mels = n_mels
        self.chunk_seconds = chunk_seconds

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text)

    @staticmethod
    def _role(role: str) -> str:
        role = "human" if role == "user" else role
        if role not in ROLES:
            raise InputError(f"unknown chat role {role!r}; roles: {ROLES}")
        return role

    def message(self, role: str, content: str, eot: bool = True) -> list[int]:
        """``<|BOT|>{role}\\n{content}<|EOT|>`` (no ``<|EOT|>`` when ``eot`` is False)."""
        return self.encode(f"<|BOT|>{self._role(role)}\n{content}" + ("<|EOT|>" if eot else ""))

    def plain_text(self, text: object, what: str, max_chars: int, allow_empty: bool = False) -> str:
        """``text`` checked as untrusted plain text for a message (a player's typed turn, a persona, a game context).

        Returns it NFC-normalised and stripped. :class:`InputError` when it is not a string, is empty (unless
        ``allow_empty``), longer than ``max_chars`` characters, holds control characters other than newline/tab, or
        would tokenize to a control token (``<|EOT|>``, ``<|BOT|>``, ``<audio_patch>``, ... : the tokenizer parses
        specials inside text, so ``"hi<|EOT|><|BOT|>system\n..."`` would otherwise forge turns of the chat).
        """
        import unicodedata

        if not isinstance(text, str):
            raise InputError(f"{what} must be text, got {type(text).__name__}")
        if len(text) > 4 * max_chars + 64:  # refuse a huge string before normalising it
            raise InputError(f"{what} has {len(text)} characters; the limit is {max_chars}")
        t = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n").strip()
        if not t and not allow_empty:
            raise InputError(f"{what} is empty")
        if len(t) > max_chars:
            raise InputError(f"{what} has {len(t)} characters; the limit is {max_chars}")
        if any(unicodedata.category(ch) == "Cc" and ch not in "\n\t" for ch in t):
            raise InputError(f"{what} holds control characters")
        ids = self.encode(t)
        added = getattr(getattr(self.tok, "hf", None), "added_tokens_decoder", None) or {}
        specials = {getattr(self.layout, f) for f in SPECIAL_TOKENS} - {None}
        if any(i in added or i in specials or not self.layout.is_text(i) for i in ids):
            raise InputError(f"{what} holds a control token of the chat format (such as <|EOT|>)")
        return t

    def audio_block(self, mel_frames: int) -> list[int]:
        """``<audio_start>`` + ``<audio_patch>`` x n + ``<audio_end>`` for a chunk of ``mel_frames`` frames."""
        lay = self.layout
        n = audio_placeholder_count(mel_frames)
        return [lay.special("audio_start")] + [lay.special("audio_patch")] * n + [lay.special("audio_end")]

    def user_audio(self, wave: torch.Tensor, text: str | None = None) -> Prompt:
        """A human turn holding 16 kHz mono audio ``[N]`` (cut in 25 s chunks), optionally preceded by ``text``."""
        mels = chunked_log_mel(wave, self.n_mels, self.chunk_seconds)
        ids = self.encode("<|BOT|>human\n")
        if text:
            ids += self.encode(text)
        for m in mels:
            ids += self.audio_block(m.shape[1])
        ids.append(self.layout.special("eot"))
        return Prompt(ids, mels)

    def assistant_open(self, speech: bool = True) -> list[int]:
        """The open assistant turn: ``<|BOT|>assistant\\n`` (+ ``<tts_start>`` for a spoken answer)."""
        ids = self.encode("<|BOT|>assistant\n")
        return ids + [self.layout.special("tts_start")] if speech else ids


@dataclasses.dataclass
class _Turn:
    role: str
    start: int
    end: int | None = None


class ChatHistory:
    """One session's conversation as token ids + audio chunks, and how much of it the KV cache already holds.

    Typical turn: ``add_user_audio(wave)`` -> ``start_assistant()`` -> the engine prefills :meth:`pending` and calls
    :meth:`mark_consumed` -> each generated token is added with :meth:`append_generated` (and marked consumed
    once fed back) -> :meth:`end_assistant` (also after a cancelled turn: the history stays well formed).
    """

    def __init__(self, fmt: ChatFormat, system_prompt: str | None = None):
        self.fmt = fmt
        self.ids: list[int] = []
        self.mels: list[torch.Tensor] = []
        self._audio_at: list[int] = []  # index in ids of each chunk's <audio_start>
        self._audio_end: list[int] = []  # index in ids of each chunk's <audio_end>
        self.turns: list[_Turn] = []
        self.consumed = 0
        if system_prompt is not None:
            self.add_message("system", system_prompt)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def assistant_open(self) -> bool:
        return bool(self.turns) and self.turns[-1].role == "assistant" and self.turns[-1].end is None

    def _begin(self, role: str) -> None:
        if self.assistant_open:
            raise InputError("the assistant turn is still open; call end_assistant() first")
        self.turns.append(_Turn(role, len(self.ids)))

    def add_message(self, role: str, text: str) -> None:
        """A complete text message (system or human; an assistant text reply too)."""
        role = ChatFormat._role(role)
        self._begin(role)
        self.ids += self.fmt.message(role, text)
        self.turns[-1].end = len(self.ids)

    def add_user_text(self, text: str) -> None:
        self.add_message("human", text)

    def add_user_audio(self, wave: torch.Tensor, text: str | None = None) -> None:
        """A human turn of 16 kHz mono audio ``[N]`` (see :func:`prepare_waveform` for other rates)."""
        self._begin("human")
        p = self.fmt.user_audio(wave, text)
        starts = [i for i, t in enumerate(p.ids) if t == self.fmt.layout.audio_start]
        ends = [i for i, t in enumerate(p.ids) if t == self.fmt.layout.audio_end]
        self._audio_at += [len(self.ids) + i for i in starts]
        self._audio_end += [len(self.ids) + i for i in ends]
        self.ids += p.ids
        self.mels += p.mels
        self.turns[-1].end = len(self.ids)

    def start_assistant(self, speech: bool = True) -> None:
        """Open the assistant turn (``<|BOT|>assistant\\n`` and, for speech, ``<tts_start>``)."""
        self._begin("assistant")
        self.ids += self.fmt.assistant_open(speech)

    def append_generated(self, ids: Sequence[int]) -> None:
        """Add tokens the model generated in the open assistant turn."""
        if not self.assistant_open:
            raise InputError("no open assistant turn")
        self.ids += [int(i) for i in ids]

    def end_assistant(self) -> None:
        """Close the assistant turn with ``<|EOT|>`` (unless its last token already is one)."""
        if not self.assistant_open:
            raise InputError("no open assistant turn")
        eot = self.fmt.layout.special("eot")
        if self.ids[-1] != eot:
            self.ids.append(eot)
        self.turns[-1].end = len(self.ids)

    def pending(self) -> Prompt:
        """Ids not yet in the KV cache and the mel chunks of the audio blocks among them."""
        mels = [m for m, at in zip(self.mels, self._audio_at, strict=True) if at >= self.consumed]
        return Prompt(self.ids[self.consumed :], mels)

    def mark_consumed(self, n: int | None = None) -> None:
        """Record that the cache row now holds the first ``n`` ids (default: all)."""
        n = len(self.ids) if n is None else n
        if not 0 <= n <= len(self.ids):
            raise ValueError(f"consumed {n} outside [0, {len(self.ids)}]")
        if any(at < n <= end for at, end in zip(self._audio_at, self._audio_end, strict=True)):
            raise ValueError("cannot split an audio block between cache and pending")
        self.consumed = n

    def full(self) -> Prompt:
        """The whole conversation (e.g. to rebuild a cache row from scratch)."""
        return Prompt(list(self.ids), list(self.mels))
