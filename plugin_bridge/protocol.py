"""The a2llm bridge wire protocol, version 1 (spec: plugin_bridge/PROTOCOL.md).

Every message is two ZeroMQ frames: a fixed 32-byte little-endian header and a payload whose layout depends on the
message kind. The *concatenated form* (header bytes followed by payload bytes) is used by the golden fixtures, by
the WebSocket gateway and by :func:`decode`; :func:`decode_frames` takes the two frames as ZeroMQ delivers them.

Header (32 bytes)::

    0  char[4] magic "A2LM"      4  u16 version      6  u16 kind      8  u32 turn_id
    12 u32 payload_length        16 u64 seq          24 u64 send_time_us

Each message kind is a frozen dataclass with ``encode()`` / ``encode_frames()`` / ``decode()``. Building a message
validates it; decoding malformed bytes raises :class:`ProtocolError` (carrying an :class:`ErrorCode`) and nothing else.

Example::

    msg = FaceFrames(first_frame=0, fps=25.0, layout_id=2, values=np.zeros((5, 52), np.float32), turn_id=1)
    header, payload = msg.encode_frames()
    assert decode_frames([header, payload]) == msg
"""

from __future__ import annotations

import dataclasses
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag
from typing import ClassVar

import numpy as np

from a2llm_rt.engine import events as _ev
from a2llm_rt.face.layouts import LAYOUTS, LAYOUTS_BY_ID

MAGIC = b"A2LM"
VERSION = 1
SUPPORTED_VERSIONS: tuple[int, ...] = (1,)
HEADER = struct.Struct("<4sHHIIQQ")
HEADER_SIZE = HEADER.size  # 32
MAX_PAYLOAD = 4 * 1024 * 1024  # bytes; larger payload_length -> PAYLOAD_TOO_LARGE
MAX_ERROR_MESSAGE = 1024  # bytes of UTF-8 in an Error
MAX_NAME = 255  # bytes of UTF-8 in a curve, client or server name
MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 192000
USER_AUDIO_RATES = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000)  # rates a server accepts for UserAudio
U32_MAX = 0xFFFFFFFF
U64_MAX = 0xFFFFFFFFFFFFFFFF


class Kind(IntEnum):
    """Message kinds (header field ``kind``). Direction: C = client -> server, S = server -> client."""

    HELLO = 1  # C
    WELCOME = 2  # S
    USER_AUDIO = 3  # C
    TEXT_DELTA = 4  # S
    AUDIO_CHUNK = 5  # S
    FACE_FRAMES = 6  # S
    TURN_END = 7  # S
    CANCEL = 8  # C
    HEARTBEAT = 9  # C and S
    ERROR = 10  # S (a client may send one too; the server logs it)
    BYE = 11  # C: the client leaves; the server frees its session at once


class ErrorCode(IntEnum):
    """Error codes carried by :class:`Error` and :class:`ProtocolError`. 1-19: decoding; 20-39: session."""

    BAD_MAGIC = 1
    UNSUPPORTED_VERSION = 2
    UNKNOWN_KIND = 3
    BAD_LENGTH = 4  # truncated, trailing bytes, or a length field that disagrees with the data
    PAYLOAD_TOO_LARGE = 5
    NON_FINITE = 6  # NaN or +-inf in a float field or array
    BAD_VALUE = 7  # a field out of its documented range (format, rate, layout, dims, reserved != 0, ...)
    BAD_UTF8 = 8
    BAD_FRAMING = 9  # not exactly two ZeroMQ frames (header, payload)
    NOT_WELCOMED = 20  # a message other than Hello from a client without a session: send Hello again
    SESSION_EXPIRED = 21
    SERVER_BUSY = 22  # too many sessions
    TURN_IN_PROGRESS = 23  # audio for a new turn while another turn runs: Cancel it first
    UNKNOWN_TURN = 24  # Cancel / audio for a turn that is not the session's current one
    CLIENT_TOO_SLOW = 25  # the client's send queue overflowed: its turn is cancelled, nothing was dropped silently
    TURN_FAILED = 26  # the engine raised during the turn
    SHUTTING_DOWN = 27
    AUDIO_TOO_LONG = 28  # the user's utterance exceeded the server's limit
    INTERNAL = 39


class AudioFormat(IntEnum):
    PCM16 = 1  # int16 little-endian
    F32 = 2  # float32 little-endian, finite


class Capability(IntFlag):
    """Streams a client asks for in Hello and the server grants in Welcome."""

    TEXT = 1
    AUDIO = 2
    FACE = 4
    LIVELINK_UDP = 8  # Welcome only: the server also sends the face stream as Live Link Face UDP packets


class TurnStatus(IntEnum):
    COMPLETED = 0
    CANCELLED = 1
    FAILED = 2


AUDIO_FLAG_END_OF_UTTERANCE = 1


class ProtocolError(Exception):
    """Malformed or invalid message. ``code`` is the :class:`ErrorCode` a server puts in its Error reply."""

    def __init__(self, code: ErrorCode, message: str):
        self.code = ErrorCode(code)
        self.message = message
        super().__init__(f"{self.code.name}: {message}")


# --- byte reading / writing ----------------------------------------------------------------------------------------
_STRUCTS: dict[str, struct.Struct] = {}


