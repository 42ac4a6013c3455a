"""Token layout of a backbone: which ids are text, which are audio codes, the special ids, the interleave pattern.

The engine never hard-codes Step-Audio-2 numbers; it asks a :class:`TokenLayout`. Two presets live here:
:data:`STEP_AUDIO2` (Step-Audio-2-mini) and :data:`TINY` (the test backbone, tokenizer built in
``a2llm_rt.models.tokenizer``).

Step-Audio-2 facts and their public sources (see also ``shared/STEP_AUDIO2.md``):

- text ids are ``< 151688``; audio code ``c`` is id ``151696 + c`` for the 6561 CosyVoice2 codes
  (stepfun-ai/Step-Audio2 ``stepaudio2.py``: ``[i for i in ids if i < 151688]``, ``[i - 151696 for i in ids if
  i > 151695]``); code 6561 (``<audio_6561>``, id 158257) pads the audio stream of a TA4 group
  (stepfun-ai vLLM fork ``StepAudio2Tokenizer._audio_pad_token``; ``examples.py``: ``[x for x in audio if x < 6561]``).
- ``<audio_start>`` 151688, ``<audio_end>`` 151689 (vLLM-omni Step-Audio2 adapter ``_AUDIO_START_ID`` /
  ``_AUDIO_END_ID``), ``<audio_patch>`` 151690 (stepfun-ai vLLM ``step_audio2.py``: ``AUDIO_PATCH_TOKEN_ID``).
- ``<tts_start>`` 151693, ``<tts_end>`` 151694 (stepfun-ai vLLM fork ``StepAudio2Tokenizer``, comments on
  ``_tts_start_token`` / ``_tts_end_token``).
- ``<|BOT|>``, ``<|EOT|>``, ``<tts_pad>`` and ``<|endoftext|>``: no public source states their ids, so
  :data:`STEP_AUDIO2` leaves them ``None`` and :meth:`TokenLayout.resolved` fills them from the real tokenizer
  (``from_pretrained_dir`` always does); every id that *is* known is checked against the tokenizer there too.
- TA4 interleave (stepfun-ai vLLM fork ``StepAudio2Tokenizer.build_tts_interleave_data``): after ``<tts_start>``,
  groups of 1 text token (``<tts_pad>`` once the text has run out) followed by 4 audio tokens (``<audio_6561>`` once
  the audio has run out), closed by ``<tts_end>``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Protocol

import torch

from a2llm_rt.config import Config
from a2llm_rt.errors import InputError

#: field name -> token string, for every special id a layout may name.
SPECIAL_TOKENS: dict[str, str] = {
    "bot": "<|BOT|>",
    "eot": "<|EOT|>",
    "pad": "<|endoftext|>",
    "audio_start": "<audio_start>",
    "audio_end": "<audio_end>",
    "audio_patch": "<audio_patch>",
    "tts_start": "<tts_start>",
    "tts_end": "<tts_end>",
    "tts_pad": "<tts_pad>",
}


class _TokenLookup(Protocol):
    def token_to_id(self, token: str) -> int | None: ...


@dataclasses.dataclass
class TokenLayout(Config):
    """Id ranges, special ids and the text/audio interleave of one backbone's vocabulary."""

    name: str
    vocab_size: int
    """Rows of the embedding / lm_head (may exceed the tokenizer's size)."""
    text_end: int
    """Text ids are ``[0, text_end)``; ``<|BOT|>``/``<|EOT|>`` count as text (decoded with the text)."""
    audio_offset: int
    """Id of audio code 0."""
    audio_codes: int
    """Number of real audio codes (6561 for CosyVoice2); code ``c`` is id ``audio_offset + c``."""
    audio_pad_code: int | None = None
    """Code that pads the audio stream of a TA4 group (6561 for Step-Audio-2); not a sound, never vocoded."""
    bot: int | None = None
    eot: int | None = None
    pad: int | None = None
    audio_start: int | None = None
    audio_end: int | None = None
    audio_patch: int | None = None
    tts_start: int | None = None
    tts_end: int | None = None
    tts_pad: int | None = None
    text_per_group: int = 1
    """Interleave: text tokens per group (TA4: 1)."""
    audio_per_group: int = 4
    """Interleave: audio tokens per group (TA4: 4)."""

    def validate(self) -> None:
        if self.vocab_size <= 0 or not 0 < self.text_end <= self.vocab_size:
            raise ValueError(f"bad text range [0, {self.text_end}) for vocab {self.vocab_size}")
        top = self.audio_offset + self.audio_codes + (0 if self.audio_pad_code is None else 1)
        if self.audio_offset < self.text_end or top > self.vocab_size or self.audio_codes <= 0:
            raise ValueError(
                f"audio ids [{self.audio_offset}, {top}) must lie after the text ids and inside vocab {self.vocab_size}"
            )
        if self.audio_pad_code is not None and self.audio_pad_code != self.audio_codes:
            raise ValueError("audio_pad_code must be the code right after the real ones (audio_codes)")
        seen: dict[int, str] = {}
        for field in SPECIAL_TOKENS:
            v = getattr(self, field)
            if v is None:
                continue
            if not 0 <= v < self.vocab_size:
                raise ValueError(f"special {field}={v} outside vocab {self.vocab_size}")
            if self.audio_offset <= v < top:
                raise ValueError(f"special {field}={v} collides with the audio code range")
            if v in seen and field != "pad":
                raise ValueError(f"specials {seen[v]} and {field} share id {v}")
            seen[v] = field
        if self.text_per_group < 1 or self.audio_per_group < 1:
            raise ValueError("text_per_group and audio_per_group must be >= 1")

    # ---- ids ---------------------------------------------------------------------------------------------------
    @property
    def group_size(self) -> int:
        """Tokens per interleave group (TA4: 5)."""
        return self.text_per_group + self.audio_per_group

    @property
    def audio_pad_id(self) -> int | None:
        return None if self.audio_pad_code is None else self.audio_offset + self.audio_pad_code

    @property
    def complete(self) -> bool:
        """True when every special id is known (a layout from a tokenizer; see :meth:`resolved`)."""
        return all(getattr(self, f) is not None for f in SPECIAL_TOKENS)

    def special(self, field: str) -> int:
        """The id of special ``field`` (a key of :data:`SPECIAL_TOKENS`); raises when the layout does not know it."""
        v = getattr(self, field)
        if v is None:
            raise InputError(
                f"token layout {self.name!r} does not know the id of {SPECIAL_TOKENS[field]}; "
                "resolve it from the tokenizer with TokenLayout.resolved(tokenizer)"
            )
        return v

    @property
    def stop_ids(self) -> tuple[int, ...]:
        """Ids that end an assistant turn."""
        return (self.special("eot"),)

    def is_text(self, token_id: int) -> bool:
        return 0 <= token_id < self.text_end

    def is_audio(self, token_id: int) -> bool:
        """A real audio code (not the audio padding code)."""
        return self.audio_offset <= token_id < self.audio_offset + self.audio_codes

    def is_audio_pad(self, token_id: int) -> bool:
        return self.audio_pad_code is not None and token_id == self.audio_offset + self.audio_pad_code

    def audio_code(self, token_id: int) -> int:
        """Audio code of an audio id (the padding code included)."""
        code = token_id - self.audio_offset
        limit = self.audio_codes + (0 if self.audio_pad_code is None else 1)
        if not 0 <= code < limit:
            raise ValueError(f"id {token_id} is not an audio id of layout {self.name!r}")
        return code

    def audio_id(self, code: int) -> int:
        limit = self.audio_codes + (0 if self.audio_pad_code is None else 1)
        if not 0 <= code < limit:
            raise ValueError(f"audio code {code} outside [0, {limit})")
        return self.audio_offset + code

    def audio_mask(self, ids: torch.Tensor) -> torch.Tensor:
        """Boolean mask of real audio codes, same shape as ``ids``."""
        return (ids >= self.audio_offset) & (ids < self.audio_offset + self.audio_codes)

    def text_mask(self, ids: torch.Tensor) -> torch.Tensor:
        return (ids >= 0) & (ids < self.text_end)

    # ---- interleave --------------------------------------------------------------------------------------------
    def slot_is_text(self, k: int) -> bool:
        """Whether the ``k``-th token after ``<tts_start>`` (k = 0, 1, ...) is a text slot of the interleave."""
        return k % self.group_size < self.text_per_group

    def interleave(self, text_ids: Sequence[int], audio_codes: Sequence[int]) -> list[int]:
        """The TA4 token stream ``<tts_start> (t a a a a)* <tts_end>`` of a spoken answer.

        Text runs out -> ``<tts_pad>``; audio runs out -> the audio padding code. The number of groups is
        ``max(ceil(len(audio)/audio_per_group), ceil(len(text)/text_per_group))``.
        """
        tp, ap = self.text_per_group, self.audio_per_group
        n = max(-(-len(audio_codes) // ap), -(-len(text_ids) // tp))
        pad_a = self.audio_pad_id if self.audio_pad_id is not None else None
        out = [self.special("tts_start")]
        for g in range(n):
            t = list(text_ids[g * tp : (g + 1) * tp])
            out += t + [self.special("tts_pad")] * (tp - len(t))
            a = [self.audio_id(c) for c in audio_codes[g * ap : (g + 1) * ap]]
            if len(a) < ap:
                if pad_a is None:
                    raise ValueError(f"layout {self.name!r} has no audio padding code")
                a += [pad_a] * (ap - len(a))
            out += a
        out.append(self.special("tts_end"))
        return out

    def split(self, ids: Sequence[int]) -> tuple[list[int], list[int]]:
        """(text ids, audio codes) of a generated stream; specials, ``<tts_pad>`` and audio padding are dropped."""
        specials = {getattr(self, f) for f in SPECIAL_TOKENS} - {None}
        text = [i for i in ids if self.is_text(i) and i not in specials]
        audio = [i - self.audio_offset for i in ids if self.is_audio(i)]
        return text, audio

    # ---- resolution against a tokenizer ------------------------------------------------------------------------
    def resolved(self, tokenizer: _TokenLookup) -> TokenLayout:
        """A copy with every special id looked up in ``tokenizer`` by its string (:data:`SPECIAL_TOKENS`).

        A special that the layout already names must have the same id in the tokenizer; a special the tokenizer
        lacks stays as the layout has it (``None`` if unknown). Raises :class:`InputError` listing mismatches.
        """
        values: dict[str, int | None] = {}
        problems: list[str] = []
        for field, tok in SPECIAL_TOKENS.items():
            have = getattr(self, field)
            got = tokenizer.token_to_id(tok)
            if got is not None and have is not None and got != have:
                problems.append(f"{tok}: layout {have}, tokenizer {got}")
            values[field] = got if got is not None else have
        for code in (0, self.audio_codes - 1):
            got = tokenizer.token_to_id(f"<audio_{code}>")
            if got is not None and got != self.audio_offset + code:
                problems.append(f"<audio_{code}>: layout {self.audio_offset + code}, tokenizer {got}")
        if problems:
            raise InputError(f"tokenizer does not match token layout {self.name!r}: " + "; ".join(problems[:5]))
        return dataclasses.replace(self, **values)


#: Step-Audio-2-mini (ids whose source is unknown are ``None``; see the module docstring and ``resolved``).
STEP_AUDIO2 = TokenLayout(
    name="step_audio2",
    vocab_size=158720,
    text_end=151688,
    audio_offset=151696,
    audio_codes=6561,
    audio_pad_code=6561,
    audio_start=151688,
    audio_end=151689,
    audio_patch=151690,
    tts_start=151693,
    tts_end=151694,
)

#: The tiny test backbone: byte-level BPE text ids [0, 280), text specials 280-282, audio specials 288-295,
#: 64 audio codes at 296 (+ padding code 64 at 360), vocab 368. Mirrors STEP_AUDIO2's ordering.
TINY = TokenLayout(
    name="tiny",
    vocab_size=368,
    text_end=288,
    audio_offset=296,
    audio_codes=64,
    audio_pad_code=64,
    bot=280,
    eot=281,
    pad=282,
    audio_start=288,
    audio_end=289,
    audio_patch=290,
    tts_start=293,
    tts_end=294,
    tts_pad=295,
)

LAYOUTS: dict[str, TokenLayout] = {STEP_AUDIO2.name: STEP_AUDIO2, TINY.name: TINY}


def get_token_layout(name: str) -> TokenLayout:
    try:
        return LAYOUTS[name]
    except KeyError:
        raise InputError(f"unknown token layout {name!r}; known: {sorted(LAYOUTS)}") from None
