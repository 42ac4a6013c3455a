"""Streaming contract of the native token2wav: per-session state, batching, joins, first audio, bad input."""

from __future__ import annotations

import pytest
import torch

from a2llm_rt.errors import InputError
from a2llm_rt.speech.config import FlowConfig
from a2llm_rt.speech.token2wav import CHUNK_CODES, SpeechStream, Token2Wav
from a2llm_rt.speech.voice import Voice

from .helpers import tiny_model, tiny_voice


@pytest.fixture(autouse=True)
def _no_grad():
    """Inference only (a module-level ``set_grad_enabled(False)`` would leak into every later test file)."""
    with torch.no_grad():
        yield


#: Step-Audio2's token2wav.py example answer (94 codes).
UPSTREAM_EXAMPLE = [
    1493,
    4299,
    4218,
    2049,
    528,
    2752,
    4850,
    4569,
    4575,
    6372,
    2127,
    4068,
    2312,
    4993,
    4769,
    2300,
    226,
    2175,
    2160,
    2152,
    6311,
    6065,
    4859,
    5102,
    4615,
    6534,
    6426,
    1763,
    2249,
    2209,
    5938,
    1725,
    6048,
    3816,
    6058,
    958,
    63,
    4460,
    5914,
    2379,
    735,
    5319,
    4593,
    2328,
    890,
    35,
    751,
    1483,
    1484,
    1483,
    2112,
    303,
    4753,
    2301,
    5507,
    5588,
    5261,
    5744,
    5501,
    2341,
    2001,
    2252,
    2344,
    1860,
    2031,
    414,
    4366,
    4366,
    6059,
    5300,
    4814,
    5092,
    5100,
    1923,
    3054,
    4320,
    4296,
    2148,
    4371,
    5831,
    5084,
    5027,
    4946,
    4946,
    2678,
    575,
    575,
    521,
    518,
    638,
    1367,
    2804,
    3402,
    4299,
]


@pytest.fixture(scope="module")
def model() -> Token2Wav:
    return tiny_model()


def _stream_all(model: Token2Wav, voice: Voice, codes: list[int], seed: int = 0) -> list[torch.Tensor]:
    s = SpeechStream(model, voice)
    out = []
    g = torch.Generator().manual_seed(seed)
    for c, last in s.push(codes, final=True):
        wav, s.state = model.step(torch.tensor([c]), s.state, last, g)
        out.append(wav[0])
    return out


def test_upstream_example_answer_length(model):
    """The real 94-code example through the tiny model: whole = 94 * 960 samples, streamed the same total."""
    v = tiny_voice(model)
    whole = model.synthesize(UPSTREAM_EXAMPLE, v)
    assert whole.shape == (94 * 960,)
    assert torch.isfinite(whole).all() and whole.abs().max() <= 0.99
    chunks = _stream_all(model, v, UPSTREAM_EXAMPLE)
    # 94 codes: chunks of 28 codes at codes 0, 25, 50; the last chunk has the remaining 19 codes
    assert [c.numel() for c in chunks] == [50 * 480 - 3840, 50 * 480, 50 * 480, 38 * 480 + 3840]
    assert sum(c.numel() for c in chunks) == 94 * 960


def test_first_audio_after_first_chunk(model):
    s = SpeechStream(model, tiny_voice(model))
    assert s.push(list(range(CHUNK_CODES + model.lookahead - 1))) == []
    ready = s.push([5])
    assert len(ready) == 1 and len(ready[0][0]) == CHUNK_CODES + model.lookahead and not ready[0][1]
    wav = s.run(ready)
    assert wav.numel() == CHUNK_CODES * 960 - 3840 > 0


def test_push_granularity_does_not_change_output(model):
    v = tiny_voice(model)
    codes = UPSTREAM_EXAMPLE[:70]
    ref = torch.cat(_stream_all(model, v, codes, seed=3))
    s = SpeechStream(model, v)
    g = torch.Generator().manual_seed(3)
    pieces = []
    for i in range(0, len(codes), 7):
        for c, last in s.push(codes[i : i + 7]):
            w, s.state = model.step(torch.tensor([c]), s.state, last, g)
            pieces.append(w[0])
    for c, last in s.push([], final=True):
        w, s.state = model.step(torch.tensor([c]), s.state, last, g)
        pieces.append(w[0])
    torch.testing.assert_close(torch.cat(pieces), ref)


