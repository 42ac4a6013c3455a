"""Live Link Face UDP output: packets decode with the foundation's codec, are paced at the frame rate, and the
server sends each session's face stream as its own subject."""

from __future__ import annotations

import socket
import time

import numpy as np

from a2llm_rt.face.livelink_packet import LiveLinkPacket
from plugin_bridge.client import BridgeClient
from plugin_bridge.livelink_out import LiveLinkSender, fps_fraction
from plugin_bridge.scripted_source import ScriptedSource
from tests.plugin_bridge.helpers import start_server, wait_until


def _udp() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(3.0)
    return s


def _recv(sock: socket.socket, n: int) -> list[tuple[float, LiveLinkPacket]]:
    out = []
    for _ in range(n):
        data = sock.recv(4096)
        out.append((time.monotonic(), LiveLinkPacket.decode(data, where="udp")))
    return out


def test_fps_fraction():
    assert fps_fraction(25.0) == (25, 1) and fps_fraction(30000 / 1001) == (30000, 1001)


def test_sender_paces_frames_and_rests_at_the_end():
    rx = _udp()
    sender = LiveLinkSender("127.0.0.1", rx.getsockname()[1])
    try:
        frames = ScriptedSource.face(0, 10)["livelink61"]
        sender.push("subj", 0, frames[:5], 25.0)  # a burst of two windows
        sender.push("subj", 5, frames[5:], 25.0)
        sender.rest("subj")
        got = _recv(rx, 11)
        for i, (_, p) in enumerate(got[:10]):
            assert p.subject == "subj" and (p.fps_num, p.fps_den) == (25, 1)
            np.testing.assert_array_equal(p.values, frames[i])
        np.testing.assert_array_equal(got[10][1].values, np.zeros(61, np.float32))
        span = got[9][0] - got[0][0]
        assert 0.3 <= span <= 0.6, f"10 frames at 25 fps should span ~0.36 s, got {span:.3f}"
        assert [p.frame for _, p in got[:10]] == sorted(p.frame for _, p in got[:10])
    finally:
        sender.close()
        rx.close()


def test_server_streams_the_face_as_live_link_packets():
    rx = _udp()
    server = start_server(ScriptedSource(seconds=0.4), livelink=f"127.0.0.1:{rx.getsockname()[1]}")
    try:
        with BridgeClient(server.endpoint) as c:
            assert c.welcome.capabilities & 8  # LIVELINK_UDP
            res = c.run_turn(np.zeros(1600, np.float32), 16000)
            sid = c.welcome.session_id
        got = _recv(rx, 11)  # 10 frames + the resting frame
        expected = ScriptedSource.face(0, 10)["livelink61"]
        for i, (_, p) in enumerate(got[:10]):
            assert p.subject == f"a2llm{sid}"
            np.testing.assert_array_equal(p.values, expected[i])
        np.testing.assert_array_equal(res.face["livelink61"], expected)
    finally:
        server.stop()
        rx.close()


def test_a_character_session_sends_its_processed_face_and_idle_life_over_live_link():
    """Protocol v2: Live Link gets what the ZeroMQ client gets (the answer through the character's face, emotion
    included) and the idle face between turns; the client here asks for ARKIT52 only."""
    import threading

    from plugin_bridge.client import CharacterClient

    rx = _udp()
    packets: list[LiveLinkPacket] = []
    stop = threading.Event()

    def listen() -> None:
        while not stop.is_set():
            try:
                packets.append(LiveLinkPacket.decode(rx.recv(4096), where="udp"))
            except (TimeoutError, OSError):
                continue

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    server = start_server(ScriptedSource(seconds=0.4), livelink=f"127.0.0.1:{rx.getsockname()[1]}")
    try:
        with CharacterClient(server.endpoint, ("arkit52",)) as c:
            sid = c.welcome.session_id
            c.set_character(emotion="happy", intensity=1.0)
            assert wait_until(lambda: len(packets) >= 10, 30)  # idle life before any turn
            assert all(p.subject == f"a2llm{sid}" for p in packets)
            n_before = len(packets)
            res = c.run_text_turn("Hi!", timeout_s=60)
            n = res.face["arkit52"].shape[0]
            # Live Link paces in real time: the answer's frames, then the idle face again
            assert wait_until(lambda: len(packets) >= n_before + n + 10, 30)
        face = res.face["arkit52"]
        raw = ScriptedSource.face(0, face.shape[0])["arkit52"]
        assert not np.allclose(face, raw, atol=1e-3)  # the client's answer went through the character's face
        sent = np.stack([p.values[:52] for p in list(packets)])
        # the answer's frames went out over Live Link exactly as the client got them, in order
        start = [i for i in range(len(sent)) if np.allclose(sent[i], face[0], atol=1e-6)]
        assert any(
            i + face.shape[0] <= len(sent) and np.allclose(sent[i : i + face.shape[0]], face, atol=1e-6) for i in start
        ), "the processed answer frames are not in the Live Link stream"
    finally:
        server.stop()
        stop.set()
        t.join(5)
        rx.close()
