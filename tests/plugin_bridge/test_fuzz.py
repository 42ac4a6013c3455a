"""Fuzzing: random and mutated bytes never make a decoder raise anything but ProtocolError."""

from __future__ import annotations

import contextlib
import struct

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plugin_bridge import make_fixtures
from plugin_bridge import protocol as P

GOLDEN = [m.encode() for m in make_fixtures.golden_messages().values()]
SETTINGS = settings(max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


def _decode_ok(data: bytes) -> None:
    try:
        msg = P.decode(data)
    except P.ProtocolError as e:
        assert isinstance(e.code, P.ErrorCode)
        return
    # whatever decodes must re-encode to the very same bytes (the format has exactly one encoding per message)
    assert msg.encode() == data


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(GOLDEN)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "cut", "insert", "field"]))
        if op == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
        elif op == "cut" and data:
            data = data[: draw(st.integers(0, len(data) - 1))]
        elif op == "insert":
            i = draw(st.integers(0, len(data)))
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "field" and len(data) >= 36:  # overwrite an aligned u32 with a boundary value
            i = draw(st.integers(0, (len(data) - 4) // 4)) * 4
            v = draw(st.sampled_from([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 0x7FC00000, 0x7F800000, 52, 61, 58]))
            struct.pack_into("<I", data, i, v)
    return bytes(data)


@SETTINGS
@given(mutated())
def test_mutated_messages_raise_only_protocol_error(data):
    _decode_ok(data)


@SETTINGS
@given(st.integers(1, max(P.Kind)), st.integers(0, 3), st.binary(max_size=300))
def test_random_payloads_raise_only_protocol_error(kind, version, payload):
    _decode_ok(P.HEADER.pack(P.MAGIC, version, kind, 1, len(payload), 0, 0) + payload)
    with contextlib.suppress(P.ProtocolError):
        P.decode_frames([P.HEADER.pack(P.MAGIC, version, kind, 1, len(payload), 0, 0), payload])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=100))
def test_random_bytes_raise_only_protocol_error(data):
    _decode_ok(data)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False, width=32, min_value=0.125),
    st.sampled_from([1, 2, 3]),
    st.integers(1, 4),
    st.integers(0, 2**32 - 1),
)
def test_face_frames_round_trip(first, fps, layout_id, n, turn):
    dims = {1: 58, 2: 52, 3: 61}[layout_id]
    values = np.random.default_rng(n).standard_normal((n, dims)).astype(np.float32)
    msg = P.FaceFrames(first, fps, layout_id, values, turn_id=turn)
    assert P.decode(msg.encode()) == msg
