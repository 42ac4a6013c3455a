"""A turn through the engine streams speech chunk by chunk with the native token2wav (tiny random model of the real
architecture), and the vocoder interface numbers hold."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from a2llm_rt.engine.events import AudioChunk, TurnEnd
from a2llm_rt.errors import InputError
from a2llm_rt.speech.config import FlowConfig
from a2llm_rt.speech.vocoder import NativeToken2WavVocoder
from tests.engine.engine_helpers import greedy_engine, of, tone

from .helpers import tiny_model, tiny_voice

pytestmark = pytest.mark.usefixtures("one_thread")


def _vocoder(n_codes: int) -> NativeToken2WavVocoder:
    m = tiny_model(flow=dataclasses.replace(FlowConfig.tiny(), vocab_size=n_codes))
    return NativeToken2WavVocoder(m, {"a": tiny_voice(m, seed=1, name="a"), "b": tiny_voice(m, seed=2, name="b")})


def test_vocoder_interface_streams_in_chunks():
    voc = _vocoder(6561)
    codes = np.random.default_rng(0).integers(0, 6561, size=60)
    st = voc.init_state()
    pcm1, st = voc.push(codes[:27], st)
    assert pcm1.size == 0 and st.codes_in == 27  # not a full chunk + look-ahead yet
    pcm2, st = voc.push(codes[27:30], st)
    assert pcm2.size == 25 * 960 - 3840  # first audio after 28 codes
    pcm3, st = voc.push(codes[30:], st, final=True)
    assert st.finished and st.samples_out == pcm2.size + pcm3.size == 60 * 960
    with pytest.raises(InputError, match="finished"):
        voc.push([1], st)
    with pytest.raises(InputError, match="unknown voice"):
        voc.init_state("nobody")
    assert voc.init_state("b").voice == "b"
    empty, st = voc.push([], voc.init_state(), final=True)
    assert empty.size == 0 and st.finished


def test_turn_through_engine_streams_speech_chunk_by_chunk():
    eng = greedy_engine(max_sessions=2, max_seconds=4.0, min_seconds=3.0)
    eng.stack = dataclasses.replace(eng.stack, vocoder=_vocoder(eng.stack.backbone.layout.audio_codes))
    s = eng.new_session()
    ev = eng.run_turn(s, tone(0.5, 220.0))
    chunks = of(ev, AudioChunk, s.id)
    end = of(ev, TurnEnd, s.id)[-1]
    total = sum(c.pcm.size for c in chunks)
    assert total % 960 == 0 and total > 0
    n_codes = total // 960
    assert n_codes >= 28 + 25, n_codes  # long enough for two chunks
    assert len([c for c in chunks if c.pcm.size]) >= 2  # audio streamed before the turn's end
    assert [c.sample_offset for c in chunks] == list(np.cumsum([0] + [c.pcm.size for c in chunks[:-1]]))
    assert all(c.sample_rate == 24000 for c in chunks)
    assert all(np.isfinite(c.pcm).all() and np.abs(c.pcm).max() <= 0.99 for c in chunks if c.pcm.size)
    assert end is not None


def test_load_vocoder_from_folder_with_named_voices(tmp_path):
    from a2llm_rt.engine.builders import load_vocoder
    from plugin_bridge.serve import parse_voices

    from .test_checkpoint import _write_folder

    m = tiny_model(seed=4)
    d = _write_folder(tmp_path, m)
    tiny_voice(m, seed=1, name="alice").save(tmp_path / "alice.voice.safetensors")
    tiny_voice(m, seed=2, name="bob").save(tmp_path / "bob.voice.safetensors")
    voices = dict(
        parse_voices([f"alice={tmp_path / 'alice.voice.safetensors'}", f"bob={tmp_path / 'bob.voice.safetensors'}"])
    )
    voc = load_vocoder(str(d), 6561, voices=voices)
    assert (
        isinstance(voc, NativeToken2WavVocoder) and voc.default_voice == "alice" and set(voc.voices) == {"alice", "bob"}
    )
    pcm, st = voc.push(list(range(30)), voc.init_state("bob"), final=True)
    assert pcm.size == 30 * 960 and st.voice == "bob"
    with pytest.raises(InputError, match="needs a voice"):
        load_vocoder(str(d), 6561)
    with pytest.raises(InputError, match="6561 codes but the backbone emits 100"):
        load_vocoder(str(d), 100, voices=voices)
    with pytest.raises(InputError, match="NAME=PATH"):
        parse_voices(["alice"])
    with pytest.raises(InputError, match="alice given twice"):
        parse_voices(["alice=a.wav", "alice=b.wav"])


def test_turn_through_the_bridge_streams_speech_chunk_by_chunk():
    """The issue's end-to-end check: a client of the bridge receives the native token2wav's speech in several
    AudioChunks before the TurnEnd, contiguous, with the face covering it."""
    from plugin_bridge import protocol as P
    from plugin_bridge.client import BridgeClient
    from plugin_bridge.engine_source import EngineSource
    from tests.plugin_bridge.test_engine_source import Served, assert_complete, record_turn

    eng = greedy_engine(max_sessions=1, max_seconds=4.0, min_seconds=3.0)
    eng.stack = dataclasses.replace(eng.stack, vocoder=_vocoder(eng.stack.backbone.layout.audio_codes))
    with Served(EngineSource(eng)) as s, BridgeClient(s.endpoint) as c:
        res, msgs = record_turn(c, tone(0.5, 220.0))
        assert_complete(res, msgs)
        chunks = [m for m in msgs if isinstance(m, P.AudioChunk)]
        assert len([m for m in chunks if m.samples.size]) >= 2  # streamed in pieces, not one block at the end
        assert res.turn_end.audio_samples >= (28 + 25) * 960  # two token2wav chunks at least


def test_each_session_speaks_with_its_own_voice():
    eng = greedy_engine(max_sessions=2, max_seconds=1.6, min_seconds=1.2)
    eng.stack = dataclasses.replace(eng.stack, vocoder=_vocoder(eng.stack.backbone.layout.audio_codes))
    with pytest.raises(InputError, match="unknown voice"):
        eng.new_session(voice="nobody")
    assert len(eng._free_rows) == 2  # refused before a row was taken
    pcm = {}
    for voice in ("a", "b"):
        s = eng.new_session(session_id=0, voice=voice)  # the same id: the same sampling seed, the same codes
        ev = eng.run_turn(s, tone(0.5, 220.0))
        pcm[voice] = np.concatenate([c.pcm for c in of(ev, AudioChunk, s.id)])
        eng.close_session(s)
    assert pcm["a"].shape == pcm["b"].shape and pcm["a"].size > 0
    assert not np.allclose(pcm["a"], pcm["b"], atol=1e-4)  # the prompt (speaker) conditioning differs