class _Reader:
    """Bounds-checked little-endian reader; every short read is a BAD_LENGTH ProtocolError."""

    def __init__(self, buf: bytes | memoryview, what: str):
        self.buf = memoryview(buf)  # 1-D bytes
        self.pos = 0
        self.what = what

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.buf):
            raise ProtocolError(
                ErrorCode.BAD_LENGTH,
                f"{self.what}: needs {n} more bytes at offset {self.pos}, payload has {len(self.buf)}",
            )
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str) -> tuple:
        s = _STRUCTS.get(fmt)
        if s is None:
            s = _STRUCTS[fmt] = struct.Struct("<" + fmt)
        return s.unpack(self.take(s.size))

    def utf8(self, n: int, name: str) -> str:
        raw = bytes(self.take(n))
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(ErrorCode.BAD_UTF8, f"{self.what}: {name} is not valid UTF-8") from None

    def array(self, dtype: str, count: int) -> np.ndarray:
        item = np.dtype(dtype).itemsize
        if count > len(self.buf):  # cheap guard before multiplying huge counts
            raise ProtocolError(ErrorCode.BAD_LENGTH, f"{self.what}: count {count} exceeds the payload")
        return np.frombuffer(self.take(count * item), dtype=dtype)

    def finish(self) -> None:
        if self.pos != len(self.buf):
            raise ProtocolError(
                ErrorCode.BAD_LENGTH, f"{self.what}: {len(self.buf) - self.pos} trailing bytes after offset {self.pos}"
            )


def _check(cond: bool, code: ErrorCode, message: str) -> None:
    if not cond:
        raise ProtocolError(code, message)


def _uint(value: int, bits: int, name: str) -> int:
    _check(
        isinstance(value, (int, np.integer)) and 0 <= int(value) < (1 << bits),
        ErrorCode.BAD_VALUE,
        f"{name}={value!r} is not a u{bits}",
    )
    return int(value)


def _finite(value: float, name: str) -> float:
    _check(isinstance(value, (int, float, np.floating)), ErrorCode.BAD_VALUE, f"{name} must be a number")
    v = float(np.float32(value))
    _check(math.isfinite(v), ErrorCode.NON_FINITE, f"{name}={value!r} is not finite")
    return v


def _finite_array(a: np.ndarray, name: str) -> None:
    if a.size and not np.isfinite(a).all():
        bad = int(np.argmax(~np.isfinite(a.reshape(-1))))
        raise ProtocolError(ErrorCode.NON_FINITE, f"{name}: non-finite value at flat index {bad}")


def _utf8_bytes(text: str, limit: int, name: str) -> bytes:
    _check(isinstance(text, str), ErrorCode.BAD_VALUE, f"{name} must be a str")
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:
        raise ProtocolError(ErrorCode.BAD_UTF8, f"{name} cannot be encoded as UTF-8") from None
    _check(len(raw) <= limit, ErrorCode.BAD_VALUE, f"{name} is {len(raw)} bytes of UTF-8, the limit is {limit}")
    return raw


def _frozen_set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)


# --- message base --------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Message:
    """Base of all messages. ``turn_id``, ``seq`` and ``send_time_us`` live in the header of every kind."""

    KIND: ClassVar[Kind]
    turn_id: int = field(default=0, kw_only=True)
    seq: int = field(default=0, kw_only=True)
    send_time_us: int = field(default=0, kw_only=True)

    def __post_init__(self) -> None:
        _uint(self.turn_id, 32, "turn_id")
        _uint(self.seq, 64, "seq")
        _uint(self.send_time_us, 64, "send_time_us")
        self._validate()

    def _validate(self) -> None:  # per kind
        pass

    def _payload(self) -> bytes:  # per kind
        return b""

    @classmethod
    def _parse(cls, r: _Reader, turn_id: int, seq: int, send_time_us: int) -> Message:  # per kind
        r.finish()
        return cls(turn_id=turn_id, seq=seq, send_time_us=send_time_us)

    def header(self, payload_length: int) -> bytes:
        return HEADER.pack(MAGIC, VERSION, int(self.KIND), self.turn_id, payload_length, self.seq, self.send_time_us)

    def encode_frames(self) -> list[bytes]:
        """``[header (32 bytes), payload]``: the two ZeroMQ frames of this message."""
        payload = self._payload()
        _check(len(payload) <= MAX_PAYLOAD, ErrorCode.PAYLOAD_TOO_LARGE, f"payload {len(payload)} > {MAX_PAYLOAD}")
        return [self.header(len(payload)), payload]

    def encode(self) -> bytes:
        """The concatenated form: header followed by payload."""
        h, p = self.encode_frames()
        return h + p

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview | Sequence[bytes]) -> Message:
        """Decode the concatenated form (bytes) or the two frames (a list); checks the kind matches ``cls``."""
        msg = decode_frames(data) if isinstance(data, (list, tuple)) else decode(data)
        if cls is not Message and not isinstance(msg, cls):
            raise ProtocolError(ErrorCode.UNKNOWN_KIND, f"expected {cls.__name__}, got {type(msg).__name__}")
        return msg

    def fields(self) -> dict[str, object]:
        """All fields as plain Python values (arrays as nested lists), as written to fixtures/index.json."""
        out: dict[str, object] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, np.ndarray):
                v = v.tolist()
            elif isinstance(v, tuple):
                v = [{"layout_id": x.layout_id, "names": list(x.names)} if isinstance(x, LayoutInfo) else x for x in v]
            elif isinstance(v, IntEnum):
                v = int(v)
            out[f.name] = v
        return out

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        for f in dataclasses.fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
                if not (
                    isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype
                ) or not np.array_equal(a, b):
                    return False
            elif a != b:
                return False
        return True

    __hash__ = object.__hash__


