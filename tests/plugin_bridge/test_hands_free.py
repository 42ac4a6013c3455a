"""Hands-free talk through the bridge (PROTOCOL.md §10.8): espeak-ng speech separated by known silences is streamed as
MicAudio in (simulated) real time; the server's Silero VAD must turn every utterance into exactly one turn, report
its start and end within 250 ms of the truth, and cancel an answer the player speaks over within 100 ms, all
measured in stream time (mic samples), never on the wall clock."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy.signal import resample_poly

from plugin_bridge import protocol as P
from plugin_bridge.client import CharacterClient
from tests.plugin_bridge.test_characters import tiny_source
from tests.plugin_bridge.test_engine_source import Served
from tests.speech_helpers import conversation

RATE = 48000  # the browser's usual microphone rate: the server decimates to 16 kHz
CHUNK = RATE // 50  # 20 ms
TOL = int(0.25 * RATE)
HOLD = int(0.7 * RATE)  # silence after an utterance that the VAD needs to end it (min_silence_ms 500 + pad + windows)
TEXTS = ("Hello there, how are you today?", "I would like to buy a sword.", "Where is the castle of the old king?")


pytestmark = pytest.mark.usefixtures("one_thread")


def _at_48k(gaps_s, texts=TEXTS):
    sig, truth = conversation(texts, gaps_s)
    x = np.clip(resample_poly(sig, 3, 1), -1.0, 1.0).astype(np.float32)
    return x, [(a * 3, b * 3) for a, b in truth]


class Mic:
    """Streams a signal as MicAudio PCM16 chunks at ``speed`` x real time; the stream clock only advances by sending."""

    def __init__(self, client: CharacterClient, signal: np.ndarray, speed: float = 4.0):
        self.c, self.x, self.speed, self.pos = client, np.round(signal * 32767).astype(np.int16), speed, 0
        self.msgs: list[P.Message] = []

    def send_until(self, end: int, stop=None) -> P.Message | None:
        """Send up to sample ``end`` (paced), collecting messages; returns the first for which ``stop`` holds."""
        t0, p0 = time.monotonic(), self.pos
        while self.pos < min(end, self.x.size):
            n = min(CHUNK, self.x.size - self.pos)
            self.c.send_mic(self.x[self.pos : self.pos + n], RATE, self.pos, end_of_stream=self.pos + n >= self.x.size)
            self.pos += n
            due = t0 + (self.pos - p0) / RATE / self.speed
            hit = self.drain(max(0.0, due - time.monotonic()), stop)
            if hit is not None:
                return hit
        return None

    def drain(self, timeout_s: float, stop=None) -> P.Message | None:
        for m in self.c.collect(timeout_s, until=stop):
            self.msgs.append(m)
            if stop is not None and stop(m):
                return m
        return None

    def hear(self, utterance_end: int) -> P.SpeechEnded:
        """Send up to ``HOLD`` samples of silence past ``utterance_end``, then wait for the server's SpeechEnded
        without sending more: the stream stops inside the silence however late the server runs (a loaded machine
        must not let the next utterance reach the VAD before this one's answer)."""
        hit = self.send_until(utterance_end + HOLD, stop=lambda m: isinstance(m, P.SpeechEnded))
        return hit if hit is not None else self.wait_for(lambda m: isinstance(m, P.SpeechEnded))

    def wait_for(self, stop, timeout_s: float = 120.0) -> P.Message:
        hit = self.drain(timeout_s, stop)
        assert hit is not None, "timed out"
        return hit


def of(msgs, cls, turn_id=None):
    return [m for m in msgs if isinstance(m, cls) and (turn_id is None or m.turn_id == turn_id)]


def test_every_utterance_is_one_turn_with_start_and_end_within_250_ms():
    sig, truth = _at_48k((1.0, 1.2, 1.0, 1.2))
    with Served(tiny_source(max_seconds=1.0, min_seconds=0.6)) as served, CharacterClient(
        served.endpoint, ("arkit52",), idle_face=False
    ) as c:
        mic = Mic(c, sig)
        for _, t1 in truth:
            ended = mic.hear(t1)
            # the stream pauses (its clock with it) until the answer is over: no answer overlaps the next utterance
            end = mic.wait_for(lambda m, t=ended.turn_id: isinstance(m, P.TurnEnd) and m.turn_id == t)
            assert end.status == P.TurnStatus.COMPLETED and end.audio_samples > 0
        mic.send_until(sig.size)
        mic.drain(1.0)
        starts, ends = of(mic.msgs, P.SpeechStarted), of(mic.msgs, P.SpeechEnded)
        assert len(starts) == len(ends) == len(truth) and not of(mic.msgs, P.BargeIn)
        ids = [m.turn_id for m in starts]
        assert ids == [P.SERVER_TURN_BIT + 1 + i for i in range(len(truth))] == [m.turn_id for m in ends]
        for (t0, t1), s, e in zip(truth, starts, ends, strict=True):
            assert abs(s.start_sample - t0) <= TOL, (s.start_sample - t0) / RATE
            assert e.start_sample == s.start_sample and abs(e.end_sample - t1) <= TOL, (e.end_sample - t1) / RATE
            assert e.reason == P.SpeechEndReason.SILENCE and s.start_sample < s.detected_sample <= e.detected_sample
            # each turn answered once: exactly one TurnEnd per utterance, with speech and face
            assert len(of(mic.msgs, P.TurnEnd, s.turn_id)) == 1
            assert of(mic.msgs, P.AudioChunk, s.turn_id) and of(mic.msgs, P.FaceFrames, s.turn_id)


def test_barge_in_cancels_the_answer_within_100_ms_of_stream_time():
    sig, truth = _at_48k((1.0, 0.8, 1.2), TEXTS[:2])  # the second utterance starts 0.8 s after the first ends
    src = tiny_source(pace=1.0, max_seconds=3.0, min_seconds=3.0)  # a real-time answer of 3 s
    with Served(src) as served, CharacterClient(served.endpoint, ("arkit52",)) as c:
        mic = Mic(c, sig)
        tid = mic.hear(truth[0][1]).turn_id
        mic.wait_for(lambda m: isinstance(m, P.AudioChunk) and m.turn_id == tid)  # the answer is playing
        barge = mic.send_until(sig.size, stop=lambda m: isinstance(m, P.BargeIn))
        assert barge is not None and barge.turn_id == tid
        cancelled = mic.wait_for(lambda m: isinstance(m, P.TurnEnd) and m.turn_id == tid)
        assert cancelled.status == P.TurnStatus.CANCELLED
        t0 = truth[1][0]
        latency = barge.detected_sample - t0
        assert abs(barge.speech_sample - t0) <= TOL
        assert latency <= int(0.1 * RATE), f"barge-in after {latency / RATE * 1000:.0f} ms of speech"
        # the cancelled answer ends with the 15 ms fade, counted in its TurnEnd
        audio = of(mic.msgs, P.AudioChunk, tid)
        assert audio[-1].samples.size == 360 and audio[-1].samples[-1] == 0.0
        assert cancelled.audio_samples == sum(a.samples.size for a in audio)
        # the interrupting utterance becomes its own turn, answered in full
        ended = mic.send_until(sig.size, stop=lambda m: isinstance(m, P.SpeechEnded) and m.turn_id != tid)
        assert ended is not None and ended.turn_id == tid + 1 and abs(ended.end_sample - truth[1][1]) <= TOL
        end = mic.wait_for(lambda m: isinstance(m, P.TurnEnd) and m.turn_id == ended.turn_id, 300)
        assert end.status == P.TurnStatus.COMPLETED
        assert len(of(mic.msgs, P.SpeechStarted)) == 2 and len(of(mic.msgs, P.BargeIn)) == 1
        # listening posture and idle frames resumed between the turns (idle FaceFrames have turn_id 0)
        assert of(mic.msgs, P.FaceFrames, 0)


@pytest.mark.parametrize("rate", [16000, 32000, 48000])
def test_decimator_streams_like_one_shot_and_keeps_the_speech_band(rate):
    from plugin_bridge.character import Decimator

    t = np.arange(rate) / rate
    x = (0.5 * np.sin(2 * np.pi * 1000 * t) + (0.3 * np.sin(2 * np.pi * 11000 * t) if rate > 16000 else 0)).astype(
        np.float32
    )
    whole = Decimator(rate)(x)
    d = Decimator(rate)
    parts, i = [], 0
    for n in [1, 0, 7, 960, 333, 4800] * 20:  # 0: an empty chunk (e.g. one carrying only END_OF_STREAM)
        if i >= x.size:
            break
        parts.append(d(x[i : i + n]))
        i += n
    parts.append(d(x[i:]))
    np.testing.assert_allclose(np.concatenate(parts), whole, atol=1e-6)
    assert whole.size == 16000
    spec = np.abs(np.fft.rfft(whole[800:] * np.hanning(whole.size - 800)))
    freqs = np.fft.rfftfreq(whole.size - 800, 1 / 16000)
    peak = freqs[np.argmax(spec)]
    assert abs(peak - 1000) < 5  # the 1 kHz tone stays; 11 kHz (above 8 kHz) must not alias into the band
    if rate > 16000:
        band = (freqs > 4950) & (freqs < 5050)  # where 11 kHz would fold to at 16 kHz
        assert spec[band].max() < 0.01 * spec.max()


def test_end_of_stream_ends_the_utterance_and_starts_its_turn():
    from plugin_bridge.scripted_source import ScriptedSource
    from tests.plugin_bridge.helpers import start_server

    sig, truth = conversation(TEXTS[:1], (0.6, 0.0))  # speech runs to the very end of the stream
    srv = start_server(ScriptedSource(seconds=0.4))
    try:
        with CharacterClient(srv.endpoint, ("arkit52",), idle_face=False) as c:
            x = np.round(sig * 32767).astype(np.int16)
            for i in range(0, x.size, 320):
                c.send_mic(x[i : i + 320], 16000, i, end_of_stream=i + 320 >= x.size)
            msgs = c.collect(60, until=lambda m: isinstance(m, P.TurnEnd))
            ended = of(msgs, P.SpeechEnded)
            assert len(ended) == 1 and ended[0].reason == P.SpeechEndReason.END_OF_STREAM
            assert abs(ended[0].start_sample - truth[0][0]) <= 4000 and ended[0].end_sample <= x.size
            assert msgs[-1].turn_id == ended[0].turn_id and msgs[-1].status == P.TurnStatus.COMPLETED
            # after END_OF_STREAM the next chunk must start a new stream at offset 0
            c.send_mic(x[:320], 16000, 320)
            err = c.collect(10, until=lambda m: isinstance(m, P.Error))[-1]
            assert isinstance(err, P.Error) and err.code == P.ErrorCode.BAD_VALUE
            c.send_mic(np.zeros(320, np.int16), 16000, 0)  # accepted: no error
            assert not of(c.collect(0.5), P.Error)
    finally:
        srv.stop()
