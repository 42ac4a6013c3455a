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
- TA4 interleave (stepfun-ai vLLM fork ``StepAudio2Tokenizer.build_tts_interleave_data(text, audio, chunk=4)``):
  :meth:`TokenLayout.interleave` builds it exactly as upstream (two upstream branches differ in the audio padding;
  ``ta4_rule`` picks one), :meth:`TokenLayout.split` splits a generated stream as upstream's TA4 parser, and
  :meth:`TokenLayout.ta4_allowed` / :meth:`TokenLayout.ta4_advance` are the grammar the engine decodes with.
  Golden fixtures: ``tests/fixtures/upstream`` (written by ``tools/make_upstream_fixtures.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import NamedTuple, Protocol

import torch

from a2llm_rt.config import Config
from a2llm_rt.errors import InputError

TA4_RULES = ("step-audio2-mini", "full-groups")

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


class TA4Split(NamedTuple):
    """A generated answer split as upstream's TA4 parser does (see :meth:`TokenLayout.split`)."""

    text: list[int]
    """Text token ids inside the TA4 section (``<tts_pad>`` dropped)."""
    audio: list[int]
    """Audio codes inside the TA4 section (the padding code dropped)."""
    other: list[int]
    """Ids after ``<tts_end>``."""


@dataclasses.dataclass(frozen=True)
class TA4Cursor:
    """Where a generated TA4 stream stands (after ``<tts_start>``); advanced by :meth:`TokenLayout.ta4_advance`."""

    group_audio: int | None = None
    """None: the next token is a group's text slot; else the audio tokens the current group holds so far."""
    group_pad_text: bool = False
    """The current group's text slot holds ``<tts_pad>``."""
    text_done: bool = False
    """A ``<tts_pad>`` was generated: text slots hold only ``<tts_pad>`` from now on."""
    audio_padded: bool = False
    """The audio padding code was generated: audio slots hold only padding from now on."""
    audio_over: bool = False
    """A group ended short: every later group is one text token."""
    ended: bool = False

    @property
    def text_slot(self) -> bool:
        """The next token opens a group (a text slot)."""
        return self.group_audio is None


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
    ta4_rule: str = "step-audio2-mini"
    """How :meth:`interleave` pads the audio: ``"step-audio2-mini"`` (stepfun-ai/vllm branch step-audio2-mini,
    commit 9ecabf22f: by ``groups - len(audio)`` when positive) or ``"full-groups"`` (branch
    feat/step-audio-support, commit 484a5a5a5: to ``4 * groups``). Decoding accepts both (:meth:`ta4_allowed`)."""

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
        if self.ta4_rule not in TA4_RULES:
            raise ValueError(f"unknown ta4_rule {self.ta4_rule!r}; known: {TA4_RULES}")

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

    # ---- interleave (TA4) ---------------------------------------------------------------------------------------
    def interleave(self, text_ids: Sequence[int], audio_codes: Sequence[int]) -> list[int]:
        """The TA4 stream ``<tts_start> ... <tts_end>`` of a spoken answer, exactly as upstream builds it.

        Upstream: ``StepAudio2Tokenizer.build_tts_interleave_data(text, audio, chunk=4)`` in stepfun-ai/vllm, branch
        ``step-audio2-mini`` (commit 9ecabf22f, the branch the Step-Audio2 README points to)::

            n     = max(ceil(len(audio) / 4), len(text))          # groups
            text += [<tts_pad>] * (n - len(text))
            audio += [<audio_6561>] * (n - len(audio))            # only when positive
            group i = text[i] + audio[4i : 4i + 4]                 # may be short or empty

        So text that runs ahead of the audio becomes text-only groups, the last audio group may be short, and the
        audio padding code appears only when there are more groups than audio codes. With ``ta4_rule ==
        "full-groups"`` the audio is padded to ``4 n`` instead, as the later branch ``feat/step-audio-support``
        (commit 484a5a5a5) does. Both are compared with upstream in ``tests/fixtures/upstream``. Codes are audio
        codes (``audio_id`` maps them), text ids are tokenizer ids.
        """
        if self.text_per_group != 1:
            raise ValueError(f"layout {self.name!r}: the TA4 interleave needs text_per_group == 1")
        chunk = self.audio_per_group
        n = max(-(-len(audio_codes) // chunk), len(text_ids))
        text = [int(t) for t in text_ids] + [self.special("tts_pad")] * (n - len(text_ids))
        audio = [self.audio_id(int(c)) for c in audio_codes]
        want = n * chunk if self.ta4_rule == "full-groups" else n
        if want > len(audio):
            if self.audio_pad_id is None:
                raise ValueError(f"layout {self.name!r} has no audio padding code")
            audio += [self.audio_pad_id] * (want - len(audio))
        out = [self.special("tts_start")]
        for g in range(n):
            out.append(text[g])
            out += audio[g * chunk : (g + 1) * chunk]
        out.append(self.special("tts_end"))
        return out

    def split(self, ids: Sequence[int]) -> TA4Split:
        """Split a generated answer into (text ids, audio codes, other ids) as upstream's TA4 parser does.

        Upstream: ``StepAudio2TTSTA4Parser.extract_audio_content_nonstreaming`` (stepfun-ai/vllm,
        ``vllm/audio_parser/step_audio_2_tts_ta4_parser.py``), which reads the tokens generated after a prompt
        ending in ``<tts_start>``: up to the first ``<tts_end>`` every id ``>= audio_offset`` is audio, every other
        id text, ``<tts_pad>`` and the audio padding code are dropped; ``<tts_end>`` is dropped and what follows
        it is "other". One addition: a leading ``<tts_start>`` (a stream that includes the prefilled token, as
        :meth:`interleave` returns) is skipped. Audio ids are returned as codes (``id - audio_offset``).
        """
        ids = [int(i) for i in ids]
        if ids and self.tts_start is not None and ids[0] == self.tts_start:
            ids = ids[1:]
        drop = {self.tts_pad, self.audio_pad_id} - {None}
        text: list[int] = []
        audio: list[int] = []
        other: list[int] = []
        inside = True
        for i in ids:
            if i == self.tts_end:
                inside = False
            elif not inside:
                other.append(i)
            elif i in drop:
                continue
            elif i >= self.audio_offset:
                audio.append(i - self.audio_offset)
            else:
                text.append(i)
        return TA4Split(text, audio, other)

    def token_class(self, token_id: int) -> str:
        """The TA4 class of an id: ``"stop"`` (``<|EOT|>``, ``<tts_end>``), ``"tts_pad"``, ``"audio_pad"``,
        ``"audio"`` (a real code), ``"text"`` (a text id that is no special) or ``"other"``."""
        if token_id in (self.eot, self.tts_end) and token_id is not None:
            return "stop"
        if self.tts_pad is not None and token_id == self.tts_pad:
            return "tts_pad"
        if self.is_audio_pad(token_id):
            return "audio_pad"
        if self.is_audio(token_id):
            return "audio"
        if self.is_text(token_id) and token_id not in {getattr(self, f) for f in SPECIAL_TOKENS}:
            return "text"
        return "other"

    def ta4_allowed(self, cur: TA4Cursor, may_end_audio: bool = True) -> frozenset[str]:
        """Token classes (see :meth:`token_class`) a generated TA4 stream may continue with.

        The grammar accepts every stream either upstream rule builds (see :meth:`interleave`; fixtures of both
        branches in ``tests/fixtures/upstream``), since the rule the released weights were trained on is not
        public:

        - a group is one text-slot token (text, or ``<tts_pad>`` once the text has run out) and then audio tokens
          (real codes, then only the padding code once it appeared), at most ``audio_per_group``;
        - a group with fewer audio tokens ends the audio: every later group is a single text token
          (step-audio2-mini rule), or the audio is filled with padding codes (feat/step-audio-support rule);
        - a ``<tts_pad>`` group starts with a real code; once padded it is filled with padding and the stream ends;
        - the stream may stop (``<tts_end>``/``<|EOT|>``) after any group.

        ``may_end_audio=False`` (too little audio yet) removes the choices that end the audio: stops, the padding
        code and a text token in an audio slot. If nothing is left, only stops are allowed.
        """
        if cur.ended:
            return frozenset()
        ends = {"stop", "audio_pad", "text"}
        if cur.group_audio is None:  # a group's text slot
            if cur.audio_over:
                out = {"text", "stop"}
            elif cur.text_done:
                out = {"stop"} if cur.audio_padded else {"tts_pad", "stop"}
            elif cur.audio_padded:
                out = {"text", "stop"}
            else:
                out = {"text", "tts_pad", "stop"}
            if not may_end_audio:
                out.discard("stop")
        elif cur.group_pad_text:  # a <tts_pad> group
            if cur.audio_padded:
                out = {"audio_pad"}
            elif cur.group_audio == 0:
                out = {"audio"}
            else:
                out = {"audio", "audio_pad", "stop"} if may_end_audio else {"audio"}
        else:
            out = {"audio_pad", "text", "stop"} if cur.audio_padded else {"audio"} | ends
            if not may_end_audio:
                out -= ends
        return frozenset(out) if out else frozenset({"stop"})

    def ta4_advance(self, cur: TA4Cursor, token_id: int) -> TA4Cursor:
        """The cursor after ``token_id`` (which must be allowed: ``ValueError`` otherwise)."""
        kind = self.token_class(token_id)
        if kind not in self.ta4_allowed(cur):
            raise ValueError(f"token {token_id} ({kind}) breaks the TA4 interleave at {cur}")
        rep = dataclasses.replace
        if kind == "stop":
            return rep(cur, ended=True)
        if cur.group_audio is None or kind == "text" and cur.group_audio is not None:
            audio_over = cur.audio_over or cur.group_audio is not None
            if audio_over:  # a text-only group: its audio slots are skipped
                return rep(cur, group_audio=None, group_pad_text=False, audio_over=True)
            pad = kind == "tts_pad"
            return rep(cur, group_audio=0, group_pad_text=pad, text_done=cur.text_done or pad)
        k = cur.group_audio + 1
        return rep(
            cur,
            group_audio=None if k >= self.audio_per_group else k,
            group_pad_text=cur.group_pad_text and k < self.audio_per_group,
            text_done=cur.text_done,
            audio_padded=cur.audio_padded or kind == "audio_pad",
        )

    def ta4_check(self, ids: Sequence[int]) -> TA4Cursor:
        """Walk a stream (with or without the leading ``<tts_start>``) through the grammar; ``ValueError`` on the
        first token that breaks it. Returns the final cursor."""
        ids = [int(i) for i in ids]
        if ids and self.tts_start is not None and ids[0] == self.tts_start:
            ids = ids[1:]
        cur = TA4Cursor()
        for i in ids:
            cur = self.ta4_advance(cur, i)
        return cur

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