# --- kinds ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LayoutInfo:
    """A face layout granted in Welcome: its wire id and curve names (sent once; frames carry values by index)."""

    layout_id: int
    names: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class Hello(Message):
    """Client -> server, first message. Payload::

    u16 min_version, u16 max_version, u32 capabilities, u8 n_layouts, u8 layout_ids[n_layouts],
    u8 name_len, u8 name[name_len] (UTF-8)
    """

    KIND: ClassVar[Kind] = Kind.HELLO
    min_version: int = VERSION
    max_version: int = VERSION
    capabilities: int = int(Capability.TEXT | Capability.AUDIO | Capability.FACE)
    layouts: tuple[int, ...] = (2,)  # wanted face layouts by wire id, in preference order
    client_name: str = ""

    def _validate(self) -> None:
        _uint(self.min_version, 16, "min_version")
        _uint(self.max_version, 16, "max_version")
        _check(self.min_version <= self.max_version, ErrorCode.BAD_VALUE, "min_version > max_version")
        _uint(self.capabilities, 32, "capabilities")
        _frozen_set(self, "layouts", tuple(int(x) for x in self.layouts))
        _check(len(self.layouts) <= 255, ErrorCode.BAD_VALUE, "more than 255 layouts")
        for lid in self.layouts:
            _uint(lid, 8, "layout id")
        _utf8_bytes(self.client_name, MAX_NAME, "client_name")

    def _payload(self) -> bytes:
        name = self.client_name.encode("utf-8")
        return (
            struct.pack("<HHIB", self.min_version, self.max_version, self.capabilities, len(self.layouts))
            + bytes(self.layouts)
            + struct.pack("<B", len(name))
            + name
        )

    @classmethod
    def _parse(cls, r: _Reader, turn_id: int, seq: int, send_time_us: int) -> Hello:
        lo, hi, caps, n = r.unpack("HHIB")
        layouts = tuple(r.take(n))
        (name_len,) = r.unpack("B")
        name = r.utf8(name_len, "client_name")
        r.finish()
        return cls(lo, hi, caps, layouts, name, turn_id=turn_id, seq=seq, send_time_us=send_time_us)


@dataclass(frozen=True, eq=False)
class Welcome(Message):
    """Server -> client, the reply to Hello. Payload::

    u16 version, u16 reserved(0), u32 session_id, u32 capabilities, u32 heartbeat_ms, u32 session_timeout_ms,
    u32 input_sample_rate, u32 output_sample_rate, f32 fps, u32 max_payload,
    u8 n_layouts, then per layout: u8 layout_id, u16 n_curves, n_curves x (u8 len, UTF-8 name),
    u8 name_len, u8 server_name[name_len]
    """

    KIND: ClassVar[Kind] = Kind.WELCOME
    version: int = VERSION
    session_id: int = 0
    capabilities: int = 0
    heartbeat_ms: int = 1000
    session_timeout_ms: int = 10000
    input_sample_rate: int = 16000
    output_sample_rate: int = 24000
    fps: float = 25.0
    max_payload: int = MAX_PAYLOAD
    layouts: tuple[LayoutInfo, ...] = ()
    server_name: str = ""

    def _validate(self) -> None:
        _uint(self.version, 16, "version")
        for name in ("session_id", "capabilities", "heartbeat_ms", "session_timeout_ms", "max_payload"):
            _uint(getattr(self, name), 32, name)
        for name in ("input_sample_rate", "output_sample_rate"):
            rate = _uint(getattr(self, name), 32, name)
            _check(MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE, ErrorCode.BAD_VALUE, f"{name}={rate} out of range")
        fps = _finite(self.fps, "fps")
        _check(fps > 0, ErrorCode.BAD_VALUE, f"fps={fps} must be > 0")
        _frozen_set(self, "fps", fps)
        lays = tuple(
            x if isinstance(x, LayoutInfo) else LayoutInfo(int(x[0]), tuple(x[1]))  # type: ignore[index]
            for x in self.layouts
        )
        lays = tuple(LayoutInfo(x.layout_id, tuple(x.names)) for x in lays)
        _frozen_set(self, "layouts", lays)
        _check(len(lays) <= 255, ErrorCode.BAD_VALUE, "more than 255 layouts")
        for lay in lays:
            _uint(lay.layout_id, 8, "layout id")
            _check(len(lay.names) <= 0xFFFF, ErrorCode.BAD_VALUE, "more than 65535 curve names")
            for n in lay.names:
                _utf8_bytes(n, MAX_NAME, "curve name")
        _utf8_bytes(self.server_name, MAX_NAME, "server_name")

    def _payload(self) -> bytes:
        parts = [
            struct.pack(
                "<HHIIIIIIfIB",
                self.version,
                0,
                self.session_id,
                self.capabilities,
                self.heartbeat_ms,
                self.session_timeout_ms,
                self.input_sample_rate,
                self.output_sample_rate,
                self.fps,
                self.max_payload,
                len(self.layouts),
            )
        ]
        for lay in self.layouts:
            parts.append(struct.pack("<BH", lay.layout_id, len(lay.names)))
            for n in lay.names:
                raw = n.encode("utf-8")
                parts.append(struct.pack("<B", len(raw)) + raw)
        raw = self.server_name.encode("utf-8")
        parts.append(struct.pack("<B", len(raw)) + raw)
        return b"".join(parts)

    @classmethod
    def _parse(cls, r: _Reader, turn_id: int, seq: int, send_time_us: int) -> Welcome:
        ver, reserved, sid, caps, hb, to, rin, rout, fps, maxp, n = r.unpack("HHIIIIIIfIB")
        _check(reserved == 0, ErrorCode.BAD_VALUE, "Welcome: reserved field is not 0")
        lays = []
        for _ in range(n):
            lid, count = r.unpack("BH")
            names = []
            for _ in range(count):
                (ln,) = r.unpack("B")
                names.append(r.utf8(ln, "curve name"))
            lays.append(LayoutInfo(lid, tuple(names)))
        (ln,) = r.unpack("B")
        server = r.utf8(ln, "server_name")
        r.finish()
        return cls(
            ver, sid, caps, hb, to, rin, rout, fps, maxp, tuple(lays), server,
            turn_id=turn_id, seq=seq, send_time_us=send_time_us,
        )  # fmt: skip


