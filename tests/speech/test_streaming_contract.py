"""The speech stream and the vocoders on the streaming contract (:mod:`a2llm_rt.streaming`): the shared checks of
``tests/streaming_checks.py`` (chunked == whole, causality, reset-one-row) on the tone vocoder (look-ahead 0) and on
the native token2wav vocoder (upstream's 25 + 3 chunking: look-ahead >= 1), and the host-side state rules (one stream
per state, never modified in place, batch operations refused with a reason)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from a2llm_rt.engine.vocoder import ToneState, ToneVocoder
from a2llm_rt.errors import InputError
from a2llm_rt.speech.config import FlowConfig
from a2llm_rt.speech.token2wav import CHUNK_CODES, MEL_CACHE_FRAMES, Token2WavState
from a2llm_rt.speech.vocoder import NativeToken2WavVocoder
from tests.streaming_checks import (
    check_all,
    check_causality,
    check_chunked_equals_whole,
    check_reset_one_row,
    run_stream,
    vocoder_case,
)

from .helpers import tiny_model, tiny_voice

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def native() -> NativeToken2WavVocoder:
    """The tiny random model, made to depend on its codes: as built, changing every code from the 30th on moves its
    audio by 4e-5 (the encoder's output barely moves the mel, the mel barely moves HiFT's output), below the checks'
    tolerance, so they could not fail. The encoder projection x30 and HiFT's first convolution x10 make that 0.02."""
    m = tiny_model(flow=dataclasses.replace(FlowConfig.tiny(), vocab_size=6561))
    with torch.no_grad():
        m.flow.encoder_proj.weight.mul_(30.0)
        m.flow.encoder_proj.bias.mul_(30.0)
        m.hift.conv_pre.weight.mul_(10.0)
    return NativeToken2WavVocoder(
        m, {"a": tiny_voice(m, n_codes=10, seed=1, name="a"), "b": tiny_voice(m, n_codes=17, seed=2, name="b")}
    )


def _speech_lookahead(voc: NativeToken2WavVocoder) -> int:
    """Codes after a code that its streamed audio may depend on: a chunk's audio depends on all its 25 codes and the
    3 look-ahead codes after them, and the last 8 mel frames (4 codes) of each chunk are held back to be re-vocoded
    and cross-faded with the next; so the audio of code j is out once the chunk holding code j + 4 has its
    look-ahead: at most 25 - 1 + 3 + 4 codes later."""
    hold = MEL_CACHE_FRAMES // voc.model.flow_cfg.up_stride
    return CHUNK_CODES - 1 + voc.model.lookahead + hold


# ---- the tone vocoder: look-ahead 0 -----------------------------------------------------------------------------
def test_tone_vocoder_passes_the_shared_checks():
    check_all(vocoder_case("tone vocoder", ToneVocoder(), steps=12))


# ---- the native token2wav vocoder: look-ahead >= 1 ----------------------------------------------------------------
STEPS = 80  # chunks 0..27, 25..52, 50..77, then the last (75..79)


def test_speech_stream_chunked_equals_whole(native):
    """Any pushing of the codes gives upstream's streaming output (``synthesize`` = one push of all codes, the
    chunking of the golden streaming fixture), row by row, with two sessions batched in every push."""
    case = vocoder_case("token2wav vocoder", native, STEPS, lookahead=_speech_lookahead(native), atol=1e-4, rtol=0)
    check_chunked_equals_whole(case)


def test_speech_stream_is_causal(native):
    """Later codes never change audio already emitted; at the chunk boundaries (a chunk's last look-ahead code:
    52, 77) the declared look-ahead is exact: what is out is exactly what cannot change (bit for bit: the chunks
    before are computed from the same codes and states), and the audio right after it does change."""
    look = _speech_lookahead(native)
    case = vocoder_case("token2wav vocoder", native, STEPS, lookahead=look, atol=1e-4, rtol=0)
    bounds = [2 * CHUNK_CODES + native.model.lookahead - 1, 3 * CHUNK_CODES + native.model.lookahead - 1]
    check_causality(case, points=[10, 30, 40, *bounds, 60], tight=False, uniform=False)
    g = torch.Generator().manual_seed(1)
    x = case.make_input(1, STEPS, g)
    ref = case.whole(x)
    for i in bounds:
        x2 = case.perturb(x, i)
        _, n, _ = case.step(x2[:, :i], case.init(1))
        first = (i - look) * native.samples_per_code
        assert int(n[0]) == first  # everything that cannot change is out ...
        out = case.whole(x2)
        assert torch.equal(out[:, :first], ref[:, :first])
        nxt = slice(first, first + CHUNK_CODES * native.samples_per_code)
        assert not torch.equal(out[:, nxt], ref[:, nxt])  # ... and the next chunk's audio does change
        assert not torch.allclose(
            out[:, first + CHUNK_CODES * native.samples_per_code :],
            ref[:, first + CHUNK_CODES * native.samples_per_code :],
            atol=1e-3,
        )


