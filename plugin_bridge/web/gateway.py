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

HTTP and WebSocket (RFC 6455) are the ``websockets`` library's; ``process_request`` serves the static routes. Every
request, plain or upgrade, must name this gateway in ``Host`` (loopback names with its port, or ``--allow-host``;
else 421) and, when a browser sends ``Origin``, come from such a page or an ``--allow-origin`` (else 403): this is
what stops DNS rebinding (:mod:`plugin_bridge.web.host_policy`). It binds 127.0.0.1 by default; an address off
loopback needs ``--expose-without-auth`` (there is no authentication).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http
import json
import logging
import mimetypes
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import zmq
import zmq.asyncio
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from a2llm_rt.errors import InputError
from a2llm_rt.utils.cli import cli_main
from plugin_bridge import protocol as P
from plugin_bridge.web.host_policy import HostPolicy, check_bind, is_loopback

log = logging.getLogger("plugin_bridge.web")

PAGE_DIST = Path(__file__).resolve().parent / "page" / "dist"
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
TEXT = "text/plain; charset=utf-8"
NOT_BUILT = (
    "<!doctype html><meta charset=utf-8><title>a2llm viewer</title><h1>The page is not built</h1>"
    "<p>Run <code>cd plugin_bridge/web/page &amp;&amp; npm ci &amp;&amp; npm run build</code>"
    " (or <code>make demo</code>) and reload.</p>"
)


@dataclass
class GatewayConfig:
    """Gateway settings (see the module docstring)."""

    server: str = "tcp://127.0.0.1:5555"  # the bridge server's ZeroMQ endpoint
    host: str = "127.0.0.1"  # bind address: loopback unless expose_without_auth
    port: int = 8080  # 0 = any free port (see Gateway.port)
    dist: Path = PAGE_DIST  # the built page
    head: bytes | None = None  # the avatar GLB served at /head.glb
    allow_origins: tuple[str, ...] = ()  # extra origins allowed to fetch and open the WebSocket
    allow_hosts: tuple[str, ...] = ()  # extra names accepted in Host/Origin (NAME or NAME:PORT); loopback always
    expose_without_auth: bool = False  # allow a bind address off loopback (no authentication!)
    max_message: int = P.HEADER_SIZE + P.MAX_PAYLOAD  # largest WebSocket message (bigger: close 1009)


