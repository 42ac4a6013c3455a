"""Bridge server: many clients at once, cancel, expiry of a killed client, restart + reconnect, security, errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from a2llm_rt.errors import InputError
from plugin_bridge import protocol as P
from plugin_bridge.client import BridgeClient, BridgeError
from plugin_bridge.scripted_source import ScriptedSource
from plugin_bridge.server import BridgeServer, ServerConfig, is_loopback_endpoint, make_curve_keys
from plugin_bridge.turn_source import SAMPLES_PER_FRAME
from tests.plugin_bridge.helpers import free_port, raw_dealer, recv_msg, start_server, wait_until

REPO = Path(__file__).resolve().parents[2]
QUESTION = np.sin(np.arange(8000) / 16000 * 2 * np.pi * 300).astype(np.float32) * 0.2  # 0.5 s at 16 kHz


def _check_complete(result, source: ScriptedSource) -> None:
    """The whole scripted answer arrived, bit-exact, in order, with contiguous sequence numbers."""
    n_frames = round(source.seconds * 25)
    assert result.completed, result.errors
    assert result.seq_gaps == 0
    assert result.text == source.text
    np.testing.assert_array_equal(result.audio, ScriptedSource.audio(0, n_frames * SAMPLES_PER_FRAME))
    expected = ScriptedSource.face(0, n_frames)
    for layout in ("arkit52", "livelink61", "flame58"):
        np.testing.assert_array_equal(result.face[layout], expected[layout])
    te = result.turn_end
    assert (te.audio_samples, te.face_frames, te.text_bytes) == (n_frames * 960, n_frames, len(source.text))
    seqs = [m["seq"] for m in result.messages]
    assert seqs == sorted(seqs)


def test_sixteen_clients_at_once_each_get_a_complete_in_order_stream():
    source = ScriptedSource(seconds=1.0, pace=4.0)  # 25 frames in 5 windows, paced at 4x real time
    server = start_server(source)
    results: dict[int, object] = {}
    offsets: dict[int, list[tuple[str, int]]] = {}

    def one(i: int) -> None:
        order: list[tuple[str, int]] = []

        def record(msg, _res):
            if isinstance(msg, P.AudioChunk):
                order.append(("audio", msg.sample_offset))
            elif isinstance(msg, P.FaceFrames) and msg.layout_id == 2:
                order.append(("face", msg.first_frame))

        with BridgeClient(server.endpoint) as c:
            results[i] = c.run_turn(QUESTION, 16000, on_message=record, timeout_s=20)
        offsets[i] = order

    try:
        threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(results) == 16
        for i in range(16):
            _check_complete(results[i], source)
            audio = [o for k, o in offsets[i] if k == "audio"]
            face = [o for k, o in offsets[i] if k == "face"]
            assert audio == [k * 5 * 960 for k in range(5)] and face == [0, 5, 10, 15, 20]
        assert wait_until(lambda: server.num_sessions == 0 and source.num_open == 0)
    finally:
        server.stop()


def test_cancel_mid_turn_leaves_the_session_usable():
    source = ScriptedSource(seconds=4.0, pace=1.0)
    server = start_server(source)
    try:
        with BridgeClient(server.endpoint) as c:

            def cancel_on_first_audio(msg, res):
                if isinstance(msg, P.AudioChunk) and msg.sample_offset == 0:
                    c.cancel(msg.turn_id)

            res = c.run_turn(QUESTION, 16000, on_message=cancel_on_first_audio)
            assert res.turn_end.status == P.TurnStatus.CANCELLED
            assert res.turn_end.audio_chunks >= 1 and res.audio.shape[0] < 4 * 24000
            source.seconds, source.pace = 0.4, 0.0
            _check_complete(c.run_turn(QUESTION, 16000), source)
    finally:
        server.stop()


def test_a_killed_client_frees_its_session():
    source = ScriptedSource(seconds=30.0, pace=1.0)
    server = start_server(source, heartbeat_s=0.1, session_timeout_s=0.6)
    script = (
        "import sys, numpy as np\n"
        "from plugin_bridge.client import BridgeClient\n"
        "from plugin_bridge import protocol as P\n"
        "c = BridgeClient(sys.argv[1]); c.connect()\n"
        "def seen(msg, res):\n"
        "    if isinstance(msg, P.AudioChunk): print('streaming', flush=True)\n"
        "c.run_turn(np.zeros(1600, np.float32), 16000, on_message=seen)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", script, server.endpoint], stdout=subprocess.PIPE, env=env, cwd=REPO)
    try:
        assert proc.stdout.readline().strip() == b"streaming"
        assert server.num_sessions == 1 and source.num_open == 1
        proc.kill()
        proc.wait(5)
        assert wait_until(lambda: server.num_sessions == 0, 5.0)
        assert source.num_open == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        server.stop()


def test_server_restart_and_the_client_reconnects():
    port = free_port()
    source = ScriptedSource(seconds=0.4)
    first = start_server(source, bind=f"tcp://127.0.0.1:{port}")
    c = BridgeClient(f"tcp://127.0.0.1:{port}")
    try:
        c.connect()
        _check_complete(c.run_turn(QUESTION, 16000), source)
        first.stop()
        second = start_server(source, bind=f"tcp://127.0.0.1:{port}")
        try:
            res = c.run_turn(QUESTION, 16000, timeout_s=10)
            _check_complete(res, source)
            assert c.reconnects >= 1 and res.attempts >= 2
            assert second.num_sessions == 1
        finally:
            c.close()
            second.stop()
    finally:
        first.stop()


def test_non_loopback_bind_without_curve_is_refused(tmp_path):
    assert is_loopback_endpoint("tcp://127.0.0.1:5555") and is_loopback_endpoint("tcp://[::1]:5555")
    assert is_loopback_endpoint("tcp://localhost:1") and is_loopback_endpoint("ipc:///tmp/x")
    for ep in ("tcp://0.0.0.0:5555", "tcp://*:5555", "tcp://eth0:5555", "tcp://10.1.2.3:5555"):
        assert not is_loopback_endpoint(ep)
        with pytest.raises(InputError, match="CURVE"):
            BridgeServer(ScriptedSource(), ServerConfig(bind=ep))
    from plugin_bridge import serve

    assert serve.main(["--bind", "tcp://0.0.0.0:5555"]) == 2
    make_curve_keys(tmp_path)  # with keys the same bind is accepted (not bound here: no non-loopback in tests)
    BridgeServer(ScriptedSource(), ServerConfig(bind="tcp://0.0.0.0:5555", curve_keys=str(tmp_path)))


def test_curve_round_trip_on_loopback(tmp_path):
    import zmq.auth

    _, client_secret = make_curve_keys(tmp_path)
    source = ScriptedSource(seconds=0.4)
    server = start_server(source, curve_keys=str(tmp_path))
    keys = zmq.auth.load_certificate(client_secret)
    try:
        with BridgeClient(server.endpoint, curve_server_key=server.public_key, curve_client_keys=keys) as c:
            _check_complete(c.run_turn(QUESTION, 16000), source)
        plain = BridgeClient(server.endpoint)
        with pytest.raises(BridgeError):
            plain.connect(timeout_s=0.5)  # no CURVE: the handshake never completes
        plain.close()
    finally:
        server.stop()


def test_malformed_messages_get_error_replies_and_the_server_keeps_serving():
    server = start_server()
    sock = raw_dealer(server.endpoint)
    try:
        sock.send_multipart([b"garbage"])
        assert recv_msg(sock).code == P.ErrorCode.BAD_FRAMING
        bad = bytearray(P.Heartbeat(1, 2).encode())
        bad[0:4] = b"XXXX"
        sock.send_multipart([bytes(bad[:32]), bytes(bad[32:])])
        assert recv_msg(sock).code == P.ErrorCode.BAD_MAGIC
        sock.send_multipart(P.Heartbeat(1, 2).encode_frames())
        assert recv_msg(sock).code == P.ErrorCode.NOT_WELCOMED
        sock.send_multipart(P.Hello(layouts=(2,)).encode_frames())
        welcome = recv_msg(sock)
        assert isinstance(welcome, P.Welcome) and welcome.layouts[0].names[17] == "jawOpen"
        nan = bytearray(P.UserAudio(np.zeros(4, np.float32), turn_id=1).encode())
        nan[-4:] = b"\x00\x00\xc0\x7f"  # NaN
        sock.send_multipart([bytes(nan[:32]), bytes(nan[32:])])
        msg = recv_msg(sock)
        while isinstance(msg, P.Heartbeat):
            msg = recv_msg(sock)
        assert msg.code == P.ErrorCode.NON_FINITE
        assert server.num_sessions == 1
    finally:
        sock.close(0)
        server.stop()


def test_a_client_too_far_behind_gets_its_turn_cancelled_with_an_error():
    source = ScriptedSource(seconds=300.0, pace=0.0)  # ~30 MB unpaced: more than any socket buffer holds
    server = start_server(source, max_pending=200, sndhwm=50, session_timeout_s=5.0)
    slow = raw_dealer(server.endpoint, RCVHWM=1, RCVBUF=4096)
    try:
        slow.send_multipart(P.Hello(layouts=(2,)).encode_frames())
        slow.send_multipart(P.UserAudio(np.zeros(160, np.int16), end_of_utterance=True, turn_id=1).encode_frames())
        time.sleep(1.5)  # not reading: the server's queue for this client overflows
        source.seconds = 1.0  # the next turns are short (the slow turn read its length when it started)
        with BridgeClient(server.endpoint) as fast:  # meanwhile another client is served normally
            source_fast = fast.run_turn(QUESTION, 16000, timeout_s=30)
            assert source_fast.completed
        seqs, error, end, audio_next = [], None, None, 0
        while end is None:
            msg = recv_msg(slow, 5.0)
            assert msg is not None, "stream stopped without a TurnEnd"
            seqs.append(msg.seq)
            if isinstance(msg, P.AudioChunk):
                assert msg.sample_offset == audio_next  # nothing missing before the cancel
                audio_next += msg.samples.shape[0]
            elif isinstance(msg, P.Error):
                error = msg
            elif isinstance(msg, P.TurnEnd):
                end = msg
        assert seqs == list(range(len(seqs)))
        assert error is not None and error.code == P.ErrorCode.CLIENT_TOO_SLOW
        assert end.status == P.TurnStatus.CANCELLED and end.audio_samples == audio_next < 300 * 24000
    finally:
        slow.close(0)
        server.stop()


def test_a_failing_turn_reports_turn_failed():
    server = start_server(ScriptedSource(seconds=1.0, fail_after_frames=10))
    try:
        with BridgeClient(server.endpoint) as c:
            res = c.run_turn(QUESTION, 16000)
            assert res.turn_end.status == P.TurnStatus.FAILED
            assert [e.code for e in res.errors] == [P.ErrorCode.TURN_FAILED]
    finally:
        server.stop()


def test_serve_cli_shuts_down_gracefully_on_sigterm():
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-m", "plugin_bridge.serve", "--bind", f"tcp://127.0.0.1:{port}", "--script-seconds", "20"],
        env=env, cwd=REPO, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        c = BridgeClient(f"tcp://127.0.0.1:{port}")
        c.connect(timeout_s=20)
        c.send_audio(QUESTION, 16000, turn_id=1)
        assert wait_until(lambda: isinstance(c.recv(0.1), P.AudioChunk), 10)
        proc.send_signal(signal.SIGTERM)
        codes = set()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and P.ErrorCode.SHUTTING_DOWN not in codes:
            msg = c.recv(0.1)
            if isinstance(msg, P.Error):
                codes.add(msg.code)
        assert P.ErrorCode.SHUTTING_DOWN in codes
        assert proc.wait(10) == 0
        c.close()
    finally:
        if proc.poll() is None:
            proc.kill()


def _turn_order(source: ScriptedSource, **config) -> list[tuple]:
    """(kind, position) of every message of one turn, in arrival order."""
    server = start_server(source, **config)
    order: list[tuple] = []

    def record(msg, _res):
        if isinstance(msg, P.TextDelta):
            order.append(("text", msg.byte_offset, msg.text))
        elif isinstance(msg, P.AudioChunk):
            order.append(("audio", msg.sample_offset, msg.samples.shape[0]))
        elif isinstance(msg, P.FaceFrames):
            order.append(("face", msg.layout_id, msg.first_frame, msg.values.shape[0]))
        elif isinstance(msg, P.TurnEnd):
            order.append(("end", int(msg.status), msg.audio_samples, msg.face_frames, msg.text_bytes))

    try:
        with BridgeClient(server.endpoint, ("arkit52", "livelink61", "flame58")) as c:
            res = c.run_turn(QUESTION, 16000, on_message=record, timeout_s=30)
        assert res.completed and res.seq_gaps == 0
        _check_complete(res, source)
    finally:
        server.stop()
    return order


@pytest.mark.parametrize(("seconds", "frames_per_event"), [(3.0, 2), (0.2, 5)])
def test_the_pacing_scheduler_keeps_the_order_the_source_made(seconds, frames_per_event):
    """Paced through the server's one scheduler (with a short look-ahead, so that the turn's worker rests and text
    waits for its window), a turn arrives in exactly the order of the same turn unpaced: each text delta before its
    window's audio and face, the text that outlasts the audio just before the TurnEnd."""
    fast = _turn_order(ScriptedSource(seconds=seconds, frames_per_event=frames_per_event, pace=0.0))
    paced = _turn_order(ScriptedSource(seconds=seconds, frames_per_event=frames_per_event, pace=3.0),
                        pace_lookahead_s=0.2)  # fmt: skip
    assert paced == fast
    assert fast[0][0] == "text" and fast[-1][0] == "end"


