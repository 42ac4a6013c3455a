"""The bridge server driving the real session engine (tiny seeded random models on the CPU).

Each test runs an in-process :class:`BridgeServer` over an :class:`EngineSource` on a loopback port and talks to it
through the Python client: a complete turn, four clients batched at once, cancel then another turn, an input the
engine refuses (only that client fails), SERVER_BUSY when every cache row is taken, and the serve CLI's choice of
source.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from plugin_bridge import protocol as P
from plugin_bridge.client import BridgeClient, BridgeError
from plugin_bridge.engine_source import MAX_FACE_LEAD_S, EngineSource, clean_text
from plugin_bridge.scripted_source import ScriptedSource
from plugin_bridge.server import BridgeServer, ServerConfig
from plugin_bridge.turn_source import SAMPLES_PER_FRAME, AudioChunk, FaceFrames, SourceBusyError, TurnEnd, TurnError

QUESTION = (0.2 * np.sin(2 * np.pi * 180.0 * np.arange(8000) / 16000)).astype(np.float32)  # 0.5 s at 16 kHz


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_source(pace: float = 0.0, **engine_cfg) -> EngineSource:
    from a2llm_rt.engine.engine import Engine, EngineConfig

    cfg = EngineConfig(**{"max_sessions": 4, "max_seconds": 2.0, "min_seconds": 1.0, **engine_cfg})
    return EngineSource(Engine.tiny(0, cfg), pace=pace)


class Served:
    """An engine-backed server on a free loopback port (closed by the context manager)."""

    def __init__(self, source: EngineSource, **config):
        self.source = source
        config.setdefault("bind", "tcp://127.0.0.1:*")
        config.setdefault("heartbeat_s", 0.2)
        config.setdefault("session_timeout_s", 5.0)
        self.server = BridgeServer(source, ServerConfig(**config)).start()
        self.endpoint = self.server.endpoint

    def __enter__(self) -> Served:
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()
        self.source.close()


def record_turn(client: BridgeClient, audio: np.ndarray = QUESTION, on_message=None):
    """Run a turn; also return every turn message in arrival order."""
    msgs: list[P.Message] = []

    def on(m: P.Message, r) -> None:
        msgs.append(m)
        if on_message is not None:
            on_message(m, r)

    res = client.run_turn(audio, 16000, timeout_s=30, on_message=on)
    return res, msgs


def assert_complete(res, msgs) -> None:
    """COMPLETED, contiguous audio and face streams, counts and timings in the TurnEnd."""
    assert res.completed, (res.turn_end, [e.message for e in res.errors])
    assert res.seq_gaps == 0
    offsets = [m.sample_offset for m in msgs if isinstance(m, P.AudioChunk)]
    sizes = [m.samples.shape[0] for m in msgs if isinstance(m, P.AudioChunk)]
    assert offsets and offsets == list(np.cumsum([0, *sizes[:-1]])), "audio sample offsets are not contiguous"
    assert all(m.sample_rate == 24000 for m in msgs if isinstance(m, P.AudioChunk))
    for lid in {m.layout_id for m in msgs if isinstance(m, P.FaceFrames)}:
        faces = [m for m in msgs if isinstance(m, P.FaceFrames) and m.layout_id == lid]
        firsts = [m.first_frame for m in faces]
        assert firsts == list(np.cumsum([0, *[m.values.shape[0] for m in faces[:-1]]])), f"layout {lid} not contiguous"
    te = res.turn_end
    assert te.audio_samples == res.audio.shape[0] == sum(sizes) > SAMPLES_PER_FRAME
    assert te.audio_chunks == len(sizes)
    assert te.face_frames == res.face["arkit52"].shape[0] > 0
    assert abs(te.face_frames * SAMPLES_PER_FRAME - te.audio_samples) <= 5 * SAMPLES_PER_FRAME  # face covers speech
    assert te.text_bytes == len(res.text.encode("utf-8"))
    assert res.text == clean_text(res.text)  # no NUL or other control bytes reach C-string clients
    assert 0 <= te.ttft_s <= te.total_s and 0 <= te.ttfa_s <= te.total_s and 0 <= te.first_audio_s <= te.total_s
    assert te.rtf > 0 and np.isfinite(te.rtf)
    assert np.isfinite(res.audio).all() and np.abs(res.audio).max() > 0


def test_engine_turn_complete_through_the_client():
    with Served(tiny_source()) as s, BridgeClient(s.endpoint, ("arkit52", "livelink61", "flame58")) as c:
        names = {li.layout_id for li in c.welcome.layouts}
        assert names == {1, 2, 3}
        res, msgs = record_turn(c)
        assert_complete(res, msgs)
        assert res.face["livelink61"].shape == (res.turn_end.face_frames, 61)
        assert res.face["flame58"].shape == (res.turn_end.face_frames, 58)
        assert ((res.face["arkit52"] >= 0) & (res.face["arkit52"] <= 1)).all()
        np.testing.assert_array_equal(res.face["livelink61"][:, :52], res.face["arkit52"])
        res2, msgs2 = record_turn(c)  # the conversation goes on in the same session
        assert_complete(res2, msgs2)


def test_four_clients_at_once_are_batched():
    src = tiny_source()
    busy_rows: list[int] = []
    step = src.engine.step

    def counting_step():
        busy_rows.append(sum(x.busy for x in src.engine.sessions.values()))
        return step()

    src.engine.step = counting_step
    with Served(src) as s:
        clients = [BridgeClient(s.endpoint) for _ in range(4)]
        for c in clients:
            c.connect()
        results: list = [None] * 4
        go = threading.Barrier(4)

        def run(i: int) -> None:
            go.wait()
            results[i] = record_turn(clients[i])

        threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for c in clients:
            c.close()
    for res, msgs in results:
        assert_complete(res, msgs)
    assert max(busy_rows) >= 3, "the engine never decoded several sessions in one step"


def test_cancel_mid_turn_then_next_turn():
    with Served(tiny_source(pace=1.0, max_seconds=2.0, min_seconds=2.0)) as s, BridgeClient(s.endpoint) as c:
        def cancel_on_audio(msg, res):
            if isinstance(msg, P.AudioChunk) and msg.sample_offset == 0:
                c.cancel(res.turn_id)

        res, _ = record_turn(c, on_message=cancel_on_audio)
        assert res.turn_end.status == P.TurnStatus.CANCELLED
        assert res.turn_end.audio_samples == res.audio.shape[0] < 2 * 24000
        session = next(iter(s.source.engine.sessions.values()))
        deadline = time.monotonic() + 5
        while session.busy and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not session.busy, "the engine kept generating the cancelled turn"
        res2, msgs2 = record_turn(c)
        assert_complete(res2, msgs2)
        assert res2.turn_end.audio_samples >= 2 * 24000  # min_seconds = max_seconds: the whole answer
        assert all(m.turn_id == res2.turn_id for m in msgs2)  # nothing of the cancelled turn leaked in


def test_engine_refused_input_fails_only_that_client():
    with Served(tiny_source(max_input_seconds=1.0)) as s:
        good, bad = BridgeClient(s.endpoint), BridgeClient(s.endpoint)
        good.connect()
        bad.connect()
        out: dict = {}
        t = threading.Thread(target=lambda: out.update(good=record_turn(good)))
        t.start()
        res, _ = record_turn(bad, np.tile(QUESTION, 3))  # 1.5 s > the engine's 1 s limit
        t.join(60)
        assert res.turn_end.status == P.TurnStatus.FAILED
        assert [e.code for e in res.errors] == [P.ErrorCode.TURN_FAILED]
        assert "input" in res.errors[0].message
        assert_complete(*out["good"])
        res2, msgs2 = record_turn(bad)  # the refused client's session stays usable
        assert_complete(res2, msgs2)
        good.close()
        bad.close()


def test_server_busy_when_every_engine_row_is_taken():
    with Served(tiny_source(max_sessions=1)) as s:
        first = BridgeClient(s.endpoint)
        first.connect()
        second = BridgeClient(s.endpoint)
        with pytest.raises(BridgeError, match="SERVER_BUSY"):
            second.connect(timeout_s=5)
        second.close()
        first.close()  # Bye frees the row
        third = BridgeClient(s.endpoint)
        deadline = time.monotonic() + 5
        while True:
            try:
                third.connect(timeout_s=2)
                break
            except BridgeError:
                if time.monotonic() > deadline:
                    raise
        assert_complete(*record_turn(third))
        third.close()


def test_clean_text_drops_control_characters():
    assert clean_text("a\x00b\x1bc\td\ne\x7f\ud800é") == "abc\td\ne?é"


def test_engine_source_maps_events_directly():
    src = tiny_source()
    try:
        src.open_session(7)
        events = list(src.run_turn(7, QUESTION, threading.Event()))
        assert isinstance(events[-1], TurnEnd) and not events[-1].cancelled and events[-1].rtf > 0
        audio = [e for e in events if isinstance(e, AudioChunk)]
        assert [a.sample_offset for a in audio] == list(np.cumsum([0, *[a.pcm.size for a in audio[:-1]]]))
        faces = [e for e in events if isinstance(e, FaceFrames)]
        assert set(faces[0].frames) == {"flame58", "arkit52", "livelink61"} == set(src.layouts)
        face_out = 0  # aligned: every audio chunk leaves after the face frames that cover it
        for e in events:
            if isinstance(e, FaceFrames):
                face_out = e.first_frame + e.num_frames
            elif isinstance(e, AudioChunk) and e is not audio[-1]:
                assert e.sample_offset + e.pcm.size <= face_out * SAMPLES_PER_FRAME
        with pytest.raises(TurnError, match="not open"):
            list(src.run_turn(8, QUESTION, threading.Event()))
        with pytest.raises(TurnError) as e:
            list(src.run_turn(7, np.zeros(16000 * 700, np.float32), threading.Event()))  # > 10 min
        assert e.value.kind == "input"
        for sid in (1, 2, 3):
            src.open_session(sid)
        with pytest.raises(SourceBusyError):
            src.open_session(4)
    finally:
        src.close()


def test_serve_cli_source_choice():
    from plugin_bridge.serve import _source, build_parser

    def source(*argv: str):
        return _source(build_parser().parse_args(list(argv)))

    s = source("--script-seconds", "0.5", "--script-pace", "0")  # the old test command lines stay scripted
    assert isinstance(s, ScriptedSource) and s.seconds == 0.5 and s.pace == 0
    s = source("--scripted")
    assert isinstance(s, ScriptedSource) and s.pace == 1.0
    s = source("--backbone", "tiny", "--motion", "tiny", "--engine-sessions", "2")
    try:
        assert isinstance(s, EngineSource) and s.pace == 1.0 and s.max_sessions == 2
        assert s.engine.cfg.max_seconds == 3.0 and s.engine.cfg.min_seconds == 2.0 and s.engine.cfg.max_len == 2048
    finally:
        s.close()


def test_face_leads_audio_by_at_most_the_documented_bound():
    """PROTOCOL.md 4.5: an engine turn never sends audio before the face frames covering it, and never sends a face
    frame more than MAX_FACE_LEAD_S (or one audio chunk, when chunks are longer) ahead of the audio already sent."""
    with Served(tiny_source(max_seconds=2.0, min_seconds=2.0)) as s, BridgeClient(s.endpoint) as c:
        res, msgs = record_turn(c)
        assert_complete(res, msgs)
        chunk = max(m.samples.shape[0] for m in msgs if isinstance(m, P.AudioChunk))
        bound = max(round(MAX_FACE_LEAD_S * 24000), chunk)
        audio_end = face_end = 0
        last_face = max(m.first_frame + m.values.shape[0] for m in msgs if isinstance(m, P.FaceFrames))
        for m in msgs:
            if isinstance(m, P.FaceFrames) and m.layout_id == 2:
                assert m.first_frame * SAMPLES_PER_FRAME <= audio_end + bound
                face_end = (m.first_frame + m.values.shape[0]) * SAMPLES_PER_FRAME
            elif isinstance(m, P.AudioChunk):
                end = m.sample_offset + m.samples.shape[0]
                assert end <= face_end or face_end == last_face * SAMPLES_PER_FRAME  # only the tail runs past the face
                audio_end = end


def test_presets_come_from_one_function_and_explicit_values_win():
    from a2llm_rt.engine.presets import REAL, TINY, engine_config, preset

    assert preset("tiny") is TINY and preset("models/step-audio-2-mini") is REAL
    c = engine_config("tiny")
    assert (c.max_seconds, c.min_seconds, c.max_len) == (TINY.max_seconds, TINY.min_seconds, TINY.max_len)
    c = engine_config("tiny", max_seconds=1.5)
    assert (c.max_seconds, c.min_seconds) == (1.5, 1.5)  # the preset's minimum never exceeds an explicit maximum
    c = engine_config("models/x", max_sessions=2, max_len=4096)
    assert (c.max_seconds, c.min_seconds, c.max_len, c.max_sessions) == (REAL.max_seconds, REAL.min_seconds, 4096, 2)
    with pytest.raises(ValueError):
        engine_config("tiny", max_seconds=1.0, min_seconds=2.0)


def test_serve_cli_options_come_from_server_config():
    """Every ServerConfig field is a serve option whose default is the dataclass's (nothing restated by hand); its
    nested VadConfig's fields are the ``--vad-*`` options."""
    import dataclasses

    from a2llm_rt.audio_vad import VadConfig
    from plugin_bridge.serve import build_parser, server_config

    args = build_parser().parse_args([])
    assert all(hasattr(args, f.name) for f in dataclasses.fields(ServerConfig) if f.name != "vad")
    assert all(hasattr(args, "vad_" + f.name) for f in dataclasses.fields(VadConfig))
    assert server_config(args) == ServerConfig()
    args = build_parser().parse_args(["--sndhwm", "7", "--pace-lookahead-s", "0.3", "--max-sessions", "5"])
    cfg = server_config(args)
    assert (cfg.sndhwm, cfg.pace_lookahead_s, cfg.max_sessions) == (7, 0.3, 5)
    with pytest.raises(ValueError, match="pace_lookahead_s"):
        server_config(build_parser().parse_args(["--pace-lookahead-s", "0"]))
