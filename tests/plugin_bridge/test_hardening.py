"""Attacks on the bridge server, each of which broke (or slowed) an earlier version, and what the spec promises.

Every test here fails on the server before the hardening: loud float audio that poisoned the engine's cache rows, odd
sample rates resampled on the main loop, an over-long utterance that was never closed (one error per chunk and no
TurnEnd), unbounded input buffering, a CURVE setup that let in anyone who knew the server key, client text that could
forge log lines, and heartbeats answered up to ``heartbeat_ms`` late.
"""

from __future__ import annotations

import logging
import stat
import threading
import time

import numpy as np
import pytest

from plugin_bridge import protocol as P
from plugin_bridge.client import BridgeClient
from plugin_bridge.scripted_source import ScriptedSource
from plugin_bridge.server import make_curve_keys
from tests.plugin_bridge.helpers import raw_dealer, recv_msg, start_server, wait_until

QUESTION = (0.2 * np.sin(2 * np.pi * 180.0 * np.arange(8000) / 16000)).astype(np.float32)


class Raw:
    """A raw DEALER session: Hello sent, Welcome read; ``turn_msgs`` skips heartbeats."""

    def __init__(self, endpoint: str, hello: P.Hello | None = None, **opts):
        self.sock = raw_dealer(endpoint, **opts)
        self.sock.send_multipart((hello or P.Hello(layouts=(2,))).encode_frames())
        self.welcome = self.next()
        assert isinstance(self.welcome, P.Welcome), self.welcome

    def send(self, msg: P.Message) -> None:
        self.sock.send_multipart(msg.encode_frames())

    def next(self, timeout_s: float = 10.0, skip_heartbeats: bool = True) -> P.Message | None:
        """The next message within ``timeout_s`` (heartbeats skipped unless asked for), or None."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            msg = recv_msg(self.sock, left)
            if msg is None or not (skip_heartbeats and isinstance(msg, P.Heartbeat)):
                return msg
        return None

    def until_turn_end(self, timeout_s: float = 30.0) -> list[P.Message]:
        out = []
        while True:
            msg = self.next(timeout_s)
            assert msg is not None, f"no TurnEnd; got {[type(m).__name__ for m in out]}"
            out.append(msg)
            if isinstance(msg, P.TurnEnd):
                return out

    def quiet(self, timeout_s: float = 0.5) -> list[P.Message]:
        """Every non-heartbeat message that arrives within ``timeout_s`` (expected: none)."""
        out = []
        while (msg := self.next(timeout_s)) is not None:
            out.append(msg)
        return out

    def close(self) -> None:
        self.sock.close(0)


def chunks(audio: np.ndarray, rate: int, tid: int, step: int, eou: bool = True) -> list[P.UserAudio]:
    starts = list(range(0, audio.shape[0], step))
    return [
        P.UserAudio(audio[a : a + step], rate, a, eou and i == len(starts) - 1, turn_id=tid)
        for i, a in enumerate(starts)
    ]


# --- 1. loud float audio --------------------------------------------------------------------------------------------
def test_float_audio_outside_full_scale_is_refused_once_and_the_engine_serves_everyone_after():
    """3 s of finite 1e30 samples used to write NaN into the engine's cache rows (bricking every later session on
    them). Now each such utterance gets one BAD_VALUE naming the bound and one TurnEnd(FAILED); afterwards 8 clean
    sessions on the same 4 rows complete."""
    from tests.plugin_bridge.test_engine_source import Served, assert_complete, record_turn, tiny_source

    with Served(tiny_source(max_seconds=0.8, min_seconds=0.4)) as s:
        loud = np.full(48000, 1e30, np.float32)
        for _ in range(8):  # more poisoned sessions than rows
            r = Raw(s.endpoint)
            for m in chunks(loud, 16000, 1, 16000):
                r.send(m)
            got = r.until_turn_end()
            assert [type(m) for m in got] == [P.Error, P.TurnEnd]
            assert got[0].code == P.ErrorCode.BAD_VALUE and "[-1.0, 1.0]" in got[0].message
            assert got[1].status == P.TurnStatus.FAILED and got[1].turn_id == 1
            assert r.quiet(0.3) == []  # the two later chunks of the refused utterance are dropped silently
            r.close()
        assert wait_until(lambda: s.server.num_sessions == 0, 10)
        for _ in range(2):  # 8 clean sessions, 4 at a time on the 4 cache rows
            results: list = []

            def one(out: list) -> None:
                with BridgeClient(s.endpoint) as c:
                    out.append(record_turn(c))

            threads = [threading.Thread(target=one, args=(results,)) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            assert len(results) == 4
            for res, msgs in results:
                assert_complete(res, msgs)


# --- 3. sample rates and work on the main loop ----------------------------------------------------------------------
def test_odd_rates_are_refused_and_resampling_never_runs_on_the_main_loop(monkeypatch):
    import scipy.signal

    threads: list[str] = []
    real = scipy.signal.resample_poly

    def spy(*a, **k):
        threads.append(threading.current_thread().name)
        return real(*a, **k)

    monkeypatch.setattr(scipy.signal, "resample_poly", spy)
    source = ScriptedSource(seconds=0.2)
    server = start_server(source)
    r = Raw(server.endpoint)
    try:
        for tid in range(1, 21):  # 1-sample utterances at a rate sharing no factor with 16 kHz
            r.send(P.UserAudio(np.zeros(1, np.int16), 191_999, 0, True, turn_id=tid))
            err, end = r.next(), r.next()
            assert err.code == P.ErrorCode.BAD_VALUE and "191999" in err.message and "44100" in err.message
            assert isinstance(end, P.TurnEnd) and end.status == P.TurnStatus.FAILED and end.turn_id == tid
        assert threads == []
        for m in chunks((QUESTION * 32767).astype(np.int16), 44100, 21, 4410):
            r.send(m)
        got = r.until_turn_end()
        assert got[-1].status == P.TurnStatus.COMPLETED
        assert threads and all(name.startswith("bridge-turn") for name in threads), threads
    finally:
        r.close()
        server.stop()


# --- 4. an over-long utterance ends once ----------------------------------------------------------------------------
def test_an_over_long_utterance_ends_once_with_turn_failed_and_its_rest_is_dropped():
    server = start_server(ScriptedSource(seconds=0.2), max_utterance_s=1.0)
    r = Raw(server.endpoint)
    try:
        speech = (np.sin(np.arange(16000 * 10) / 10) * 8000).astype(np.int16)  # 10 s in 0.1 s chunks
        for m in chunks(speech, 16000, 7, 1600):
            r.send(m)
        got = r.until_turn_end()
        assert [type(m) for m in got] == [P.Error, P.TurnEnd]
        assert got[0].code == P.ErrorCode.AUDIO_TOO_LONG and got[0].turn_id == 7
        assert got[1].status == P.TurnStatus.FAILED
        assert r.quiet(0.5) == []  # 89 more chunks: no error each
        for m in chunks(speech[:8000], 16000, 8, 1600):  # the session is still usable
            r.send(m)
        assert r.until_turn_end()[-1].status == P.TurnStatus.COMPLETED
    finally:
        r.close()
        server.stop()


def test_the_python_client_treats_audio_too_long_as_final():
    server = start_server(ScriptedSource(seconds=0.2), max_utterance_s=1.0)
    try:
        with BridgeClient(server.endpoint) as c:
            res = c.run_turn(np.zeros(16000 * 5, np.float32), 16000, timeout_s=20)
            assert res.attempts == 1 and c.reconnects == 0
            assert [e.code for e in res.errors] == [P.ErrorCode.AUDIO_TOO_LONG]
            assert res.turn_end.status == P.TurnStatus.FAILED
    finally:
        server.stop()


# --- 5. memory and exposure -----------------------------------------------------------------------------------------
def test_input_is_buffered_as_int16_within_a_global_budget():
    server = start_server(ScriptedSource(seconds=0.2), max_input_mb=0.25)  # 262,144 bytes over all sessions
    a, b = Raw(server.endpoint), Raw(server.endpoint)
    try:
        first = np.full(48000 * 2, 0.25, np.float32)  # 2 s at 48 kHz, F32: buffered as 192,000 bytes of int16
        for m in chunks(first, 48000, 1, 24000, eou=False):
            a.send(m)
        assert wait_until(lambda: server._rx_bytes == 2 * first.size)
        for m in chunks(first, 48000, 1, 24000, eou=False):  # the same again from b: over the budget
            b.send(m)
        got = b.until_turn_end()
        assert got[0].code == P.ErrorCode.SERVER_BUSY and "MiB" in got[0].message
        assert got[1].status == P.TurnStatus.FAILED and server._rx_bytes == 2 * first.size
        a.send(P.UserAudio(np.zeros(0, np.int16), 48000, first.size, True, turn_id=1))  # a's turn starts
        assert a.until_turn_end()[-1].status == P.TurnStatus.COMPLETED
        assert server._rx_bytes == 0  # released when the turn took the audio
        for m in chunks(first, 48000, 2, 24000):  # now b fits
            b.send(m)
        assert b.until_turn_end()[-1].status == P.TurnStatus.COMPLETED
    finally:
        a.close()
        b.close()
        server.stop()


def test_made_curve_keys_admit_only_listed_clients_and_secrets_are_private(tmp_path):
    import zmq.auth

    server_pub, client_secret = make_curve_keys(tmp_path)
    assert (tmp_path / "clients" / "client.key").is_file()
    for secret in tmp_path.glob("*.key_secret"):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
    server = start_server(ScriptedSource(seconds=0.2), curve_keys=str(tmp_path))
    try:
        spub, _ = zmq.auth.load_certificate(server_pub)

        def hello(pub: bytes, sec: bytes) -> P.Message | None:
            sock = raw_dealer(
                server.endpoint, CURVE_SERVERKEY=spub, CURVE_PUBLICKEY=pub, CURVE_SECRETKEY=sec
            )  # fmt: skip
            try:
                sock.send_multipart(P.Hello(layouts=(2,)).encode_frames())
                return recv_msg(sock, 2.0)
            finally:
                sock.close(0)

        assert isinstance(hello(*zmq.auth.load_certificate(client_secret)), P.Welcome)
        assert hello(*zmq.curve_keypair()) is None  # knows the server key, not listed: no session
    finally:
        server.stop()


def test_client_text_cannot_forge_log_lines(caplog):
    server = start_server(ScriptedSource(seconds=0.2))
    caplog.set_level(logging.INFO, logger="plugin_bridge.server")
    r = Raw(server.endpoint, P.Hello(layouts=(2,), client_name="game\nINFO forged: admin logged in"))
    try:
        r.send(P.Error(P.ErrorCode.INTERNAL, "oops\r\n2026-01-01 plugin_bridge.server INFO session 1 closed"))
        r.send(P.Bye())
        assert wait_until(lambda: server.num_sessions == 0)
        lines = [rec.getMessage() for rec in caplog.records if rec.name == "plugin_bridge.server"]
        assert any("forged" in line for line in lines) and any("oops" in line for line in lines)
        assert not any("\n" in line or "\r" in line for line in lines), lines
    finally:
        r.close()
        server.stop()


# --- 7. what the spec now says --------------------------------------------------------------------------------------
def test_a_heartbeat_is_answered_at_once_with_its_time_echoed():
    server = start_server(ScriptedSource(seconds=0.2), heartbeat_s=30.0, session_timeout_s=60.0)
    r = Raw(server.endpoint)
    try:
        r.send(P.Heartbeat(123_456_789, 0))
        hb = r.next(10.0, skip_heartbeats=False)  # the periodic one would take 30 s
        assert isinstance(hb, P.Heartbeat) and hb.echo_us == 123_456_789
    finally:
        r.close()
        server.stop()


def test_a_cancelled_turn_that_streamed_reports_what_was_delivered():
    server = start_server(ScriptedSource(seconds=4.0, pace=1.0))
    r = Raw(server.endpoint, P.Hello(capabilities=P.Capability.TEXT | P.Capability.AUDIO | P.Capability.FACE,
                                     layouts=(2,)))  # fmt: skip
    try:
        for m in chunks((QUESTION * 32767).astype(np.int16), 16000, 1, 8000):
            r.send(m)
        seen: list[P.Message] = []
        while not any(isinstance(m, P.AudioChunk) for m in seen):
            seen.append(r.next())
        r.send(P.Cancel(turn_id=1))
        seen += r.until_turn_end()
        end = seen[-1]
        assert end.status == P.TurnStatus.CANCELLED
        assert end.audio_samples == sum(m.samples.shape[0] for m in seen if isinstance(m, P.AudioChunk)) > 0
        assert 0 <= end.first_audio_s <= end.total_s  # when the first of the delivered audio went out
        assert end.ttft_s == end.ttfa_s == end.rtf == -1.0  # the engine's clock of a cancelled turn: not reported
    finally:
        r.close()
        server.stop()


def test_face_wanted_without_a_known_layout_is_not_granted():
    server = start_server(ScriptedSource(seconds=0.2))
    caps = P.Capability.TEXT | P.Capability.AUDIO | P.Capability.FACE
    r = Raw(server.endpoint, P.Hello(capabilities=caps, layouts=()))
    try:
        assert not r.welcome.capabilities & P.Capability.FACE and r.welcome.layouts == ()
        for m in chunks((QUESTION * 32767).astype(np.int16), 16000, 1, 8000):
            r.send(m)
        got = r.until_turn_end()
        assert got[-1].status == P.TurnStatus.COMPLETED and got[-1].face_frames > 0  # counted, not sent
        assert not any(isinstance(m, P.FaceFrames) for m in got)
    finally:
        r.close()
        server.stop()


def test_bye_is_not_acknowledged_and_ends_the_session():
    server = start_server(ScriptedSource(seconds=0.2))
    r = Raw(server.endpoint)
    try:
        r.send(P.Bye())
        assert wait_until(lambda: server.num_sessions == 0)
        assert r.quiet(0.3) == []
        r.send(P.Heartbeat(1, 0))
        assert r.next().code == P.ErrorCode.NOT_WELCOMED
    finally:
        r.close()
        server.stop()


@pytest.mark.parametrize("seq", [0, 5, 2**64 - 1])
def test_client_seq_values_are_not_checked(seq):
    server = start_server(ScriptedSource(seconds=0.2))
    r = Raw(server.endpoint)
    try:
        for i, m in enumerate(chunks((QUESTION * 32767).astype(np.int16), 16000, 1, 8000)):
            r.sock.send_multipart(P.UserAudio(m.samples, 16000, m.sample_offset, m.end_of_utterance, turn_id=1,
                                              seq=(seq + 7 * i) % 2**64).encode_frames())  # fmt: skip
        assert r.until_turn_end()[-1].status == P.TurnStatus.COMPLETED
    finally:
        r.close()
        server.stop()
