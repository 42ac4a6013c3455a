"""Live Link Face UDP packet (protocol version 6): the bytes the iPhone app sends to Unreal on port 11111.

Layout, all big-endian::

    u8  version            (6)
    u32 len + bytes        device id, UTF-8
    u32 len + bytes        subject name, UTF-8
    i32 frame              timecode frame number at the packet's rate
    f32 subframe           fraction of a frame, [0, 1)
    i32 fps numerator
    i32 fps denominator
    u8  curve count        (61)
    61 x f32               values in LIVELINK61 order (52 ARKit curves in [0, 1], then 9 rotations in radians)

The real app's packets (``../shared/data/livelink/*.gesichter``) are 320 bytes each and re-encode byte-for-byte.
Every malformed packet raises :class:`InputError`; :meth:`LiveLinkPacket.decode` never raises anything else.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from a2llm_rt.errors import InputError
from a2llm_rt.face.layouts import LIVELINK61_DIM, LIVELINK61_NAMES

LIVELINK_PACKET_VERSION = 6
LIVELINK_CURVE_COUNT = LIVELINK61_DIM
MAX_STRING_BYTES = 1024  # device ids are UUIDs and subject names are short; anything longer is a corrupt packet

_TIMING = struct.Struct(">ifiiB")  # frame, subframe, fps numerator, fps denominator, curve count
_VALUES = struct.Struct(f">{LIVELINK_CURVE_COUNT}f")
_U32 = struct.Struct(">I")
_I32_MIN, _I32_MAX = -(2**31), 2**31 - 1


def _check_i32(name: str, value: int, where: str | None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputError(f"Live Link packet {name} must be an integer, got {value!r}", where)
    if not _I32_MIN <= int(value) <= _I32_MAX:
        raise InputError(f"Live Link packet {name} {value} does not fit a signed 32-bit integer", where)
    return int(value)


@dataclass(frozen=True, eq=False)
class LiveLinkPacket:
    """One Live Link Face frame.

    Attributes:
        device_id: sender id (the app sends a UUID string).
        subject: Live Link subject name (the name Unreal shows).
        frame: timecode frame number at ``fps_num / fps_den``.
        subframe: fraction of a frame.
        fps_num, fps_den: frame rate as a fraction (60/1 for the app at 60 fps).
        values: ``[61]`` float32 in LIVELINK61 order (read-only copy).
    """

    device_id: str
    subject: str
    frame: int
    subframe: float
    fps_num: int
    fps_den: int
    values: np.ndarray

    def __post_init__(self) -> None:
        for name in ("device_id", "subject"):
            s = getattr(self, name)
            if not isinstance(s, str):
                raise InputError(f"Live Link packet {name} must be a string, got {type(s).__name__}")
            try:
                n = len(s.encode("utf-8"))
            except UnicodeEncodeError as e:
                raise InputError(f"Live Link packet {name} is not encodable as UTF-8: {e.reason}") from None
            if n > MAX_STRING_BYTES:
                raise InputError(f"Live Link packet {name} is {n} bytes; at most {MAX_STRING_BYTES} are allowed")
        for name in ("frame", "fps_num", "fps_den"):
            object.__setattr__(self, name, _check_i32(name, getattr(self, name), None))
        sub = float(self.subframe)
        if not np.isfinite(sub):
            raise InputError(f"Live Link packet subframe must be finite, got {sub}")
        object.__setattr__(self, "subframe", float(np.float32(sub)))
        values = np.array(self.values, dtype=np.float32)  # a private copy
        if values.shape != (LIVELINK_CURVE_COUNT,):
            raise InputError(
                f"Live Link packet values must have shape [{LIVELINK_CURVE_COUNT}], got {list(values.shape)}"
            )
        bad = ~np.isfinite(values)
        if bad.any():
            i = int(np.argmax(bad))
            raise InputError(f"Live Link packet has non-finite value {values[i]} in curve {LIVELINK61_NAMES[i]!r}")
        values.setflags(write=False)
        object.__setattr__(self, "values", values)

    @property
    def fps(self) -> float | None:
        """Frames per second, or None when the packet carries no usable rate (denominator or numerator <= 0)."""
        if self.fps_num <= 0 or self.fps_den <= 0:
            return None
        return self.fps_num / self.fps_den

    def encode(self) -> bytes:
        """The packet's wire bytes (big-endian, version 6)."""
        dev = self.device_id.encode("utf-8")
        sub = self.subject.encode("utf-8")
        return b"".join(
            (
                bytes((LIVELINK_PACKET_VERSION,)),
                _U32.pack(len(dev)),
                dev,
                _U32.pack(len(sub)),
                sub,
                _TIMING.pack(self.frame, self.subframe, self.fps_num, self.fps_den, LIVELINK_CURVE_COUNT),
                _VALUES.pack(*self.values.tolist()),
            )
        )

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview, where: str | None = None) -> LiveLinkPacket:
        """Parse one packet. ``where`` (a file and frame, an address) prefixes error messages.

        Raises :class:`InputError` on a truncated or oversized packet, a wrong version or curve count, an absurd
        string length, a non-UTF-8 string or a non-finite number.
        """
        buf = bytes(data)
        n = len(buf)
        if n == 0:
            raise InputError("empty Live Link packet", where)
        if buf[0] != LIVELINK_PACKET_VERSION:
            raise InputError(
                f"Live Link packet version {buf[0]} is not supported (expected {LIVELINK_PACKET_VERSION})", where
            )
        pos = 1
        strings: list[str] = []
        for name in ("device id", "subject name"):
            if pos + 4 > n:
                raise InputError(f"Live Link packet truncated in the {name} length ({n} bytes)", where)
            (length,) = _U32.unpack_from(buf, pos)
            pos += 4
            if length > MAX_STRING_BYTES:
                raise InputError(
                    f"Live Link packet {name} length {length} is absurd (at most {MAX_STRING_BYTES} bytes)", where
                )
            if pos + length > n:
                raise InputError(
                    f"Live Link packet truncated in the {name}: needs {length} bytes, {n - pos} left", where
                )
            try:
                strings.append(buf[pos : pos + length].decode("utf-8"))
            except UnicodeDecodeError as e:
                raise InputError(
                    f"Live Link packet {name} is not valid UTF-8 ({e.reason} at byte {e.start})", where
                ) from None
            pos += length
        need = pos + _TIMING.size + _VALUES.size
        if n < pos + _TIMING.size:
            raise InputError(f"Live Link packet truncated in the frame/fps fields ({n} bytes)", where)
        frame, subframe, fps_num, fps_den, count = _TIMING.unpack_from(buf, pos)
        pos += _TIMING.size
        if count != LIVELINK_CURVE_COUNT:
            raise InputError(f"Live Link packet has {count} curves, expected {LIVELINK_CURVE_COUNT}", where)
        if n < need:
            raise InputError(f"Live Link packet truncated: {n} bytes, the curve values need {need}", where)
        if n > need:
            raise InputError(f"Live Link packet has {n - need} trailing bytes after the curve values", where)
        values = np.frombuffer(buf, dtype=">f4", count=LIVELINK_CURVE_COUNT, offset=pos).astype(np.float32)
        if not np.isfinite(subframe):
            raise InputError(f"Live Link packet has a non-finite subframe {subframe} (frame {frame})", where)
        bad = ~np.isfinite(values)
        if bad.any():
            i = int(np.argmax(bad))
            raise InputError(
                f"Live Link packet has non-finite value {values[i]} in curve {LIVELINK61_NAMES[i]!r} (frame {frame})",
                where,
            )
        return cls(strings[0], strings[1], frame, subframe, fps_num, fps_den, values)

    def __eq__(self, other: Any) -> bool:
        if not isinstance(other, LiveLinkPacket):
            return NotImplemented
        return (
            self.device_id == other.device_id
            and self.subject == other.subject
            and self.frame == other.frame
            and self.subframe == other.subframe
            and self.fps_num == other.fps_num
            and self.fps_den == other.fps_den
            and bool(np.array_equal(self.values, other.values))
        )

    __hash__ = object.__hash__
