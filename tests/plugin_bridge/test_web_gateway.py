"""The WebSocket gateway: HTTP static serving, Host / Origin checks (DNS rebinding), malformed requests, WebSocket
limits, and relaying a whole turn to a real bridge server.

Each test runs an in-process BridgeServer (scripted tiny source, unpaced) and the gateway on free loopback ports. The
attacks are sent as raw bytes on a TCP socket (what a rebinding page's browser would send); sessions use the
``websockets`` client.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from a2llm_rt.errors import InputError
from plugin_bridge import protocol as P
from plugin_bridge.scripted_source import ScriptedSource
from plugin_bridge.web.gateway import Gateway, GatewayConfig
from tests.plugin_bridge.helpers import start_server

REPO = Path(__file__).resolve().parents[2]
WAIT_S = 60.0  # generous: the suite must pass on one loaded core
SESSION_TIMEOUT_S = 300.0


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    d = tmp_path / "dist"
    (d / "assets").mkdir(parents=True)
    (d / "index.html").write_text("<!doctype html><title>viewer</title>")
    (d / "assets" / "main.js").write_text("console.log(1)")
    (tmp_path / "secret.txt").write_text("outside dist")
    return d


async def raw_request(
    port: int, path: str, method: str = "GET", host: str | None = None, headers: str = "", *, upgrade: bool = False
) -> tuple[int, dict, bytes]:
    """Send one request as raw bytes (``host`` None: the gateway's own ``127.0.0.1:port``; "" sends no Host);
    ``upgrade`` makes it a WebSocket handshake. Returns (status, headers, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    host = f"127.0.0.1:{port}" if host is None else host
    lines = [f"{method} {path} HTTP/1.1"] + ([f"Host: {host}"] if host else [])
    if upgrade:
        key = base64.b64encode(os.urandom(16)).decode()
        lines += ["Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    writer.write(("\r\n".join(lines) + "\r\n" + headers + "\r\n").encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT_S)
    status_line, *hlines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
    hdrs = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in hlines)}
    status = int(status_line.split()[1])
    body = b"" if status == 101 else await asyncio.wait_for(reader.read(), WAIT_S)  # the gateway closes after it
    writer.close()
    return status, hdrs, body


async def http_get(port: int, path: str, method: str = "GET", headers: str = "") -> tuple[int, dict, bytes]:
    return await raw_request(port, path, method, headers=headers)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 4 * WAIT_S))


async def ws_connect(port: int, host: str = "127.0.0.1", **kw) -> ClientConnection:
    kw.setdefault("max_size", P.HEADER_SIZE + P.MAX_PAYLOAD)
    return await connect(f"ws://{host}:{port}/ws", compression=None, open_timeout=WAIT_S, **kw)


