"""TokenLayout: id ranges, audio mapping, TA4 interleave, resolution against a tokenizer."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from a2llm_rt.errors import InputError
from a2llm_rt.models.token_layout import STEP_AUDIO2, TINY, TokenLayout, get_token_layout
from a2llm_rt.models.tokenizer import build_tiny_tokenizer


def test_step_audio2_numbers():
    lay = STEP_AUDIO2
    assert lay.is_text(151687) and not lay.is_text(151688)
    assert lay.audio_id(0) == 151696 and lay.audio_code(151696 + 6560) == 6560
    assert lay.is_audio(151696) and lay.is_audio(151696 + 6560) and not lay.is_audio(151696 + 6561)
    assert lay.is_audio_pad(158257) and lay.audio_code(158257) == 6561
    assert lay.audio_patch == 151690 and lay.tts_start == 151693
    assert lay.group_size == 5 and not lay.complete
    with pytest.raises(InputError, match="<tts_pad>"):
        lay.special("tts_pad")
    with pytest.raises(ValueError):
        lay.audio_code(100)
    with pytest.raises(ValueError):
        lay.audio_id(6562)


def test_masks_match_scalar_helpers():
    ids = torch.tensor([0, 287, 288, 295, 296, 359, 360, 367])
    assert TINY.audio_mask(ids).tolist() == [TINY.is_audio(int(i)) for i in ids]
    assert TINY.text_mask(ids).tolist() == [TINY.is_text(int(i)) for i in ids]


def test_interleave_ta4_and_split_round_trip():
    lay = TINY
    text, audio = [10, 11], [1, 2, 3, 4, 5, 6, 7, 8, 9]
    s = lay.interleave(text, audio)
    pad, a = lay.tts_pad, lay.audio_id
    # 3 groups (ceil(9/4)); text padded with <tts_pad>; the last audio group is short (upstream, step-audio2-mini)
    assert s == [lay.tts_start, 10, a(1), a(2), a(3), a(4), 11, a(5), a(6), a(7), a(8), pad, a(9), lay.tts_end]
    assert lay.split(s) == (text, audio, [])
    # more text than audio: text-only groups, the audio padding code only by groups - len(audio)
    s2 = lay.interleave([1, 2, 3], [0])
    assert s2 == [lay.tts_start, 1, a(0), lay.audio_pad_id, lay.audio_pad_id, 2, 3, lay.tts_end]
    full = dataclasses.replace(lay, ta4_rule="full-groups")
    assert full.interleave([1, 2, 3], [0]).count(lay.audio_pad_id) == 11
    with pytest.raises(ValueError, match="ta4_rule"):
        dataclasses.replace(lay, ta4_rule="nope")


def test_validation_rejects_collisions():
    with pytest.raises(ValueError, match="collides"):
        dataclasses.replace(TINY, tts_pad=TINY.audio_offset + 3)
    with pytest.raises(ValueError, match="share id"):
        dataclasses.replace(TINY, tts_end=TINY.tts_start)
    with pytest.raises(ValueError, match="audio ids"):
        dataclasses.replace(TINY, audio_offset=100)


def test_resolved_against_tokenizer():
    tok = build_tiny_tokenizer()
    assert TINY.resolved(tok) == TINY
    partial = dataclasses.replace(TINY, bot=None, eot=None, tts_pad=None)
    assert not partial.complete
    full = partial.resolved(tok)
    assert full.complete and full.bot == 280 and full.eot == 281 and full.tts_pad == 295
    wrong = dataclasses.replace(TINY, audio_patch=291)
    with pytest.raises(InputError, match="<audio_patch>: layout 291, tokenizer 290"):
        wrong.resolved(tok)


def test_layout_round_trips_as_config(tmp_path):
    TINY.to_file(tmp_path / "layout.json")
    assert TokenLayout.from_file(tmp_path / "layout.json") == TINY
    assert get_token_layout("step_audio2") is STEP_AUDIO2
    with pytest.raises(InputError):
        get_token_layout("nope")
