"""Test helpers for the bridge: an in-process server on a random loopback port, raw DEALER sockets."""

from __future__ import annotations

import socket
import time

import zmq

from plugin_bridge import protocol as P
from plugin_bridge.scripted_source import ScriptedSource
from plugin_bridge.server import BridgeServer, ServerConfig


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(source: ScriptedSource | None = None, **config) -> BridgeServer:
    config.setdefault("bind", "tcp://127.0.0.1:*")
    config.setdefault("heartbeat_s", 0.2)
    config.setdefault("session_timeout_s", 5.0)  # generous: raw test sockets send no heartbeats
    return BridgeServer(source or ScriptedSource(seconds=1.0), ServerConfig(**config)).start()


def wait_until(cond, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def raw_dealer(endpoint: str, ctx: zmq.Context | None = None, **opts) -> zmq.Socket:
    s = (ctx or zmq.Context.instance()).socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    for k, v in opts.items():
        s.setsockopt(getattr(zmq, k), v)
    s.connect(endpoint)
    return s


def recv_msg(sock: zmq.Socket, timeout_s: float = 5.0) -> P.Message | None:
    if not sock.poll(int(timeout_s * 1000)):
        return None
    return P.decode_frames(sock.recv_multipart())
