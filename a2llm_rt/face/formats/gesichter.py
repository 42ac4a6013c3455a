"""LLV-style ``.gesichter`` recordings: Live Link Face UDP packets as they arrived, in a gzip container.

Container (inside gzip, big-endian)::

    u8  format version (6)
    u32 frame count
    per frame: u32 length, then that many bytes of one Live Link Face packet (see ``a2llm_rt.face.livelink_packet``)

A recording reads into a ``livelink61`` :class:`MotionClip` at the packets' rate (``fps_num / fps_den``). The first
packet's device id, subject, frame number and subframe go into ``meta``; on write they come back from ``meta``
(frame numbers count up from the first one, subframes are written as 0).
"""

from __future__ import annotations

import gzip
import struct
import zlib
from fractions import Fraction
from pathlib import Path

import numpy as np

from a2llm_rt.errors import InputError
from a2llm_rt.face.clip import MotionClip
from a2llm_rt.face.layouts import LIVELINK61
from a2llm_rt.face.livelink_packet import LiveLinkPacket
from a2llm_rt.utils.fileio import atomic_write

GESICHTER_VERSION = 6
MAX_PACKET_BYTES = 1 << 16
DEFAULT_DEVICE_ID = "a2llm"
DEFAULT_SUBJECT = "a2llm"
_HEADER = struct.Struct(">BI")
_U32 = struct.Struct(">I")


def read_gesichter_packets(path: str | Path) -> list[LiveLinkPacket]:
    """All packets of a recording, in file order. Raises :class:`InputError` on any malformed byte."""
    path = Path(path)
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise InputError("file not found", path) from None
    except (OSError, EOFError, zlib.error) as e:
        raise InputError(f"not a readable gzip .gesichter recording ({e})", path) from None
    if len(data) < _HEADER.size:
        raise InputError(f"truncated .gesichter header ({len(data)} bytes, need {_HEADER.size})", path)
    version, count = _HEADER.unpack_from(data, 0)
    if version != GESICHTER_VERSION:
        raise InputError(f".gesichter format version {version} is not supported (expected {GESICHTER_VERSION})", path)
    pos = _HEADER.size
    packets: list[LiveLinkPacket] = []
    for i in range(count):
        if pos + 4 > len(data):
            raise InputError(f"truncated: the header promises {count} frames, the data ends in frame {i}", path)
        (length,) = _U32.unpack_from(data, pos)
        pos += 4
        if length > MAX_PACKET_BYTES:
            raise InputError(f"frame {i}: packet length {length} is absurd (at most {MAX_PACKET_BYTES})", path)
        if pos + length > len(data):
            raise InputError(
                f"truncated in frame {i} of {count}: packet needs {length} bytes, {len(data) - pos} left", path
            )
        try:
            packets.append(LiveLinkPacket.decode(data[pos : pos + length]))
        except InputError as e:
            raise InputError(f"frame {i}: {e.problem}", path) from None
        pos += length
    if pos != len(data):
        raise InputError(f"{len(data) - pos} trailing bytes after the {count} frames the header promises", path)
    return packets


def write_gesichter_packets(packets: list[LiveLinkPacket], path: str | Path) -> None:
    """Write packets as a ``.gesichter`` recording, atomically."""
    body = [_HEADER.pack(GESICHTER_VERSION, len(packets))]
    for p in packets:
        raw = p.encode()
        body.append(_U32.pack(len(raw)))
        body.append(raw)
    with atomic_write(path, "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", mtime=0) as gz:
        gz.write(b"".join(body))


def read_gesichter(path: str | Path, fps: float | None = None) -> MotionClip:
    """A recording as a ``livelink61`` clip ``[T, 61]``; ``fps`` is used only when the packets carry no rate."""
    path = Path(path)
    packets = read_gesichter_packets(path)
    if not packets:
        raise InputError("the recording has no frames", path)
    first = packets[0]
    rates = {(p.fps_num, p.fps_den) for p in packets}
    if len(rates) > 1:
        raise InputError(f"packets disagree on the frame rate: {sorted(rates)}", path)
    rate = first.fps if first.fps is not None else fps
    if rate is None:
        raise InputError(f"the packets carry no frame rate ({first.fps_num}/{first.fps_den}); pass fps", path)
    frames = np.array([p.frame for p in packets], dtype=np.int64)
    gaps = int(np.count_nonzero(np.diff(frames) != 1))
    meta: dict = {
        "source": str(path),
        "format": "gesichter",
        "device_id": first.device_id,
        "subject": first.subject,
        "first_frame": first.frame,
        "first_subframe": first.subframe,
        "fps_num": first.fps_num,
        "fps_den": first.fps_den,
    }
    if gaps:
        meta["frame_gaps"] = gaps  # dropped or repeated packets: the clip is NOT on a uniform grid there
    clip = MotionClip(np.stack([p.values for p in packets]), float(rate), LIVELINK61.name, meta)
    clip.validate(path)
    return clip


def fps_fraction(fps: float) -> tuple[int, int]:
    """``fps`` as a (numerator, denominator) pair that fits i32: 60 -> (60, 1), 29.97002997 -> (30000, 1001)."""
    frac = Fraction(fps).limit_denominator(1001)
    if abs(float(frac) - fps) > 1e-6 * fps:
        frac = Fraction(fps).limit_denominator(1_000_000)
    return frac.numerator, frac.denominator


def clip_to_packets(clip: MotionClip) -> list[LiveLinkPacket]:
    """One packet per frame of a ``livelink61`` clip (device id, subject and first frame from ``clip.meta``)."""
    if clip.layout != LIVELINK61.name:
        raise InputError(f".gesichter recordings hold livelink61 frames, not {clip.layout}", clip.meta.get("source"))
    num, den = fps_fraction(clip.fps)
    meta = clip.meta
    first = int(meta.get("first_frame", 0))
    if (meta.get("fps_num"), meta.get("fps_den")) not in ((num, den), (None, None)):
        old = meta["fps_num"] / meta["fps_den"] if meta.get("fps_den") else None
        first = round(first * clip.fps / old) if old else 0  # same instant at the new rate
    device = str(meta.get("device_id", DEFAULT_DEVICE_ID))
    subject = str(meta.get("subject", DEFAULT_SUBJECT))
    return [LiveLinkPacket(device, subject, first + k, 0.0, num, den, clip.values[k]) for k in range(clip.num_frames)]


def write_gesichter(clip: MotionClip, path: str | Path) -> None:
    """Write a ``livelink61`` clip as a ``.gesichter`` recording, atomically."""
    clip.validate(path)
    write_gesichter_packets(clip_to_packets(clip), path)
