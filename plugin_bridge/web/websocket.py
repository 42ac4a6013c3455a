"""Minimal RFC 6455 WebSocket over asyncio streams: handshake, framing, ping/pong/close. No dependencies.

Enough for the gateway (server side) and its tests (client side): binary and text messages, fragmentation,
control frames interleaved with fragments, 7/16/64-bit lengths, client-to-server masking (required by the RFC and
checked), a per-message size limit. No extensions (permessage-deflate is never negotiated) and no subprotocols.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import struct
from dataclasses import dataclass

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_UNSUPPORTED = 1003  # e.g. a text message where only binary is accepted
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011


class WebSocketError(Exception):
    """A protocol violation by the peer; ``code`` is the close code to send back."""

    def __init__(self, code: int, reason: str):
        self.code = code
        self.reason = reason
        super().__init__(f"{code}: {reason}")


class ConnectionClosed(Exception):
    """The peer sent a close frame (``code``, ``reason``) or the TCP stream ended (code 1006)."""

    def __init__(self, code: int = 1006, reason: str = ""):
        self.code = code
        self.reason = reason
        super().__init__(f"closed {code} {reason}")


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a client's ``Sec-WebSocket-Key``."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + GUID).digest()).decode("ascii")


def encode_frame(opcode: int, payload: bytes, *, mask: bool = False, fin: bool = True) -> bytes:
    """One frame. Servers send unmasked frames (``mask=False``); clients must mask."""
    n = len(payload)
    head = bytearray([(0x80 if fin else 0) | opcode])
    mbit = 0x80 if mask else 0
    if n < 126:
        head.append(mbit | n)
    elif n < 1 << 16:
        head.append(mbit | 126)
        head += struct.pack(">H", n)
    else:
        head.append(mbit | 127)
        head += struct.pack(">Q", n)
    if not mask:
        return bytes(head) + payload
    key = os.urandom(4)
    return bytes(head) + key + _xor(payload, key)


def _xor(data: bytes, key: bytes) -> bytes:
    n = len(data)
    if n == 0:
        return b""
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(k, "little")).to_bytes(n, "little")


@dataclass
class WebSocket:
    """One open WebSocket on asyncio streams.

    Args:
        reader, writer: the connection after the HTTP upgrade.
        is_server: True on the gateway side (expects masked frames in, sends unmasked).
        max_message: largest message (bytes, after reassembly) accepted; bigger ones close with 1009.
    """

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    is_server: bool = True
    max_message: int = 1 << 20
    closed: bool = False

    async def _read_frame(self) -> tuple[bool, int, bytes]:
        try:
            b0, b1 = await self.reader.readexactly(2)
            fin, rsv, opcode = bool(b0 & 0x80), b0 & 0x70, b0 & 0x0F
            masked, n = bool(b1 & 0x80), b1 & 0x7F
            if rsv:
                raise WebSocketError(CLOSE_PROTOCOL_ERROR, "reserved bits set (no extension was negotiated)")
            if masked != self.is_server:
                raise WebSocketError(CLOSE_PROTOCOL_ERROR, "client frames must be masked, server frames must not")
            if n == 126:
                (n,) = struct.unpack(">H", await self.reader.readexactly(2))
            elif n == 127:
                (n,) = struct.unpack(">Q", await self.reader.readexactly(8))
            if opcode >= OP_CLOSE and (n > 125 or not fin):
                raise WebSocketError(CLOSE_PROTOCOL_ERROR, "control frame too long or fragmented")
            if n > self.max_message:
                raise WebSocketError(CLOSE_TOO_BIG, f"frame of {n} bytes > {self.max_message}")
            key = await self.reader.readexactly(4) if masked else b""
            data = await self.reader.readexactly(n)
        except (asyncio.IncompleteReadError, ConnectionError):
            raise ConnectionClosed() from None
        return fin, opcode, _xor(data, key) if masked else data

    async def recv(self) -> tuple[int, bytes]:
        """The next data message ``(OP_BINARY | OP_TEXT, payload)``; answers pings, raises ConnectionClosed."""
        opcode, parts, size = None, [], 0
        while True:
            fin, op, data = await self._read_frame()
            if op == OP_PING:
                await self._send(OP_PONG, data)
                continue
            if op == OP_PONG:
                continue
            if op == OP_CLOSE:
                code = struct.unpack(">H", data[:2])[0] if len(data) >= 2 else 1005
                reason = data[2:].decode("utf-8", "replace")
                if not self.closed:
                    await self.close(code if code != 1005 else CLOSE_NORMAL)
                raise ConnectionClosed(code, reason)
            if op in (OP_TEXT, OP_BINARY):
                if opcode is not None:
                    raise WebSocketError(CLOSE_PROTOCOL_ERROR, "new message inside a fragmented one")
                opcode = op
            elif op == OP_CONT:
                if opcode is None:
                    raise WebSocketError(CLOSE_PROTOCOL_ERROR, "continuation frame without a message")
            else:
                raise WebSocketError(CLOSE_PROTOCOL_ERROR, f"unknown opcode {op:#x}")
            size += len(data)
            if size > self.max_message:
                raise WebSocketError(CLOSE_TOO_BIG, f"message larger than {self.max_message} bytes")
            parts.append(data)
            if fin:
                return opcode, b"".join(parts)

    async def _send(self, opcode: int, payload: bytes) -> None:
        self.writer.write(encode_frame(opcode, payload, mask=not self.is_server))
        await self.writer.drain()

    async def send_binary(self, payload: bytes) -> None:
        """Send one binary message (waits while the peer's TCP window is full: natural back-pressure)."""
        if self.closed:
            raise ConnectionClosed(CLOSE_NORMAL, "already closed")
        await self._send(OP_BINARY, payload)

    async def send_text(self, text: str) -> None:
        await self._send(OP_TEXT, text.encode("utf-8"))

    async def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Send a close frame (once) and close the TCP stream; errors of a dead peer are ignored."""
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self._send(OP_CLOSE, struct.pack(">H", code) + reason.encode("utf-8")[:120])
        self.writer.close()


# --- client side (tests, tools) ------------------------------------------------------------------------------------
async def connect(host: str, port: int, path: str = "/ws", origin: str | None = None, **kw) -> WebSocket:
    """Open a client WebSocket to ``ws://host:port/path``. Raises ConnectionError when the upgrade is refused."""
    reader, writer = await asyncio.open_connection(host, port)
    key = base64.b64encode(os.urandom(16)).decode("ascii")
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if origin is not None:
        lines.append(f"Origin: {origin}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("ascii"))
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].decode("latin-1")
    if " 101 " not in status + " " or f"Sec-WebSocket-Accept: {accept_key(key)}".lower().encode() not in head.lower():
        writer.close()
        raise ConnectionError(f"WebSocket upgrade refused: {status}")
    return WebSocket(reader, writer, is_server=False, **kw)
