"""Python bridge client: send a spoken question, receive text + speech + face frames, write them out.

``python -m plugin_bridge.client --server tcp://127.0.0.1:5555 --wav question.wav --out OUT/`` writes into OUT/:
``answer.wav`` (24 kHz mono PCM16), ``answer.txt``, ``face_<layout>.npz`` per received layout, ``face_livelink.csv``
(Live Link Face CSV), ``face_a2f.json`` (Audio2Face-style JSON) and ``latency.json`` (times to first text / audio /
face, the server's timings, and per-message delivery latency).

The client survives a server restart: a missing heartbeat or an ``Error(NOT_WELCOMED)`` makes it say Hello again and
resend the turn (``retries`` times). A turn the server refused or failed (``AUDIO_TOO_LONG``, ``TURN_FAILED``, any
``TurnEnd(FAILED)``) is final: it is never re-sent.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zmq

from a2llm_rt.audio import FACE_FPS, INPUT_SAMPLE_RATE, OUTPUT_SAMPLE_RATE, read_wav, write_wav
from a2llm_rt.errors import InputError
from a2llm_rt.utils.cli import cli_main
from a2llm_rt.utils.fileio import atomic_write, atomic_write_json
from plugin_bridge import protocol as P

DEFAULT_LAYOUTS = ("arkit52", "livelink61", "flame58")


FINAL_TURN_ERRORS = frozenset({P.ErrorCode.AUDIO_TOO_LONG, P.ErrorCode.TURN_FAILED})
"""Errors that end a turn for good: re-sending the same utterance would fail the same way."""


class BridgeError(RuntimeError):
    """The server reported an error (``code``: its :class:`~plugin_bridge.protocol.ErrorCode`), or could not be
    reached in time (``code`` None)."""

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.code = code


@dataclass
class TurnResult:
    """Everything one turn produced. ``face`` maps a layout name to ``[T, D]`` float32 frames at ``fps``."""

    turn_id: int
    text: str = ""
    audio: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # [n] float32 at sample_rate
    sample_rate: int = OUTPUT_SAMPLE_RATE
    face: dict[str, np.ndarray] = field(default_factory=dict)
    fps: float = FACE_FPS
    turn_end: P.TurnEnd | None = None
    errors: list[P.Error] = field(default_factory=list)
    messages: list[dict] = field(default_factory=list)  # per message: kind, seq, recv_s, latency_ms
    t_first: dict[str, float] = field(default_factory=dict)  # text/audio/face -> s after end of utterance
    seq_gaps: int = 0
    attempts: int = 1

    @property
    def completed(self) -> bool:
        return self.turn_end is not None and self.turn_end.status == P.TurnStatus.COMPLETED

    def latency_report(self) -> dict:
        lat = np.array([m["latency_ms"] for m in self.messages], np.float64)
        te = self.turn_end
        return {
            "turn_id": self.turn_id,
            "status": te.status.name if te is not None else "NO_TURN_END",
            # the A2-LLM paper's timings (§6.1), measured by the server from the end of the question
            "ttft_s": te.ttft_s if te is not None else None,  # -> first generated audio token
            "ttfa_s": te.ttfa_s if te is not None else None,  # -> first facial motion frame
            "rtf": te.rtf if te is not None else None,  # generation time / duration of the synthesized speech
            # extras, measured here from the end of sending the question (include the network both ways)
            "first_text_received_s": self.t_first.get("text"),
            "first_audio_chunk_received_s": self.t_first.get("audio"),
            "first_face_received_s": self.t_first.get("face"),
            "turn_end_received_s": self.t_first.get("end"),
            "server_first_audio_sent_s": te.first_audio_s if te is not None else None,
            "server_total_s": te.total_s if te is not None else None,
            "delivery_latency_ms": {
                "note": "receive time - the server's send_time_us stamp; meaningful on one host (same monotonic clock)",
                "count": int(lat.size),
                "p50": float(np.percentile(lat, 50)) if lat.size else None,
                "p99": float(np.percentile(lat, 99)) if lat.size else None,
                "max": float(lat.max()) if lat.size else None,
            },
            "seq_gaps": self.seq_gaps,
            "attempts": self.attempts,
            "errors": [{"code": int(e.code), "message": e.message} for e in self.errors],
            "messages": self.messages,
        }


class BridgeClient:
    """A DEALER connection to the bridge server. Not thread-safe: use one client per thread.

    >>> c = BridgeClient("tcp://127.0.0.1:5555"); c.connect()
    >>> result = c.run_turn(audio_16k, 16000)
    """

    def __init__(
        self,
        server: str,
        layouts: tuple[str, ...] = DEFAULT_LAYOUTS,
        *,
        capabilities: int = int(P.Capability.TEXT | P.Capability.AUDIO | P.Capability.FACE),
        curve_server_key: bytes | None = None,
        curve_client_keys: tuple[bytes, bytes] | None = None,
        name: str = "a2llm-python-client/0.1",
        rcvhwm: int = 1000,
        context: zmq.Context | None = None,
        max_version: int = P.VERSION,
        idle_face: bool = True,
    ):
        """``max_version`` 2 asks for protocol version 2 (game characters, PROTOCOL.md §10); ``idle_face`` (v2) asks
        for idle face frames between turns (they arrive as FaceFrames with turn_id 0)."""
        from a2llm_rt.face.layouts import get_layout

        self.server = server
        self.layout_ids = tuple(get_layout(n).layout_id for n in layouts)
        self.capabilities = capabilities
        self.max_version = max_version
        if max_version >= 2 and idle_face:
            self.capabilities |= int(P.Capability.IDLE_FACE)
        self.version = P.VERSION  # the session's, after connect()
        self.server_info: P.ServerInfo | None = None
        self._backlog: deque[P.Message] = deque()  # received while waiting for something else
        self.name = name
        self._curve = (curve_server_key, curve_client_keys)
        self._rcvhwm = rcvhwm
        self._ctx = context or zmq.Context.instance()
        self._sock: zmq.Socket | None = None
        self.welcome: P.Welcome | None = None
        self._seq = itertools.count()
        self._turn_ids = itertools.count(1)
        self._last_rx = 0.0
        self._last_hb = 0.0
        self._peer_time_us = 0
        self._rx_seq: int | None = None
        self.reconnects = 0
        self.gaps = 0  # messages whose seq was not the previous seq + 1 (should stay 0)
        self.last_recv_us = 0  # monotonic receive time of the last message (us)

    # --- connection ----------------------------------------------------------------------------------------------
    def _open(self) -> None:
        if self._sock is not None:
            self._sock.close(0)
        s = self._ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.RECONNECT_IVL, 100)
        s.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        s.setsockopt(zmq.RCVHWM, self._rcvhwm)
        server_key, client_keys = self._curve
        if server_key is not None:
            pub, sec = client_keys if client_keys is not None else zmq.curve_keypair()
            s.curve_serverkey, s.curve_publickey, s.curve_secretkey = server_key, pub, sec
        s.connect(self.server)
        self._sock = s

    def connect(self, timeout_s: float = 10.0) -> P.Welcome:
        """Say Hello until a Welcome comes back (the server may still be starting). Raises BridgeError on timeout."""
        if self._sock is None:
            self._open()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._seq = itertools.count()
            self._rx_seq = None
            self._backlog.clear()
            self.version = P.VERSION
            self.send(P.Hello(P.VERSION, self.max_version, self.capabilities, self.layout_ids, self.name))
            resend = time.monotonic() + 1.0
            while time.monotonic() < min(resend, deadline):
                msg = self.recv(0.1)
                if isinstance(msg, P.Welcome):
                    self.welcome = msg
                    self.version = msg.version
                    self._last_hb = self._last_rx = time.monotonic()
                    self._rx_seq = msg.seq
                    if msg.version >= 2:  # ServerInfo follows at once (§10.1)
                        self.server_info = self._wait(lambda m: isinstance(m, P.ServerInfo), deadline)
                        if self.server_info is None:
                            raise BridgeError(f"no ServerInfo from {self.server} after its Welcome")
                    return msg
                if isinstance(msg, P.Error) and msg.code in (P.ErrorCode.SERVER_BUSY, P.ErrorCode.UNSUPPORTED_VERSION):
                    raise BridgeError(f"server refused the session: {msg.code.name}: {msg.message}")
            self._open()  # a fresh connection: drops anything queued for a dead server
        raise BridgeError(f"no Welcome from {self.server} within {timeout_s} s")

    def close(self) -> None:
        if self._sock is not None:
            if self.welcome is not None:
                try:
                    self.send(P.Bye())
                    time.sleep(0.01)
                except zmq.ZMQError:
                    pass
            self._sock.close(0)
            self._sock = None

    def __enter__(self) -> BridgeClient:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- messages ------------------------------------------------------------------------------------------------
    def send(self, msg: P.Message) -> None:
        import dataclasses

        msg = dataclasses.replace(msg, seq=next(self._seq), send_time_us=time.monotonic_ns() // 1000)
        version = None if isinstance(msg, P.Hello) else self.version
        self._sock.send_multipart(msg.encode_frames(version), copy=False)

    def recv(self, timeout_s: float) -> P.Message | None:
        """The next message, or None after ``timeout_s``. Raises :class:`~plugin_bridge.protocol.ProtocolError`."""
        if self._backlog:
            return self._backlog.popleft()
        if not self._sock.poll(max(0, int(timeout_s * 1000))):
            return None
        frames = self._sock.recv_multipart()
        self.last_recv_us = time.monotonic_ns() // 1000
        msg = P.decode_frames(frames)
        self._last_rx = time.monotonic()
        if self._rx_seq is not None and msg.seq != self._rx_seq + 1 and not isinstance(msg, P.Welcome):
            self.gaps += 1
        self._rx_seq = msg.seq
        if isinstance(msg, P.Heartbeat):
            self._peer_time_us = msg.time_us
        return msg

    def _heartbeat(self) -> None:
        now = time.monotonic()
        hb = self.welcome.heartbeat_ms / 1000 if self.welcome else 1.0
        if now - self._last_hb >= hb:
            self._last_hb = now
            self.send(P.Heartbeat(time.monotonic_ns() // 1000, self._peer_time_us))

    def server_alive(self) -> bool:
        """False once nothing (not even a heartbeat) came from the server for 3 heartbeat intervals."""
        hb = self.welcome.heartbeat_ms / 1000 if self.welcome else 1.0
        return time.monotonic() - self._last_rx < 3 * hb + 0.5

    def send_audio(self, audio: np.ndarray, sample_rate: int, turn_id: int, chunk_s: float = 0.1) -> None:
        """Send ``audio`` ``[n]`` (float or int16) as PCM16 UserAudio chunks; the last one ends the utterance."""
        if sample_rate not in P.USER_AUDIO_RATES:
            raise ValueError(f"sample rate {sample_rate} Hz is not one the server takes: {P.USER_AUDIO_RATES}")
        a = np.asarray(audio)
        if a.dtype != np.int16:
            a = (np.clip(a.astype(np.float32), -1.0, 1.0) * 32767.0).round().astype(np.int16)
        step = max(1, int(chunk_s * sample_rate))
        starts = list(range(0, a.shape[0], step)) or [0]
        for i, start in enumerate(starts):
            last = i == len(starts) - 1
            self.send(P.UserAudio(a[start : start + step], sample_rate, start, last, turn_id=turn_id))

    def _wait(self, want, deadline: float) -> P.Message | None:
        """The first message for which ``want(msg)`` holds (others wait in the backlog for :meth:`recv`)."""
        held: list[P.Message] = []
        try:
            while time.monotonic() < deadline:
                self._heartbeat()
                msg = self.recv(0.05)
                if msg is None:
                    continue
                if want(msg):
                    return msg
                held.append(msg)
            return None
        finally:
            self._backlog.extend(held)

    def cancel(self, turn_id: int = 0) -> None:
        self.send(P.Cancel(turn_id=turn_id))

    # --- a whole turn --------------------------------------------------------------------------------------------
    def run_turn(
        self,
        audio: np.ndarray,
        sample_rate: int,
        *,
        chunk_s: float = 0.1,
        timeout_s: float = 60.0,
        retries: int = 2,
        on_message=None,
    ) -> TurnResult:
        """Send one utterance and collect the answer until its TurnEnd (or an error / timeout).

        A lost server (no heartbeat, or ``NOT_WELCOMED``) triggers a new handshake and a resend of the turn, up to
        ``retries`` times. ``on_message(msg, result)`` is called for every message of the turn (e.g. to cancel).
        """
        if self.welcome is None:
            self.connect()
        for attempt in range(retries + 1):
            result = self._one_turn(audio, sample_rate, chunk_s, timeout_s, on_message)
            result.attempts = attempt + 1
            if result.turn_end is not None or any(e.code in FINAL_TURN_ERRORS for e in result.errors):
                return result
            if attempt < retries:
                self.reconnects += 1
                self.connect(timeout_s=timeout_s)
        raise BridgeError(f"turn failed after {retries + 1} attempts: server lost")

    def _one_turn(self, audio, sample_rate, chunk_s, timeout_s, on_message, text: str | None = None) -> TurnResult:
        tid = next(self._turn_ids)
        res = TurnResult(tid)
        self.gaps = 0
        if text is not None:
            self.send(P.UserText(text, turn_id=tid))
        else:
            self.send_audio(audio, sample_rate, tid, chunk_s)
        t_eou = time.monotonic()
        audio_parts: list[tuple[int, np.ndarray]] = []
        face_parts: dict[str, list[tuple[int, np.ndarray]]] = {}
        text_parts: list[tuple[int, str]] = []
        deadline = t_eou + timeout_s
        while time.monotonic() < deadline:
            self._heartbeat()
            msg = self.recv(0.05)
            if msg is None:
                if not self.server_alive():
                    return res  # no TurnEnd: the caller reconnects
                continue
            now = time.monotonic()
            if isinstance(msg, P.Error):
                if msg.code == P.ErrorCode.NOT_WELCOMED:
                    return res
                if msg.turn_id in (0, tid):
                    res.errors.append(msg)
                    if msg.code in (P.ErrorCode.SESSION_EXPIRED, P.ErrorCode.SHUTTING_DOWN):
                        self.welcome = None
                        return res
                continue
            if msg.turn_id != tid:
                continue  # heartbeats, or a stale message of an earlier turn
            res.messages.append(
                {
                    "kind": msg.KIND.name,
                    "seq": msg.seq,
                    "recv_s": round(now - t_eou, 6),
                    "latency_ms": round((self.last_recv_us - msg.send_time_us) / 1000, 3),
                }
            )
            if on_message is not None:
                on_message(msg, res)
            if isinstance(msg, P.TextDelta):
                res.t_first.setdefault("text", now - t_eou)
                text_parts.append((msg.byte_offset, msg.text))
            elif isinstance(msg, P.AudioChunk):
                res.t_first.setdefault("audio", now - t_eou)
                res.sample_rate = msg.sample_rate
                audio_parts.append((msg.sample_offset, msg.as_float32()))
            elif isinstance(msg, P.FaceFrames):
                res.t_first.setdefault("face", now - t_eou)
                res.fps = msg.fps
                face_parts.setdefault(msg.layout_name, []).append((msg.first_frame, msg.values))
            elif isinstance(msg, P.TurnEnd):
                res.t_first["end"] = now - t_eou
                res.turn_end = msg
                break
        res.seq_gaps = self.gaps
        res.text = "".join(t for _, t in sorted(text_parts, key=lambda x: x[0]))
        res.audio = _assemble_1d(audio_parts)
        res.face = {k: _assemble_2d(v) for k, v in face_parts.items()}
        return res


class CharacterClient(BridgeClient):
    """A protocol version 2 client (PROTOCOL.md §10): a game character with persona, voice, emotion and game
    context, typed turns, idle face frames and hands-free microphone streaming. Not thread-safe.

    >>> c = CharacterClient("tcp://127.0.0.1:5555"); c.connect()
    >>> c.set_character(persona="You are Brokk, a gruff dwarven smith.", voice="bob", emotion="happy", intensity=0.6)
    >>> c.set_context("The player just lost the battle.")
    >>> answer = c.run_text_turn("How much for the sword?")
    """

    def __init__(self, server: str, layouts: tuple[str, ...] = DEFAULT_LAYOUTS, **kw: object):
        kw.setdefault("max_version", P.VERSION_2)
        kw.setdefault("name", "a2llm-python-client/0.2")
        super().__init__(server, layouts, **kw)  # type: ignore[arg-type]

    def connect(self, timeout_s: float = 10.0) -> P.Welcome:
        w = super().connect(timeout_s)
        if w.version < 2:
            raise BridgeError(f"{self.server} speaks protocol version {w.version} only; characters need version 2")
        return w

    # --- configuration ---------------------------------------------------------------------------------------------
    def set_character(
        self,
        persona: str = "",
        voice: str = "",
        emotion: str = "",
        intensity: float = 0.0,
        *,
        prompt_emotion: bool = True,
        face_emotion: bool = True,
        timeout_s: float = 10.0,
    ) -> P.ConfigAck:
        """Configure the character (§10.4); empty strings = the server's defaults. Raises :class:`BridgeError`
        (with the server's code) when refused; the session then keeps its previous character."""
        modes = (P.EMOTION_MODE_PROMPT if prompt_emotion else 0) | (P.EMOTION_MODE_FACE if face_emotion else 0)
        return self._configure(P.Character(modes, intensity, voice, emotion, persona), timeout_s)

    def set_context(self, text: str, timeout_s: float = 10.0) -> P.ConfigAck:
        """The game's situation for the next turns (§10.6; "" clears it). No conversation reset."""
        return self._configure(P.GameContext(text), timeout_s)

    def set_emotion(
        self, name: str, intensity: float = 1.0, *, next_turn: bool = False, timeout_s: float = 10.0
    ) -> P.ConfigAck:
        """The session's emotion, or only the next turn's (``next_turn``) (§10.4)."""
        scope = P.EmotionScope.NEXT_TURN if next_turn else P.EmotionScope.SESSION
        return self._configure(P.SetEmotion(scope, intensity, name), timeout_s)

    def _configure(self, msg: P.Message, timeout_s: float) -> P.ConfigAck:
        if self.welcome is None:
            self.connect()
        self.send(msg)
        got = self._wait(
            lambda m: isinstance(m, P.ConfigAck) or (isinstance(m, P.Error) and m.turn_id == 0),
            time.monotonic() + timeout_s,
        )
        if got is None:
            raise BridgeError(f"no answer to {type(msg).__name__} within {timeout_s} s")
        if isinstance(got, P.Error):
            raise BridgeError(f"{type(msg).__name__} refused: {_code_name(got.code)}: {got.message}", int(got.code))
        return got

    # --- turns -----------------------------------------------------------------------------------------------------
    def run_text_turn(self, text: str, *, timeout_s: float = 60.0, on_message=None) -> TurnResult:
        """A typed turn (§10.7), answered like a spoken one (text, speech, face, TurnEnd). Errors (empty or too long
        text, ...) come back in ``result.errors`` with a ``TurnEnd(FAILED)``."""
        if self.welcome is None:
            self.connect()
        return self._one_turn(None, 0, 0.0, timeout_s, on_message, text=text)

    def send_mic(self, samples: np.ndarray, sample_rate: int, sample_offset: int, end_of_stream: bool = False) -> None:
        """One chunk of the continuous microphone stream (§10.8): ``samples`` ``[n]`` int16 or float32 in [-1, 1];
        ``sample_offset`` 0 starts a new stream, later chunks continue it without a gap."""
        self.send(P.MicAudio(np.asarray(samples), sample_rate, sample_offset, end_of_stream))

    def collect(self, timeout_s: float, until=None) -> list[P.Message]:
        """Messages received within ``timeout_s`` (stops early once ``until(msg)`` is true for one), keeping the
        session alive with heartbeats."""
        out: list[P.Message] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._heartbeat()
            msg = self.recv(min(0.05, max(0.0, deadline - time.monotonic())))
            if msg is not None:
                out.append(msg)
                if until is not None and until(msg):
                    break
        return out


def _code_name(code: int) -> str:
    return code.name if isinstance(code, P.ErrorCode) else str(code)


def _assemble_1d(parts: list[tuple[int, np.ndarray]]) -> np.ndarray:
    if not parts:
        return np.zeros(0, np.float32)
    n = max(o + a.shape[0] for o, a in parts)
    out = np.zeros(n, np.float32)
    for o, a in parts:
        out[o : o + a.shape[0]] = a
    return out


def _assemble_2d(parts: list[tuple[int, np.ndarray]]) -> np.ndarray:
    n = max(o + a.shape[0] for o, a in parts)
    out = np.zeros((n, parts[0][1].shape[1]), np.float32)
    for o, a in parts:
        out[o : o + a.shape[0]] = a
    return out


# --- files ---------------------------------------------------------------------------------------------------------
def write_outputs(result: TurnResult, out: str | Path) -> list[Path]:
    """Write answer.wav, answer.txt, face files and latency.json into ``out``; returns the paths written."""
    from a2llm_rt.face.clip import MotionClip
    from a2llm_rt.face.io import save_clip

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "answer.wav", out / "answer.txt"]
    write_wav(written[0], result.audio, result.sample_rate)
    with atomic_write(written[1]) as f:
        f.write(result.text + "\n")
    for layout, values in result.face.items():
        clip = MotionClip(values, result.fps, layout, {"source": "a2llm bridge", "turn_id": result.turn_id})
        save_clip(clip, out / f"face_{layout}.npz")
        written.append(out / f"face_{layout}.npz")
    arkit = result.face.get("livelink61", result.face.get("arkit52"))
    if arkit is not None:
        lay = "livelink61" if "livelink61" in result.face else "arkit52"
        clip = MotionClip(arkit, result.fps, lay, {"source": "a2llm bridge"})
        for name in ("face_livelink.csv", "face_a2f.json"):
            save_clip(clip, out / name)
            written.append(out / name)
    atomic_write_json(out / "latency.json", result.latency_report())
    written.append(out / "latency.json")
    return written