class Gateway:
    """The HTTP + WebSocket server: ``await start()`` (binds; sets ``port``), then ``await serve_forever()``.

    Raises InputError at construction for a bind address off loopback without ``expose_without_auth`` and for a
    malformed ``allow_hosts`` / ``allow_origins`` entry.
    """

    def __init__(self, config: GatewayConfig):
        check_bind(config.host, config.expose_without_auth)
        HostPolicy(config.port, config.allow_hosts, config.allow_origins)  # validates the entries now
        self.config = config
        self._ctx = zmq.asyncio.Context()
        self._server: Server | None = None
        self.port = config.port
        self.policy: HostPolicy | None = None  # set by start(), once the port is known
        self.open_sessions = 0  # WebSockets relaying now
        self.sessions_opened = 0
        self.sessions_closed = 0

    async def start(self) -> None:
        host = self.config.host.strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, self.config.port), family=family)  # bound first: the port (0 = any) is
        self.port = sock.getsockname()[1]  # needed for the Host / Origin rules before serving
        extra_hosts = self.config.allow_hosts
        if not is_loopback(host) and host not in ("0.0.0.0", "::", ""):
            extra_hosts = (*extra_hosts, f"[{host}]" if ":" in host else host)  # the exposed address itself
        self.policy = HostPolicy(self.port, extra_hosts, self.config.allow_origins)
        self._server = await serve(
            self._relay,
            sock=sock,
            process_request=self._process_request,
            origins=self.policy.origin_patterns(),
            max_size=self.config.max_message,
            compression=None,  # the payload is PCM / float32 frames: deflate costs time and gains little
            server_header=None,
            logger=logging.getLogger("plugin_bridge.web.websockets"),
        )
        log.info("gateway on %s -> %s", self.url, self.config.server)

    async def serve_forever(self) -> None:
        assert self._server is not None
        await self._server.serve_forever()

    async def stop(self) -> None:
        """Close every WebSocket (each session gets Cancel + Bye) and the listening socket."""
        if self._server is not None:
            self._server.close(close_connections=True)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5.0)
        self._ctx.destroy(linger=0)

    @property
    def url(self) -> str:
        host = self.config.host if self.config.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}/"

    # --- HTTP ------------------------------------------------------------------------------------------------------
    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        """Host / Origin checks for every request; static routes answered here; None = go on with the upgrade."""
        assert self.policy is not None
        hosts, origins = request.headers.get_all("Host"), request.headers.get_all("Origin")
        if len(hosts) != 1 or len(origins) > 1:
            return _text(400, "expected exactly one Host header and at most one Origin header")
        if not self.policy.host_ok(hosts[0]):
            log.warning("refused Host %r (DNS rebinding? add the name with --allow-host)", hosts[0][:200])
            return _text(421, "this gateway does not serve that host name; start it with --allow-host NAME to add one")
        origin = origins[0] if origins else None
        if not self.policy.origin_ok(origin):
            log.warning("refused Origin %r", (origin or "")[:200])
            return _text(403, "origin not allowed")
        target = request.path.partition("?")[0].partition("#")[0]  # origin-form only: "/..." (no absolute URL)
        try:
            path = unquote(target, errors="strict") if target.startswith("/") else ""
        except UnicodeDecodeError:
            path = ""
        if not path.startswith("/") or any(ord(c) < 0x20 or c == "\x7f" for c in path):  # NUL, CR, LF, ...
            return _text(400, "bad request path")
        if path == WS_PATH:
            return None  # the WebSocket handshake (the library checks the upgrade headers and Origin again)
        if request.method not in ("GET", "HEAD"):
            r = _text(405, "method not allowed")
            r.headers["Allow"] = "GET, HEAD"
            return r
        status, body, ctype = self._static(path)
        headers = Headers(
            [
                ("Content-Length", str(len(body))),
                ("Cache-Control", "no-cache"),
                ("X-Content-Type-Options", "nosniff"),
                ("Connection", "close"),
            ]
        )
        if ctype:
            headers["Content-Type"] = ctype
        phrase = http.HTTPStatus(status).phrase
        return Response(status, phrase, headers, b"" if request.method == "HEAD" else body)

    def _static(self, path: str) -> tuple[int, bytes, str]:
        if path == "/config.json":
            cfg = {"ws": WS_PATH, "head": "/head.glb" if self.config.head is not None else None}
            return 200, json.dumps(cfg).encode(), CONTENT_TYPES[".json"]
        if path == "/head.glb":
            if self.config.head is None:
                return 404, b"no avatar: start the gateway with --mesh DIR or --head FILE", TEXT
            return 200, self.config.head, CONTENT_TYPES[".glb"]
        dist = self.config.dist.resolve()
        if not (dist / "index.html").is_file():
            return (503, NOT_BUILT.encode(), CONTENT_TYPES[".html"]) if path in ("/", "/index.html") else (404, b"", "")
        rel = "index.html" if path.endswith("/") else path.lstrip("/")
        try:
            f = (dist / rel).resolve()
            if not f.is_relative_to(dist) or not f.is_file():  # no escape from dist (../, symlinks)
                return 404, b"not found", TEXT
            data = f.read_bytes()
        except OSError:  # a name too long, a file gone or unreadable: not found, never a traceback
            return 404, b"not found", TEXT
        ctype = CONTENT_TYPES.get(f.suffix) or mimetypes.guess_type(f.name)[0] or "application/octet-stream"
        return 200, data, ctype

    # --- WebSocket <-> ZeroMQ --------------------------------------------------------------------------------------
    async def _relay(self, conn: ServerConnection) -> None:
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
                await conn.send(b"".join(frames))  # [header, payload] -> concatenated form; waits on a slow peer

        async def from_browser() -> None:
            async for data in conn:  # ends on a normal close; raises ConnectionClosedError on errors (1009, 1002, ...)
                if isinstance(data, str):
                    await conn.close(CloseCode.UNSUPPORTED_DATA, "only binary protocol messages are accepted")
                    return
                await dealer.send_multipart([data[: P.HEADER_SIZE], data[P.HEADER_SIZE :]])

        tasks = {asyncio.ensure_future(to_browser()), asyncio.ensure_future(from_browser())}
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                exc = t.exception()
                if exc is not None and not isinstance(exc, ConnectionClosed):
                    log.error("relay failed", exc_info=exc)
                    await conn.close(CloseCode.INTERNAL_ERROR, "gateway error")
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(BaseException):
                    await t
            # the tab is gone: end its turn and its session on the server now (not after the session timeout)
            with contextlib.suppress(zmq.ZMQError):
                await dealer.send_multipart(P.Cancel(turn_id=0).encode_frames())
                await dealer.send_multipart(P.Bye().encode_frames())
            dealer.close(linger=500)
            self.open_sessions -= 1
            self.sessions_closed += 1
            log.info("WebSocket session closed (%d open)", self.open_sessions)
            with contextlib.suppress(Exception):
                await conn.close(CloseCode.GOING_AWAY)