_AUDIO_HEAD = struct.Struct("<BBHIQI")  # format, flags, channels, sample_rate, sample_offset, n_samples: 20 bytes


@dataclass(frozen=True, eq=False)
class _Audio(Message):
    """Shared audio body. Payload::

    u8 format (1 PCM16, 2 F32), u8 flags, u16 channels (1), u32 sample_rate, u64 sample_offset, u32 n_samples,
    then n_samples samples (int16 or float32, little-endian)
    """

    samples: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # [n] int16 or float32, mono
    sample_rate: int = 16000
    sample_offset: int = 0  # index of samples[0] in the utterance (UserAudio) or in the turn's answer (AudioChunk)

    def _flags(self) -> int:
        return 0

    def _validate(self) -> None:
        a = np.asarray(self.samples)
        _check(a.ndim == 1, ErrorCode.BAD_VALUE, f"audio samples must be 1-D (mono), got shape {list(a.shape)}")
        if a.dtype == np.int16:
            a = np.ascontiguousarray(a, dtype="<i2")
        elif a.dtype in (np.float32, np.float64):
            a = np.ascontiguousarray(a, dtype="<f4")
            _finite_array(a, "audio samples")
        else:
            raise ProtocolError(ErrorCode.BAD_VALUE, f"audio samples must be int16 or float32, got {a.dtype}")
        _frozen_set(self, "samples", a)
        rate = _uint(self.sample_rate, 32, "sample_rate")
        _check(MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE, ErrorCode.BAD_VALUE, f"sample_rate={rate} out of range")
        _uint(self.sample_offset, 64, "sample_offset")
        _uint(a.shape[0], 32, "n_samples")

    @property
    def format(self) -> AudioFormat:
        return AudioFormat.PCM16 if self.samples.dtype == np.int16 else AudioFormat.F32

    def as_float32(self) -> np.ndarray:
        """``[n]`` float32 in [-1, 1] (PCM16 divided by 32768)."""
        if self.samples.dtype == np.int16:
            return self.samples.astype(np.float32) / 32768.0
        return self.samples

    def _payload(self) -> bytes:
        head = _AUDIO_HEAD.pack(
            int(self.format), self._flags(), 1, self.sample_rate, self.sample_offset, self.samples.shape[0]
        )
        return head + self.samples.tobytes()

    @classmethod
    def _parse_audio(cls, r: _Reader) -> tuple[np.ndarray, int, int, int]:
        fmt, flags, channels, rate, offset, n = r.unpack("BBHIQI")
        _check(channels == 1, ErrorCode.BAD_VALUE, f"channels={channels}, only mono (1) is supported")
        if fmt == AudioFormat.PCM16:
            samples = r.array("<i2", n)
        elif fmt == AudioFormat.F32:
            samples = r.array("<f4", n)
        else:
            raise ProtocolError(ErrorCode.BAD_VALUE, f"unknown audio format {fmt}")
        r.finish()
        return samples, flags, rate, offset


@dataclass(frozen=True, eq=False)
class UserAudio(_Audio):
    """Client -> server: a chunk of the player's speech. Flags bit 0 = end of utterance (the turn starts)."""

    KIND: ClassVar[Kind] = Kind.USER_AUDIO
    end_of_utterance: bool = False

    def _flags(self) -> int:
        return AUDIO_FLAG_END_OF_UTTERANCE if self.end_of_utterance else 0

    def _validate(self) -> None:
        super()._validate()
        _frozen_set(self, "end_of_utterance", bool(self.end_of_utterance))

    @classmethod
    def _parse(cls, r: _Reader, turn_id: int, seq: int, send_time_us: int) -> UserAudio:
        samples, flags, rate, offset = cls._parse_audio(r)
        _check(flags & ~AUDIO_FLAG_END_OF_UTTERANCE == 0, ErrorCode.BAD_VALUE, f"unknown UserAudio flags {flags:#x}")
        return cls(
            samples, rate, offset, bool(flags & AUDIO_FLAG_END_OF_UTTERANCE),
            turn_id=turn_id, seq=seq, send_time_us=send_time_us,
        )  # fmt: skip