@cli_main(failures=(BridgeError,))
def main(argv: list[str] | None = None) -> int:
    """Exit 0: the turn completed; 1: it did not, or the bridge failed (:class:`BridgeError`); 2: bad input."""
    ap = argparse.ArgumentParser(prog="python -m plugin_bridge.client", description=__doc__.splitlines()[0])
    ap.add_argument("--server", default="tcp://127.0.0.1:5555")
    ap.add_argument("--wav", required=True, type=Path, help="the spoken question (any WAV: PCM or float, any rate)")
    ap.add_argument("--out", required=True, type=Path, help="output folder")
    ap.add_argument("--layouts", default=",".join(DEFAULT_LAYOUTS), help="face layouts to ask for")
    ap.add_argument("--curve-server-key", type=Path, help="the server's public certificate (server.key)")
    ap.add_argument("--curve-client-keys", type=Path, help="this client's secret certificate (client.key_secret)")
    ap.add_argument("--timeout-s", type=float, default=60.0)
    args = ap.parse_args(argv)
    audio, _ = read_wav(args.wav, sample_rate=INPUT_SAMPLE_RATE)
    server_key = client_keys = None
    if args.curve_server_key:
        from plugin_bridge.server import load_certificate

        server_key = load_certificate(args.curve_server_key)[0]
        if args.curve_client_keys:
            pub, sec = load_certificate(args.curve_client_keys)
            if sec is None:
                raise InputError("no secret key in the client certificate", args.curve_client_keys)
            client_keys = (pub, sec)
    layouts = tuple(x.strip() for x in args.layouts.split(",") if x.strip())
    try:
        client = BridgeClient(args.server, layouts, curve_server_key=server_key, curve_client_keys=client_keys)
    except KeyError as e:
        raise InputError(f"--layouts: {e}") from None
    try:
        client.connect(timeout_s=args.timeout_s)
        result = client.run_turn(audio, INPUT_SAMPLE_RATE, timeout_s=args.timeout_s)
    finally:
        client.close()
    paths = write_outputs(result, args.out)
    rep = result.latency_report()
    print(f"turn {result.turn_id}: {rep['status']}, text {result.text!r}")
    print(
        f"TTFT {rep['ttft_s']} s (first audio token), TTFA {rep['ttfa_s']} s (first face motion), RTF {rep['rtf']} "
        f"(server); received here: first text {rep['first_text_received_s']}, first audio chunk "
        f"{rep['first_audio_chunk_received_s']} (s after the end of the question)"
    )
    for p in paths:
        print(f"  wrote {p}")
    for e in result.errors:
        print(f"server error {int(e.code)}: {e.message}", file=sys.stderr)
    return 0 if result.completed else 1


if __name__ == "__main__":
    sys.exit(main())
