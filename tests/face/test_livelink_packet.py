"""Live Link Face UDP packet codec: the real app's packets re-encode byte-for-byte; bad bytes raise InputError only."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from a2llm_rt.errors import InputError
from a2llm_rt.face.layouts import LIVELINK61_NAMES
from a2llm_rt.face.livelink_packet import LiveLinkPacket


def raw_packets(path: Path) -> list[bytes]:
    """The raw packets of a .gesichter file, parsed here independently of the library's reader."""
    data = gzip.decompress(path.read_bytes())
    version, count = struct.unpack_from(">BI", data, 0)
    assert version == 6
    pos, out = 5, []
    for _ in range(count):
        (n,) = struct.unpack_from(">I", data, pos)
        out.append(data[pos + 4 : pos + 4 + n])
        pos += 4 + n
    assert pos == len(data)
    return out


def make_packet(**kw) -> LiveLinkPacket:
    args = dict(
        device_id="DEADC0DE-1337-1337-1337-CAFEBABE",
        subject="Ana",
        frame=1234,
        subframe=0.25,
        fps_num=60,
        fps_den=1,
        values=np.linspace(-0.5, 1.0, 61, dtype=np.float32),
    )
    args.update(kw)
    return LiveLinkPacket(**args)


@pytest.fixture(scope="module")
def real_packets() -> dict[str, list[bytes]]:
    from tests.conftest import shared_path

    folder = shared_path("livelink")
    return {p.stem: raw_packets(p) for p in sorted(folder.glob("*.gesichter"))}


def test_real_packets_reencode_byte_for_byte(real_packets):
    assert set(real_packets) >= {"dao", "debug-jawopen", "debug-eyeblinkleft"}
    for name, packets in real_packets.items():
        for i, raw in enumerate(packets):
            p = LiveLinkPacket.decode(raw)
            assert p.encode() == raw, f"{name} packet {i}"
            assert LiveLinkPacket.decode(p.encode()) == p


def test_dao_is_180_packets_at_60_fps(real_packets):
    packets = [LiveLinkPacket.decode(r) for r in real_packets["dao"]]
    assert len(packets) == 180
    assert all(len(r) == 320 for r in real_packets["dao"])
    assert {(p.fps_num, p.fps_den) for p in packets} == {(60, 1)}
    assert packets[0].fps == 60.0
    assert packets[0].device_id == "DEADC0DE-1337-1337-1337-CAFEBABE"
    frames = np.array([p.frame for p in packets])
    assert np.all(np.diff(frames) >= 1)  # increasing timecode frames
    speech = np.stack([p.values for p in packets])
    assert speech[:, LIVELINK61_NAMES.index("JawOpen")].std() > 0.01  # real speech moves the jaw


@pytest.mark.parametrize(("stem", "curve"), [("debug-jawopen", "JawOpen"), ("debug-eyeblinkleft", "EyeBlinkLeft")])
def test_debug_sweep_moves_exactly_the_named_curve(real_packets, stem, curve):
    """The sweep file names its curve: only that index of LIVELINK61 moves (checks the enum order vs the app)."""
    values = np.stack([LiveLinkPacket.decode(r).values for r in real_packets[stem]])  # [T, 61]
    moving = np.flatnonzero(values.std(axis=0) > 0)
    assert [LIVELINK61_NAMES[i] for i in moving] == [curve]
    sweep = values[:, LIVELINK61_NAMES.index(curve)]
    assert sweep.min() < -0.9 and sweep.max() > 0.9 and np.all(np.diff(sweep) > 0)


def test_encode_layout_and_roundtrip():
    p = make_packet()
    raw = p.encode()
    assert len(raw) == 1 + 4 + 32 + 4 + 3 + 17 + 61 * 4
    assert raw[0] == 6 and raw[1:5] == struct.pack(">I", 32) and raw[5:37] == p.device_id.encode()
    assert struct.unpack_from(">ifiiB", raw, 44) == (1234, 0.25, 60, 1, 61)
    np.testing.assert_array_equal(np.frombuffer(raw[-244:], ">f4"), p.values)
    q = LiveLinkPacket.decode(raw)
    assert q == p and q.subject == "Ana" and q.values.dtype == np.float32
    assert not q.values.flags.writeable
    assert make_packet(subject="Zoë 顔").encode() != raw
    assert LiveLinkPacket.decode(make_packet(subject="Zoë 顔").encode()).subject == "Zoë 顔"


def test_constructor_rejects_bad_fields():
    with pytest.raises(InputError, match="shape"):
        make_packet(values=np.zeros(52, np.float32))
    with pytest.raises(InputError, match="non-finite"):
        make_packet(values=np.full(61, np.nan, np.float32))
    with pytest.raises(InputError, match="32-bit"):
        make_packet(frame=2**31)
    with pytest.raises(InputError, match="absurd|at most"):
        make_packet(subject="x" * 5000)


def _mutate(raw: bytes, offset: int, new: bytes) -> bytes:
    return raw[:offset] + new + raw[offset + len(new) :]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: b"", "empty"),
        (lambda r: _mutate(r, 0, b"\x05"), "version 5"),
        (lambda r: r + b"\x00", "trailing"),
        (lambda r: r[:-1], "truncated"),
        (lambda r: r[:3], "truncated"),
        (lambda r: r[:30], "truncated in the device id"),
        (lambda r: _mutate(r, 1, struct.pack(">I", 0xFFFFFFF0)), "absurd"),
        (lambda r: _mutate(r, 1, struct.pack(">I", 400)), "truncated in the device id"),
        (lambda r: _mutate(r, 5, b"\xff\xfe"), "UTF-8"),
        (lambda r: _mutate(r, 44 + 16, b"\x3c"), "60 curves"),
        (
            lambda r: _mutate(r, len(r) - 4, struct.pack(">f", float("nan"))),
            "non-finite value nan in curve 'RightEyeRoll'",
        ),
        (lambda r: _mutate(r, 48, struct.pack(">f", float("inf"))), "subframe"),
    ],
)
def test_malformed_packets_raise_input_error(mutate, message):
    raw = make_packet().encode()
    with pytest.raises(InputError, match=message):
        LiveLinkPacket.decode(mutate(raw), where="udp:127.0.0.1")


def test_every_truncation_is_an_input_error():
    raw = make_packet().encode()
    for n in range(len(raw)):
        with pytest.raises(InputError):
            LiveLinkPacket.decode(raw[:n])


def _decode_or_input_error(data: bytes) -> None:
    try:
        p = LiveLinkPacket.decode(data)
    except InputError:
        return
    assert p.encode() == data  # whatever decodes is a faithful packet


@settings(
    max_examples=300, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(st.binary(max_size=400))
def test_random_bytes_only_raise_input_error(data):
    _decode_or_input_error(data)
    _decode_or_input_error(b"\x06" + data)


_BASE = make_packet().encode()


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(st.lists(st.tuples(st.integers(0, len(_BASE) - 1), st.integers(0, 255)), min_size=1, max_size=6))
def test_corrupted_real_layout_packets_only_raise_input_error(edits):
    raw = bytearray(_BASE)
    for i, b in edits:
        raw[i] = b
    _decode_or_input_error(bytes(raw))
