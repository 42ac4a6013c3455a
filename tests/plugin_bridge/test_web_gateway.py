"""The WebSocket gateway: HTTP static serving, the RFC 6455 framing, and relaying a whole turn to a real bridge server.

Each test runs an in-process BridgeServer (scripted tiny source, unpaced) and the gateway on free loopback ports.
"""

from __future__ import annotations

import asyncio
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from plugin_bridge import protocol as P
from plugin_bridge.event_source import ScriptedSource
from plugin_bridge.web import websocket as ws
from plugin_bridge.web.gateway import Gateway, GatewayConfig
from tests.plugin_bridge.helpers import start_server, wait_until


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    d = tmp_path / "dist"
    (d / "assets").mkdir(parents=True)
    (d / "index.html").write_text("<!doctype html><title>viewer</title>")
    (d / "assets" / "main.js").write_text("console.log(1)")
    (tmp_path / "secret.txt").write_text("outside dist")
    return d


async def http_get(port: int, path: str, method: str = "GET", headers: str = "") -> tuple[int, dict, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}\r\n".encode())
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    hdrs = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    return int(lines[0].split()[1]), hdrs, body


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


async def with_gateway(cfg: GatewayConfig, body):
    gw = Gateway(cfg)
    await gw.start()
    task = asyncio.ensure_future(gw.serve_forever())
    try:
        return await body(gw)
    finally:
        task.cancel()
        await gw.stop()


def test_frame_codec_roundtrip_all_length_forms():
    async def body():
        for n in (0, 5, 125, 126, 65535, 65536, 200_000):
            payload = bytes(np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8))
            reader = asyncio.StreamReader()
            reader.feed_data(ws.encode_frame(ws.OP_BINARY, payload, mask=True))
            sock = ws.WebSocket(reader, None, is_server=True, max_message=1 << 20)  # type: ignore[arg-type]
            assert await sock.recv() == (ws.OP_BINARY, payload)

    run(body())


def test_fragmented_message_and_limits():
    async def body():
        reader = asyncio.StreamReader()
        reader.feed_data(ws.encode_frame(ws.OP_BINARY, b"abc", mask=True, fin=False))
        reader.feed_data(ws.encode_frame(ws.OP_CONT, b"def", mask=True, fin=True))
        sock = ws.WebSocket(reader, None, is_server=True)  # type: ignore[arg-type]
        assert await sock.recv() == (ws.OP_BINARY, b"abcdef")
        # unmasked client frame -> protocol error; too large -> 1009
        reader = asyncio.StreamReader()
        reader.feed_data(ws.encode_frame(ws.OP_BINARY, b"x", mask=False))
        with pytest.raises(ws.WebSocketError) as e:
            await ws.WebSocket(reader, None, is_server=True).recv()  # type: ignore[arg-type]
        assert e.value.code == ws.CLOSE_PROTOCOL_ERROR
        reader = asyncio.StreamReader()
        reader.feed_data(ws.encode_frame(ws.OP_BINARY, b"y" * 100, mask=True))
        with pytest.raises(ws.WebSocketError) as e:
            await ws.WebSocket(reader, None, is_server=True, max_message=10).recv()  # type: ignore[arg-type]
        assert e.value.code == ws.CLOSE_TOO_BIG

    run(body())


def test_accept_key_matches_rfc_example():
    assert ws.accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_static_files_config_and_head(dist: Path):
    glb = b"glTF" + struct.pack("<II", 2, 12)

    async def body(gw: Gateway):
        status, hdrs, page = await http_get(gw.port, "/")
        assert status == 200 and b"viewer" in page and hdrs["content-type"].startswith("text/html")
        status, hdrs, js = await http_get(gw.port, "/assets/main.js")
        assert status == 200 and js == b"console.log(1)" and "javascript" in hdrs["content-type"]
        status, _, cfg = await http_get(gw.port, "/config.json")
        assert status == 200 and json.loads(cfg) == {"ws": "/ws", "head": "/head.glb"}
        status, hdrs, head = await http_get(gw.port, "/head.glb")
        assert status == 200 and head == glb and hdrs["content-type"] == "model/gltf-binary"
        for bad in ("/../secret.txt", "/%2e%2e/secret.txt", "/assets/../../secret.txt", "/nope.js"):
            status, _, data = await http_get(gw.port, bad)
            assert status == 404 and b"outside" not in data, bad
        status, _, _ = await http_get(gw.port, "/", method="POST")
        assert status == 405
        status, hdrs, data = await http_get(gw.port, "/", method="HEAD")
        assert status == 200 and data == b"" and int(hdrs["content-length"]) > 0

    run(with_gateway(GatewayConfig(port=0, dist=dist, head=glb), body))


def test_unbuilt_page_says_how_to_build(tmp_path: Path):
    async def body(gw: Gateway):
        status, _, page = await http_get(gw.port, "/")
        assert status == 503 and b"npm run build" in page
        status, _, cfg = await http_get(gw.port, "/config.json")
        assert json.loads(cfg)["head"] is None

    run(with_gateway(GatewayConfig(port=0, dist=tmp_path / "missing"), body))


def test_foreign_origin_is_refused(dist: Path):
    async def body(gw: Gateway):
        with pytest.raises(ConnectionError, match="403"):
            await ws.connect("127.0.0.1", gw.port, origin="http://evil.example")
        sock = await ws.connect("127.0.0.1", gw.port, origin=f"http://127.0.0.1:{gw.port}")
        await sock.close()

    run(with_gateway(GatewayConfig(port=0, dist=dist), body))