def test_speech_stream_reset_one_row(native):
    """A session that starts again beside one that goes on (batched at different progress) speaks as a fresh
    session; the other one is undisturbed. Before the restart row 0 has had a chunk out (30 codes) or not (1)."""
    for voice in ("a", "b"):
        case = vocoder_case(
            f"token2wav vocoder, voice {voice}",
            native,
            STEPS,
            lookahead=_speech_lookahead(native),
            voice=voice,
            atol=1e-4,
            rtol=0,
        )
        check_reset_one_row(case, before=30)
        check_reset_one_row(case, before=1)


def test_speech_sessions_in_different_voices_are_independent(native):
    """Two sessions in different voices (different cache lengths, batched by padding) each get their own audio."""
    a = vocoder_case("a", native, STEPS, voice="a", atol=1e-4, rtol=0)
    b = vocoder_case("b", native, STEPS, voice="b", atol=1e-4, rtol=0)
    x = a.make_input(2, STEPS, torch.Generator().manual_seed(3))
    mixed = [a.init(1)[0], b.init(1)[0]]
    rows, _ = run_stream(a, x, [5, 30, 31, 57], mixed)
    torch.testing.assert_close(rows[0], a.whole(x[:1])[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(rows[1], b.whole(x[1:])[0], atol=1e-4, rtol=0)


# ---- host-side state rules ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", ["tone", "native"])
def test_push_and_flush_leave_the_state_as_it_was(native, make):
    """A push works on a copy: pushing the same codes twice from one state gives the same audio (a stream whose
    buffer or generator were advanced in place would give other audio, or a second chunk)."""
    voc = ToneVocoder() if make == "tone" else native
    codes = np.arange(100, 100 + 40 * 37, 37) % voc.n_codes
    s0 = voc.init_state()
    p1, s1 = voc.push(codes, s0)
    p2, s2 = voc.push(codes, s0)
    np.testing.assert_array_equal(p1, p2)
    assert s0.codes_in == 0 and s0.samples_out == 0 and not s0.finished
    f1, e1 = voc.flush(s1)
    f2, _ = voc.flush(s1)
    np.testing.assert_array_equal(f1, f2)
    assert e1.finished and not s1.finished and e1.samples_out == p1.size + f1.size
    np.testing.assert_allclose(np.concatenate([p1, f1]), voc.synthesize(codes), atol=1e-5, rtol=0)
    with pytest.raises((InputError, ValueError), match="finished"):
        voc.flush(e1)


def test_a_failed_push_leaves_the_stream_as_it_was(native, monkeypatch):
    """The model fails on the chunk a push makes ready: the stream passed in keeps its buffered codes (and its
    generator), so pushing the same codes again gives the audio of an undisturbed stream."""
    _, s = native.push(list(range(20)), native.init_state("a"))
    real = native.model.step_many

    def broken(items):
        monkeypatch.setattr(native.model, "step_many", real)
        raise RuntimeError("device lost")

    monkeypatch.setattr(native.model, "step_many", broken)
    (r,) = native.push_many([(list(range(20, 40)), s, False)])
    assert isinstance(r, RuntimeError)
    got = native.push(list(range(20, 40)), s)[0]
    want = native.push(list(range(40)), native.init_state("a"))[0]
    assert got.size == want.size > 0
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("state", [ToneState(), "native"])
def test_vocoder_states_refuse_batch_operations(native, state):
    state = native.init_state() if state == "native" else state
    for op in (lambda: state.reset(torch.tensor([True])), lambda: state.select([0]), lambda: type(state).cat([state])):
        with pytest.raises(TypeError, match="host-side"):
            op()


def test_token2wav_state_is_ragged_per_session(native):
    """A fresh session is its voice's set-up, not zeros: ``reset`` is refused; sessions stack in lock-step only."""
    a, b = native.voice_states["a"], native.voice_states["b"]
    with pytest.raises(TypeError, match="init_state"):
        a.reset(torch.tensor([True]))
    with pytest.raises(InputError, match="step_many"):
        Token2WavState.cat([a, b])  # different prompts: caches of different lengths
    _, a1 = native.model.step(torch.arange(28)[None], a, False)
    with pytest.raises(InputError, match="chunks|step_many"):
        Token2WavState.cat([a, a1])  # same voice, different progress
    both = Token2WavState.cat([a, a])
    assert both.batch_size == 2
    assert torch.equal(both.select([1]).est_att, a.est_att)