def test_no_click_at_chunk_joins(model):
    """The cross-fade keeps each join's sample-to-sample jump within what the signal itself does."""
    wav = torch.cat(_stream_all(model, tiny_voice(model), UPSTREAM_EXAMPLE))
    d = (wav[1:] - wav[:-1]).abs()
    typical = torch.quantile(d, 0.999)
    joins = [20160, 20160 + 24000, 20160 + 48000]
    for j in joins:
        assert d[j - 2 : j + 2].max() <= typical, f"click at sample {j}"


def test_step_does_not_modify_the_state(model):
    s = SpeechStream(model, tiny_voice(model))
    before = {k: v.clone() for k, v in s.state.tensors().items()}
    ((c, last),) = s.push(UPSTREAM_EXAMPLE[:28])
    model.step(torch.tensor([c]), s.state, last)
    for k, v in s.state.tensors().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("bad", [[-1, 3], [6561], [7000, 1]])
def test_codes_out_of_range_are_refused(model, bad):
    with pytest.raises(InputError, match="outside 0..6560"):
        model.synthesize(bad, tiny_voice(model))
    s = SpeechStream(model, tiny_voice(model))
    with pytest.raises(InputError, match="outside 0..6560"):
        s.push(bad)


def test_empty_answer_is_refused(model):
    with pytest.raises(InputError, match="empty answer"):
        model.synthesize([], tiny_voice(model))
    with pytest.raises(InputError, match="empty answer"):
        SpeechStream(model, tiny_voice(model)).push([], final=True)


def test_float_codes_are_refused(model):
    with pytest.raises(InputError, match="integers"):
        model.synthesize(torch.tensor([1.5, 2.0]), tiny_voice(model))


def test_finished_stream_refuses_more(model):
    s = SpeechStream(model, tiny_voice(model))
    s.run(s.push([1, 2, 3, 4], final=True))
    with pytest.raises(InputError, match="ended"):
        s.push([5])


def test_bad_voices_are_refused(model):
    v = tiny_voice(model)
    with pytest.raises(InputError, match="codes"):
        model.init_state(Voice(v.prompt_tokens[:2], v.prompt_mel[:4], v.embedding))
    with pytest.raises(InputError, match="embedding is zero"):
        model.init_state(Voice(v.prompt_tokens, v.prompt_mel, torch.zeros_like(v.embedding)))
    with pytest.raises(InputError, match="non-finite"):
        model.init_state(Voice(v.prompt_tokens, v.prompt_mel * float("nan"), v.embedding))
    with pytest.raises(InputError, match="prompt_mel"):
        model.init_state(Voice(v.prompt_tokens, v.prompt_mel[:-1], v.embedding))


def test_real_size_config_builds_the_checkpoint_layout():
    """Step-Audio-2-mini sizes: the parameter names/shapes a real flow.pt has (checked by name and count)."""
    m = Token2Wav.__new__(Token2Wav)
    from a2llm_rt.speech.flow import FlowModel

    with torch.device("meta"):
        flow = FlowModel(FlowConfig.step_audio2())
    sd = flow.state_dict()
    assert sd["input_embedding.weight"].shape == (6561, 512)
    assert sd["decoder.estimator.in_proj.weight"].shape == (512, 320)
    assert sd["decoder.estimator.blocks.15.adaLN_modulation.1.weight"].shape == (9 * 512, 512)
    assert sd["encoder.up_encoders.3.self_attn.pos_bias_u"].shape == (8, 64)
    assert "decoder.rand_noise" not in sd
    del m


def test_streamed_audio_does_not_depend_on_later_codes(model):
    """Chunk k's audio depends on codes up to its look-ahead only: changing later codes leaves it unchanged."""
    v = tiny_voice(model)
    a = UPSTREAM_EXAMPLE[:80]
    b = a[:53] + [(c + 7) % 6561 for c in a[53:]]  # differs from code 53 on: chunks 0 (0..27) and 1 (25..52) same
    ca, cb = _stream_all(model, v, a, seed=5), _stream_all(model, v, b, seed=5)
    torch.testing.assert_close(ca[0], cb[0])
    torch.testing.assert_close(ca[1], cb[1])
    assert not torch.allclose(ca[2], cb[2])
