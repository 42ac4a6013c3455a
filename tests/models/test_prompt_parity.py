"""Chat prompts against upstream's chat template (``apply_chat_template_trans_ta4`` of stepfun-ai/vllm, fixture
written by ``tools/make_upstream_fixtures.py``): a multi-turn conversation with a system message, a text question,
a spoken answer in the history, an audio question and an open spoken answer."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from a2llm_rt.models.audio_encoder import audio_placeholder_count
from a2llm_rt.models.mel import mel_frames
from a2llm_rt.models.prompt import DEFAULT_SYSTEM_PROMPT, ChatFormat, ChatHistory
from a2llm_rt.models.token_layout import TINY
from a2llm_rt.models.tokenizer import build_tiny_tokenizer
from tests.fixtures.upstream import upstream_fixture


def samples_for_patches(n: int) -> int:
    """The shortest 16 kHz waveform whose chunk gets ``n`` ``<audio_patch>`` placeholders."""
    return next(k for k in range(160, 16000 * 30, 160) if audio_placeholder_count(mel_frames(k)) == n)


@pytest.mark.parametrize(("name", "rule"), [("chat_template.json", "step-audio2-mini"),
                                            ("chat_template_new.json", "full-groups")])  # fmt: skip
def test_history_equals_upstream_chat_template(name, rule):
    fx = upstream_fixture(name)
    conv = fx["conversation"]
    assert conv[0]["content"] == DEFAULT_SYSTEM_PROMPT
    lay = dataclasses.replace(TINY, ta4_rule=rule)
    fmt = ChatFormat(build_tiny_tokenizer(), lay)
    h = ChatHistory(fmt, conv[0]["content"])
    h.add_user_text(conv[1]["content"])
    h.start_assistant(speech=True)
    h.append_generated(lay.interleave(fmt.encode(fx["answer_text"]), fx["answer_codes"])[1:])
    h.end_assistant()
    h.add_user_audio(torch.zeros(samples_for_patches(fx["audio_patches"])))
    h.start_assistant(speech=True)
    assert h.ids == fx["ids"]
    assert h.ids[-1] == lay.tts_start and h.ids.count(lay.audio_patch) == fx["audio_patches"]


def test_the_spoken_answer_closes_with_tts_end_then_eot():
    """Upstream writes a spoken answer in the history as <|BOT|>assistant\\n + TA4 stream + <|EOT|>."""
    fx = upstream_fixture("chat_template.json")
    ids = fx["ids"]
    k = ids.index(TINY.tts_end)
    assert ids[k + 1] == TINY.eot and ids[k + 2] == TINY.bot


def test_history_equals_step_audio2_apply_chat_template():
    """stepfun-ai/Step-Audio2 ``StepAudio2.apply_chat_template`` (audio questions turned into mel chunks and
    placeholders, a spoken answer re-sent as ``<tts_start>`` + generated tokens + ``<|EOT|>``, text + audio in one
    human turn, an open spoken answer)."""
    fx = upstream_fixture("chat_template_hf.json")
    msgs = fx["messages"]
    fmt = ChatFormat(build_tiny_tokenizer(), TINY)
    gen = torch.Generator().manual_seed(0)
    waves = {k: 0.1 * torch.randn(n, generator=gen) for k, n in fx["audio_samples"].items()}
    h = ChatHistory(fmt, msgs[0]["content"])
    h.add_user_audio(waves[msgs[1]["content"][0]["audio"]])
    h.start_assistant(speech=True)
    generated = msgs[2]["content"][1]["token"]
    assert generated == TINY.interleave(fmt.encode(fx["answer_text"]), fx["answer_codes"])[1:]
    h.append_generated(generated)
    h.end_assistant()
    h.add_user_text(msgs[3]["content"])
    h.add_user_audio(waves[msgs[4]["content"][1]["audio"]], text=msgs[4]["content"][0]["text"])
    h.start_assistant(speech=True)
    assert h.ids == fx["ids"]
    assert [m.shape[1] for m in h.mels] == fx["mel_frames"]
