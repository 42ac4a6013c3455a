"""WebSocket gateway: serves the browser viewer and relays the bridge's own binary messages to the ZeroMQ server.

``python -m plugin_bridge.web --server tcp://127.0.0.1:5555 --port 8080 [--mesh DIR | --head head.glb]``

- ``GET /`` and the page's assets: the Vite build in ``plugin_bridge/web/page/dist`` (``npm ci && npm run build``).
- ``GET /config.json``: what the page needs to start (WebSocket path, avatar URL).
- ``GET /head.glb``: the avatar, from ``--head FILE`` or converted at start-up from ``--mesh DIR`` (ARKit OBJ folder).
- ``GET /ws`` (WebSocket upgrade): one WebSocket = one bridge session = one ZeroMQ DEALER (its own identity). Each
  binary WebSocket message is one protocol message in its *concatenated form* (32-byte header + payload, as in
  plugin_bridge/PROTOCOL.md); the gateway splits it into the two ZeroMQ frames and joins the server's two frames
  back, unchanged: no second protocol, and the server stays the only validator. When the tab closes (or the socket
  dies) the gateway sends ``Cancel`` (turn 0 = current) and ``Bye`` so the server frees the session at once.

It binds 127.0.0.1 by default and refuses WebSocket upgrades whose ``Origin`` is not the page's own (a page from
another site cannot talk to the avatar through the user's browser); ``--allow-origin`` adds origins.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import mimetypes
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import zmq
import zmq.asyncio

from a2llm_rt.errors import InputError
from plugin_bridge import protocol as P
from plugin_bridge.web import websocket as ws

log = logging.getLogger("plugin_bridge.web")

PAGE_DIST = Path(__file__).resolve().parent / "page" / "dist"
MAX_REQUEST_HEAD = 16 * 1024
WS_PATH = "/ws"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".glb": "model/gltf-binary",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".wasm": "application/wasm",
    ".ico": "image/x-icon",
}
NOT_BUILT = (
    "<!doctype html><meta charset=utf-8><title>a2llm viewer</title><h1>The page is not built</h1>"
    "<p>Run <code>cd plugin_bridge/web/page &amp;&amp; npm ci &amp;&amp; npm run build</code>"
    " (or <code>make demo</code>) and reload.</p>"
)


@dataclass
class GatewayConfig:
    """Gateway settings (see the module docstring)."""

    server: str = "tcp://127.0.0.1:5555"  # the bridge server's ZeroMQ endpoint
    host: str = "127.0.0.1"
    port: int = 8080  # 0 = any free port (see Gateway.port)
    dist: Path = PAGE_DIST  # the built page
    head: bytes | None = None  # the avatar GLB served at /head.glb
    allow_origins: tuple[str, ...] = ()  # extra origins allowed to open the WebSocket
    max_message: int = P.HEADER_SIZE + P.MAX_PAYLOAD


class Gateway:
    """The asyncio HTTP + WebSocket server: ``await start()`` (binds; sets ``port``), then ``await serve_forever()``."""

    def __init__(self, config: GatewayConfig):
        self.config = config
        self._ctx = zmq.asyncio.Context()
        self._server: asyncio.base_events.Server | None = None
        self.port = config.port
        self.open_sessions = 0  # WebSockets relaying now
        self.sessions_opened = 0
        self.sessions_closed = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, self.config.host, self.config.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("gateway on http://%s:%d/ -> %s", self.config.host, self.port, self.config.server)

    async def serve_forever(self) -> None:
        assert self._server is not None
        async with self._server:
            await self._server.serve_forever()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
        self._ctx.destroy(linger=0)

    @property
    def url(self) -> str:
        host = self.config.host if self.config.host not in ("0.0.0.0", "::") else "127.0.0.1"
        return f"http://{host}:{self.port}/"

    # --- HTTP ------------------------------------------------------------------------------------------------------
    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10.0)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
                return
            if len(head) > MAX_REQUEST_HEAD:
                return await self._respond(writer, 431, b"request head too large", "text/plain")
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) != 3:
                return await self._respond(writer, 400, b"bad request line", "text/plain")
            method, target, _version = parts
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            path = unquote(urlsplit(target).path)
            if path == WS_PATH:
                return await self._websocket(reader, writer, method, headers)
            if method not in ("GET", "HEAD"):
                return await self._respond(writer, 405, b"method not allowed", "text/plain", extra={"Allow": "GET"})
            status, body, ctype = self._static(path)
            await self._respond(writer, status, body, ctype, head_only=method == "HEAD")
        except Exception:  # a bug must not kill the server
            log.exception("request failed")
        finally:
            if not writer.is_closing():
                writer.close()

    def _static(self, path: str) -> tuple[int, bytes, str]:
        if path == "/config.json":
            cfg = {"ws": WS_PATH, "head": "/head.glb" if self.config.head is not None else None}
            return 200, json.dumps(cfg).encode(), CONTENT_TYPES[".json"]
        if path == "/head.glb":
            if self.config.head is None:
                return 404, b"no avatar: start the gateway with --mesh DIR or --head FILE", "text/plain"
            return 200, self.config.head, CONTENT_TYPES[".glb"]
        dist = self.config.dist.resolve()
        if not (dist / "index.html").is_file():
            return (503, NOT_BUILT.encode(), CONTENT_TYPES[".html"]) if path in ("/", "/index.html") else (404, b"", "")
        rel = "index.html" if path.endswith("/") else path.lstrip("/")
        f = (dist / rel).resolve()
        if not f.is_relative_to(dist) or not f.is_file():  # no escape from dist (../, symlinks)
            return 404, b"not found", "text/plain"
        ctype = CONTENT_TYPES.get(f.suffix) or mimetypes.guess_type(f.name)[0] or "application/octet-stream"
        return 200, f.read_bytes(), ctype

    @staticmethod
    async def _respond(
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        ctype: str,
        *,
        head_only: bool = False,
        extra: dict[str, str] | None = None,
    ) -> None:
        reason = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed"}
        hdrs = {
            "Content-Length": str(len(body)),
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
            "Connection": "close",
            **({"Content-Type": ctype} if ctype else {}),
            **(extra or {}),
        }
        lines = [f"HTTP/1.1 {status} {reason.get(status, 'Error')}"] + [f"{k}: {v}" for k, v in hdrs.items()]
        text = "\r\n".join(lines) + "\r\n"
        writer.write(text.encode("latin-1") + b"\r\n" + (b"" if head_only else body))
        with contextlib.suppress(ConnectionError):
            await writer.drain()

    # --- WebSocket <-> ZeroMQ --------------------------------------------------------------------------------------
    def _origin_ok(self, headers: dict[str, str]) -> bool:
        origin = headers.get("origin")
        if origin is None:  # not a browser (tools, tests): nothing to protect against
            return True
        if origin in self.config.allow_origins:
            return True
        return urlsplit(origin).netloc == headers.get("host", "") and urlsplit(origin).scheme in ("http", "https")

    async def _websocket(self, reader, writer, method: str, headers: dict[str, str]) -> None:
        key = headers.get("sec-websocket-key")
        if (
            method != "GET"
            or headers.get("upgrade", "").lower() != "websocket"
            or "upgrade" not in headers.get("connection", "").lower()
            or headers.get("sec-websocket-version") != "13"
            or not key
        ):
            return await self._respond(writer, 400, b"expected a WebSocket upgrade (version 13)", "text/plain")
        if not self._origin_ok(headers):
            log.warning("refused WebSocket from origin %s", headers.get("origin"))
            return await self._respond(writer, 403, b"origin not allowed", "text/plain")
        writer.write(
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Accept: {ws.accept_key(key)}\r\n\r\n"
            ).encode("ascii")
        )
        await writer.drain()
        sock = ws.WebSocket(reader, writer, is_server=True, max_message=self.config.max_message)
        await self._relay(sock)

    async def _relay(self, sock: ws.WebSocket) -> None:
        dealer = self._ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 500)  # let the closing Cancel + Bye leave
        dealer.setsockopt(zmq.RCVHWM, 1000)
        dealer.connect(self.config.server)
        self.open_sessions += 1
        self.sessions_opened += 1
        log.info("WebSocket session opened (%d open)", self.open_sessions)

        async def to_browser() -> None:
            while True:
                frames = await dealer.recv_multipart(copy=True)
                await sock.send_binary(b"".join(frames))  # [header, payload] -> concatenated form

        down = asyncio.ensure_future(to_browser())
        try:
            while True:
                opcode, data = await sock.recv()
                if opcode != ws.OP_BINARY:
                    raise ws.WebSocketError(ws.CLOSE_UNSUPPORTED, "only binary protocol messages are accepted")
                await dealer.send_multipart([data[: P.HEADER_SIZE], data[P.HEADER_SIZE :]])
                if down.done():
                    break
        except ws.WebSocketError as e:
            log.info("WebSocket protocol error: %s", e)
            await sock.close(e.code, e.reason)
        except ws.ConnectionClosed:
            pass
        except Exception:
            log.exception("relay failed")
            await sock.close(ws.CLOSE_INTERNAL, "gateway error")
        finally:
            down.cancel()
            with contextlib.suppress(BaseException):
                await down
            # the tab is gone: end its turn and its session on the server now (not after the session timeout)
            with contextlib.suppress(zmq.ZMQError):
                await dealer.send_multipart(P.Cancel(turn_id=0).encode_frames())
                await dealer.send_multipart(P.Bye().encode_frames())
            dealer.close(linger=500)
            await sock.close(ws.CLOSE_GOING_AWAY)
            self.open_sessions -= 1
            self.sessions_closed += 1
            log.info("WebSocket session closed (%d open)", self.open_sessions)


def load_head(mesh: Path | None, head: Path | None) -> bytes | None:
    """The avatar GLB bytes: a GLB file, or one built from an ARKit OBJ folder; None when neither is given."""
    if head is not None:
        try:
            data = head.read_bytes()
        except OSError as e:
            raise InputError(f"cannot read the avatar: {e.strerror}", head) from None
        if data[:4] != b"glTF":
            raise InputError("not a GLB (binary glTF) file", head)
        return data
    if mesh is not None:
        from a2llm_rt.face.arkit_gltf import build_glb
        from a2llm_rt.face.arkit_mesh import ArkitMesh

        return build_glb(ArkitMesh.load(mesh))
    return None


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m plugin_bridge.web", description=__doc__.splitlines()[0])
    ap.add_argument("--server", default="tcp://127.0.0.1:5555", help="bridge server endpoint")
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--mesh", type=Path, help="ARKit OBJ folder to build the avatar from")
    ap.add_argument("--head", type=Path, help="a GLB avatar with ARKit-named morph targets")
    ap.add_argument("--dist", type=Path, default=PAGE_DIST, help="the built page (default: page/dist)")
    ap.add_argument("--allow-origin", action="append", default=[], help="extra origin allowed to open the WebSocket")
    ap.add_argument("--log-level", default="INFO")
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        if args.mesh is not None and args.head is not None:
            raise InputError("give either --mesh or --head, not both")
        head = load_head(args.mesh, args.head)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not (args.dist / "index.html").is_file():
        print(f"warning: the page is not built ({args.dist}): cd plugin_bridge/web/page && npm ci && npm run build")
    if not is_loopback(args.host):
        print(f"warning: binding {args.host}: anyone who can reach this port can talk to the avatar", file=sys.stderr)
    cfg = GatewayConfig(args.server, args.host, args.port, args.dist, head, tuple(args.allow_origin))
    gw = Gateway(cfg)

    async def run() -> None:
        try:
            await gw.start()
        except OSError as e:
            raise InputError(f"cannot listen on {args.host}:{args.port}: {e.strerror}") from None
        print(f"a2llm viewer: open {gw.url}  (bridge server {args.server}; Ctrl-C stops)", flush=True)
        serve = asyncio.ensure_future(gw.serve_forever())
        with contextlib.suppress(NotImplementedError):  # SIGTERM: close sessions (Cancel + Bye) like Ctrl-C
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, serve.cancel)
        try:
            await serve
        except asyncio.CancelledError:
            pass
        finally:
            await gw.stop()

    try:
        asyncio.run(run())
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0
