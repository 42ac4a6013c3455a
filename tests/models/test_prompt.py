"""Chat prompts: exact token sequences, 25 s audio chunks, multi-turn history and pending/consumed bookkeeping."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from a2llm_rt.errors import InputError
from a2llm_rt.models.audio_encoder import audio_placeholder_count
from a2llm_rt.models.mel import mel_frames
from a2llm_rt.models.prompt import ChatFormat, ChatHistory, prepare_waveform
from a2llm_rt.models.token_layout import TINY
from a2llm_rt.models.tokenizer import build_tiny_tokenizer


@pytest.fixture(scope="module")
def fmt():
    return ChatFormat(build_tiny_tokenizer(), TINY)


def test_exact_token_sequence(fmt):
    tok = fmt.tok
    h = ChatHistory(fmt, system_prompt="You are a helpful assistant.")
    wave = torch.randn(16000) * 0.1  # 1 s -> 102 frames -> 13 placeholders
    h.add_user_audio(wave)
    h.start_assistant(speech=True)
    n = audio_placeholder_count(mel_frames(16000))
    assert n == 13
    expected = (
        [280] + tok.encode("system") + tok.encode("\n") + tok.encode("You are a helpful assistant.") + [281]
        + [280] + tok.encode("human") + tok.encode("\n")
        + [288] + [290] * n + [289] + [281]
        + [280] + tok.encode("assistant") + tok.encode("\n") + [293]
    )  # fmt: skip
    assert h.ids == expected
    assert len(h.mels) == 1 and h.mels[0].shape == (128, 102)
    assert tok.decode(h.ids, skip_special_tokens=False).startswith("<|BOT|>system\nYou are a helpful assistant.<|EOT|>")


def test_text_messages_and_roles(fmt):
    ids = fmt.message("user", "Hello!")
    assert fmt.tok.decode(ids, skip_special_tokens=False) == "<|BOT|>human\nHello!<|EOT|>"
    assert fmt.assistant_open(speech=False) == fmt.tok.encode("<|BOT|>assistant\n")
    with pytest.raises(InputError, match="role"):
        fmt.message("robot", "hi")


def test_long_audio_is_cut_in_25s_chunks(fmt):
    wave = torch.full((16000 * 60,), 0.01)
    p = fmt.user_audio(wave)
    assert [m.shape[1] for m in p.mels] == [2502, 2502, mel_frames(160000)]
    assert p.ids.count(TINY.audio_start) == 3 and p.ids.count(TINY.audio_end) == 3
    assert p.ids.count(TINY.audio_patch) == sum(audio_placeholder_count(m.shape[1]) for m in p.mels)


def test_multi_turn_history_pending_and_cancel(fmt):
    h = ChatHistory(fmt)
    h.add_user_text("Hi")
    h.start_assistant()
    first = h.pending()
    assert first.ids == h.ids and first.mels == []
    h.mark_consumed()
    gen = [10, TINY.audio_id(1), TINY.audio_id(2), TINY.audio_id(3), TINY.audio_id(4), TINY.eot]
    h.append_generated(gen)
    h.mark_consumed(len(h) - 1)  # the sampled <|EOT|> was never fed back
    h.end_assistant()  # already ends with <|EOT|>: not doubled
    assert h.ids[-len(gen) :] == gen and h.ids.count(TINY.eot) == 2
    h.add_user_audio(torch.randn(8000) * 0.1)
    p = h.pending()
    assert p.ids[0] == TINY.eot and len(p.mels) == 1  # the unfed <|EOT|> comes first, then the new turn
    # a cancelled turn (no <|EOT|> generated) is closed by end_assistant
    h.start_assistant()
    h.append_generated([11, 12])
    with pytest.raises(InputError, match="still open"):
        h.add_user_text("again")
    h.end_assistant()
    assert h.ids[-3:] == [11, 12, TINY.eot] and not h.assistant_open
    with pytest.raises(ValueError, match="audio block"):
        h.mark_consumed(h._audio_at[0] + 2)


def test_prepare_waveform():
    w = prepare_waveform(np.zeros((2, 4800), np.float32), sample_rate=48000)
    assert w.shape == (1600,) and w.dtype == torch.float32
    with pytest.raises(InputError, match="empty"):
        prepare_waveform(np.zeros(0))
    with pytest.raises(InputError, match="NaN"):
        prepare_waveform(np.array([0.0, np.nan]))
    with pytest.raises(InputError, match=r"\[-1, 1\]"):  # one loud channel that the mix would hide
        prepare_waveform(np.stack([np.full(100, 1e30), np.full(100, -1e30)]).astype(np.float32))
    with pytest.raises(InputError, match="exceeds"):
        prepare_waveform(np.zeros(16000 * 11), max_seconds=10)