@dataclass(frozen=True, eq=False)
class AudioChunk(_Audio):
    """Server -> client: answer speech, float32 24 kHz mono; ``sample_offset`` counts from the turn's first sample."""

    KIND: ClassVar[Kind] = Kind.AUDIO_CHUNK
    sample_rate: int = 24000

    @classmethod
    def _parse(cls, r: _Reader, turn_id: int, seq: int, send_time_us: int) -> AudioChunk:
        samples, flags, rate, offset = cls._parse_audio(r)
        _check(flags == 0, ErrorCode.BAD_VALUE, f"AudioChunk flags must be 0, got {flags:#x}")
        return cls(samples, rate, offset, turn_id=turn_id, seq=seq, send_time_us=send_time_us)


@dataclass(frozen=True, eq=False)
class TextDelta(Message):
    """Server -> client: the next piece of the answer's text. Payload::

    u32 byte_offset (of this piece in the turn's UTF-8 text), u32 n_bytes, UTF-8 text[n_bytes]
    """

    KIND: ClassVar[Kind] = Kind.TEXT_DELTA
    byte_offset: int = 0
    text: str = ""

    def _validate(self) -> None:
        _uint(self.byte_offset, 32, "byte_offset")
        _utf8_bytes(self.text, MAX_PAYLOAD - 8, "text")

    def _payload(self) -> bytes:
        raw = self.text.encode("utf-8")
        return struct.pack("<II", self.byte_offset, len(raw)) + raw

    @classmethod
    def _parse(cls, r: _Reader, turn_id: int, seq: int, send_time_us: int) -> TextDelta:
        off, n = r.unpack("II")
        text = r.utf8(n, "text")
        r.finish()
        return cls(off, text, turn_id=turn_id, seq=seq, send_time_us=send_time_us)


@dataclass(frozen=True, eq=False)
class FaceFrames(Message):
    """Server -> client: consecutive face frames in one layout. Payload::

    u64 first_frame, f32 fps, u8 layout_id, u8 reserved(0), u16 dims, u32 n_frames, f32 values[n_frames * dims]
    (row-major [n_frames, dims]). Frame k of a turn covers answer samples [k * rate / fps, (k + 1) * rate / fps).
    """

    KIND: ClassVar[Kind] = Kind.FACE_FRAMES
    first_frame: int = 0
    fps: float = 25.0
    layout_id: int = 2
    values: np.ndarray = field(default_factory=lambda: np.zeros((0, 52), np.float32))  # [n, dims]

    def _validate(self) -> None:
        _uint(self.first_frame, 64, "first_frame")
        fps = _finite(self.fps, "fps")
        _check(fps > 0, ErrorCode.BAD_VALUE, f"fps={fps} must be > 0")
        _frozen_set(self, "fps", fps)
        lid = _uint(self.layout_id, 8, "layout_id")
        lay = LAYOUTS_BY_ID.get(lid)
        _check(lay is not None, ErrorCode.BAD_VALUE, f"unknown layout_id {lid}; known {sorted(LAYOUTS_BY_ID)}")
        v = np.asarray(self.values)
        _check(
            v.ndim == 2 and v.shape[1] == lay.dim and v.shape[0] >= 1,
            ErrorCode.BAD_VALUE,
            f"{lay.name} values must be [n >= 1, {lay.dim}], got {list(v.shape)}",
        )
        _check(v.dtype.kind == "f", ErrorCode.BAD_VALUE, f"values must be float, got {v.dtype}")
        v = np.ascontiguousarray(v, dtype="<f4")
        _finite_array(v, "face values")
        _uint(v.shape[0], 32, "n_frames")
        _frozen_set(self, "values", v)

    @property
    def layout_name(self) -> str:
        return LAYOUTS_BY_ID[self.layout_id].name

    def _payload(self) -> bytes:
        n, d = self.values.shape
        return struct.pack("<QfBBHI", self.first_frame, self.fps, self.layout_id, 0, d, n) + self.values.tobytes()

    @classmethod
    def _parse(cls, r: _Reader, turn_id: int, seq: int, send_time_us: int) -> FaceFrames:
        first, fps, lid, reserved, dims, n = r.unpack("QfBBHI")
        _check(reserved == 0, ErrorCode.BAD_VALUE, "FaceFrames: reserved byte is not 0")
        _check(math.isfinite(fps), ErrorCode.NON_FINITE, "FaceFrames: fps is not finite")
        lay = LAYOUTS_BY_ID.get(lid)
        _check(lay is not None, ErrorCode.BAD_VALUE, f"FaceFrames: unknown layout_id {lid}")
        _check(dims == lay.dim, ErrorCode.BAD_VALUE, f"FaceFrames: {lay.name} has {lay.dim} dims, message says {dims}")
        _check(n >= 1, ErrorCode.BAD_VALUE, "FaceFrames: n_frames is 0")
        values = r.array("<f4", n * dims).reshape(n, dims)
        r.finish()
        return cls(first, fps, lid, values, turn_id=turn_id, seq=seq, send_time_us=send_time_us)


