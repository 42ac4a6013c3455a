"""Audio encoder + adapter: placeholder count == real output length, masking of padded chunks, module names."""

from __future__ import annotations

import pytest
import torch

from a2llm_rt.errors import InputError
from a2llm_rt.models.audio_encoder import (
    AudioAdapter,
    AudioEncoder,
    audio_placeholder_count,
    encode_audio,
    encoder_output_count,
)
from a2llm_rt.models.mel import mel_frames


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    enc = AudioEncoder(n_mels=16, n_ctx=64, n_state=16, n_head=2, n_layer=1).eval()
    ada = AudioAdapter(16, 24, hidden=32).eval()
    return enc, ada


def test_formula_matches_reference_numbers():
    # 25 s chunk: 2502 mel frames -> 625 encoder frames -> 313 placeholders (~12.5 / s)
    assert mel_frames(400000) == 2502
    assert encoder_output_count(2502) == 625 and audio_placeholder_count(2502) == 313
    assert audio_placeholder_count(mel_frames(16000)) == 13


@pytest.mark.parametrize("t", [3, 4, 5, 6, 7, 11, 12, 13, 30, 31, 102])
def test_placeholder_count_equals_encoder_adapter_output(tiny, t):
    enc, ada = tiny
    mel = torch.randn(1, 16, t)
    with torch.no_grad():
        feats, lens = enc(mel, torch.tensor([t - 2]))
        out = ada(feats)
        n = int(ada.output_lens(lens))
    assert n == audio_placeholder_count(t)
    assert out.shape[1] >= n  # the tensor may hold one extra (masked-length) frame; it is cut off
    assert int(lens) == encoder_output_count(t)
    with torch.no_grad():
        (chunk,) = encode_audio(enc, ada, [mel[0]])
    assert chunk.shape == (audio_placeholder_count(t), 24)


def test_padding_in_a_batch_does_not_change_attention_outputs(tiny):
    enc, _ = tiny
    short = torch.randn(16, 21)
    batch = torch.zeros(2, 16, 41)
    batch[0, :, :21] = short
    batch[1] = torch.randn(16, 41)
    with torch.no_grad():
        alone, _ = enc(short[None], torch.tensor([19]))
        both, _ = enc(batch, torch.tensor([19, 39]))
    # the first frames are far from the padded edge (conv receptive field), so only masking matters there
    torch.testing.assert_close(both[0, :3], alone[0, :3], atol=1e-5, rtol=1e-5)


def test_module_names_follow_whisper_and_step_audio2(tiny):
    enc, ada = tiny
    names = set(enc.state_dict()) | {f"adapter.{k}" for k in ada.state_dict()}
    for n in (
        "conv1.weight",
        "conv2.bias",
        "positional_embedding.weight",
        "blocks.0.attn.query.weight",
        "blocks.0.attn.value.bias",
        "blocks.0.attn.out.weight",
        "blocks.0.attn_ln.weight",
        "blocks.0.mlp.0.weight",
        "blocks.0.mlp.2.bias",
        "blocks.0.mlp_ln.bias",
        "after_norm.weight",
        "adapter.conv.weight",
        "adapter.linear1.weight",
        "adapter.linear2.bias",
    ):
        assert n in names, n
    assert "blocks.0.attn.key.bias" not in names


def test_bad_input(tiny):
    enc, ada = tiny
    with pytest.raises(InputError):
        encode_audio(enc, ada, [torch.randn(8, 20)])
    with pytest.raises(InputError, match="context"):
        encode_audio(enc, ada, [torch.randn(16, 200)])
