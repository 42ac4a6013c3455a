"""Hands-free utterance segmentation with the real Silero VAD ONNX model, on espeak-ng speech with known silences."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from a2llm_rt.audio_vad import (
    SAMPLE_RATE,
    BargeIn,
    SpeechEnd,
    SpeechStart,
    UtteranceSegmenter,
    VadConfig,
    silero_model_path,
)
from a2llm_rt.errors import InputError
from tests.speech_helpers import conversation

TOL = int(0.25 * SAMPLE_RATE)  # boundaries within 250 ms of the truth
TEXTS = (
    "Hello there, how are you today?",
    "I would like to buy a sword.",
    "Where is the castle of the old king?",
    "Yes.",
)
GAPS_S = (1.0, 1.2, 0.9, 1.5, 1.0)  # silence before, between and after the utterances


@pytest.fixture(scope="module")
def speech() -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Four utterances separated by known silences, with faint noise: (signal [n], [(start, end)] per utterance)."""
    return conversation(TEXTS, GAPS_S)


def stream(seg: UtteranceSegmenter, sig: np.ndarray, chunk: int | list[int], state=None):
    """Feed ``sig`` in chunks; -> (events with the sample count fed when each came out, final state)."""
    st = state or seg.init_state()
    out, i, k = [], 0, 0
    sizes = chunk if isinstance(chunk, list) else None
    while i < sig.size:
        n = sizes[k % len(sizes)] if sizes else chunk
        k += 1
        evs, st = seg.step(sig[i : i + n], st)
        i += n
        out += [(e, i) for e in evs]
    return out, st


@pytest.mark.parametrize("chunk", [320, 512, 400, [137, 512, 7, 901]])  # 20 ms, 32 ms, 25 ms, irregular
def test_every_utterance_is_one_segment_within_250_ms(speech, chunk):
    sig, truth = speech
    events, _ = stream(UtteranceSegmenter(), sig, chunk)
    starts = [e for e, _ in events if isinstance(e, SpeechStart)]
    ends = [e for e, _ in events if isinstance(e, SpeechEnd)]
    assert [type(e) for e, _ in events] == [SpeechStart, SpeechEnd] * len(truth)
    assert not any(isinstance(e, BargeIn) for e, _ in events)
    for (t0, t1), s, e in zip(truth, starts, ends, strict=True):
        assert abs(s.sample - t0) <= TOL, (s.sample, t0)
        assert e.start == s.sample
        assert abs(e.end - t1) <= TOL, (e.end, t1)
        assert e.reason == "silence"
        assert np.array_equal(e.audio, sig[e.start : e.end])  # the utterance's samples, nothing lost


def test_chunking_does_not_change_events(speech):
    sig, _ = speech
    seg = UtteranceSegmenter()
    a = [e for e, _ in stream(seg, sig, 320)[0]]
    b = [e for e, _ in stream(seg, sig, [1, 2000, 333])[0]]
    key = [
        (type(e).__name__, getattr(e, "sample", None), getattr(e, "start", None), getattr(e, "end", None)) for e in a
    ]
    assert key == [
        (type(e).__name__, getattr(e, "sample", None), getattr(e, "start", None), getattr(e, "end", None)) for e in b
    ]


def test_int16_input_gives_the_same_segments(speech):
    sig, _ = speech
    seg = UtteranceSegmenter()
    q = np.round(sig * 32767).astype(np.int16)
    a = [
        (type(e), getattr(e, "sample", getattr(e, "start", None)))
        for e, _ in stream(seg, q.astype(np.float32) / 32768, 512)[0]
    ]
    b = [(type(e), getattr(e, "sample", getattr(e, "start", None))) for e, _ in stream(seg, q, 512)[0]]
    assert a == b and len(a) == 8


def test_barge_in_while_answering(speech):
    sig, truth = speech
    seg = UtteranceSegmenter()
    st = seg.set_answering(seg.init_state(), True)
    events, st = stream(seg, sig[: truth[1][0] - 8000], 320, st)
    barge = [(e, at) for e, at in events if isinstance(e, BargeIn)]
    assert len(barge) == 1  # one per utterance, not one per window
    e, emitted_at = barge[0]
    t0 = truth[0][0]
    assert abs(e.sample - t0) <= TOL
    # detection latency counted in audio samples (no wall clock): barge_in_ms of speech + one window + one chunk
    assert emitted_at - t0 <= int(0.2 * SAMPLE_RATE), (emitted_at - t0) / SAMPLE_RATE
    # it comes before SpeechStart would confirm an utterance, and the utterance is still segmented
    kinds = [type(x) for x, _ in events]
    assert kinds.index(BargeIn) < kinds.index(SpeechStart) and SpeechEnd in kinds
    # after the caller cancels the answer and stops answering, speech is a plain turn again
    st = seg.set_answering(st, False)
    more, _ = stream(seg, sig[truth[1][0] - 8000 : truth[2][0] - 1000], 320, st)
    assert [type(x) for x, _ in more] == [SpeechStart, SpeechEnd]


