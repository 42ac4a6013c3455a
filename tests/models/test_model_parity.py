"""Log-mel, audio encoder + adapter, placeholder counts and LLM logits against upstream modules run on a tiny random
config (fixtures ``tests/fixtures/upstream/tiny_model*`` written by ``tools/make_upstream_fixtures.py``; see
``tiny_model.json`` for what ran and what was written by hand). The checkpoint is loaded through our own loader."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from a2llm_rt.models.audio_encoder import audio_placeholder_count
from a2llm_rt.models.checkpoint import from_pretrained_dir
from a2llm_rt.models.mel import log_mel_spectrogram
from a2llm_rt.models.token_layout import TINY
from tests.fixtures.upstream import HERE

TOL = {"atol": 1e-4, "rtol": 1e-4}


@pytest.fixture(scope="module")
def fx():
    return dict(np.load(HERE / "tiny_model.npz"))


@pytest.fixture(scope="module")
def model():
    bb, tok = from_pretrained_dir(HERE / "tiny_model", dtype=torch.float32)
    assert tok is None and bb.layout == TINY
    return bb


def test_fixture_names_upstream():
    meta = json.loads((HERE / "tiny_model.json").read_text())
    assert meta["upstream"][0]["commit"] == "9ecabf22f542a2dd2962527a7eb9359021b3cc9f"
    assert "by_hand" in meta


def test_log_mel_equals_upstream(fx):
    ours = log_mel_spectrogram(torch.from_numpy(fx["wave"]), 128).numpy()
    assert ours.shape == fx["mel_step_audio2"].shape
    np.testing.assert_allclose(ours, fx["mel_step_audio2"], **TOL)
    np.testing.assert_allclose(ours, fx["mel_vllm"], **TOL)


def test_placeholder_counts_follow_step_audio2(fx):
    """Ours = Step-Audio2's compute_token_num (T - 2); the vLLM fork's count (T) differs for some lengths."""
    ours = np.array([audio_placeholder_count(int(t)) for t in fx["mel_grid"]])
    assert np.array_equal(ours, fx["patches_step_audio2"])
    assert not np.array_equal(ours, fx["patches_vllm"])


def test_audio_encoder_and_adapter_equal_upstream(fx, model):
    with torch.no_grad():
        (ours,) = model.encode_audio([torch.from_numpy(fx["mel_step_audio2"])])
    assert ours.shape == fx["adapter_out"].shape
    np.testing.assert_allclose(ours.numpy(), fx["adapter_out"], **TOL)


def test_llm_logits_and_hidden_equal_upstream(fx, model):
    ids = torch.from_numpy(fx["input_ids"])
    with torch.no_grad():
        audio = model.encode_audio([torch.from_numpy(fx["mel_step_audio2"])])
        out = model(ids, audio_embeds=audio)
    np.testing.assert_allclose(out.logits[0].numpy(), fx["logits"], **TOL)
    np.testing.assert_allclose(out.hidden[0].numpy(), fx["hidden"], **TOL)
    # the engine's cached path gives the same last-position logits
    cache = model.new_cache(1, ids.shape[1] + 4, dtype=torch.float32)
    with torch.no_grad():
        pre = model.prefill(ids, cache, audio_mels=[torch.from_numpy(fx["mel_step_audio2"])])
    np.testing.assert_allclose(pre.logits[0].numpy(), fx["logits"][-1], **TOL)


def test_doctor_accepts_the_upstream_module_names():
    """Every tensor name and shape of upstream's modules matches our name map (only the tokenizer is absent)."""
    from a2llm_rt.models.doctor import diagnose

    assert diagnose(HERE / "tiny_model").problems == ["tokenizer.json: missing (no tokenizer files)"]