@dataclass(frozen=True, eq=False)
class TurnEnd(Message):
    """Server -> client: the turn is over (the last message of a turn). Payload::

    u8 status (0 completed, 1 cancelled, 2 failed), u8 reserved(0), u16 reserved(0),
    f32 ttft_s, f32 ttfa_s, f32 first_audio_s, f32 rtf, f32 total_s   (-1 = not measured; never NaN/inf)
    u32 text_bytes, u32 text_deltas, u64 audio_samples, u32 audio_chunks, u32 face_frames
    """

    KIND: ClassVar[Kind] = Kind.TURN_END
    status: int = TurnStatus.COMPLETED
    ttft_s: float = -1.0  # A2-LLM §6.1 TTFT: end of the user's utterance -> first generated audio token (s)
    ttfa_s: float = -1.0  # A2-LLM §6.1 TTFA: end of the user's utterance -> first facial motion frame (s)
    first_audio_s: float = -1.0  # extra: end of the user's utterance -> the server sent the first AudioChunk (s)
    rtf: float = -1.0  # A2-LLM §6.1 RTF: generation time / duration of the synthesized speech
    total_s: float = -1.0  # turn wall time
    text_bytes: int = 0
    text_deltas: int = 0
    audio_samples: int = 0
    audio_chunks: int = 0
    face_frames: int = 0  # frames per layout

    _FMT: ClassVar[str] = "BBHfffffIIQII"

    def _validate(self) -> None:
        st = _uint(self.status, 8, "status")
        _check(st in TurnStatus._value2member_map_, ErrorCode.BAD_VALUE, f"unknown turn status {st}")
        _frozen_set(self, "status", TurnStatus(st))
        for name in ("ttft_s", "ttfa_s", "first_audio_s", "rtf", "total_s"):
            _frozen_set(self, name, _finite(getattr(self, name), name))
        for name in ("text_bytes", "text_deltas", "audio_chunks", "face_frames"):
            _uint(getattr(self, name), 32, name)
        _uint(self.audio_samples, 64, "audio_samples")

    def _payload(self) -> bytes:
        return struct.pack(
            "<" + self._FMT, int(self.status), 0, 0, self.ttft_s, self.ttfa_s, self.first_audio_s, self.rtf,
            self.total_s, self.text_bytes, self.text_deltas, self.audio_samples, self.audio_chunks, self.face_frames,
        )  # fmt: skip

    @classmethod
    def _parse(cls, r: _Reader, turn_id: int, seq: int, send_time_us: int) -> TurnEnd:
        st, r1, r2, *floats_counts = r.unpack(cls._FMT)
        _check(r1 == 0 and r2 == 0, ErrorCode.BAD_VALUE, "TurnEnd: reserved fields are not 0")
        r.finish()
        return cls(st, *floats_counts, turn_id=turn_id, seq=seq, send_time_us=send_time_us)


@dataclass(frozen=True, eq=False)
class Cancel(Message):
    """Client -> server: stop the turn named by the header's ``turn_id`` (0 = the current turn). Empty payload."""

    KIND: ClassVar[Kind] = Kind.CANCEL


@dataclass(frozen=True, eq=False)
class Bye(Message):
    """Client -> server: the client leaves; its session (and turn) end now. Empty payload."""

    KIND: ClassVar[Kind] = Kind.BYE


@dataclass(frozen=True, eq=False)
class Heartbeat(Message):
    """Both ways. Payload: u64 time_us (sender's monotonic clock), u64 echo_us (the peer's last time_us, 0 = none)."""

    KIND: ClassVar[Kind] = Kind.HEARTBEAT
    time_us: int = 0
    echo_us: int = 0

    def _validate(self) -> None:
        _uint(self.time_us, 64, "time_us")
        _uint(self.echo_us, 64, "echo_us")

    def _payload(self) -> bytes:
        return struct.pack("<QQ", self.time_us, self.echo_us)

    @classmethod
    def _parse(cls, r: _Reader, turn_id: int, seq: int, send_time_us: int) -> Heartbeat:
        t, e = r.unpack("QQ")
        r.finish()
        return cls(t, e, turn_id=turn_id, seq=seq, send_time_us=send_time_us)


