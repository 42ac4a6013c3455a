"""The bridge server: a ZeroMQ ROUTER that runs one session per client and streams each turn's events back.

Threads:

- the **main loop** (``run()``) owns the ROUTER socket and every session: it decodes client messages, keeps
  heartbeats and expiry, and sends. It never blocks on a client: sends are non-blocking (``ROUTER_MANDATORY``), a
  client whose ZeroMQ pipe is full gets its messages held in its own bounded queue (``max_pending``); past that its
  turn is cancelled with ``Error(CLIENT_TOO_SLOW)`` + ``TurnEnd(CANCELLED)``, so nothing is ever dropped silently and
  other clients never wait;
- **turn workers** (a thread pool, ``max_turn_workers``): a worker runs ``source.run_turn(...)`` for one turn,
  encodes the events into protocol payloads (:func:`~plugin_bridge.protocol.event_payload`), gives each its *due time*
  and appends them to the main loop's outbox (a deque plus a socket-pair doorbell; one worker at a time per turn, so a
  turn's messages stay in order). Nothing sleeps per message or per turn: a paced turn prepared far enough ahead of its
  due times *parks* (gives its thread back; the loop hands it to a worker again when about half of that is left, or at
  once when it is cancelled): 0.1 s ahead at first, doubling at each park up to ``pace_lookahead_s``, resumed at a
  random share of it (so that turns that start together do not all work at once), on one of ``PACE_WORKERS`` pace
  threads (on the turn pool once the source was seen blocking in ``next()``). Encoding and posting run in one
  production slot (a lock; the source's own ``next()`` outside it, as it may block), so turn threads wait on a lock
  rather than all fighting over the GIL with each other and with the loop that sends;
- optionally a :class:`~plugin_bridge.livelink_out.LiveLinkSender` thread pacing Live Link Face UDP packets;
- protocol version 2 (game characters, PROTOCOL.md §10): idle face frames on the main loop; configuration calls into
  the source that may wait (a Character's persona check and session reopening, a GameContext's or UserText's check)
  on a few config threads, the session's later messages held until it is answered (``_v2_offload``); the hands-free
  microphone's voice-activity detection on the pool (one job at a time per session); both hand their results back to
  the main loop (``_control``); per-session state in :mod:`plugin_bridge.character`.

**Pacing** (the source's ``pace`` > 0: release audio and face at most ``pace`` x real time) is one scheduler on the
main loop for every turn of every session: a heap of each session's next due time; the loop sleeps in its poll until
the earliest one (or a client message), then releases every message due by then (``PACE_SLACK_S`` early at most), for
all sessions, in one pass. A message's due time is ``t0 + position / 24000 / pace`` (``t0``: when the turn's first
audio or face was made; position: its first answer sample); text goes out with the audio or face that follows it
while the turn runs ahead of its schedule (as the source yielded it), at once otherwise; nothing overtakes an earlier
message of its turn. Unpaced turns are released as soon as the loop sees them.

Sequence numbers (header ``seq``) and ``send_time_us`` are stamped per session at the moment of sending (the header is
packed then), so a client always sees ``0, 1, 2, ...`` with no gap.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import heapq
import ipaddress
import itertools
import logging
import math
import random
import socket
import struct
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.signal  # noqa: F401  at start-up: the first import (~0.75 s) must not land on a turn
import zmq

from a2llm_rt.audio import INPUT_SAMPLE_RATE, resample
from a2llm_rt.audio_vad import VadConfig
from a2llm_rt.config import Config
from a2llm_rt.errors import InputError
from a2llm_rt.face.idle import idle_to_layout
from a2llm_rt.face.layouts import get_layout
from plugin_bridge import character as C
from plugin_bridge import protocol as P
from plugin_bridge import turn_source as ev
from plugin_bridge.livelink_out import LiveLinkSender

log = logging.getLogger("plugin_bridge.server")

SERVER_NAME = "a2llm-bridge/0.2"
PACE_SLACK_S = 0.002  # a paced message may leave this much before its due time (so one wake-up serves many turns)
PACE_FIRST_AHEAD_S = 0.1  # a paced turn's first look-ahead (it doubles up to ServerConfig.pace_lookahead_s)
PACE_WORKERS = 2  # threads that resume parked turns of sources that do not block
CONFIG_WORKERS = 4  # threads that apply protocol v2 configuration with the source (persona checks, reopening)
MAX_DEFERRED = 256  # messages a session may send while its configuration is being applied ...
MAX_DEFERRED_BYTES = 8 * 2**20  # ... and their bytes; past either, a message is refused (SERVER_BUSY)
PACE_BLOCKING_S = 0.005  # a next() that took longer marks the turn's source as blocking
_RESUME = -1  # outbox kind: a parked turn (payload: its _Run) to hand to a worker again at the due time


@dataclass
class ServerConfig(Config):
    """Bridge server settings."""

    bind: str = "tcp://127.0.0.1:5555"
    """ZeroMQ endpoint; ``tcp://127.0.0.1:*`` picks a free port. Non-loopback endpoints need ``curve_keys``."""
    curve_keys: str | None = None
    """Folder with ``server.key_secret`` and a ``clients/`` allow-list of public ``*.key`` files (``--make-curve-keys``
    writes both). Without ``clients/`` any client that knows the server's public key may connect (a warning says so)."""
    heartbeat_s: float = 1.0
    """Interval of the server's heartbeats (clients should send theirs at the same rate)."""
    session_timeout_s: float = 10.0
    """A session with no message from its client for this long is closed (its turn cancelled)."""
    max_sessions: int = 256
    """Sessions open at once; a Hello beyond them gets ``Error(SERVER_BUSY)``."""
    max_turn_workers: int = 64
    """Turns that run at once (threads); further turns wait for a free worker."""
    max_pending: int = 256
    """Messages held for one client once its ZeroMQ pipe (``sndhwm``) is full; beyond that its turn is cancelled."""
    sndhwm: int = 1000
    """ZeroMQ send high-water mark per client (messages its pipe holds before the server queues them itself)."""
    max_utterance_s: float = 60.0
    """Longest utterance a session may send; longer ones end with ``Error(AUDIO_TOO_LONG)`` + ``TurnEnd(FAILED)``."""
    max_input_mb: float = 512.0
    """Utterance audio buffered across all sessions (int16 at the input rate, 5.5 MiB for 60 s at 48 kHz); an utterance
    that would exceed it ends with ``Error(SERVER_BUSY)`` + ``TurnEnd(FAILED)``."""
    livelink: str | None = None
    """``HOST:PORT``: also send the face stream as Live Link Face UDP packets (one subject per session)."""
    pace_lookahead_s: float = 1.0
    """Paced sources: how far ahead of its release time a turn's events are prepared at most (a long turn's worker
    wakes once per half of this; more = fewer wake-ups, more memory per turn)."""
    vad: VadConfig = field(default_factory=VadConfig)
    """Hands-free talk: the utterance segmenter's thresholds (``serve --vad-*``; ServerInfo reports three of them)."""

    def validate(self) -> None:
        if self.heartbeat_s <= 0 or self.session_timeout_s <= self.heartbeat_s:
            raise ValueError("need 0 < heartbeat_s < session_timeout_s")
        for name in ("max_sessions", "max_turn_workers", "max_pending", "sndhwm"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.max_utterance_s <= 0 or self.max_input_mb <= 0:
            raise ValueError("max_utterance_s and max_input_mb must be > 0")
        if self.pace_lookahead_s <= 0:
            raise ValueError("pace_lookahead_s must be > 0")


def is_loopback_endpoint(endpoint: str) -> bool:
    """True for ``ipc://``, ``inproc://`` and ``tcp://`` on 127.0.0.0/8, ``::1`` or ``localhost``."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    if not endpoint.startswith("tcp://"):
        return False
    host = endpoint[len("tcp://") :].rsplit(":", 1)[0]
    if ";" in host:  # tcp://source;host:port: judge the bound host
        host = host.split(";", 1)[1]
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "*", an interface name or a DNS name


def make_curve_keys(key_dir: str | Path) -> tuple[Path, Path]:
    """Write ``server.key``/``server.key_secret``, one client keypair ``client.key``/``client.key_secret``, and the
    allow-list ``clients/client.key`` (so only listed clients get in: the server's public key alone opens nothing).
    Secret files are made 0600. Returns (server public key file, client secret key file).

    Add clients with ``zmq.auth.create_certificates(DIR, NAME)`` and copy ``NAME.key`` into ``clients/``."""
    import os

    import zmq.auth

    key_dir = Path(key_dir)
    key_dir.mkdir(parents=True, exist_ok=True)
    clients = key_dir / "clients"
    clients.mkdir(exist_ok=True)
    old_umask = os.umask(0o077)  # secrets are never readable by others, not even for a moment
    try:
        zmq.auth.create_certificates(key_dir, "server")
        _, client_secret = zmq.auth.create_certificates(key_dir, "client")
    finally:
        os.umask(old_umask)
    for secret in key_dir.glob("*.key_secret"):
        secret.chmod(0o600)
    (clients / "client.key").write_bytes((key_dir / "client.key").read_bytes())
    return key_dir / "server.key", Path(client_secret)


def load_certificate(path: str | Path) -> tuple[bytes, bytes | None]:
    """(public, secret or None) from a ZeroMQ certificate file; :class:`InputError` when unreadable."""
    import zmq.auth

    path = Path(path)
    if not path.is_file():
        raise InputError("CURVE certificate not found", path)
    try:
        return zmq.auth.load_certificate(path)
    except (ValueError, OSError) as e:
        raise InputError(f"not a ZeroMQ certificate: {e}", path) from None


def _to_16k(pcm: np.ndarray, rate: int) -> np.ndarray:
    """``[n]`` int16 at ``rate`` (one of :data:`~plugin_bridge.protocol.USER_AUDIO_RATES`) -> ``[m]`` float32 at
    16 kHz (polyphase resampling). Runs on a turn worker, never on the main loop."""
    return resample(pcm.astype(np.float32) / 32768.0, rate, INPUT_SAMPLE_RATE)


def _escape(text: str, limit: int = 200) -> str:
    """Client-supplied text for a log line: control characters (newlines too) escaped, so it cannot forge lines."""
    text = text[:limit]
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


@dataclass
class _Turn:
    turn_id: int
    cancel: threading.Event
    started: float


def _zero_counts() -> dict[str, int]:
    return dict.fromkeys(("tb", "td", "as", "ac", "ff"), 0)  # text bytes/deltas, audio samples/chunks, face frames


@dataclass
class _Session:
    sid: int
    identity: bytes
    layouts: tuple[int, ...]
    capabilities: int
    last_rx: float
    last_hb_tx: float = 0.0
    peer_time_us: int = 0
    tx_seq: int = 0
    pending: deque = field(default_factory=deque)  # (turn_id or 0 for control messages, kind, header turn_id, payload)
    timed: deque = field(default_factory=deque)  # paced messages not yet due: (due, turn_id, kind, payload)
    heap_due: float | None = None  # due time of this session's entry in the server's heap (None: no entry)
    parked: object | None = None  # its turn's _Run while parked (prepared ahead, no thread)
    turn: _Turn | None = None
    last_turn_id: int = 0
    rx_turn_id: int = 0  # turn whose utterance is being received (0 = none)
    rx_parts: list = field(default_factory=list)  # [n] int16 chunks at rx_rate
    rx_rate: int = 0
    rx_samples: int = 0
    dropped_turn: int = 0  # an utterance refused with Error + TurnEnd(FAILED): its later chunks are ignored
    sent_turn: int = 0  # the turn whose delivered messages `sent` counts
    sent: dict[str, int] = field(default_factory=_zero_counts)
    sent_started: float = 0.0  # that turn's start (monotonic s)
    sent_first_audio: float = -1.0  # s from that turn's start to the first AudioChunk sent (-1: none yet)
    version: int = 1  # the negotiated protocol version
    v2: C.CharacterSession | None = None  # version 2: the game character (persona, emotion, idle face, mic)
    deferred: deque | None = None  # v2: while the source applies a configuration, later messages wait here
    deferred_bytes: int = 0


class BridgeServer:
    """``BridgeServer(source, ServerConfig(...))``; ``run()`` blocks, ``start()`` runs in a thread, ``stop()`` ends.

    Raises :class:`InputError` for a non-loopback bind without CURVE keys or unreadable keys.
    """

    def __init__(self, source: ev.TurnSource, config: ServerConfig | None = None):
        self.source = source
        self.config = config or ServerConfig()
        if not is_loopback_endpoint(self.config.bind) and not self.config.curve_keys:
            raise InputError(
                f"refusing to bind {self.config.bind} without CURVE encryption: bind 127.0.0.1 or pass --curve-keys DIR"
                " (make keys with `python -m plugin_bridge.serve --make-curve-keys DIR`)"
            )
        self._curve: tuple[bytes, bytes] | None = None
        self._curve_clients: Path | None = None
        if self.config.curve_keys:
            pub, sec = load_certificate(Path(self.config.curve_keys) / "server.key_secret")
            if sec is None:
                raise InputError("server.key_secret holds no secret key", Path(self.config.curve_keys))
            self._curve = (pub, sec)
            clients = Path(self.config.curve_keys) / "clients"
            self._curve_clients = clients if clients.is_dir() else None
            if self._curve_clients is None:
                log.warning("%s has no clients/ allow-list: any client that knows the server key may connect", clients)
        self._livelink: LiveLinkSender | None = None
        if self.config.livelink:
            host, _, port = self.config.livelink.rpartition(":")
            if not host or not port.isdigit():
                raise InputError(f"--livelink must be HOST:PORT, got {self.config.livelink!r}")
            self._livelink = LiveLinkSender(host, int(port))
        self._layouts_avail = self._available_layouts()
        self._ctx = zmq.Context()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._sessions: dict[bytes, _Session] = {}
        self._by_sid: dict[int, _Session] = {}
        self._next_sid = 1
        self._rx_bytes = 0  # utterance audio buffered across sessions (bytes)
        # worker -> main loop: an outbox deque (append/popleft are atomic) and a doorbell socket pair rung only when
        # the main loop may be asleep. No socket call per message on either side: with dozens of turn threads, each
        # GIL release (every zmq frame send/recv) let the main loop queue behind the workers for a switch interval.
        self._outbox: deque[tuple[int, int, float, int, bytes]] = deque()  # (session, turn, due, kind, payload)
        self._heap: list[tuple[float, int, int]] = []  # (due, order, session id): each session's next paced message
        self._heap_order = itertools.count()
        self._stamp_us = 0  # send_time_us of the messages sent in this pass of the loop
        self._backlog: set[int] = set()  # sessions whose pipe was full with messages still queued
        self._resume: list[tuple[float, int, _Run]] = []  # (when, order, run): parked turns to hand to a worker
        self._bell_armed = True
        self._bell_rx, self._bell_tx = socket.socketpair()
        self._bell_rx.setblocking(False)
        self._bell_tx.setblocking(False)
        self.endpoint: str | None = None  # the bound endpoint (with the real port)
        self._router: zmq.Socket | None = None
        self._auth = None
        self._pool = ThreadPoolExecutor(self.config.max_turn_workers, thread_name_prefix="bridge-turn")
        self._producer = threading.Lock()  # the production slot of turns that prepare ahead of their schedule
        # resumed (parked) turns of sources that do not block run on a few threads of their own, so that hundreds of
        # paced turns never make hundreds of runnable threads
        self._pace_pool = ThreadPoolExecutor(PACE_WORKERS, thread_name_prefix="bridge-pace")
        # protocol v2 work with the source that may wait (a persona's check, reopening an engine session behind a
        # settling turn, a Ray call): never on the main loop (see _v2_offload)
        self._config_pool = ThreadPoolExecutor(CONFIG_WORKERS, thread_name_prefix="bridge-config")
        # protocol v2 (game characters): the shared face pipeline, the VAD (loaded on the first MicAudio), and
        # main-loop callbacks posted by the mic jobs (run by _drain_outbox)
        self._face, self._emotions = C.make_face(ev.FPS)
        self._segmenter = None
        self._control: deque = deque()

    # --- public ------------------------------------------------------------------------------------------------
    @property
    def num_sessions(self) -> int:
        return len(self._sessions)

    @property
    def public_key(self) -> bytes | None:
        return self._curve[0] if self._curve else None

    def start(self, timeout_s: float = 10.0) -> BridgeServer:
        """Run the loop on a background thread; returns once bound."""
        self._thread = threading.Thread(target=self.run, name="bridge-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise RuntimeError("bridge server did not start")
        if self._error is not None:
            raise self._error
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def run(self) -> None:
        """Bind and serve until :meth:`stop` (or a signal handler calling it)."""
        try:
            self._bind()
        except BaseException as e:
            self._error = e
            self._ready.set()
            self._close_sockets()
            raise
        self._ready.set()
        log.info("bridge server on %s", self.endpoint)
        # Move everything alive now (the engine, torch, numpy: hundreds of thousands of objects) out of the cyclic
        # collector's reach: otherwise each full collection walks them all and stalls every session's stream for
        # tens of milliseconds (the 64-session p99 of bench/bridge.py). Later garbage is still collected; collect first
        # so that no garbage is frozen with them.
        gc.collect()
        gc.freeze()
        try:
            self._loop()
        finally:
            self._shutdown()

    # --- setup / teardown --------------------------------------------------------------------------------------
    def _available_layouts(self) -> set[int]:
        names = set(self.source.layouts)
        if names & {"arkit52", "livelink61"}:
            names |= {"arkit52", "livelink61"}
        return {get_layout(n).layout_id for n in names}

    def _bind(self) -> None:
        r = self._ctx.socket(zmq.ROUTER)
        r.setsockopt(zmq.LINGER, 0)
        r.setsockopt(zmq.ROUTER_MANDATORY, 1)
        r.setsockopt(zmq.SNDHWM, self.config.sndhwm)
        r.setsockopt(zmq.RCVHWM, 10000)
        r.setsockopt(zmq.MAXMSGSIZE, P.HEADER_SIZE + P.MAX_PAYLOAD + 64)
        if self._curve is not None:
            if self._curve_clients is not None:
                from zmq.auth.thread import ThreadAuthenticator

                self._auth = ThreadAuthenticator(self._ctx)
                self._auth.start()
                self._auth.configure_curve(domain="*", location=str(self._curve_clients))
            r.curve_server = True
            r.curve_publickey, r.curve_secretkey = self._curve
        self._router = r
        try:
            r.bind(self.config.bind)
        except zmq.ZMQError as e:
            raise InputError(f"cannot bind {self.config.bind}: {e}") from None
        self.endpoint = r.getsockopt_string(zmq.LAST_ENDPOINT)

    def _close_sockets(self) -> None:
        if self._router is not None:
            self._router.close(0)
        self._bell_rx.close()
        self._bell_tx.close()
        if self._auth is not None:
            self._auth.stop()

    def _shutdown(self) -> None:
        for s in list(self._sessions.values()):
            self._close_session(s, P.ErrorCode.SHUTTING_DOWN, "server shutting down")
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pace_pool.shutdown(wait=True, cancel_futures=True)
        self._config_pool.shutdown(wait=True, cancel_futures=True)
        if self._livelink is not None:
            self._livelink.close()
        self._close_sockets()
        self._ctx.term()
        log.info("bridge server stopped")

    # --- main loop -----------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self._router, zmq.POLLIN)
        poller.register(self._bell_rx, zmq.POLLIN)
        next_tick = next_idle = 0.0
        heap = self._heap
        while not self._stop.is_set():
            waiting = bool(self._backlog)
            timeout = 2 if waiting else 50
            if heap:  # wake for the earliest paced message (whole ms, never after its slack runs out)
                timeout = min(timeout, max(0, math.ceil((heap[0][0] - PACE_SLACK_S - time.monotonic()) * 1000)))
            if self._resume:
                timeout = min(timeout, max(0, math.ceil((self._resume[0][0] - time.monotonic()) * 1000)))
            events = dict(poller.poll(timeout))
            now = time.monotonic()
            self._stamp_us = int(now * 1e6)  # time.monotonic() is the clock of _now_us too
            if events or self._outbox:
                self._drain_outbox(now)
            if heap and heap[0][0] <= now + PACE_SLACK_S:
                self._release_due(now)
            resume = self._resume
            while resume and resume[0][0] <= now:
                self._wake(heapq.heappop(resume)[2])
            if self._router in events:
                for _ in range(1000):
                    try:
                        frames = self._router.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self._from_client(frames)
            if waiting:
                for sid in list(self._backlog):
                    s = self._by_sid.get(sid)
                    if s is None:
                        self._backlog.discard(sid)
                    else:
                        self._flush(s)
            if now >= next_idle:
                next_idle = now + 0.02
                self._idle_tick(now)
            if now >= next_tick:
                next_tick = now + min(0.1, self.config.heartbeat_s / 4)
                self._tick(now)

    def _tick(self, now: float) -> None:
        for s in list(self._sessions.values()):
            if now - s.last_rx > self.config.session_timeout_s:
                log.info("session %d expired", s.sid)
                self._close_session(s, P.ErrorCode.SESSION_EXPIRED, "no message from the client: session expired")
            elif now - s.last_hb_tx >= self.config.heartbeat_s:
                s.last_hb_tx = now
                self._send(s, P.Heartbeat(_now_us(), s.peer_time_us, send_time_us=_now_us()))

    # --- sending -------------------------------------------------------------------------------------------------
    def _send(self, s: _Session, msg: P.Message, turn_id: int = 0) -> None:
        """Queue a control message (``turn_id``: the turn whose cancel drops it, 0 = none) and send what the pipe
        takes."""
        self._enqueue(s, turn_id, msg.KIND, msg.turn_id, msg.encode_frames()[1])
        self._flush(s)

    def _enqueue(self, s: _Session, turn_id: int, kind: int, header_turn: int, payload: bytes) -> None:
        """Queue one message for ``s`` (the caller flushes: one pass sends a whole batch); past ``max_pending`` queued
        the pipe is tried first, then the client is too slow."""
        s.pending.append((turn_id, kind, header_turn, payload))
        if len(s.pending) > self.config.max_pending:
            self._flush(s)
            if len(s.pending) > self.config.max_pending and s.sid in self._by_sid:
                self._too_slow(s)

    def _flush(self, s: _Session) -> None:
        """Send ``s``'s queued messages until its pipe is full (it then stays in the backlog the loop retries)."""
        pending = s.pending
        stamp = self._stamp_us or _now_us()
        send, pack = self._router.send, P.pack_header
        more, last = zmq.SNDMORE | zmq.NOBLOCK, zmq.NOBLOCK
        while pending:
            turn_id, kind, header_turn, payload = pending[0]
            try:  # ROUTER_MANDATORY decides on the identity frame; the rest of a message is then always taken
                send(s.identity, more)
            except zmq.Again:
                self._backlog.add(s.sid)
                return
            except zmq.ZMQError as e:  # EHOSTUNREACH: the client's connection is gone
                log.info("session %d: client unreachable (%s)", s.sid, e)
                pending.clear()
                self._close_session(s, None, "")
                return
            send(pack(kind, header_turn, len(payload), s.tx_seq, stamp, s.version), more)
            send(payload, last)
            pending.popleft()
            s.tx_seq += 1
            if turn_id and turn_id == s.sent_turn:
                self._count_sent(s, kind, payload)
        self._backlog.discard(s.sid)

    @staticmethod
    def _count_sent(s: _Session, kind: int, payload: bytes) -> None:
        """What a client actually got of a turn, and when its first audio went out (for a TurnEnd(CANCELLED))."""
        c = s.sent
        if kind == P.Kind.AUDIO_CHUNK and s.sent_first_audio < 0:
            s.sent_first_audio = time.monotonic() - s.sent_started
        layout_id = s.layouts[0]
        if kind == P.Kind.TEXT_DELTA:
            c["tb"] += len(payload) - 8
            c["td"] += 1
        elif kind == P.Kind.AUDIO_CHUNK:
            c["as"] += struct.unpack_from("<I", payload, 16)[0]
            c["ac"] += 1
        elif kind == P.Kind.FACE_FRAMES and payload[12] == layout_id:
            c["ff"] += struct.unpack_from("<I", payload, 16)[0]
        if s.v2 is not None:
            C.note_sent(s.v2, kind, payload)

    def _too_slow(self, s: _Session) -> None:
        """The client is too far behind: cancel its turn, drop that turn's queued messages, tell it why."""
        t = s.turn
        tid = t.turn_id if t is not None else 0
        log.warning("session %d: client too slow, %d messages pending; cancelling turn %d", s.sid, len(s.pending), tid)
        s.pending = deque(x for x in s.pending if tid == 0 or x[0] != tid)
        s.timed.clear()  # only the cancelled turn's messages wait there
        while len(s.pending) > self.config.max_pending // 2:  # heartbeats/errors only
            s.pending.popleft()
        if t is not None:
            t.cancel.set()
            self._wake(s.parked)  # type: ignore[arg-type]
            s.turn = None
            s.last_turn_id = max(s.last_turn_id, tid)
            if self._livelink is not None:
                self._livelink.clear(_subject(s.sid))
        msg = f"client too slow: more than {self.config.max_pending} messages waiting; turn {tid} cancelled"
        for m in (P.Error(P.ErrorCode.CLIENT_TOO_SLOW, msg, turn_id=tid), *([self._cancelled_end(s, t)] if t else [])):
            s.pending.append((0, m.KIND, m.turn_id, m.encode_frames()[1]))
        if t is not None and s.v2 is not None:
            self._v2_turn_over(s)
        self._flush(s)

    @staticmethod
    def _cancelled_end(s: _Session, t: _Turn) -> P.TurnEnd:
        """TurnEnd(CANCELLED): counts of what the client actually got and when its first audio went out (§4.6)."""
        ours = s.sent_turn == t.turn_id
        c = s.sent if ours else _zero_counts()
        return P.TurnEnd(
            P.TurnStatus.CANCELLED, first_audio_s=s.sent_first_audio if ours else -1.0,
            total_s=time.monotonic() - t.started,
            text_bytes=c["tb"], text_deltas=c["td"], audio_samples=c["as"], audio_chunks=c["ac"], face_frames=c["ff"],
            turn_id=t.turn_id, send_time_us=_now_us(),
        )  # fmt: skip

    # --- from workers --------------------------------------------------------------------------------------------
    def _post(self, sid: int, tid: int, due: float, kind: int, payload: bytes) -> None:
        """Worker side: hand one message (its kind and payload) to the main loop, to be sent at ``due`` (monotonic s;
        a turn's due times never decrease)."""
        self._outbox.append((sid, tid, due, kind, payload))
        self._ring()

    def _ring(self) -> None:
        """Wake the loop if it may be asleep (workers only)."""
        if self._bell_armed:
            self._bell_armed = False
            with contextlib.suppress(OSError):  # full (already rung) or closed (shutting down)
                self._bell_tx.send(b"\0")

    def _drain_outbox(self, now: float) -> None:
        """Take the workers' messages: due ones (and not behind a paced one of their session) go to the session's
        send queue, the others wait in its ``timed`` queue under a heap entry."""
        with contextlib.suppress(OSError):
            while self._bell_rx.recv(4096):
                pass
        self._bell_armed = True  # before draining: a message appended after this rings again
        box = self._outbox
        by_sid = self._by_sid
        touched: dict[int, _Session] = {}
        horizon = now + PACE_SLACK_S
        while box:
            sid, tid, due, kind, payload = box.popleft()
            s = by_sid.get(sid)
            live = not (s is None or s.turn is None or s.turn.turn_id != tid or s.turn.cancel.is_set())
            if kind == _RESUME:  # a turn parks until `due`; one cancelled meanwhile finishes at once
                run: _Run = payload  # type: ignore[assignment]
                run.parked = True
                if live:
                    s.parked = run  # type: ignore[union-attr]
                    heapq.heappush(self._resume, (due, next(self._heap_order), run))
                else:
                    self._wake(run)
                continue
            if not live:
                continue  # a cancelled or finished turn's late message
            if s.timed or due > horizon:
                if not s.timed:
                    self._schedule(s, due)
                s.timed.append((due, tid, kind, payload))
            else:
                self._release(s, tid, kind, payload)
                touched[sid] = s
        for s in touched.values():
            self._flush(s)
        while self._control:
            self._control.popleft()()

    def _wake(self, run: _Run | None) -> None:
        """Hand a parked turn to a worker (its resume time came, or it was cancelled); once."""
        if run is None or not run.parked:
            return
        run.parked = False
        s = self._by_sid.get(run.sid)
        if s is not None and s.parked is run:
            s.parked = None
        with contextlib.suppress(RuntimeError):  # shutting down: no more workers
            (self._pool if run.blocks or run.turn.cancel.is_set() else self._pace_pool).submit(self._produce, run)

    def _schedule(self, s: _Session, due: float) -> None:
        """``s.timed``'s first message is due at ``due``: make sure the heap wakes the loop by then."""
        if s.heap_due is None or due < s.heap_due:
            s.heap_due = due
            heapq.heappush(self._heap, (due, next(self._heap_order), s.sid))

    def _release_due(self, now: float) -> None:
        """Send every paced message due by ``now + PACE_SLACK_S``, all sessions in one pass."""
        heap, horizon = self._heap, now + PACE_SLACK_S
        while heap and heap[0][0] <= horizon:
            due, _, sid = heapq.heappop(heap)
            s = self._by_sid.get(sid)
            if s is None or s.heap_due != due:
                continue  # the session is gone, or an earlier entry replaced this one
            s.heap_due = None
            timed = s.timed
            while timed and timed[0][0] <= horizon:
                _, tid, kind, payload = timed.popleft()
                self._release(s, tid, kind, payload)
            if timed:
                self._schedule(s, timed[0][0])
            self._flush(s)

    def _release(self, s: _Session, tid: int, kind: int, payload: bytes) -> None:
        """One message of turn ``tid`` goes to the send queue (unless the turn was cancelled meanwhile); its TurnEnd
        ends the turn."""
        t = s.turn
        if t is None or t.turn_id != tid or t.cancel.is_set():
            return
        if kind == P.Kind.TURN_END:
            s.last_turn_id = max(s.last_turn_id, tid)
            s.turn = None
        self._enqueue(s, tid, kind, tid, payload)
        if kind == P.Kind.TURN_END and s.v2 is not None:
            self._v2_turn_over(s)

    # --- from clients --------------------------------------------------------------------------------------------
    def _from_client(self, frames: list[bytes]) -> None:
        identity = frames[0]
        s = self._sessions.get(identity)
        try:
            msg = P.decode_frames(frames[1:])
        except P.ProtocolError as e:
            log.info("malformed message from %s: %s", identity.hex(), _escape(str(e)))
            if s is not None:
                s.last_rx = time.monotonic()
                self._send(s, P.error_reply(e))
            else:
                self._reply_unknown(identity, P.error_reply(e))
            return
        if isinstance(msg, P.Hello):
            self._hello(identity, msg)
            return
        if s is None:
            if not isinstance(msg, P.Bye | P.Error):
                self._reply_unknown(identity, P.Error(P.ErrorCode.NOT_WELCOMED, "no session: send Hello"))
            return
        s.last_rx = time.monotonic()
        if s.deferred is not None and not isinstance(msg, P.Heartbeat | P.Bye):  # after the configuration
            self._defer(s, msg, sum(len(f) for f in frames[1:]))
            return
        try:
            self._handle(s, msg)
        except Exception as e:  # the engine or a bug: report, keep serving
            log.exception("session %d: error handling %s", s.sid, type(msg).__name__)
            self._send(s, P.Error(P.ErrorCode.INTERNAL, f"internal error: {type(e).__name__}"[:1000]))

    def _reply_unknown(self, identity: bytes, msg: P.Message) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self._router.send_multipart([identity, *msg.encode_frames()], zmq.NOBLOCK)

    def _hello(self, identity: bytes, msg: P.Hello) -> None:
        old = self._sessions.get(identity)
        if old is not None:
            self._close_session(old, None, "")
        version = min(P.MAX_VERSION, msg.max_version)  # the highest version in both ranges (§6.2)
        if version < max(1, msg.min_version):
            self._reply_unknown(
                identity,
                P.Error(P.ErrorCode.UNSUPPORTED_VERSION, f"server speaks versions 1 to {P.MAX_VERSION}"),
            )
            return
        if len(self._sessions) >= self.config.max_sessions:
            self._reply_unknown(identity, P.Error(P.ErrorCode.SERVER_BUSY, "too many sessions, try later"))
            return
        sid = self._next_sid
        self._next_sid += 1
        layouts = tuple(dict.fromkeys(x for x in msg.layouts if x in self._layouts_avail))
        caps = int(msg.capabilities) & int(P.Capability.TEXT | P.Capability.AUDIO | P.Capability.FACE)
        if not layouts:
            caps &= ~int(P.Capability.FACE)
        if version >= 2 and caps & P.Capability.FACE and msg.capabilities & P.Capability.IDLE_FACE:
            caps |= int(P.Capability.IDLE_FACE)
        s = _Session(sid, identity, layouts or (0,), caps, last_rx=time.monotonic(), version=version)
        try:
            self.source.open_session(sid)
        except ev.SourceBusyError as e:  # e.g. every engine cache row is taken
            self._reply_unknown(identity, P.Error(P.ErrorCode.SERVER_BUSY, f"no free session slot: {e}"[:1000]))
            return
        self._sessions[identity] = s
        self._by_sid[sid] = s
        s.last_hb_tx = time.monotonic()
        welcome = P.Welcome(
            version=version,
            session_id=sid,
            capabilities=caps | (int(P.Capability.LIVELINK_UDP) if self._livelink else 0),
            heartbeat_ms=round(self.config.heartbeat_s * 1000),
            session_timeout_ms=round(self.config.session_timeout_s * 1000),
            input_sample_rate=ev.INPUT_SAMPLE_RATE,
            output_sample_rate=ev.OUTPUT_SAMPLE_RATE,
            fps=ev.FPS,
            max_payload=P.MAX_PAYLOAD,
            layouts=tuple(P.LayoutInfo(lid, get_layout(lid).names) for lid in layouts),
            server_name=SERVER_NAME,
            send_time_us=_now_us(),
        )
        log.info("session %d opened for %s (%d sessions)", sid, _escape(msg.client_name), len(self._sessions))
        self._send(s, welcome)
        if version >= 2:
            self._v2_open(s)

    def _handle(self, s: _Session, msg: P.Message) -> None:
        if isinstance(msg, P.Heartbeat):  # answered at once, so the client's round trip is not held up (§6.4)
            s.peer_time_us = msg.time_us
            s.last_hb_tx = time.monotonic()
            self._send(s, P.Heartbeat(_now_us(), msg.time_us, send_time_us=_now_us()))
        elif isinstance(msg, P.UserAudio):
            self._user_audio(s, msg)
        elif isinstance(msg, P.Cancel):
            self._cancel(s, msg.turn_id)
        elif isinstance(msg, P.Bye):
            log.info("session %d: bye", s.sid)
            self._close_session(s, None, "")
        elif isinstance(msg, P.Error):
            log.info("session %d: client reports error %s: %s", s.sid, int(msg.code), _escape(msg.message))
        elif msg.KIND in P.CLIENT_KINDS_V2:
            if s.v2 is None:
                self._send(s, P.Error(P.ErrorCode.BAD_VALUE, f"{type(msg).__name__} needs protocol version 2"))
            else:
                self._v2_handle(s, msg)
        else:
            self._send(s, P.Error(P.ErrorCode.BAD_VALUE, f"{type(msg).__name__} is not a client message"))

    def _user_audio(self, s: _Session, msg: P.UserAudio) -> None:
        """One chunk of an utterance. A refused utterance ends once (:meth:`_refuse_utterance`); nothing heavier than
        an int16 copy happens here: resampling runs on the turn's worker."""
        tid = msg.turn_id
        if tid == 0 or (s.v2 is not None and tid & P.SERVER_TURN_BIT):  # v2: bit 31 marks the server's turns
            self._send(s, P.Error(P.ErrorCode.BAD_VALUE, "UserAudio needs a turn_id in 1 .. 0x7FFFFFFF (v1: > 0)"))
            return
        if tid == s.dropped_turn:
            return  # the rest of an utterance that was already refused and ended
        if s.turn is not None:
            self._refuse_utterance(
                s, tid, P.ErrorCode.TURN_IN_PROGRESS, f"turn {s.turn.turn_id} runs: Cancel it first; utterance dropped"
            )
            return
        if s.rx_turn_id != tid:  # a new utterance (a half-sent one is abandoned)
            self._drop_rx(s)
            s.rx_turn_id, s.rx_rate = tid, msg.sample_rate
        if msg.sample_rate not in P.USER_AUDIO_RATES:
            rates = ", ".join(str(r) for r in P.USER_AUDIO_RATES)
            self._refuse_utterance(
                s, tid, P.ErrorCode.BAD_VALUE,
                f"UserAudio sample_rate {msg.sample_rate} Hz is not supported (use one of {rates}); utterance dropped",
            )  # fmt: skip
            return
        if msg.sample_rate != s.rx_rate or msg.sample_offset != s.rx_samples:
            self._refuse_utterance(
                s, tid, P.ErrorCode.BAD_VALUE,
                f"UserAudio out of sequence: expected offset {s.rx_samples} at {s.rx_rate} Hz, "
                f"got {msg.sample_offset} at {msg.sample_rate} Hz; utterance dropped",
            )  # fmt: skip
            return
        pcm = msg.samples
        if pcm.dtype != np.int16:  # F32: full scale is [-1, 1]; louder samples would poison the model (NaN)
            peak = float(np.abs(pcm).max()) if pcm.size else 0.0
            if peak > 1.0:
                self._refuse_utterance(
                    s, tid, P.ErrorCode.BAD_VALUE,
                    f"UserAudio F32 samples must lie in [-1.0, 1.0]; got a peak of {peak:.4g}; utterance dropped",
                )  # fmt: skip
                return
            pcm = np.round(pcm * 32767.0).astype(np.int16)
        n = int(pcm.shape[0])
        if s.rx_samples + n > self.config.max_utterance_s * s.rx_rate:
            self._refuse_utterance(
                s, tid, P.ErrorCode.AUDIO_TOO_LONG,
                f"utterance longer than {self.config.max_utterance_s:g} s; dropped",
            )  # fmt: skip
            return
        if self._rx_bytes + pcm.nbytes > self.config.max_input_mb * 2**20:
            self._refuse_utterance(
                s, tid, P.ErrorCode.SERVER_BUSY,
                f"the server's buffer for incoming speech ({self.config.max_input_mb:g} MiB over all sessions) is full;"
                " utterance dropped, try again",
            )  # fmt: skip
            return
        s.rx_parts.append(pcm.copy())  # a copy: the decoded array is a view of the whole ZeroMQ frame
        self._rx_bytes += pcm.nbytes
        s.rx_samples += n
        if msg.end_of_utterance:
            pcm = np.concatenate(s.rx_parts) if s.rx_parts else np.zeros(0, np.int16)
            rate = s.rx_rate
            self._drop_rx(s)
            t = _Turn(tid, threading.Event(), time.monotonic())
            s.turn = t
            s.last_turn_id = max(s.last_turn_id, tid)
            s.sent_turn, s.sent, s.sent_started, s.sent_first_audio = tid, _zero_counts(), t.started, -1.0
            if s.v2 is not None:
                self._v2_turn_starts(s)
            self._pool.submit(self._run_turn, s.sid, t, pcm, rate, s.layouts, s.capabilities)

    def _drop_rx(self, s: _Session) -> None:
        """Forget the utterance being received (its buffer leaves the input budget)."""
        self._rx_bytes -= sum(p.nbytes for p in s.rx_parts)
        s.rx_turn_id, s.rx_parts, s.rx_rate, s.rx_samples = 0, [], 0, 0

    def _refuse_utterance(self, s: _Session, tid: int, code: P.ErrorCode, message: str) -> None:
        """End utterance ``tid`` once: ``Error(code)`` then ``TurnEnd(FAILED)``; its further chunks are ignored."""
        if s.rx_turn_id == tid:
            self._drop_rx(s)
        s.dropped_turn = tid
        s.last_turn_id = max(s.last_turn_id, tid)
        self._send(s, P.Error(code, message, turn_id=tid))
        self._send(s, P.TurnEnd(P.TurnStatus.FAILED, turn_id=tid, send_time_us=_now_us()))

    def _cancel(self, s: _Session, turn_id: int) -> None:
        t = s.turn
        if t is not None and turn_id in (0, t.turn_id):
            t.cancel.set()
            self._wake(s.parked)  # type: ignore[arg-type]
            s.turn = None
            s.last_turn_id = max(s.last_turn_id, t.turn_id)
            dropped = [(x[1], x[3]) for x in s.pending if x[0] == t.turn_id]  # (kind, payload), in order
            dropped += [(x[2], x[3]) for x in s.timed]
            s.pending = deque(x for x in s.pending if x[0] != t.turn_id)
            s.timed.clear()
            if self._livelink is not None:  # a character's idle face takes over from where it was (no neutral pop)
                self._livelink.clear(_subject(s.sid), rest=s.v2 is None or not s.v2.idle)
            end = self._cancelled_end(s, t)
            if s.v2 is not None:
                end = self._v2_fade(s, t, dropped, end)
            self._send(s, end)
            if s.v2 is not None:
                self._v2_turn_over(s)
        elif s.rx_turn_id and turn_id in (0, s.rx_turn_id):  # cancelled while still speaking
            tid = s.rx_turn_id
            self._drop_rx(s)
            s.dropped_turn = tid
            s.last_turn_id = max(s.last_turn_id, tid)
            self._send(s, P.TurnEnd(P.TurnStatus.CANCELLED, turn_id=tid, send_time_us=_now_us()))
        elif turn_id > s.last_turn_id:
            self._send(s, P.Error(P.ErrorCode.UNKNOWN_TURN, f"no turn {turn_id} to cancel", turn_id=turn_id))
        # else: the turn already ended; the Cancel crossed its TurnEnd

    def _close_session(self, s: _Session, code: P.ErrorCode | None, message: str) -> None:
        self._drop_rx(s)
        s.timed.clear()
        if s.turn is not None:
            s.turn.cancel.set()
            self._wake(s.parked)  # type: ignore[arg-type]
            s.turn = None
            if self._livelink is not None:  # a finished turn's queued Live Link frames still play out
                self._livelink.clear(_subject(s.sid))
        if code is not None:
            with contextlib.suppress(zmq.ZMQError):
                self._router.send_multipart([s.identity, *P.Error(code, message).encode_frames()], zmq.NOBLOCK)
        self._sessions.pop(s.identity, None)
        self._backlog.discard(s.sid)
        if self._by_sid.pop(s.sid, None) is not None:
            try:
                self.source.close_session(s.sid)
            except Exception:
                log.exception("source.close_session(%d) failed", s.sid)
        log.info("session %d closed (%d sessions)", s.sid, len(self._sessions))

    # --- protocol v2: game characters (PROTOCOL.md §10) ------------------------------------------------------------
    def _v2_limits(self) -> tuple[ev.CharacterLimits, int]:
        """The source's text limits and the game-context limit a client gets (room kept for the emotion sentence)."""
        lim = getattr(self.source, "limits", None) or ev.CharacterLimits()
        reserve = max(len(self._emotions.instruction(n, 1.0)) for n in self._emotions.names) + 1
        return lim, max(0, lim.context - reserve)

    def _v2_open(self, s: _Session) -> None:
        """After a v2 Welcome: the session's character state and the ServerInfo (§10.3)."""
        cs = C.CharacterSession(
            s.sid, s.layouts, bool(s.capabilities & P.Capability.IDLE_FACE), self._face, self._emotions, None, s.sid
        )
        s.v2 = cs
        lim, context = self._v2_limits()
        vad = self.config.vad
        self._send(
            s,
            P.ServerInfo(
                lim.persona, context, lim.text, round(vad.min_speech_ms), round(vad.min_silence_ms),
                round(vad.barge_in_ms), C.MIC_RATES, tuple(getattr(self.source, "voices", ())), self._emotions.names,
                send_time_us=_now_us(),
            ),
        )  # fmt: skip
        if cs.idle:
            cs.resume_idle(time.monotonic())

    def _v2_handle(self, s: _Session, msg: P.Message) -> None:
        cs = s.v2
        assert cs is not None
        if isinstance(msg, P.UserText):
            self._user_text(s, msg)
        elif isinstance(msg, P.MicAudio):
            self._mic_audio(s, cs, msg)
        else:
            try:
                flags = self._v2_config(s, cs, msg)
            except C.TextRefused as e:
                self._send(s, P.Error(e.code, e.message[:1000]))
                return
            except InputError as e:  # the engine's check of untrusted text (chat control tokens, ...)
                self._send(s, P.Error(P.ErrorCode.BAD_TEXT, str(e)[:1000]))
                return
            if flags is not None:
                self._send(s, P.ConfigAck(msg.KIND, flags, send_time_us=_now_us()))

    def _v2_config(self, s: _Session, cs: C.CharacterSession, msg: P.Message) -> int | None:
        """Apply a Character / GameContext / SetEmotion; ConfigAck flags, or None after sending an Error."""
        lim, context_limit = self._v2_limits()
        if isinstance(msg, P.GameContext):
            text = C.check_text(msg.text, "game context", context_limit, allow_empty=True)

            def context_applied(_: object) -> None:
                cs.context = text
                self._send(s, P.ConfigAck(msg.KIND, 0, send_time_us=_now_us()))

            if text and hasattr(self.source, "check_text"):  # the engine's tokenizer (a Ray call for RaySource)
                self._v2_offload(
                    s, functools.partial(self.source.check_text, text, "game context", context_limit), context_applied
                )
            else:
                context_applied(None)
            return None
        name = msg.name if isinstance(msg, P.SetEmotion) else (msg.emotion or "neutral")
        if name not in self._emotions.names:
            known = ", ".join(self._emotions.names)
            self._send(s, P.Error(P.ErrorCode.UNKNOWN_EMOTION, f"unknown emotion {name!r} (known: {known})"[:1000]))
            return None
        if isinstance(msg, P.SetEmotion):
            e = C.Emotion(name, msg.intensity)
            if msg.scope == P.EmotionScope.NEXT_TURN:
                cs.next_turn = e
            else:
                cs.default = e
                cs.apply_face_emotion()
            return 0
        assert isinstance(msg, P.Character)
        if s.turn is not None:
            self._send(s, P.Error(P.ErrorCode.TURN_IN_PROGRESS, "Character only between turns: Cancel the turn first"))
            return None
        voices = tuple(getattr(self.source, "voices", ()))
        try:
            C.check_voice(msg.voice, voices)
        except InputError as e:
            self._send(s, P.Error(P.ErrorCode.UNKNOWN_VOICE, str(e)[:1000]))
            return None
        persona = C.check_text(msg.persona, "persona", lim.persona, allow_empty=True) or None
        configure = getattr(self.source, "configure", None)
        if configure is None and (persona or msg.voice):
            self._send(s, P.Error(P.ErrorCode.BAD_VALUE, "this server's source takes no persona or voice"))
            return None

        def applied(reset: bool) -> None:  # main loop, once the source took it
            cs.persona, cs.voice, cs.modes = persona or "", msg.voice, msg.emotion_modes
            cs.default = C.Emotion(name, msg.intensity)
            cs.apply_face_emotion()
            self._send(s, P.ConfigAck(msg.KIND, P.CONFIG_ACK_CONVERSATION_RESET if reset else 0,
                                      send_time_us=_now_us()))  # fmt: skip

        if configure is None:
            applied(False)
        else:  # the source checks the persona and may reopen its session (waits for a cancelled turn to settle)
            self._v2_offload(s, functools.partial(configure, s.sid, persona, msg.voice or None), applied)
        return None

    def _user_text(self, s: _Session, msg: P.UserText) -> None:
        tid = msg.turn_id
        if tid == 0 or tid & P.SERVER_TURN_BIT:
            self._send(s, P.Error(P.ErrorCode.BAD_VALUE, "UserText needs a turn_id in 1 .. 0x7FFFFFFF"))
            return
        if s.turn is not None:
            self._refuse_utterance(
                s, tid, P.ErrorCode.TURN_IN_PROGRESS, f"turn {s.turn.turn_id} runs: Cancel it first; text dropped"
            )
            return
        if not hasattr(self.source, "check_text"):  # a source without an engine: audio turns only
            self._refuse_utterance(s, tid, P.ErrorCode.BAD_VALUE, "this server's source takes no typed turns")
            return
        lim, _ = self._v2_limits()
        try:
            text = C.check_text(msg.text, "text turn", lim.text, allow_empty=False)
        except C.TextRefused as e:
            self._refuse_utterance(s, tid, e.code, e.message[:1000])
            return

        def checked(clean: str) -> None:  # main loop; nothing of this session ran meanwhile (messages deferred)
            self._v2_start_turn(s, tid, clean, 0)

        def refused(e: BaseException) -> bool:
            if not isinstance(e, InputError):
                return False
            self._refuse_utterance(s, tid, P.ErrorCode.BAD_TEXT, str(e)[:1000])
            return True

        s.last_turn_id = max(s.last_turn_id, tid)  # a Cancel of it meanwhile is not an unknown turn
        self._v2_offload(s, functools.partial(self.source.check_text, text, "text turn", lim.text), checked, refused)

    def _v2_start_turn(self, s: _Session, tid: int, pcm: np.ndarray | str, rate: int) -> None:
        """Start turn ``tid`` from text (``pcm`` a str) or ``[n]`` int16 audio at ``rate``."""
        t = _Turn(tid, threading.Event(), time.monotonic())
        s.turn = t
        if not tid & P.SERVER_TURN_BIT:
            s.last_turn_id = max(s.last_turn_id, tid)
        s.sent_turn, s.sent, s.sent_started, s.sent_first_audio = tid, _zero_counts(), t.started, -1.0
        self._v2_turn_starts(s)
        self._pool.submit(self._run_turn, s.sid, t, pcm, rate, s.layouts, s.capabilities)

    def _v2_offload(self, s: _Session, work, done, refused=None) -> None:
        """Run ``work()`` (a call into the source that may wait) on the config pool; then, on the main loop,
        ``done(result)``, or for an exception ``refused(exc)`` (True: handled) else the usual Error (InputError:
        BAD_TEXT; TextRefused: its code; others: INTERNAL). Until then the session's later messages (and its mic's
        events) wait in ``s.deferred`` and are handled afterwards in order: a UserText right after a Character runs
        with the new character."""
        s.deferred, s.deferred_bytes = deque(), 0

        def job() -> None:
            try:
                result, exc = work(), None
            except Exception as e:  # noqa: BLE001 - handed to the main loop
                result, exc = None, e
            self._post_control(lambda: self._v2_offloaded(s, done, refused, result, exc))

        self._config_pool.submit(job)

    def _v2_offloaded(self, s: _Session, done, refused, result: object, exc: BaseException | None) -> None:
        """Main loop: an offloaded call finished: answer it, then handle what the session sent meanwhile."""
        if self._by_sid.get(s.sid) is not s:
            return  # the session closed meanwhile
        held, s.deferred, s.deferred_bytes = s.deferred or deque(), None, 0
        try:
            if exc is None:
                done(result)
            elif refused is None or not refused(exc):
                if isinstance(exc, C.TextRefused):
                    self._send(s, P.Error(exc.code, exc.message[:1000]))
                elif isinstance(exc, InputError):
                    self._send(s, P.Error(P.ErrorCode.BAD_TEXT, str(exc)[:1000]))
                else:
                    log.error("session %d: configuration failed", s.sid, exc_info=exc)
                    self._send(s, P.Error(P.ErrorCode.INTERNAL, f"internal error: {type(exc).__name__}"[:1000]))
        except Exception as e:
            log.exception("session %d: error finishing a configuration", s.sid)
            self._send(s, P.Error(P.ErrorCode.INTERNAL, f"internal error: {type(e).__name__}"[:1000]))
        while held and self._by_sid.get(s.sid) is s:
            item, size = held.popleft()
            if s.deferred is not None:  # handling one of them started another offload: the rest wait again
                s.deferred.append((item, size))
                s.deferred_bytes += size
                continue
            try:
                if callable(item):  # a mic event callback
                    item()
                else:
                    self._handle(s, item)
            except Exception as e:  # the engine or a bug: report, keep serving
                log.exception("session %d: error handling a deferred message", s.sid)
                self._send(s, P.Error(P.ErrorCode.INTERNAL, f"internal error: {type(e).__name__}"[:1000]))

    def _defer(self, s: _Session, item: object, size: int) -> None:
        """Hold a message (or a mic event callback) until the session's configuration is applied (bounded)."""
        if not callable(item) and (len(s.deferred) >= MAX_DEFERRED or s.deferred_bytes + size > MAX_DEFERRED_BYTES):
            self._send(s, P.Error(
                P.ErrorCode.SERVER_BUSY,
                f"{type(item).__name__} dropped: over {MAX_DEFERRED} messages or {MAX_DEFERRED_BYTES >> 20} MiB sent "
                "while the session's configuration was being applied; wait for its ConfigAck",
                turn_id=getattr(item, "turn_id", 0),
            ))  # fmt: skip
            return
        s.deferred.append((item, size))
        s.deferred_bytes += size

    def _v2_turn_starts(self, s: _Session) -> None:
        cs = s.v2
        cs.turn_emotion, cs.next_turn = cs.next_turn, None
        cs.apply_face_emotion()
        if cs.mic is not None:
            cs.mic.answering = True

    def _v2_prepare(self, sid: int) -> C.CharacterSession | None:
        """Worker, before the source runs the turn: the engine's game context (+ the emotion sentence)."""
        s = self._by_sid.get(sid)
        cs = s.v2 if s is not None else None
        set_context = getattr(self.source, "set_context", None)
        if cs is not None and set_context is not None:
            lim, _ = self._v2_limits()
            try:
                set_context(sid, cs.prompt_context(lim.context))
            except InputError as e:  # checked when it arrived; only a race with a closing session lands here
                log.warning("session %d: game context not applied: %s", sid, e)
        return cs

    def _v2_turn_over(self, s: _Session) -> None:
        """Main loop: the session's turn ended (TurnEnd queued): per-turn emotion back to the default, the VAD
        stops treating speech as barge-in, the idle face resumes once the answer has played out."""
        cs = s.v2
        if cs.turn_emotion is not None:
            cs.turn_emotion = None
            cs.apply_face_emotion()
        if cs.mic is not None:
            cs.mic.answering = False
        now = time.monotonic()
        at = now
        if s.sent_first_audio >= 0:
            at = max(now, s.sent_started + s.sent_first_audio + s.sent["as"] / ev.OUTPUT_SAMPLE_RATE)
        cs.resume_idle(at, cs.last_sent_face)

    def _v2_fade(self, s: _Session, t: _Turn, dropped: list, end: P.TurnEnd) -> P.TurnEnd:
        """A cancelled v2 turn: send the 15 ms fade AudioChunk (§10.10); the TurnEnd's counts include it."""
        if not s.capabilities & P.Capability.AUDIO or s.sent_turn != t.turn_id or s.sent["ac"] == 0:
            return end
        nxt = None
        for kind, payload in dropped:  # the next audio the client would have got (queued or scheduled)
            if kind == P.Kind.AUDIO_CHUNK:
                nxt = P.decode_frames([P.pack_header(kind, t.turn_id, len(payload)), payload]).samples
                break
        pcm = C.fade_out(nxt, s.v2.last_sample)
        chunk = P.AudioChunk(pcm, ev.OUTPUT_SAMPLE_RATE, s.sent["as"], turn_id=t.turn_id, send_time_us=_now_us())
        self._enqueue(s, 0, chunk.KIND, t.turn_id, chunk.encode_frames()[1])  # counted here, not by _count_sent
        return dataclasses.replace(
            end, audio_samples=end.audio_samples + pcm.size, audio_chunks=end.audio_chunks + 1, send_time_us=_now_us()
        )

    def _idle_tick(self, now: float) -> None:
        """Main loop: idle face frames due for every v2 session granted IDLE_FACE (§10.9)."""
        for s in list(self._sessions.values()):
            cs = s.v2
            if cs is None or not cs.idle or len(s.pending) > self.config.max_pending // 4:
                continue
            due = cs.idle_frames(now, ev.FPS)
            if due is None:
                continue
            first, frames = due
            if self._livelink is not None:  # idle life (with the character's emotion) on Live Link too, unless a
                with cs.face_lock:  # turn took the face since (its frames went to Live Link first: none after them)
                    if cs.face_turn == 0:
                        self._livelink.push(_subject(s.sid), first, frames, ev.FPS)
            for lid in cs.layouts:
                v = idle_to_layout(frames, lid)
                self._send(s, P.FaceFrames(first, ev.FPS, lid, v, turn_id=0, send_time_us=_now_us()))

    def _mic_audio(self, s: _Session, cs: C.CharacterSession, msg: P.MicAudio) -> None:
        if cs.mic is None:
            if self._segmenter is None:
                from a2llm_rt.audio_vad import UtteranceSegmenter

                self._segmenter = UtteranceSegmenter(self.config.vad)
            cs.mic = C.MicStream(self._segmenter)
            cs.mic.answering = s.turn is not None
        refused = cs.mic.accept(msg)
        if refused is not None:
            self._send(s, P.Error(refused[0], refused[1]))
        if cs.mic.claim():
            self._pool.submit(self._mic_job, s.sid, cs.mic)

    def _mic_job(self, sid: int, mic: C.MicStream) -> None:
        """Pool thread: run the session's queued mic audio through the VAD; events go to the main loop."""
        try:
            mic.feed(lambda evs: self._post_control(lambda: self._mic_events(sid, evs)))
        except Exception:
            log.exception("session %d: voice-activity detection failed", sid)
            with mic.qlock:
                mic.queue.clear()
                mic.busy = False

    def _post_control(self, fn) -> None:
        self._control.append(fn)
        self._ring()

    def _mic_events(self, sid: int, events: list[C.MicEvent]) -> None:
        """Main loop: SpeechStarted / SpeechEnded (+ the utterance's turn) / BargeIn (§10.8)."""
        from a2llm_rt.audio_vad import BargeIn, SpeechEnd, SpeechStart

        s = self._by_sid.get(sid)
        if s is None or s.v2 is None:
            return
        if s.deferred is not None:  # after the configuration being applied, in order with the client's messages
            self._defer(s, lambda: self._mic_events(sid, events), 0)
            return
        cs = s.v2
        for me in events:
            e = me.event
            if isinstance(e, BargeIn):
                if s.turn is not None:
                    self._barge_in(s, me.start, me.detected)
            elif isinstance(e, SpeechStart):
                cs.next_server_turn += 1
                cs.speech_turn = cs.next_server_turn
                cs.set_listening(True)
                self._send(s, P.SpeechStarted(me.start, me.detected, turn_id=cs.speech_turn, send_time_us=_now_us()))
            elif isinstance(e, SpeechEnd):
                if not cs.speech_turn:
                    cs.next_server_turn += 1
                    cs.speech_turn = cs.next_server_turn
                tid, cs.speech_turn = cs.speech_turn, 0
                cs.set_listening(False)
                reason = {"silence": 0, "max_length": 1}.get(e.reason, 2)
                self._send(
                    s, P.SpeechEnded(me.start, me.end, me.detected, reason, turn_id=tid, send_time_us=_now_us())
                )
                if s.turn is not None:  # speech that ends while an answer runs replaces it
                    self._barge_in(s, me.start, me.detected)
                pcm = np.round(np.clip(e.audio, -1.0, 1.0) * 32767.0).astype(np.int16)
                self._v2_start_turn(s, tid, pcm, ev.INPUT_SAMPLE_RATE)

    def _barge_in(self, s: _Session, speech: int, detected: int) -> None:
        t = s.turn
        self._send(s, P.BargeIn(speech, detected, turn_id=t.turn_id, send_time_us=_now_us()))
        self._cancel(s, t.turn_id)

    # --- turn worker (runs on the pool) --------------------------------------------------------------------------
    def _encode(self, e: ev.Event, run: _Run) -> list[tuple[int, bytes]]:
        """The (kind, payload) messages of one event for the turn's session (its capabilities and face layouts; a
        version 2 session's face goes through its character: idle crossfade and emotion), its Live Link frames
        pushed."""
        caps = run.caps
        if isinstance(e, ev.TextDelta):
            return [P.event_payload(e, byte_offset=run.text_offset)] if caps & P.Capability.TEXT else []
        if isinstance(e, ev.AudioChunk):
            return [P.event_payload(e)] if caps & P.Capability.AUDIO else []
        if isinstance(e, ev.FaceFrames):
            live = self._livelink is not None
            if run.v2 is None:
                if live:
                    self._livelink.push(_subject(run.sid), e.first_frame, e.livelink61, e.fps)
                return [P.event_payload(e, layout=name) for name in run.names] if caps & P.Capability.FACE else []
            # a version 2 session: one pass through the character's face (idle crossfade + emotion) for the client's
            # layouts and Live Link alike
            names = run.names if caps & P.Capability.FACE else []
            want = [*names, "livelink61"] if live and "livelink61" not in names else names
            if not want:
                return []
            out = []
            for n, v in run.v2.turn_face(run.turn.turn_id, e.frames, want, run.turn.cancel):
                if live and n == "livelink61":
                    self._livelink.push(_subject(run.sid), e.first_frame, v, e.fps)
                if n in names:
                    out.append((P.Kind.FACE_FRAMES, P.face_payload(e.first_frame, e.fps, n, v)))
            return out
        return []

    def _run_turn(self, sid: int, t: _Turn, pcm: np.ndarray, rate: int, layouts: tuple[int, ...], caps: int) -> None:
        """Worker: resample the utterance (``[n]`` int16 at ``rate``), start the turn, then produce it
        (:meth:`_produce`)."""
        run = _Run(sid, t, caps, [get_layout(lid).name for lid in layouts if lid],
                   _TurnClock(max(0.0, float(getattr(self.source, "pace", 0.0) or 0.0))),
                   min(PACE_FIRST_AHEAD_S, self.config.pace_lookahead_s),
                   functools.partial(random.Random(sid * 1_000_003 + t.turn_id).uniform, 0.25, 0.75))  # fmt: skip
        try:
            audio = pcm if isinstance(pcm, str) else _to_16k(pcm, rate)  # str: a typed turn (protocol v2)
            del pcm
            run.v2 = self._v2_prepare(sid)
            run.lag = time.monotonic() - t.started  # the source's clock starts now: its timings are shifted by this
            run.gen = self.source.run_turn(sid, audio, t.cancel)
            run.it = iter(run.gen)
        except Exception as exc:
            self._finish(run, exc)
            return
        self._produce(run)

    def _produce(self, run: _Run) -> None:
        """Worker: make the turn's messages and post them with their due times (see the module docstring), until
        the turn ends, or until it is prepared ``run.lookahead`` ahead of its schedule: it then *parks* (gives its
        thread back) and the loop hands it to a worker again when about half of that is left, or at once when the
        turn is cancelled. Never waits per message."""
        t, clock, cancel = run.turn, run.clock, run.turn.cancel
        try:
            while not cancel.is_set():
                t_next = time.monotonic()
                e = next(run.it, None)  # outside the slot: a source may block here (the engine generating)
                if not run.blocks and time.monotonic() - t_next > PACE_BLOCKING_S:
                    run.blocks = True  # its later resumes go to the turn pool, never to the few pace threads
                if e is None or cancel.is_set():
                    break
                if isinstance(e, ev.TurnEnd):
                    run.timings = e
                    continue
                # encoding and posting happen in the production slot: turn threads then wait on one lock instead
                # of all fighting over the GIL (with each other and with the loop that sends). A turn ahead of its
                # schedule waits for the slot while it has slack; one on or behind its schedule 2 ms at most.
                slack = clock.last - time.monotonic() - PACE_FIRST_AHEAD_S / 2
                slot = self._producer.acquire(timeout=max(slack, 0.002))
                try:
                    items = self._encode(e, run)
                    if isinstance(e, ev.TextDelta):
                        run.text_offset += len(e.text.encode("utf-8"))
                    _count(run.counts, e)
                    now = time.monotonic()
                    due = clock.due(ev.event_position(e), now)
                    if due is None:  # text while the turn runs ahead of its schedule: it goes with what follows it
                        run.held.extend(items)
                        continue
                    if isinstance(e, ev.AudioChunk) and run.first_audio < 0:
                        run.first_audio = max(due, now) - t.started
                    self._post_all(run, due, run.held + items if run.held else items)
                    run.held.clear()
                finally:
                    if slot:
                        self._producer.release()
                if clock.last - now > run.lookahead:  # prepared far enough ahead: park until about half is left
                    # (a random share, so that turns that started together do not all wake and work at once)
                    at = clock.last - run.lookahead * run.rest_share()
                    run.lookahead = min(2 * run.lookahead, self.config.pace_lookahead_s)
                    self._outbox.append((run.sid, t.turn_id, at, _RESUME, run))  # type: ignore[arg-type]
                    self._ring()
                    return
        except Exception as exc:
            self._finish(run, exc)
            return
        self._finish(run, None)

    def _post_all(self, run: _Run, due: float, items: list[tuple[int, bytes]]) -> None:
        for kind, payload in items:
            self._post(run.sid, run.turn.turn_id, due, kind, payload)

    def _finish(self, run: _Run, exc: BaseException | None) -> None:
        """Worker: the turn's last messages (TurnEnd, or Error + TurnEnd(FAILED) for ``exc``), the source's
        generator closed (a source stopped early ends its turn now), Live Link rests."""
        t, sid, tid = run.turn, run.sid, run.turn.turn_id
        try:
            if exc is None and not t.cancel.is_set():
                end = run.clock.end(time.monotonic())
                tm = run.timings if run.timings is not None else ev.TurnEnd(sid, -1.0, -1.0, -1.0)
                status = P.TurnStatus.CANCELLED if tm.cancelled else P.TurnStatus.COMPLETED
                ttft, ttfa = (run.lag + x if x >= 0 else -1.0 for x in (tm.ttft_s, tm.ttfa_s))
                c = run.counts
                msg = P.TurnEnd(
                    status, ttft, ttfa, run.first_audio, tm.rtf, end - t.started, c["tb"], c["td"], c["as"],
                    c["ac"], c["ff"], turn_id=tid,
                )  # fmt: skip
                self._post_all(run, end, [*run.held, (msg.KIND, msg.encode_frames()[1])])
            elif exc is not None:
                if isinstance(exc, ev.TurnError):  # reported by the source (e.g. refused input): no traceback
                    log.warning("session %d turn %d failed: %s", sid, tid, exc)
                else:
                    log.error("session %d turn %d failed", sid, tid, exc_info=exc)
                end = run.clock.end(time.monotonic())  # after what was already scheduled, as it would have been sent
                err = P.Error(P.ErrorCode.TURN_FAILED, f"turn failed: {type(exc).__name__}: {exc}"[:1000],
                              turn_id=tid)  # fmt: skip
                fail = P.TurnEnd(P.TurnStatus.FAILED, total_s=end - t.started, turn_id=tid)
                if not t.cancel.is_set():
                    self._post_all(run, end, [*run.held, *((m.KIND, m.encode_frames()[1]) for m in (err, fail))])
        finally:
            close = getattr(run.gen, "close", None)
            if close is not None:
                close()
            if self._livelink is not None and (run.v2 is None or not run.v2.idle):  # idle frames take over else
                self._livelink.rest(_subject(sid))


@dataclass(eq=False)
class _Run:
    """A turn being produced (it moves between worker threads when it parks)."""

    sid: int
    turn: _Turn
    caps: int
    names: list[str]  # face layouts the session gets
    clock: _TurnClock
    lookahead: float  # how far ahead it prepares before parking (doubles up to pace_lookahead_s)
    rest_share: object  # () -> the share of the look-ahead left when it resumes
    gen: object | None = None
    it: object | None = None
    lag: float = 0.0
    text_offset: int = 0
    first_audio: float = -1.0  # s from the turn's start to the first AudioChunk's release
    timings: ev.TurnEnd | None = None
    held: list = field(default_factory=list)  # text waiting for the audio / face that follows it
    counts: dict = field(default_factory=lambda: dict.fromkeys(("tb", "td", "as", "ac", "ff"), 0))
    parked: bool = False  # waiting in the loop's resume heap
    blocks: bool = False  # the source was seen blocking in next() (an engine generating): resumes on the turn pool
    v2: C.CharacterSession | None = None  # a version 2 session's character (its face and emotion)


def _count(counts: dict[str, int], e: ev.Event) -> None:
    """Add an event to a turn's counts (text bytes/deltas, audio samples/chunks, face frames)."""
    if isinstance(e, ev.TextDelta):
        counts["tb"] += len(e.text.encode("utf-8"))
        counts["td"] += 1
    elif isinstance(e, ev.AudioChunk):
        counts["as"] += int(e.pcm.shape[0])
        counts["ac"] += 1
    elif isinstance(e, ev.FaceFrames):
        counts["ff"] += e.num_frames


class _TurnClock:
    """Due times (monotonic s) of one turn's messages under ``pace``.

    The message of answer sample ``position`` is due at ``t0 + position / 24000 / pace``, ``t0`` chosen so that the
    turn's first audio or face is due when it is made; nothing is due before an earlier message of the turn (``last``).
    Unpaced (``pace`` 0), everything is due when made.
    """

    def __init__(self, pace: float):
        self.pace = pace
        self.t0: float | None = None
        self.last = 0.0  # due time of the latest message given one

    def due(self, position: int | None, now: float) -> float | None:
        """Due time of a message at answer sample ``position``; for one without a position (text): ``now`` while the
        schedule has caught up, None while it runs ahead (the message then goes with the next one that has a due)."""
        if self.pace <= 0:
            self.last = max(self.last, now)
            return self.last
        if position is None:
            if self.last > now:
                return None
            self.last = now
            return now
        at = position / ev.OUTPUT_SAMPLE_RATE / self.pace
        if self.t0 is None:
            self.t0 = now - at
        self.last = max(self.t0 + at, self.last)
        return self.last

    def end(self, now: float) -> float:
        """Due time of the turn's last messages: after everything before them, and not before ``now``."""
        self.last = max(self.last, now)
        return self.last


def _subject(sid: int) -> str:
    return f"a2llm{sid}"


def _now_us() -> int:
    return time.monotonic_ns() // 1000
