"""The a2llm bridge wire protocol, versions 1 and 2 (spec: plugin_bridge/PROTOCOL.md; version 2 kinds at the end).

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
VERSION = 1  # header version of the version 1 kinds when encoded on their own (Hello always)
VERSION_2 = 2  # game characters (PROTOCOL.md §10)
MAX_VERSION = VERSION_2  # the highest version this implementation speaks
SUPPORTED_VERSIONS: tuple[int, ...] = (1, 2)
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
    # version 2 (PROTOCOL.md §10): only with header version >= 2
    CHARACTER = 12  # C
    SERVER_INFO = 13  # S
    CONFIG_ACK = 14  # S
    GAME_CONTEXT = 15  # C
    USER_TEXT = 16  # C
    SET_EMOTION = 17  # C
    MIC_AUDIO = 18  # C
    SPEECH_STARTED = 19  # S
    SPEECH_ENDED = 20  # S
    BARGE_IN = 21  # S


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
    # version 2 (PROTOCOL.md §10.11)
    UNKNOWN_VOICE = 40
    UNKNOWN_EMOTION = 41
    TEXT_TOO_LONG = 42  # persona, game context or UserText over the server's limit
    BAD_TEXT = 43  # empty text turn, control characters or chat control tokens
    UNSUPPORTED_RATE = 44  # MicAudio at a rate the server does not take


class AudioFormat(IntEnum):
    PCM16 = 1  # int16 little-endian
    F32 = 2  # float32 little-endian, finite


class Capability(IntFlag):
    """Streams a client asks for in Hello and the server grants in Welcome."""

    TEXT = 1
    AUDIO = 2
    FACE = 4
    LIVELINK_UDP = 8  # Welcome only: the server also sends the face stream as Live Link Face UDP packets
    IDLE_FACE = 16  # version 2: idle face frames (FaceFrames with turn_id 0) between turns


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
    MIN_VERSION: ClassVar[int] = VERSION  # lowest header version this kind exists in
    wire_version: ClassVar[int | None] = None  # set per instance by the decoders: the header version it came with
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

    def header(self, payload_length: int, version: int | None = None) -> bytes:
        v = max(self.MIN_VERSION, version or self.wire_version or VERSION)
        return HEADER.pack(MAGIC, v, int(self.KIND), self.turn_id, payload_length, self.seq, self.send_time_us)

    def encode_frames(self, version: int | None = None) -> list[bytes]:
        """``[header (32 bytes), payload]``: the two ZeroMQ frames of this message. ``version``: the header version
        (the session's; default: the version it was decoded with, else the lowest version the kind exists in)."""
        payload = self._payload()
        _check(len(payload) <= MAX_PAYLOAD, ErrorCode.PAYLOAD_TOO_LARGE, f"payload {len(payload)} > {MAX_PAYLOAD}")
        return [self.header(len(payload), version), payload]

    def encode(self, version: int | None = None) -> bytes:
        """The concatenated form: header followed by payload."""
        h, p = self.encode_frames(version)
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
    input_sample_rate: int = _ev.INPUT_SAMPLE_RATE
    output_sample_rate: int = _ev.OUTPUT_SAMPLE_RATE
    fps: float = _ev.FACE_FPS
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
    sample_rate: int = _ev.INPUT_SAMPLE_RATE
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
class _EndedAudio(_Audio):
    """Client audio with one flag, ``_END_FLAG``, that ends something (the utterance, the mic stream): the bool field
    named ``_END``."""

    _END: ClassVar[str]
    _END_FLAG: ClassVar[int]

    def _flags(self) -> int:
        return self._END_FLAG if getattr(self, self._END) else 0

    def _validate(self) -> None:
        super()._validate()
        _frozen_set(self, self._END, bool(getattr(self, self._END)))

    @classmethod
    def _parse(cls, r: _Reader, turn_id: int, seq: int, send_time_us: int) -> _EndedAudio:
        samples, flags, rate, offset = cls._parse_audio(r)
        _check(flags & ~cls._END_FLAG == 0, ErrorCode.BAD_VALUE, f"unknown {cls.__name__} flags {flags:#x}")
        ended = bool(flags & cls._END_FLAG)
        return cls(samples, rate, offset, ended, turn_id=turn_id, seq=seq, send_time_us=send_time_us)


@dataclass(frozen=True, eq=False)
class UserAudio(_EndedAudio):
    """Client -> server: a chunk of the player's speech. Flags bit 0 = end of utterance (the turn starts)."""

    KIND: ClassVar[Kind] = Kind.USER_AUDIO
    _END: ClassVar[str] = "end_of_utterance"
    _END_FLAG: ClassVar[int] = AUDIO_FLAG_END_OF_UTTERANCE
    end_of_utterance: bool = False


@dataclass(frozen=True, eq=False)
class AudioChunk(_Audio):
    """Server -> client: answer speech, float32 24 kHz mono; ``sample_offset`` counts from the turn's first sample."""

    KIND: ClassVar[Kind] = Kind.AUDIO_CHUNK
    sample_rate: int = _ev.OUTPUT_SAMPLE_RATE

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
    fps: float = _ev.FACE_FPS
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
    _check(
        version >= MESSAGE_TYPES[Kind(kind)].MIN_VERSION,
        ErrorCode.UNKNOWN_KIND,
        f"message kind {kind} does not exist in protocol version {version}",
    )
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
    msg = _decode_payload(kind, buf[HEADER_SIZE:], turn_id, seq, t_us)
    object.__setattr__(msg, "wire_version", struct.unpack_from("<H", buf, 4)[0])  # re-encodes to the same bytes
    return msg


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
    msg = _decode_payload(kind, bufs[1], turn_id, seq, t_us)
    object.__setattr__(msg, "wire_version", struct.unpack_from("<H", bufs[0], 4)[0])
    return msg


def set_header_fields(
    header: bytes, *, seq: int | None = None, send_time_us: int | None = None, version: int | None = None
) -> bytes:
    """A copy of an encoded header with ``seq``, ``send_time_us`` and/or ``version`` replaced (the server stamps
    these; ``version`` never lowers a kind's own minimum)."""
    h = bytearray(header)
    if version is not None:
        kind = struct.unpack_from("<H", h, 6)[0]
        cls = MESSAGE_TYPES.get(kind)  # type: ignore[call-overload]
        struct.pack_into("<H", h, 4, max(version, cls.MIN_VERSION if cls is not None else VERSION))
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


def pack_header(
    kind: int, turn_id: int, payload_length: int, seq: int = 0, send_time_us: int = 0, version: int = VERSION
) -> bytes:
    """The 32-byte header of a message whose payload is ``payload_length`` bytes (``version``: the session's)."""
    return HEADER.pack(MAGIC, version, kind, turn_id, payload_length, seq, send_time_us)


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
        return Kind.FACE_FRAMES, face_payload(event.first_frame, event.fps, layout, values)  # type: ignore[arg-type]
    raise ProtocolError(ErrorCode.BAD_VALUE, f"{type(event).__name__} has no wire encoding")


def face_payload(first_frame: int, fps: float, layout: str, values: np.ndarray) -> bytes | bytearray:
    """The FaceFrames payload of ``[n, D]`` frames in ``layout`` from ``first_frame`` (as :class:`FaceFrames` writes
    it); :class:`ProtocolError` for an unknown layout, wrong dims, non-float or non-finite values."""
    lay = LAYOUTS.get(layout)
    _check(lay is not None, ErrorCode.BAD_VALUE, f"unknown face layout {layout!r}")
    v = np.asarray(values)
    _check(
        v.ndim == 2 and v.shape[1] == lay.dim and v.shape[0] >= 1 and v.dtype.kind == "f",
        ErrorCode.BAD_VALUE,
        f"{lay.name} values must be float [n >= 1, {lay.dim}], got {v.dtype} {list(v.shape)}",
    )
    _finite_array(v, "face values")
    f = _finite(fps, "fps")
    _check(f > 0, ErrorCode.BAD_VALUE, f"fps={f} must be > 0")
    head = _FACE_HEAD.pack(_uint(first_frame, 64, "first_frame"), f, lay.layout_id, 0, lay.dim,
                           _uint(v.shape[0], 32, "n_frames"))  # fmt: skip
    return _f32_payload(head, v)


def encode_event(
    event: object, turn_id: int = 0, *, layout: str | None = None, byte_offset: int = 0, seq: int = 0,
    send_time_us: int = 0,
) -> list[bytes | bytearray]:  # fmt: skip
    """``[header, payload]`` of an engine event (see :func:`event_payload`); decodes to the matching message."""
    kind, payload = event_payload(event, layout=layout, byte_offset=byte_offset)
    return [pack_header(kind, _uint(turn_id, 32, "turn_id"), len(payload), seq, send_time_us), payload]


# === version 2: game characters (PROTOCOL.md §10) ===================================================================
EMOTION_MODE_PROMPT = 1  # the emotion is an instruction in the prompt (the A2-LLM way)
EMOTION_MODE_FACE = 2  # the emotion is an offset/gain on the ARKit output (the Audio2Face way)
CONFIG_ACK_CONVERSATION_RESET = 1
MIC_FLAG_END_OF_STREAM = 1
SERVER_TURN_BIT = 0x80000000  # turn ids the server starts itself (hands-free utterances) have bit 31 set


class EmotionScope(IntEnum):
    SESSION = 0  # the session's default emotion from now on
    NEXT_TURN = 1  # only the next turn that starts


class SpeechEndReason(IntEnum):
    SILENCE = 0
    MAX_LENGTH = 1
    END_OF_STREAM = 2


def _intensity(value: float) -> float:
    v = _finite(value, "intensity")
    _check(0.0 <= v <= 1.0, ErrorCode.BAD_VALUE, f"intensity={v} must be in [0, 1]")
    return v


def _name_bytes(r: _Reader, what: str) -> str:
    (n,) = r.unpack("B")
    return r.utf8(n, what)


def _pack_name(name: str) -> bytes:
    raw = name.encode("utf-8")
    return struct.pack("<B", len(raw)) + raw


def _pack_text(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack("<I", len(raw)) + raw


def _text(r: _Reader, what: str) -> str:
    (n,) = r.unpack("I")
    return r.utf8(n, what)


@dataclass(frozen=True, eq=False)
class Character(Message):
    """Client -> server: the session's whole character configuration (§10.4). Payload::

    u8 emotion_modes (bit 0 PROMPT, bit 1 FACE), u8 reserved(0), u16 reserved(0), f32 intensity (0..1),
    u8 voice_len, voice, u8 emotion_len, emotion, u32 persona_len, persona   (UTF-8; empty = the server's default)
    """

    KIND: ClassVar[Kind] = Kind.CHARACTER
    MIN_VERSION: ClassVar[int] = VERSION_2
    emotion_modes: int = EMOTION_MODE_PROMPT | EMOTION_MODE_FACE
    intensity: float = 0.0
    voice: str = ""
    emotion: str = ""
    persona: str = ""

    def _validate(self) -> None:
        m = _uint(self.emotion_modes, 8, "emotion_modes")
        _check(m & ~3 == 0, ErrorCode.BAD_VALUE, f"unknown emotion_modes bits {m:#x}")
        _frozen_set(self, "intensity", _intensity(self.intensity))
        _utf8_bytes(self.voice, MAX_NAME, "voice")
        _utf8_bytes(self.emotion, MAX_NAME, "emotion")
        _utf8_bytes(self.persona, MAX_PAYLOAD - 16 - 2 * MAX_NAME, "persona")

    def _payload(self) -> bytes:
        return (
            struct.pack("<BBHf", self.emotion_modes, 0, 0, self.intensity)
            + _pack_name(self.voice)
            + _pack_name(self.emotion)
            + _pack_text(self.persona)
        )

    @classmethod
    def _parse(cls, r: _Reader, turn_id: int, seq: int, send_time_us: int) -> Character:
        modes, r1, r2, intensity = r.unpack("BBHf")
        _check(r1 == 0 and r2 == 0, ErrorCode.BAD_VALUE, "Character: reserved fields are not 0")
        _check(modes & ~3 == 0, ErrorCode.BAD_VALUE, f"Character: unknown emotion_modes bits {modes:#x}")
        _check(math.isfinite(intensity), ErrorCode.NON_FINITE, "Character: intensity is not finite")
        voice = _name_bytes(r, "voice")
        emotion = _name_bytes(r, "emotion")
        persona = _text(r, "persona")
        r.finish()
        return cls(modes, intensity, voice, emotion, persona, turn_id=turn_id, seq=seq, send_time_us=send_time_us)


@dataclass(frozen=True, eq=False)
class ServerInfo(Message):
    """Server -> client, right after Welcome in a version 2 session (§10.3). Payload::

    u32 max_persona_chars, u32 max_context_chars, u32 max_text_chars,
    u32 vad_min_speech_ms, u32 vad_min_silence_ms, u32 vad_barge_in_ms,
    u8 n_mic_rates, u32 mic_rates[n], u8 n_voices, n x (u8 len, name), u8 n_emotions, n x (u8 len, name)
    """

    KIND: ClassVar[Kind] = Kind.SERVER_INFO
    MIN_VERSION: ClassVar[int] = VERSION_2
    max_persona_chars: int = 4000
    max_context_chars: int = 700
    max_text_chars: int = 2000
    vad_min_speech_ms: int = 100
    vad_min_silence_ms: int = 500
    vad_barge_in_ms: int = 64
    mic_rates: tuple[int, ...] = (16000,)
    voices: tuple[str, ...] = ()  # the first is the default; empty: one unnamed voice
    emotions: tuple[str, ...] = ()

    _U32: ClassVar[tuple[str, ...]] = (
        "max_persona_chars", "max_context_chars", "max_text_chars",
        "vad_min_speech_ms", "vad_min_silence_ms", "vad_barge_in_ms",
    )  # fmt: skip

    def _validate(self) -> None:
        for name in self._U32:
            _uint(getattr(self, name), 32, name)
        rates = tuple(int(x) for x in self.mic_rates)
        _frozen_set(self, "mic_rates", rates)
        _check(len(rates) <= 255, ErrorCode.BAD_VALUE, "more than 255 mic rates")
        for rate in rates:
            _check(
                MIN_SAMPLE_RATE <= _uint(rate, 32, "mic rate") <= MAX_SAMPLE_RATE,
                ErrorCode.BAD_VALUE,
                f"mic rate {rate} out of range",
            )
        for name in ("voices", "emotions"):
            names = tuple(getattr(self, name))
            _frozen_set(self, name, names)
            _check(len(names) <= 255, ErrorCode.BAD_VALUE, f"more than 255 {name}")
            for n in names:
                _check(len(_utf8_bytes(n, MAX_NAME, name)) > 0, ErrorCode.BAD_VALUE, f"an empty name in {name}")

    def _payload(self) -> bytes:
        parts = [struct.pack("<6I", *(getattr(self, n) for n in self._U32))]
        parts.append(struct.pack(f"<B{len(self.mic_rates)}I", len(self.mic_rates), *self.mic_rates))
        for names in (self.voices, self.emotions):
            parts.append(struct.pack("<B", len(names)))
            parts.extend(_pack_name(n) for n in names)
        return b"".join(parts)

    @classmethod
    def _parse(cls, r: _Reader, turn_id: int, seq: int, send_time_us: int) -> ServerInfo:
        head = r.unpack("6I")
        (n,) = r.unpack("B")
        rates = r.unpack(f"{n}I")
        lists = []
        for what in ("voice", "emotion"):
            (n,) = r.unpack("B")
            lists.append(tuple(_name_bytes(r, what) for _ in range(n)))
        r.finish()
        return cls(*head, rates, *lists, turn_id=turn_id, seq=seq, send_time_us=send_time_us)


@dataclass(frozen=True, eq=False)
class ConfigAck(Message):
    """Server -> client: a Character / GameContext / SetEmotion was applied (§10.5). Payload: u16 acked_kind,
    u16 flags (bit 0 CONVERSATION_RESET)."""

    KIND: ClassVar[Kind] = Kind.CONFIG_ACK
    MIN_VERSION: ClassVar[int] = VERSION_2
    acked_kind: int = Kind.CHARACTER
    flags: int = 0

    def _validate(self) -> None:
        k = _uint(self.acked_kind, 16, "acked_kind")
        _check(
            k in (Kind.CHARACTER, Kind.GAME_CONTEXT, Kind.SET_EMOTION), ErrorCode.BAD_VALUE, f"ConfigAck for kind {k}"
        )
        _frozen_set(self, "acked_kind", Kind(k))
        f = _uint(self.flags, 16, "flags")
        _check(f & ~CONFIG_ACK_CONVERSATION_RESET == 0, ErrorCode.BAD_VALUE, f"unknown ConfigAck flags {f:#x}")

    @property
    def conversation_reset(self) -> bool:
        return bool(self.flags & CONFIG_ACK_CONVERSATION_RESET)

    def _payload(self) -> bytes:
        return struct.pack("<HH", int(self.acked_kind), self.flags)

    @classmethod
    def _parse(cls, r: _Reader, turn_id: int, seq: int, send_time_us: int) -> ConfigAck:
        k, f = r.unpack("HH")
        r.finish()
        return cls(k, f, turn_id=turn_id, seq=seq, send_time_us=send_time_us)


@dataclass(frozen=True, eq=False)
class _TextMessage(Message):
    """Shared body of GameContext and UserText. Payload: u32 n_bytes, UTF-8 text[n_bytes]."""

    MIN_VERSION: ClassVar[int] = VERSION_2
    text: str = ""

    def _validate(self) -> None:
        _utf8_bytes(self.text, MAX_PAYLOAD - 4, "text")

    def _payload(self) -> bytes:
        return _pack_text(self.text)

    @classmethod
    def _parse(cls, r: _Reader, turn_id: int, seq: int, send_time_us: int) -> _TextMessage:
        text = _text(r, "text")
        r.finish()
        return cls(text, turn_id=turn_id, seq=seq, send_time_us=send_time_us)


@dataclass(frozen=True, eq=False)
class GameContext(_TextMessage):
    """Client -> server: the game's situation for the next turns (§10.6); empty clears it. No conversation reset."""

    KIND: ClassVar[Kind] = Kind.GAME_CONTEXT


@dataclass(frozen=True, eq=False)
class UserText(_TextMessage):
    """Client -> server: a typed user turn (§10.7), header ``turn_id`` > 0; answered like an utterance."""

    KIND: ClassVar[Kind] = Kind.USER_TEXT


@dataclass(frozen=True, eq=False)
class SetEmotion(Message):
    """Client -> server: the emotion for the session or the next turn (§10.4). Payload::

    u8 scope (0 session, 1 next turn), u8 reserved(0), u16 reserved(0), f32 intensity (0..1), u8 name_len, name
    """

    KIND: ClassVar[Kind] = Kind.SET_EMOTION
    MIN_VERSION: ClassVar[int] = VERSION_2
    scope: int = EmotionScope.SESSION
    intensity: float = 1.0
    name: str = "neutral"

    def _validate(self) -> None:
        sc = _uint(self.scope, 8, "scope")
        _check(sc in EmotionScope._value2member_map_, ErrorCode.BAD_VALUE, f"unknown emotion scope {sc}")
        _frozen_set(self, "scope", EmotionScope(sc))
        _frozen_set(self, "intensity", _intensity(self.intensity))
        _check(len(_utf8_bytes(self.name, MAX_NAME, "emotion name")) > 0, ErrorCode.BAD_VALUE, "empty emotion name")

    def _payload(self) -> bytes:
        return struct.pack("<BBHf", int(self.scope), 0, 0, self.intensity) + _pack_name(self.name)

    @classmethod
    def _parse(cls, r: _Reader, turn_id: int, seq: int, send_time_us: int) -> SetEmotion:
        sc, r1, r2, intensity = r.unpack("BBHf")
        _check(r1 == 0 and r2 == 0, ErrorCode.BAD_VALUE, "SetEmotion: reserved fields are not 0")
        _check(sc in EmotionScope._value2member_map_, ErrorCode.BAD_VALUE, f"SetEmotion: unknown scope {sc}")
        _check(math.isfinite(intensity), ErrorCode.NON_FINITE, "SetEmotion: intensity is not finite")
        name = _name_bytes(r, "emotion name")
        r.finish()
        return cls(sc, intensity, name, turn_id=turn_id, seq=seq, send_time_us=send_time_us)


@dataclass(frozen=True, eq=False)
class MicAudio(_EndedAudio):
    """Client -> server: continuous microphone audio for hands-free talk (§10.8); the audio body of UserAudio with
    ``sample_offset`` = index in the mic stream (0 starts a new stream) and flag bit 0 END_OF_STREAM."""

    KIND: ClassVar[Kind] = Kind.MIC_AUDIO
    MIN_VERSION: ClassVar[int] = VERSION_2
    _END: ClassVar[str] = "end_of_stream"
    _END_FLAG: ClassVar[int] = MIC_FLAG_END_OF_STREAM
    end_of_stream: bool = False


@dataclass(frozen=True, eq=False)
class SpeechStarted(Message):
    """Server -> client: an utterance began (§10.8). Payload: u64 start_sample, u64 detected_sample (mic stream
    offsets at the client's rate). Header ``turn_id``: the turn the utterance will become (bit 31 set)."""

    KIND: ClassVar[Kind] = Kind.SPEECH_STARTED
    MIN_VERSION: ClassVar[int] = VERSION_2
    start_sample: int = 0
    detected_sample: int = 0

    def _validate(self) -> None:
        _uint(self.start_sample, 64, "start_sample")
        _uint(self.detected_sample, 64, "detected_sample")

    def _payload(self) -> bytes:
        return struct.pack("<QQ", self.start_sample, self.detected_sample)

    @classmethod
    def _parse(cls, r: _Reader, turn_id: int, seq: int, send_time_us: int) -> SpeechStarted:
        a, b = r.unpack("QQ")
        r.finish()
        return cls(a, b, turn_id=turn_id, seq=seq, send_time_us=send_time_us)


@dataclass(frozen=True, eq=False)
class SpeechEnded(Message):
    """Server -> client: the utterance ended and its turn starts now (§10.8). Payload::

    u64 start_sample, u64 end_sample, u64 detected_sample, u8 reason (0 silence, 1 max length, 2 end of stream),
    u8[3] reserved(0)
    """

    KIND: ClassVar[Kind] = Kind.SPEECH_ENDED
    MIN_VERSION: ClassVar[int] = VERSION_2
    start_sample: int = 0
    end_sample: int = 0
    detected_sample: int = 0
    reason: int = SpeechEndReason.SILENCE

    def _validate(self) -> None:
        for name in ("start_sample", "end_sample", "detected_sample"):
            _uint(getattr(self, name), 64, name)
        rs = _uint(self.reason, 8, "reason")
        _check(rs in SpeechEndReason._value2member_map_, ErrorCode.BAD_VALUE, f"unknown speech end reason {rs}")
        _frozen_set(self, "reason", SpeechEndReason(rs))

    def _payload(self) -> bytes:
        return struct.pack("<QQQB3x", self.start_sample, self.end_sample, self.detected_sample, int(self.reason))

    @classmethod
    def _parse(cls, r: _Reader, turn_id: int, seq: int, send_time_us: int) -> SpeechEnded:
        a, b, c, rs, r1, r2, r3 = r.unpack("QQQBBBB")
        _check(r1 == r2 == r3 == 0, ErrorCode.BAD_VALUE, "SpeechEnded: reserved bytes are not 0")
        _check(rs in SpeechEndReason._value2member_map_, ErrorCode.BAD_VALUE, f"SpeechEnded: unknown reason {rs}")
        r.finish()
        return cls(a, b, c, rs, turn_id=turn_id, seq=seq, send_time_us=send_time_us)


@dataclass(frozen=True, eq=False)
class BargeIn(Message):
    """Server -> client: the player spoke over the answer of header ``turn_id``, which is cancelled (its
    TurnEnd(CANCELLED) follows). Payload: u64 speech_sample, u64 detected_sample (mic stream offsets)."""

    KIND: ClassVar[Kind] = Kind.BARGE_IN
    MIN_VERSION: ClassVar[int] = VERSION_2
    speech_sample: int = 0
    detected_sample: int = 0

    def _validate(self) -> None:
        _uint(self.speech_sample, 64, "speech_sample")
        _uint(self.detected_sample, 64, "detected_sample")

    def _payload(self) -> bytes:
        return struct.pack("<QQ", self.speech_sample, self.detected_sample)

    @classmethod
    def _parse(cls, r: _Reader, turn_id: int, seq: int, send_time_us: int) -> BargeIn:
        a, b = r.unpack("QQ")
        r.finish()
        return cls(a, b, turn_id=turn_id, seq=seq, send_time_us=send_time_us)


MESSAGE_TYPES.update(
    {
        cls.KIND: cls
        for cls in (
            Character,
            ServerInfo,
            ConfigAck,
            GameContext,
            UserText,
            SetEmotion,
            MicAudio,
            SpeechStarted,
            SpeechEnded,
            BargeIn,
        )  # fmt: skip
    }
)
CLIENT_KINDS_V2 = frozenset(
    {Kind.CHARACTER, Kind.GAME_CONTEXT, Kind.USER_TEXT, Kind.SET_EMOTION, Kind.MIC_AUDIO}
)  # what a server accepts only in a version 2 session