@dataclass(frozen=True, eq=False)
class Error(Message):
    """An error report. Payload: u16 code, u16 n_bytes, UTF-8 message[n_bytes] (n_bytes <= 1024).

    Unknown codes decode fine (``code`` stays an int) so that old clients can read new servers' errors.
    """

    KIND: ClassVar[Kind] = Kind.ERROR
    code: int = ErrorCode.INTERNAL
    message: str = ""

    def _validate(self) -> None:
        c = _uint(self.code, 16, "code")
        _frozen_set(self, "code", ErrorCode(c) if c in ErrorCode._value2member_map_ else c)
        _utf8_bytes(self.message, MAX_ERROR_MESSAGE, "message")

    def _payload(self) -> bytes:
        raw = self.message.encode("utf-8")
        return struct.pack("<HH", int(self.code), len(raw)) + raw

    @classmethod
    def _parse(cls, r: _Reader, turn_id: int, seq: int, send_time_us: int) -> Error:
        code, n = r.unpack("HH")
        _check(n <= MAX_ERROR_MESSAGE, ErrorCode.BAD_VALUE, f"Error message of {n} bytes > {MAX_ERROR_MESSAGE}")
        text = r.utf8(n, "message")
        r.finish()
        return cls(code, text, turn_id=turn_id, seq=seq, send_time_us=send_time_us)

    @classmethod
    def from_exception(cls, e: ProtocolError, turn_id: int = 0) -> Error:
        return cls(e.code, e.message.encode("utf-8")[:MAX_ERROR_MESSAGE].decode("utf-8", "ignore"), turn_id=turn_id)


MESSAGE_TYPES: dict[Kind, type[Message]] = {
    cls.KIND: cls
    for cls in (Hello, Welcome, UserAudio, TextDelta, AudioChunk, FaceFrames, TurnEnd, Cancel, Heartbeat, Error, Bye)
}


# --- decoding ------------------------------------------------------------------------------------------------------
def decode_header(header: bytes | memoryview) -> tuple[Kind, int, int, int, int]:
    """Check a 32-byte header -> ``(kind, turn_id, payload_length, seq, send_time_us)``.

    Checks, in this order: length (BAD_LENGTH), magic (BAD_MAGIC), version (UNSUPPORTED_VERSION), kind (UNKNOWN_KIND),
    payload_length <= MAX_PAYLOAD (PAYLOAD_TOO_LARGE).
    """
    if len(header) != HEADER_SIZE:
        raise ProtocolError(ErrorCode.BAD_LENGTH, f"header is {len(header)} bytes, expected {HEADER_SIZE}")
    magic, version, kind, turn_id, length, seq, t_us = HEADER.unpack(header)
    _check(magic == MAGIC, ErrorCode.BAD_MAGIC, f"bad magic {bytes(magic)!r}, expected {MAGIC!r}")
    _check(
        version in SUPPORTED_VERSIONS,
        ErrorCode.UNSUPPORTED_VERSION,
        f"protocol version {version} is not supported (supported: {list(SUPPORTED_VERSIONS)})",
    )
    _check(kind in Kind._value2member_map_, ErrorCode.UNKNOWN_KIND, f"unknown message kind {kind}")
    _check(length <= MAX_PAYLOAD, ErrorCode.PAYLOAD_TOO_LARGE, f"payload_length {length} > {MAX_PAYLOAD}")
    return Kind(kind), turn_id, length, seq, t_us


def _decode_payload(kind: Kind, payload: memoryview, turn_id: int, seq: int, t_us: int) -> Message:
    cls = MESSAGE_TYPES[kind]
    return cls._parse(_Reader(payload, cls.__name__), turn_id, seq, t_us)


