"""Protocol version 2 (PROTOCOL.md §10): header versions, the v2 fixtures, and what v2 decoders must refuse."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from plugin_bridge import make_fixtures
from plugin_bridge import protocol as P

FIXTURES = make_fixtures.FIXTURES_DIR
V2_STEMS = sorted(make_fixtures.golden_messages_v2())


def test_v2_fixture_headers_carry_their_version():
    index = json.loads((FIXTURES / "index.json").read_text("utf-8"))
    entries = {e["file"]: e for e in index["messages"]}
    for stem in V2_STEMS:
        data = (FIXTURES / f"{stem}.bin").read_bytes()
        version = struct.unpack_from("<H", data, 4)[0]
        assert version == entries[f"{stem}.bin"]["version"] == (1 if stem == "v2_hello" else 2), stem
    assert all(e["version"] == 1 for e in index["messages"] if not e["file"].startswith("v2_"))
    # the v1 fixtures keep their bytes: a v1 client sees nothing new
    assert struct.unpack_from("<H", (FIXTURES / "welcome.bin").read_bytes(), 4)[0] == 1


def test_every_v2_kind_has_a_fixture_and_the_files_are_listed():
    kinds = {m.KIND for m in make_fixtures.golden_messages_v2().values()}
    assert {k for k in P.Kind if k >= 12} <= kinds
    index = json.loads((FIXTURES / "index.json").read_text("utf-8"))
    listed = {e["file"] for e in index["messages"]} | {e["file"] for e in index["malformed"]}
    assert {p.name for p in FIXTURES.glob("v2_*.bin")} <= listed


@pytest.mark.parametrize("kind", [k for k in P.Kind if k >= 12])
def test_v2_kinds_do_not_exist_in_version_1_headers(kind):
    msg = make_fixtures.golden_messages_v2()
    data = bytearray(next(m for m in msg.values() if kind == m.KIND).encode())
    assert struct.unpack_from("<H", data, 4)[0] == 2  # new kinds encode as version 2 by default
    struct.pack_into("<H", data, 4, 1)
    with pytest.raises(P.ProtocolError) as ei:
        P.decode(bytes(data))
    assert ei.value.code == P.ErrorCode.UNKNOWN_KIND


def test_v1_kinds_decode_with_either_header_version_and_can_be_stamped():
    m = P.Heartbeat(5, 6, seq=1)
    assert P.decode(m.encode(2)) == m and P.decode(m.encode()) == m
    h = P.set_header_fields(m.encode_frames()[0], version=2)
    assert struct.unpack_from("<H", h, 4)[0] == 2
    # stamping never lowers a v2 kind below its own version
    h = P.set_header_fields(P.UserText("hi", turn_id=1).encode_frames()[0], version=1)
    assert struct.unpack_from("<H", h, 4)[0] == 2


@pytest.mark.parametrize(
    ("build", "code"),
    [
        (lambda: P.Character(intensity=1.01), P.ErrorCode.BAD_VALUE),
        (lambda: P.Character(intensity=-0.1), P.ErrorCode.BAD_VALUE),
        (lambda: P.Character(intensity=float("nan")), P.ErrorCode.NON_FINITE),
        (lambda: P.Character(emotion_modes=8), P.ErrorCode.BAD_VALUE),
        (lambda: P.Character(voice="v" * 256), P.ErrorCode.BAD_VALUE),
        (lambda: P.SetEmotion(name=""), P.ErrorCode.BAD_VALUE),
        (lambda: P.SetEmotion(scope=5), P.ErrorCode.BAD_VALUE),
        (lambda: P.SpeechEnded(reason=9), P.ErrorCode.BAD_VALUE),
        (lambda: P.ConfigAck(P.Kind.HELLO), P.ErrorCode.BAD_VALUE),
        (lambda: P.ConfigAck(P.Kind.CHARACTER, flags=2), P.ErrorCode.BAD_VALUE),
        (lambda: P.ServerInfo(voices=("",)), P.ErrorCode.BAD_VALUE),
        (lambda: P.ServerInfo(mic_rates=(100,)), P.ErrorCode.BAD_VALUE),
        (lambda: P.MicAudio(np.array([np.nan], np.float32)), P.ErrorCode.NON_FINITE),
    ],
)
def test_invalid_v2_messages_cannot_be_built(build, code):
    with pytest.raises(P.ProtocolError) as ei:
        build()
    assert ei.value.code == code


def test_server_info_count_overrun_is_bad_length():
    data = bytearray(make_fixtures.golden_messages_v2()["v2_server_info"].encode())
    data[P.HEADER_SIZE + 24] = 200  # n_mic_rates far past the payload
    with pytest.raises(P.ProtocolError) as ei:
        P.decode(bytes(data))
    assert ei.value.code == P.ErrorCode.BAD_LENGTH


def test_reserved_bytes_must_be_zero():
    for stem, offset in (("v2_character", 1), ("v2_set_emotion", 2), ("v2_speech_ended", 26)):
        data = bytearray(make_fixtures.golden_messages_v2()[stem].encode())
        data[P.HEADER_SIZE + offset] = 1
        with pytest.raises(P.ProtocolError) as ei:
            P.decode(bytes(data))
        assert ei.value.code == P.ErrorCode.BAD_VALUE, stem