def test_silence_and_noise_give_no_events():
    seg = UtteranceSegmenter()
    rng = np.random.default_rng(1)
    quiet = rng.normal(0, 3e-3, 5 * SAMPLE_RATE).astype(np.float32)
    events, st = stream(seg, quiet, 320)
    assert events == []
    # memory stays bounded while idle: only the padding before the next window and the pending samples are kept
    kept = sum(c.size for c in st.chunks)
    assert kept <= seg.pad + 512 + 320


def test_state_is_not_modified(speech):
    sig, truth = speech
    seg = UtteranceSegmenter()
    st = stream(seg, sig[: truth[0][0] + 3000], 512)[1]  # inside the first utterance (already started)
    snapshot = dataclasses.replace(st)
    a, _ = seg.step(sig[truth[0][0] + 3000 : truth[1][0]], st)
    b, _ = seg.step(sig[truth[0][0] + 3000 : truth[1][0]], st)
    assert [type(e) for e in a] == [type(e) for e in b] == [SpeechEnd]
    assert np.array_equal(a[0].audio, b[0].audio) and a[0].start == b[0].start
    assert st.offset == snapshot.offset and np.array_equal(st.model_state, snapshot.model_state)


def test_max_length_and_flush(speech):
    sig, truth = speech
    seg = UtteranceSegmenter(VadConfig(max_utterance_s=1.2))
    t0, t1 = truth[0]  # about 1.65 s of speech
    events, st = stream(seg, sig[: t1 + 16000], 320)
    ends = [e for e, _ in events if isinstance(e, SpeechEnd)]
    limit = int(1.2 * SAMPLE_RATE)
    assert ends[0].reason == "max_length" and limit - 512 < ends[0].end - ends[0].start <= limit
    assert ends[0].audio.size == ends[0].end - ends[0].start
    # the rest of the speech becomes the next utterances
    assert len(ends) >= 2 and [e.reason for e in ends[:-1]] == ["max_length"] * (len(ends) - 1)
    assert ends[-1].reason == "silence" and abs(ends[-1].end - t1) <= TOL
    for a, b in zip(ends, ends[1:], strict=False):
        assert b.start == a.end  # consecutive, no overlap, nothing lost
        assert b.end - b.start <= limit
    assert np.array_equal(np.concatenate([e.audio for e in ends]), sig[ends[0].start : ends[-1].end])
    # the stream stops in the middle of an utterance: flush ends it
    seg2 = UtteranceSegmenter()
    events, st = stream(seg2, sig[: t0 + 8000], 320)
    assert [type(e) for e, _ in events] == [SpeechStart]
    flushed, st = seg2.flush(st)
    assert len(flushed) == 1 and flushed[0].reason == "flush" and flushed[0].audio.size > 4000
    assert st.offset == 0 and st.candidate is None


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_other_rates_are_refused(rate):
    seg = UtteranceSegmenter()
    with pytest.raises(InputError, match="16000 Hz"):
        seg.step(np.zeros(320, np.float32), seg.init_state(), sample_rate=rate)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((2, 320), np.float32),
        np.full(320, np.nan, np.float32),
        np.full(320, 3.0, np.float32),
        np.zeros(320, np.int32),
    ],
)
def test_bad_audio_is_refused(bad):
    seg = UtteranceSegmenter()
    st = seg.init_state()
    with pytest.raises(InputError):
        seg.step(bad, st)
    events, _ = seg.step(np.zeros(320, np.float32), st)  # the session stays usable
    assert events == []


def test_config_validation_and_model_file():
    with pytest.raises(ValueError):
        VadConfig(threshold=1.5)
    with pytest.raises(ValueError):
        VadConfig(neg_threshold=0.9)
    with pytest.raises(ValueError):
        VadConfig(min_silence_ms=10)
    assert silero_model_path().name == "silero_vad.onnx"
    with pytest.raises(TypeError, match="init_state"):
        UtteranceSegmenter().init_state().reset()