def decode(data: bytes | bytearray | memoryview) -> Message:
    """Decode the concatenated form (header + payload). Raises only :class:`ProtocolError`."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ProtocolError(ErrorCode.BAD_FRAMING, f"expected bytes, got {type(data).__name__}")
    buf = memoryview(data).cast("B") if isinstance(data, memoryview) else memoryview(bytes(data))
    if len(buf) < HEADER_SIZE:
        raise ProtocolError(ErrorCode.BAD_LENGTH, f"message is {len(buf)} bytes, shorter than the header")
    kind, turn_id, length, seq, t_us = decode_header(buf[:HEADER_SIZE])
    _check(
        len(buf) == HEADER_SIZE + length,
        ErrorCode.BAD_LENGTH,
        f"payload is {len(buf) - HEADER_SIZE} bytes, header says {length}",
    )
    return _decode_payload(kind, buf[HEADER_SIZE:], turn_id, seq, t_us)


def decode_frames(frames: Sequence[bytes | bytearray | memoryview]) -> Message:
    """Decode ``[header, payload]`` as received from ZeroMQ (``zmq.Frame`` objects are fine too)."""
    if not isinstance(frames, (list, tuple)) or len(frames) != 2:
        n = len(frames) if isinstance(frames, (list, tuple)) else "?"
        raise ProtocolError(ErrorCode.BAD_FRAMING, f"expected 2 frames (header, payload), got {n}")
    bufs = []
    for f in frames:
        b = getattr(f, "buffer", f)  # zmq.Frame
        if not isinstance(b, (bytes, bytearray, memoryview)):
            raise ProtocolError(ErrorCode.BAD_FRAMING, f"frame is a {type(f).__name__}, not bytes")
        bufs.append(memoryview(b).cast("B") if isinstance(b, memoryview) else memoryview(bytes(b)))
    kind, turn_id, length, seq, t_us = decode_header(bufs[0])
    _check(len(bufs[1]) == length, ErrorCode.BAD_LENGTH, f"payload frame is {len(bufs[1])} bytes, header says {length}")
    return _decode_payload(kind, bufs[1], turn_id, seq, t_us)


def set_header_fields(header: bytes, *, seq: int | None = None, send_time_us: int | None = None) -> bytes:
    """A copy of an encoded header with ``seq`` and/or ``send_time_us`` replaced (the server stamps these)."""
    h = bytearray(header)
    if seq is not None:
        struct.pack_into("<Q", h, 16, seq)
    if send_time_us is not None:
        struct.pack_into("<Q", h, 24, send_time_us)
    return bytes(h)


def error_reply(e: ProtocolError, turn_id: int = 0) -> Error:
    """The Error message a peer sends back for a malformed message."""
    return Error.from_exception(e, turn_id)


# --- encoding the engine's events (the server's hot path) -----------------------------------------------------------
# The events are a2llm_rt.engine.events' (the one event vocabulary); these functions write their payloads byte for byte
# as the message classes above do, without building a message object, with one copy of the samples, and with the same
# checks (finite values, layout dims, field ranges). The header is packed separately, at the moment of sending, when
# the session's ``seq`` and the send time are known (:func:`pack_header`).
_FACE_HEAD = struct.Struct("<QfBBHI")  # first_frame, fps, layout_id, reserved, dims, n_frames: 20 bytes
_TEXT_HEAD = struct.Struct("<II")  # byte_offset, n_bytes
_F32 = np.dtype("<f4")


def pack_header(kind: int, turn_id: int, payload_length: int, seq: int = 0, send_time_us: int = 0) -> bytes:
    """The 32-byte header of a message whose payload is ``payload_length`` bytes."""
    return HEADER.pack(MAGIC, VERSION, kind, turn_id, payload_length, seq, send_time_us)


def _f32_payload(head: bytes, values: np.ndarray) -> bytes | bytearray:
    """``head`` followed by ``values`` as little-endian float32 (one copy, converting on the way)."""
    if values.dtype == _F32 and values.flags.c_contiguous:
        return b"".join((head, values.data))
    buf = bytearray(len(head) + values.size * 4)
    buf[: len(head)] = head
    np.frombuffer(buf, "<f4", offset=len(head)).reshape(values.shape)[...] = values
    return buf


def event_payload(event: object, *, layout: str | None = None, byte_offset: int = 0) -> tuple[Kind, bytes | bytearray]:
    """``(kind, payload)`` of an engine event: ``TextDelta`` (at ``byte_offset`` of the turn's UTF-8 text),
    ``AudioChunk`` (F32) or ``FaceFrames`` in ``layout`` (``flame58``, ``arkit52`` or ``livelink61``).
    :class:`ProtocolError` for values the wire cannot carry (NaN, wrong dims, a layout the event lacks)."""
    if isinstance(event, _ev.TextDelta):
        raw = _utf8_bytes(event.text, MAX_PAYLOAD - 8, "text")
        return Kind.TEXT_DELTA, _TEXT_HEAD.pack(_uint(byte_offset, 32, "byte_offset"), len(raw)) + raw
    if isinstance(event, _ev.AudioChunk):
        pcm = np.asarray(event.pcm)
        _check(pcm.ndim == 1 and pcm.dtype.kind == "f", ErrorCode.BAD_VALUE, "AudioChunk pcm must be [n] float")
        _finite_array(pcm, "audio samples")
        rate = _uint(event.sample_rate, 32, "sample_rate")
        _check(MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE, ErrorCode.BAD_VALUE, f"sample_rate={rate} out of range")
        head = _AUDIO_HEAD.pack(int(AudioFormat.F32), 0, 1, rate, _uint(event.sample_offset, 64, "sample_offset"),
                                _uint(pcm.shape[0], 32, "n_samples"))  # fmt: skip
        return Kind.AUDIO_CHUNK, _f32_payload(head, pcm)
    if isinstance(event, _ev.FaceFrames):
        values = getattr(event, layout) if layout in LAYOUTS else None  # the event's fields are named by layout
        _check(values is not None, ErrorCode.BAD_VALUE, f"FaceFrames has no {layout} frames")
        lay = LAYOUTS[layout]
        v = np.asarray(values)
        _check(
            v.ndim == 2 and v.shape[1] == lay.dim and v.shape[0] >= 1 and v.dtype.kind == "f",
            ErrorCode.BAD_VALUE,
            f"{lay.name} values must be float [n >= 1, {lay.dim}], got {v.dtype} {list(v.shape)}",
        )
        _finite_array(v, "face values")
        fps = _finite(event.fps, "fps")
        _check(fps > 0, ErrorCode.BAD_VALUE, f"fps={fps} must be > 0")
        head = _FACE_HEAD.pack(_uint(event.first_frame, 64, "first_frame"), fps, lay.layout_id, 0, lay.dim,
                               _uint(v.shape[0], 32, "n_frames"))  # fmt: skip
        return Kind.FACE_FRAMES, _f32_payload(head, v)
    raise ProtocolError(ErrorCode.BAD_VALUE, f"{type(event).__name__} has no wire encoding")


def encode_event(
    event: object, turn_id: int = 0, *, layout: str | None = None, byte_offset: int = 0, seq: int = 0,
    send_time_us: int = 0,
) -> list[bytes | bytearray]:  # fmt: skip
    """``[header, payload]`` of an engine event (see :func:`event_payload`); decodes to the matching message."""
    kind, payload = event_payload(event, layout=layout, byte_offset=byte_offset)
    return [pack_header(kind, _uint(turn_id, 32, "turn_id"), len(payload), seq, send_time_us), payload]
