"""The engine vocodes all sessions of a step in ONE call, batched through the native token2wav, and each session's
speech is what it gets alone; a stream that fails fails its own session only."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from a2llm_rt.engine.events import AudioChunk, Error, TurnEnd
from a2llm_rt.engine.vocoder import ToneVocoder
from a2llm_rt.errors import InputError
from a2llm_rt.speech.config import FlowConfig
from a2llm_rt.speech.token2wav import Token2Wav
from a2llm_rt.speech.vocoder import NativeToken2WavVocoder
from tests.engine.engine_helpers import greedy_engine, of, tone

from .helpers import tiny_model, tiny_voice

pytestmark = pytest.mark.usefixtures("one_thread")

AUDIO = [tone(0.5, 220.0), tone(0.8, 330.0), tone(0.3, 150.0, amp=0.6)]
VOICES = ["a", "b", "a"]
SECONDS = {"max_seconds": 3.2, "min_seconds": 2.4}


def _vocoder(n_codes: int) -> NativeToken2WavVocoder:
    m = tiny_model(flow=dataclasses.replace(FlowConfig.tiny(), vocab_size=n_codes))
    # voices of different prompt lengths: the batch mixes cache lengths from the first chunk on
    return NativeToken2WavVocoder(m, {"a": tiny_voice(m, n_codes=10, seed=1, name="a"),
                                      "b": tiny_voice(m, n_codes=17, seed=2, name="b")})


def _engine(max_sessions: int):
    eng = greedy_engine(max_sessions=max_sessions, **SECONDS)
    eng.stack = dataclasses.replace(eng.stack, vocoder=_vocoder(eng.stack.backbone.layout.audio_codes))
    return eng


def _pcm(events, sid) -> np.ndarray:
    return np.concatenate([c.pcm for c in of(events, AudioChunk, sid)] or [np.zeros(0, np.float32)])


@pytest.fixture(scope="module")
def alone():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    out = []
    for a, v in zip(AUDIO, VOICES, strict=True):
        eng = _engine(1)
        s = eng.new_session(session_id=0, voice=v)
        out.append(_pcm(eng.run_turn(s, a), s.id))
    torch.set_num_threads(n)
    return out


class _Spy:
    """Counts the vocoder's push_many calls and the model's step_many batches."""

    def __init__(self, voc: NativeToken2WavVocoder):
        self.calls: list[int] = []
        self.batches: list[int] = []
        push_many, step_many = voc.push_many, voc.model.step_many

        def spy_push(items):
            self.calls.append(len(items))
            return push_many(items)

        def spy_step(items):
            self.batches.append(len(items))
            return step_many(items)

        voc.push_many = spy_push
        voc.model.step_many = spy_step


def test_three_sessions_batched_speak_as_they_do_alone(alone):
    assert all(p.size >= (28 + 25) * 960 for p in alone)  # two chunks at least each
    eng = _engine(3)
    spy = _Spy(eng.stack.vocoder)
    sessions = [eng.new_session(voice=v) for v in VOICES]
    eng.submit(sessions[0], AUDIO[0])
    eng.submit(sessions[1], AUDIO[1])
    events = []
    per_step = []
    for _ in range(6):  # the third joins later: different progress in the batches
        n = len(spy.calls)
        events += eng.step()
        per_step.append(len(spy.calls) - n)
    eng.submit(sessions[2], AUDIO[2])
    while eng.busy:
        n = len(spy.calls)
        events += eng.step()
        per_step.append(len(spy.calls) - n)
    assert max(per_step) == 1  # ONE vocoder call per step, whatever the number of sessions
    assert max(spy.calls) >= 2  # ... carrying several sessions' codes
    assert max(spy.batches) >= 2  # and the model ran several sessions' chunks in one batch
    for i, s in enumerate(sessions):
        assert of(events, TurnEnd, s.id) and not of(events, Error, s.id)
        got = _pcm(events, s.id)
        assert got.shape == alone[i].shape, i
        np.testing.assert_allclose(got, alone[i], atol=1e-4, rtol=0, err_msg=f"session {i}")


def test_a_failing_stream_fails_its_session_only(alone):
    eng = _engine(2)
    good, bad = eng.new_session(voice="a"), eng.new_session(voice="b")
    eng.submit(good, AUDIO[0])
    eng.submit(bad, AUDIO[1])
    events = eng.step()  # prefill: both turns open
    # the bad session's stream breaks: a code the vocoder refuses would reach it with its next group
    bad.turn.voc_state = dataclasses.replace(bad.turn.voc_state, finished=True)
    events += eng.run_until_idle()
    err = of(events, Error, bad.id)
    assert err and err[-1].kind == "input" and "finished" in err[-1].message
    assert not of(events, Error, good.id) and of(events, TurnEnd, good.id)
    np.testing.assert_allclose(_pcm(events, good.id), alone[0], atol=1e-4, rtol=0)


def test_push_many_isolates_bad_and_breaking_streams():
    voc = _vocoder(6561)
    rng = np.random.default_rng(0)
    codes = [rng.integers(0, 6561, size=n) for n in (40, 60, 33)]
    ref = [voc.push(c, voc.init_state(v), final=True)[0] for c, v in zip(codes, VOICES, strict=True)]
    states = [voc.init_state(v) for v in VOICES]
    res = voc.push_many([(codes[0], states[0], True), ([1, 6561], voc.init_state("b"), False),
                         (codes[1], states[1], True), (codes[2], states[2], True)])
    assert isinstance(res[1], InputError) and "6561" in str(res[1])
    for r, want in zip([res[0], res[2], res[3]], ref, strict=True):
        assert not isinstance(r, Exception)
        np.testing.assert_allclose(r[0], want, atol=1e-4, rtol=0)
        assert r[1].finished and r[1].samples_out == want.size
    # a stream whose state is corrupt breaks the batched call: it is retried stream by stream, only it fails
    states = [voc.init_state(v) for v in VOICES]
    states[1].stream.state.enc_cnn = states[1].stream.state.enc_cnn[:, :3]
    res = voc.push_many([(c, s, True) for c, s in zip(codes, states, strict=True)])
    assert isinstance(res[1], Exception) and not isinstance(res[1], InputError)
    np.testing.assert_allclose(res[0][0], ref[0], atol=1e-4, rtol=0)
    np.testing.assert_allclose(res[2][0], ref[2], atol=1e-4, rtol=0)


def test_default_push_many_is_push_item_by_item():
    voc = ToneVocoder()
    a, b = voc.init_state(), voc.init_state()
    done = voc.push([1], voc.init_state(), final=True)[1]
    res = voc.push_many([([3, 4, 5], a, False), ([9], done, False), ([7, 8], b, True)])
    assert isinstance(res[1], ValueError)  # the finished stream only
    np.testing.assert_array_equal(res[0][0], voc.push([3, 4, 5], voc.init_state())[0])
    np.testing.assert_array_equal(res[2][0], voc.synthesize([7, 8]))


def test_same_codes_same_audio_whoever_shares_the_batch():
    """Each stream's HiFT draws come from its own seeded generator: batching never changes a session's audio."""
    voc = _vocoder(6561)
    codes = list(range(100, 3100, 50))[:58]
    alone_pcm = voc.push(codes, voc.init_state("a"), final=True)[0]
    again = voc.push(codes, voc.init_state("a"), final=True)[0]
    np.testing.assert_array_equal(alone_pcm, again)
    other = voc.init_state("b")
    res = voc.push_many([(codes[::-1], other, True), (codes, voc.init_state("a"), True)])
    np.testing.assert_allclose(res[1][0], alone_pcm, atol=1e-4, rtol=0)
    assert isinstance(voc.model, Token2Wav)


def test_voice_set_up_runs_once_per_voice_not_per_turn():
    """The prompt's pass through the flow (20 estimator passes) is the same every turn: done once per voice."""
    from a2llm_rt.speech.token2wav import SpeechStream

    voc = _vocoder(6561)
    calls = []
    init = voc.model.init_state
    voc.model.init_state = lambda v: calls.append(v.name) or init(v)
    codes = list(range(7, 3007, 50))[:40]
    pcm = [voc.push(codes, voc.init_state(v), final=True)[0] for v in ("a", "b", "a", "a")]
    assert calls == []  # no set-up per turn
    fresh = SpeechStream(voc.model, voc.voices["a"], seed=voc.seed)  # computes its own set-up
    ref = fresh.run(fresh.push(codes, final=True)).numpy()
    assert calls == ["a"]
    np.testing.assert_array_equal(pcm[0], ref)
    np.testing.assert_array_equal(pcm[2], ref)  # the shared set-up was not altered by the turns before
    assert not np.allclose(pcm[1], ref, atol=1e-4)