def _text(status: int, text: str) -> Response:
    """A short plain-text answer that closes the connection."""
    body = (text + "\n").encode()
    headers = Headers([("Content-Length", str(len(body))), ("Content-Type", TEXT), ("Connection", "close")])
    headers["X-Content-Type-Options"] = "nosniff"
    return Response(status, http.HTTPStatus(status).phrase, headers, body)


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
        from a2llm_rt.face.arkit_mesh import ArkitMesh
        from a2llm_rt.face_tools.arkit_gltf import build_glb

        return build_glb(ArkitMesh.load(mesh))
    return None


@cli_main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m plugin_bridge.web", description=__doc__.splitlines()[0])
    ap.add_argument("--server", default="tcp://127.0.0.1:5555", help="bridge server endpoint")
    ap.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1: this machine only; others need --expose-without-auth)",
    )
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--mesh", type=Path, help="ARKit OBJ folder to build the avatar from")
    ap.add_argument("--head", type=Path, help="a GLB avatar with ARKit-named morph targets")
    ap.add_argument("--dist", type=Path, default=PAGE_DIST, help="the built page (default: page/dist)")
    ap.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME[:PORT]",
        help="a host name (or address) the page may be opened under, besides localhost/127.0.0.0/8/::1 with --port "
        "(requests naming another host get 421); repeatable",
    )
    ap.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="an extra origin (scheme://host[:port]) allowed to fetch and open the WebSocket (others: 403); repeatable",
    )
    ap.add_argument(
        "--expose-without-auth",
        action="store_true",
        help="allow a --host off loopback: anyone who can reach it can drive the avatar (there is no authentication)",
    )
    ap.add_argument("--log-level", default="INFO")
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if logging.getLogger().level > logging.DEBUG:
        logging.getLogger("plugin_bridge.web.websockets").setLevel(logging.WARNING)  # one line per request otherwise
    if args.mesh is not None and args.head is not None:
        raise InputError("give either --mesh or --head, not both")
    cfg = GatewayConfig(
        server=args.server,
        host=args.host,
        port=args.port,
        dist=args.dist,
        allow_origins=tuple(args.allow_origin),
        allow_hosts=tuple(args.allow_host),
        expose_without_auth=args.expose_without_auth,
    )
    gw = Gateway(cfg)  # refuses a bind off loopback without --expose-without-auth
    gw.config.head = load_head(args.mesh, args.head)
    if not (args.dist / "index.html").is_file():
        print(f"warning: the page is not built ({args.dist}): cd plugin_bridge/web/page && npm ci && npm run build")
    if not is_loopback(args.host):
        print(
            f"warning: binding {args.host} without authentication: anyone who can reach this port can drive the avatar"
            " (pages are served only under loopback names, the bound address and --allow-host names)",
            file=sys.stderr,
        )

    async def run() -> None:
        try:
            await gw.start()
        except OSError as e:
            raise InputError(f"cannot listen on {args.host}:{args.port}: {e.strerror}") from None
        print(f"a2llm viewer: open {gw.url}  (bridge server {args.server}; Ctrl-C stops)", flush=True)
        forever = asyncio.ensure_future(gw.serve_forever())
        with contextlib.suppress(NotImplementedError):  # SIGTERM: close sessions (Cancel + Bye) like Ctrl-C
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, forever.cancel)
        try:
            await forever
        except asyncio.CancelledError:
            pass
        finally:
            await gw.stop()

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is the normal way to stop the viewer
        asyncio.run(run())
    return 0
