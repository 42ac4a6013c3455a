"""Parity with upstream Step-Audio2 token2wav on the golden fixture (whole sequence and streamed)."""

from __future__ import annotations

import pytest
import torch

from a2llm_rt.speech.token2wav import SpeechStream

from .helpers import golden, golden_model, golden_voice


@pytest.fixture(autouse=True)
def _no_grad():
    """Inference only (a module-level ``set_grad_enabled(False)`` would leak into every later test file)."""
    with torch.no_grad():
        yield


# float32 CPU; upstream and we run the same operations, differences are summation-order rounding
MEL_ATOL = 1e-4
WAV_ATOL = 1e-5


def test_fixture_is_from_upstream():
    meta, _ = golden()
    assert len(meta["upstream_commit"]) == 40
    assert meta["n_chunks"] == 5


def test_flow_whole_sequence_matches_upstream():
    _, t = golden()
    m = golden_model()
    v = golden_voice()
    mel = m.flow.inference(t["codes"], v.prompt_tokens[None], v.prompt_mel[None], v.embedding[None])
    assert mel.shape == t["whole_mel"].shape == (1, 16, 2 * t["codes"].size(1))
    torch.testing.assert_close(mel, t["whole_mel"], atol=MEL_ATOL, rtol=0)


def test_hift_whole_sequence_matches_upstream():
    meta, t = golden()
    m = golden_model()
    wav, src = m.hift(t["whole_mel"], generator=torch.Generator().manual_seed(meta["hift_seeds"]["whole"]))
    assert wav.shape == t["whole_wav"].shape == (1, t["whole_mel"].size(2) * 480)
    torch.testing.assert_close(wav, t["whole_wav"], atol=WAV_ATOL, rtol=0)
    # the F0 is voiced (harmonic source path exercised), and the waveform is not silent
    assert m.hift.f0_predictor(t["whole_mel"]).min() > m.hift.cfg.nsf_voiced_threshold
    assert t["whole_wav"].abs().max() > 0.01
    wav_c, _ = m.hift(
        t["whole_mel"][:, :, :30],
        src[:, :, :3840],
        generator=torch.Generator().manual_seed(meta["hift_seeds"]["cached"]),
    )
    torch.testing.assert_close(wav_c, t["hift_cached_wav"], atol=WAV_ATOL, rtol=0)


def test_synthesize_whole_answer_matches_upstream():
    meta, t = golden()
    m = golden_model()
    wav = m.synthesize(
        t["codes"][0], golden_voice(), generator=torch.Generator().manual_seed(meta["hift_seeds"]["whole"])
    )
    torch.testing.assert_close(wav, t["whole_wav"][0], atol=WAV_ATOL, rtol=0)


def test_streamed_chunks_match_upstream_streaming():
    meta, t = golden()
    m = golden_model()
    s = SpeechStream(m, golden_voice())
    chunks = s.push(t["codes"][0].tolist(), final=True)
    assert [[len(c), last] for c, last in chunks] == meta["chunks"]
    for i, (c, last) in enumerate(chunks):
        g = torch.Generator().manual_seed(meta["hift_seeds"]["stream_first"] + i)
        state = s.state
        mel_len = state.hift_mel.size(2)
        wav, s.state = m.step(torch.tensor([c]), state, last, g)
        # the chunk's mel is what the new state's HiFT cache ends with (last 8 frames) -- check the whole mel too
        torch.testing.assert_close(wav, t[f"stream_wav_{i}"], atol=WAV_ATOL, rtol=0, msg=f"chunk {i}")
        assert mel_len == (0 if i == 0 else 8)
    assert s.state.finished
    # the estimator cache was trimmed as upstream trims it (prompt frames + the newest 100)
    assert s.state.est_att.size(5) == meta["estimator_trim"][0] + meta["estimator_trim"][1]


def test_streamed_mel_matches_upstream_streaming():
    meta, t = golden()
    m = golden_model()
    s = SpeechStream(m, golden_voice())
    for i, (c, last) in enumerate(s.push(t["codes"][0].tolist(), final=True)):
        flow = m.flow
        st = s.state
        h, _, _ = flow.encoder.forward_chunk(
            flow.input_embedding(torch.tensor([c])), last, st.enc_cnn, st.enc_att.transpose(0, 1)
        )
        _, s.state = m.step(torch.tensor([c]), st, last)
        # the new HiFT mel cache holds the chunk's last 8 mel frames
        torch.testing.assert_close(s.state.hift_mel, t[f"stream_mel_{i}"][..., -8:], atol=MEL_ATOL, rtol=0)
        assert t[f"stream_mel_{i}"].size(2) == h.size(1)