async def _recv_msg(sock: ws.WebSocket, timeout: float = 10.0) -> P.Message:
    opcode, data = await asyncio.wait_for(sock.recv(), timeout)
    assert opcode == ws.OP_BINARY
    return P.decode(data)


def test_turn_relayed_unchanged_and_closed_tab_ends_session(dist: Path):
    source = ScriptedSource(seconds=0.6, frames_per_event=5)
    server = start_server(source)

    async def body(gw: Gateway):
        sock = await ws.connect("127.0.0.1", gw.port, max_message=P.HEADER_SIZE + P.MAX_PAYLOAD)
        await sock.send_binary(P.Hello(layouts=(3, 2), client_name="test-browser").encode())
        welcome = await _recv_msg(sock)
        assert isinstance(welcome, P.Welcome)
        assert [lay.layout_id for lay in welcome.layouts] == [3, 2]
        assert wait_until(lambda: source.num_open == 1)
        pcm = (np.sin(np.arange(8000) * 0.05) * 8000).astype(np.int16)
        await sock.send_binary(P.UserAudio(pcm[:4000], 16000, 0, False, turn_id=1).encode())
        await sock.send_binary(P.UserAudio(pcm[4000:], 16000, 4000, True, turn_id=1).encode())
        msgs = []
        while not msgs or not isinstance(msgs[-1], P.TurnEnd):
            m = await _recv_msg(sock)
            if not isinstance(m, P.Heartbeat):
                msgs.append(m)
        seqs = [m.seq for m in msgs]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        assert msgs[-1].status == P.TurnStatus.COMPLETED
        faces = [m for m in msgs if isinstance(m, P.FaceFrames) and m.layout_id == 2]
        frames = np.concatenate([m.values for m in faces])
        assert [m.first_frame for m in faces] == list(range(0, 15, 5))
        np.testing.assert_array_equal(frames, source.face(0, 15)["arkit52"])  # bytes unchanged end to end
        audio = np.concatenate([m.samples for m in msgs if isinstance(m, P.AudioChunk)])
        np.testing.assert_array_equal(audio, source.audio(0, 15 * 960))
        # malformed bytes are relayed too: the server (the only validator) answers with an Error
        await sock.send_binary(b"A2LMxx")
        err = await _recv_msg(sock)
        assert isinstance(err, P.Error) and err.code == P.ErrorCode.BAD_LENGTH
        # a second WebSocket is a second session
        other = await ws.connect("127.0.0.1", gw.port)
        await other.send_binary(P.Hello().encode())
        w2 = await _recv_msg(other)
        assert isinstance(w2, P.Welcome) and w2.session_id != welcome.session_id
        assert wait_until(lambda: source.num_open == 2)
        # a closed tab (no Bye from the page) ends its session on the server at once
        other.writer.close()
        await asyncio.sleep(0.3)
        assert source.num_open == 1
        await sock.close()
        for _ in range(50):
            if source.num_open == 0 and gw.open_sessions == 0:
                break
            await asyncio.sleep(0.05)
        assert source.num_open == 0 and gw.sessions_closed == 2

    try:
        run(with_gateway(GatewayConfig(server=server.endpoint, port=0, dist=dist), body))
    finally:
        server.stop()


def test_tab_closed_mid_turn_cancels_it(dist: Path):
    source = ScriptedSource(seconds=5.0, pace=1.0)
    server = start_server(source)

    async def body(gw: Gateway):
        sock = await ws.connect("127.0.0.1", gw.port)
        await sock.send_binary(P.Hello().encode())
        assert isinstance(await _recv_msg(sock), P.Welcome)
        await sock.send_binary(P.UserAudio(np.zeros(1600, np.int16), 16000, 0, True, turn_id=1).encode())
        while not isinstance(await _recv_msg(sock), P.AudioChunk):
            pass
        assert server.num_sessions == 1
        sock.writer.transport.abort()  # the tab crashes: no close frame
        for _ in range(40):
            if server.num_sessions == 0:
                break
            await asyncio.sleep(0.05)
        assert server.num_sessions == 0 and source.num_open == 0

    try:
        run(with_gateway(GatewayConfig(server=server.endpoint, port=0, dist=dist), body))
    finally:
        server.stop()


def test_text_message_closes_with_1003(dist: Path):
    server = start_server()

    async def body(gw: Gateway):
        sock = await ws.connect("127.0.0.1", gw.port)
        await sock.send_text("hello")
        with pytest.raises(ws.ConnectionClosed) as e:
            await asyncio.wait_for(sock.recv(), 5)
        assert e.value.code == ws.CLOSE_UNSUPPORTED

    try:
        run(with_gateway(GatewayConfig(server=server.endpoint, port=0, dist=dist), body))
    finally:
        server.stop()


def test_load_head_from_mesh_or_file(tmp_path: Path, arkit_mesh_dir: Path):
    from a2llm_rt.errors import InputError
    from plugin_bridge.web.gateway import load_head

    glb = load_head(arkit_mesh_dir, None)
    assert glb is not None and glb[:4] == b"glTF"
    (tmp_path / "h.glb").write_bytes(glb)
    assert load_head(None, tmp_path / "h.glb") == glb
    (tmp_path / "bad.glb").write_bytes(b"nope")
    with pytest.raises(InputError, match="GLB"):
        load_head(None, tmp_path / "bad.glb")
    assert load_head(None, None) is None