async def eventually(cond, timeout_s: float = WAIT_S) -> bool:
    """Poll ``cond()`` on the loop until it holds (True) or ``timeout_s`` passes (False)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def with_gateway(cfg: GatewayConfig, body):
    gw = Gateway(cfg)
    await gw.start()
    task = asyncio.ensure_future(gw.serve_forever())
    try:
        return await body(gw)
    finally:
        task.cancel()
        await gw.stop()


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
        with pytest.raises(InvalidStatus) as e:
            await ws_connect(gw.port, origin="http://evil.example")
        assert e.value.response.status_code == 403
        for origin in (f"http://127.0.0.1:{gw.port}", f"http://localhost:{gw.port}", None):
            sock = await ws_connect(gw.port, origin=origin)
            await sock.close()

    run(with_gateway(GatewayConfig(port=0, dist=dist), body))


def test_dns_rebinding_is_refused_for_http_and_websocket(dist: Path):
    """A page on evil.example rebound to 127.0.0.1: its Host and Origin name evil.example and match each other."""

    async def body(gw: Gateway):
        p = gw.port
        evil = f"Origin: http://evil.example:{p}\r\n"
        for upgrade in (False, True):
            for path in ("/", "/config.json", "/head.glb", "/ws"):
                status, _, _ = await raw_request(p, path, host=f"evil.example:{p}", headers=evil, upgrade=upgrade)
                assert status == 421, (path, upgrade)
            # the right Host with a foreign Origin (a cross-site fetch / WebSocket): 403
            status, _, _ = await raw_request(p, "/ws" if upgrade else "/config.json", headers=evil, upgrade=upgrade)
            assert status == 403
            # a loopback name with another port, a missing Host, two Hosts: refused too
            status, _, _ = await raw_request(
                p, "/ws", host=f"127.0.0.1:{p + 1 if p < 65535 else p - 1}", upgrade=upgrade
            )
            assert status == 421
            status, _, _ = await raw_request(p, "/ws", host="", upgrade=upgrade)
            assert status == 400
            status, _, _ = await raw_request(p, "/ws", headers=f"Host: evil.example:{p}\r\n", upgrade=upgrade)
            assert status == 400
        # loopback names and addresses with the gateway's port are this machine: served
        for host in (f"localhost:{p}", f"LocalHost.:{p}", f"127.0.0.1:{p}", f"127.1.2.3:{p}", f"[::1]:{p}"):
            status, _, _ = await raw_request(p, "/config.json", host=host, headers=f"Origin: http://{host}\r\n")
            assert status == 200, host
            status, hdrs, _ = await raw_request(p, "/ws", host=host, headers=f"Origin: http://{host}\r\n", upgrade=True)
            assert status == 101 and "sec-websocket-accept" in hdrs, host

    run(with_gateway(GatewayConfig(port=0, dist=dist), body))


def test_allow_host_and_allow_origin_add_names(dist: Path):
    async def body(gw: Gateway):
        p = gw.port
        status, _, _ = await raw_request(p, "/ws", host=f"avatar.lan:{p}", headers=f"Origin: http://avatar.lan:{p}\r\n",
                                         upgrade=True)  # fmt: skip
        assert status == 101
        status, _, _ = await raw_request(p, "/", host="proxy.example", headers="Origin: https://proxy.example\r\n")
        assert status == 200  # NAME:443 behind a TLS proxy: the browser leaves the default port out
        status, _, _ = await raw_request(p, "/ws", headers="Origin: https://tool.example\r\n", upgrade=True)
        assert status == 101
        # other names are still refused, as are allowed names with another port
        status, _, _ = await raw_request(p, "/", host=f"other.lan:{p}")
        assert status == 421
        status, _, _ = await raw_request(p, "/", host="avatar.lan:1")
        assert status == 421

    cfg = GatewayConfig(port=0, dist=dist, allow_hosts=("avatar.lan", "proxy.example:443"),
                        allow_origins=("https://tool.example",))  # fmt: skip
    run(with_gateway(cfg, body))


def test_malformed_paths_answer_400_and_the_gateway_keeps_serving(dist: Path):
    async def body(gw: Gateway):
        for bad in ("/%00", "/assets/%00main.js", "/%0d%0aSet-Cookie:x", "/%ff", "/ws%00", "http://evil.example/", "*"):
            status, _, _ = await raw_request(gw.port, bad)
            assert status == 400, bad
        status, _, _ = await raw_request(gw.port, "/" + "a" * 4000)  # longer than a file name may be
        assert status == 404
        status, _, page = await http_get(gw.port, "/")
        assert status == 200 and b"viewer" in page

    run(with_gateway(GatewayConfig(port=0, dist=dist), body))


def test_bind_off_loopback_needs_expose_without_auth(tmp_path: Path):
    for host in ("0.0.0.0", "::", "192.0.2.1", "example.com", ""):
        with pytest.raises(InputError, match="expose-without-auth"):
            Gateway(GatewayConfig(host=host, port=0))
    for host in ("127.0.0.1", "127.0.0.2", "localhost", "::1"):
        Gateway(GatewayConfig(host=host, port=0))._ctx.destroy()
    Gateway(GatewayConfig(host="0.0.0.0", port=0, expose_without_auth=True))._ctx.destroy()  # said so: allowed
    with pytest.raises(InputError, match="allow-host"):
        Gateway(GatewayConfig(port=0, allow_hosts=("bad host/x",)))
    # the command line says why and exits 2 before binding anything
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-m", "plugin_bridge.web", "--host", "0.0.0.0", "--port", "0"], cwd=REPO,
                       env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 2 and "--expose-without-auth" in r.stderr, r.stderr


async def _recv_msg(sock: ClientConnection, timeout: float = WAIT_S) -> P.Message:
    data = await asyncio.wait_for(sock.recv(), timeout)
    assert isinstance(data, bytes)
    return P.decode(data)


def _server(source: ScriptedSource | None = None):
    """A bridge server whose session timeout (300 s) is far beyond every wait: a session that ends within a test
    ended because the gateway sent Cancel + Bye."""
    return start_server(source, session_timeout_s=SESSION_TIMEOUT_S)


def test_turn_relayed_unchanged_and_closed_tab_ends_session(dist: Path):
    source = ScriptedSource(seconds=0.6, frames_per_event=5)
    server = _server(source)

    async def body(gw: Gateway):
        sock = await ws_connect(gw.port)
        await sock.send(P.Hello(layouts=(3, 2), client_name="test-browser").encode())
        welcome = await _recv_msg(sock)
        assert isinstance(welcome, P.Welcome)
        assert [lay.layout_id for lay in welcome.layouts] == [3, 2]
        assert await eventually(lambda: source.num_open == 1)
        pcm = (np.sin(np.arange(8000) * 0.05) * 8000).astype(np.int16)
        await sock.send(P.UserAudio(pcm[:4000], 16000, 0, False, turn_id=1).encode())
        await sock.send(P.UserAudio(pcm[4000:], 16000, 4000, True, turn_id=1).encode())
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
        await sock.send(b"A2LMxx")
        err = await _recv_msg(sock)
        while isinstance(err, P.Heartbeat):
            err = await _recv_msg(sock)
        assert isinstance(err, P.Error) and err.code == P.ErrorCode.BAD_LENGTH
        # a second WebSocket is a second session
        other = await ws_connect(gw.port)
        await other.send(P.Hello().encode())
        w2 = await _recv_msg(other)
        assert isinstance(w2, P.Welcome) and w2.session_id != welcome.session_id
        assert await eventually(lambda: source.num_open == 2)
        # a closed tab (no Bye from the page, no close frame) ends its session on the server at once
        other.transport.abort()
        assert await eventually(lambda: source.num_open == 1 and server.num_sessions == 1)
        await sock.close()
        assert await eventually(lambda: source.num_open == 0 and gw.open_sessions == 0)
        assert gw.sessions_closed == 2 and server.num_sessions == 0

    try:
        run(with_gateway(GatewayConfig(server=server.endpoint, port=0, dist=dist), body))
    finally:
        server.stop()


def test_tab_closed_mid_turn_cancels_it(dist: Path):
    source = ScriptedSource(seconds=5.0, pace=1.0)
    server = _server(source)

    async def body(gw: Gateway):
        sock = await ws_connect(gw.port)
        await sock.send(P.Hello().encode())
        assert isinstance(await _recv_msg(sock), P.Welcome)
        await sock.send(P.UserAudio(np.zeros(1600, np.int16), 16000, 0, True, turn_id=1).encode())
        while not isinstance(await _recv_msg(sock), P.AudioChunk):
            pass
        assert server.num_sessions == 1
        sock.transport.abort()  # the tab crashes: no close frame
        assert await eventually(lambda: server.num_sessions == 0 and source.num_open == 0)

    try:
        run(with_gateway(GatewayConfig(server=server.endpoint, port=0, dist=dist), body))
    finally:
        server.stop()


def test_text_message_closes_with_1003(dist: Path):
    server = _server()

    async def body(gw: Gateway):
        sock = await ws_connect(gw.port)
        await sock.send("hello")
        with pytest.raises(ConnectionClosed) as e:
            await asyncio.wait_for(sock.recv(), WAIT_S)
        assert e.value.rcvd is not None and e.value.rcvd.code == 1003
        assert await eventually(lambda: gw.open_sessions == 0 and gw.sessions_closed == 1)

    try:
        run(with_gateway(GatewayConfig(server=server.endpoint, port=0, dist=dist), body))
    finally:
        server.stop()


def test_oversized_message_closes_with_1009_and_ends_the_session(dist: Path):
    server = _server()

    async def body(gw: Gateway):
        sock = await ws_connect(gw.port)
        await sock.send(P.Hello().encode())
        assert isinstance(await _recv_msg(sock), P.Welcome)
        assert await eventually(lambda: server.num_sessions == 1)
        await sock.send(bytes(4097))  # one byte over the limit
        with pytest.raises(ConnectionClosed) as e:
            while True:
                await asyncio.wait_for(sock.recv(), WAIT_S)  # heartbeats until the close
        assert e.value.rcvd is not None and e.value.rcvd.code == 1009
        assert await eventually(lambda: server.num_sessions == 0 and gw.open_sessions == 0)

    try:
        run(with_gateway(GatewayConfig(server=server.endpoint, port=0, dist=dist, max_message=4096), body))
    finally:
        server.stop()


def test_load_head_from_mesh_or_file(tmp_path: Path, arkit_mesh_dir: Path):
    from plugin_bridge.web.gateway import load_head

    glb = load_head(arkit_mesh_dir, None)
    assert glb is not None and glb[:4] == b"glTF"
    (tmp_path / "h.glb").write_bytes(glb)
    assert load_head(None, tmp_path / "h.glb") == glb
    (tmp_path / "bad.glb").write_bytes(b"nope")
    with pytest.raises(InputError, match="GLB"):
        load_head(None, tmp_path / "bad.glb")
    assert load_head(None, None) is None