def test_turn_clock_due_times():
    """Due time = t0 + position / 24000 / pace with t0 set by the first positioned message; never earlier than a
    message before it; text is due at once when the schedule has caught up and waits (None) while it runs ahead."""
    from plugin_bridge.server import _TurnClock

    c = _TurnClock(pace=2.0)
    assert c.due(None, 100.0) == 100.0  # text before any audio: at once
    assert c.due(0, 100.5) == 100.5  # the first audio anchors t0
    assert c.due(24000, 100.6) == 101.0  # one second of answer at 2x real time
    assert c.due(None, 100.7) is None  # text while the turn runs ahead: goes with the next message
    assert c.due(12000, 100.8) == 101.0  # never before an earlier message (face that starts before that audio)
    assert c.due(None, 101.2) == 101.2  # caught up: at once
    assert c.end(101.1) == 101.2 and c.end(103.0) == 103.0
    unpaced = _TurnClock(pace=0.0)
    assert unpaced.due(480000, 5.0) == 5.0 and unpaced.due(None, 4.0) == 5.0


def test_a_parked_turn_is_ended_at_once_when_cancelled(monkeypatch):
    """A paced turn prepared far ahead parks without a thread until about half of its look-ahead is left (here 5 to
    15 s); a Cancel hands it back to a worker at once, so the source's turn is closed (the engine stops) right away,
    not when the turn would have resumed."""
    import plugin_bridge.server as server_mod

    monkeypatch.setattr(server_mod, "PACE_FIRST_AHEAD_S", 20.0)
    closed = threading.Event()

    class Recording(ScriptedSource):
        def run_turn(self, session_id, audio, cancel):
            try:
                yield from super().run_turn(session_id, audio, cancel)
            finally:
                closed.set()

    source = Recording(seconds=60.0, pace=1.0)
    server = start_server(source, pace_lookahead_s=20.0)
    try:
        with BridgeClient(server.endpoint) as c:

            def cancel_after_a_second(msg, res):  # the turn made its first 20 s at once and parked long before
                if isinstance(msg, P.AudioChunk) and msg.sample_offset == 24000:
                    c.cancel(msg.turn_id)

            res = c.run_turn(QUESTION, 16000, on_message=cancel_after_a_second)
            assert res.turn_end.status == P.TurnStatus.CANCELLED
            assert closed.wait(3.0), "the parked turn was not ended on Cancel"
            source.seconds, source.pace = 0.4, 0.0
            _check_complete(c.run_turn(QUESTION, 16000), source)
    finally:
        server.stop()
