"""Protocol round trips per kind, golden fixtures byte for byte, and the malformed-input error codes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from plugin_bridge import make_fixtures
from plugin_bridge import protocol as P

FIXTURES = make_fixtures.FIXTURES_DIR


@pytest.mark.parametrize("stem", sorted(make_fixtures.golden_messages()))
def test_round_trip_every_kind(stem):
    msg = make_fixtures.golden_messages()[stem]
    data = msg.encode()
    assert P.decode(data) == msg
    frames = msg.encode_frames()
    assert len(frames[0]) == P.HEADER_SIZE and frames[0] + frames[1] == data
    assert P.decode_frames(frames) == msg
    assert type(msg).decode(data) == msg


def test_every_kind_has_a_fixture():
    kinds = {m.KIND for m in make_fixtures.golden_messages().values()}
    assert kinds == set(P.Kind)


def test_generator_reproduces_fixtures_byte_for_byte():
    built = make_fixtures.build()
    on_disk = {p.name for p in FIXTURES.iterdir() if p.suffix in (".bin", ".json")}
    assert on_disk == set(built)
    for name, data in built.items():
        assert (FIXTURES / name).read_bytes() == data, f"{name} differs: run python -m plugin_bridge.make_fixtures"


def test_fixtures_decode_to_index():
    index = json.loads((FIXTURES / "index.json").read_text("utf-8"))
    assert index["header_size"] == P.HEADER_SIZE and index["protocol_version"] == P.VERSION
    for entry in index["messages"]:
        msg = P.decode((FIXTURES / entry["file"]).read_bytes())
        assert int(msg.KIND) == entry["kind"] and type(msg).__name__ == entry["class"]
        assert (msg.turn_id, msg.seq, msg.send_time_us) == (entry["turn_id"], entry["seq"], entry["send_time_us"])
        got = json.loads(json.dumps(msg.fields(), ensure_ascii=False))
        for k, v in entry["fields"].items():
            assert got[k] == v, (entry["file"], k)
    for entry in index["malformed"]:
        with pytest.raises(P.ProtocolError) as ei:
            P.decode((FIXTURES / entry["file"]).read_bytes())
        assert ei.value.code == entry["error_code"], entry["file"]


def test_header_layout_is_little_endian():
    data = P.Cancel(turn_id=0x01020304, seq=0x1122334455667788, send_time_us=5).encode()
    assert data[:4] == b"A2LM" and data[4:6] == b"\x01\x00" and data[6:8] == bytes([P.Kind.CANCEL, 0])
    assert data[8:12] == b"\x04\x03\x02\x01" and data[12:16] == b"\x00" * 4
    assert data[16:24] == bytes.fromhex("8877665544332211") and data[24:32] == (5).to_bytes(8, "little")


def test_pcm16_audio_converts_to_float():
    m = P.UserAudio(np.array([16384, -32768], np.int16), 16000, 0, True)
    assert m.format == P.AudioFormat.PCM16
    np.testing.assert_array_equal(m.as_float32(), np.array([0.5, -1.0], np.float32))


@pytest.mark.parametrize(
    ("build", "code"),
    [
        (lambda: P.FaceFrames(0, 25.0, 2, np.full((1, 52), np.nan)), P.ErrorCode.NON_FINITE),
        (lambda: P.FaceFrames(0, 25.0, 2, np.zeros((1, 58))), P.ErrorCode.BAD_VALUE),
        (lambda: P.FaceFrames(0, 25.0, 9, np.zeros((1, 52))), P.ErrorCode.BAD_VALUE),
        (lambda: P.FaceFrames(0, float("inf"), 2, np.zeros((1, 52))), P.ErrorCode.NON_FINITE),
        (lambda: P.AudioChunk(np.array([np.inf], np.float32)), P.ErrorCode.NON_FINITE),
        (lambda: P.AudioChunk(np.zeros((2, 2), np.float32)), P.ErrorCode.BAD_VALUE),
        (lambda: P.UserAudio(np.zeros(3, np.float32), sample_rate=100), P.ErrorCode.BAD_VALUE),
        (lambda: P.TurnEnd(ttft_s=float("nan")), P.ErrorCode.NON_FINITE),
        (lambda: P.TurnEnd(status=7), P.ErrorCode.BAD_VALUE),
        (lambda: P.Error(1, "x" * 2000), P.ErrorCode.BAD_VALUE),
        (lambda: P.Cancel(turn_id=-1), P.ErrorCode.BAD_VALUE),
        (lambda: P.Hello(min_version=2, max_version=1), P.ErrorCode.BAD_VALUE),
    ],
)
def test_invalid_messages_cannot_be_built(build, code):
    with pytest.raises(P.ProtocolError) as ei:
        build()
    assert ei.value.code == code


def test_frame_count_and_length_checks():
    h, p = P.TextDelta(0, "hi").encode_frames()
    for frames, code in [
        ([h], P.ErrorCode.BAD_FRAMING),
        ([h, p, b""], P.ErrorCode.BAD_FRAMING),
        ([h + b"\x00", p], P.ErrorCode.BAD_LENGTH),
        ([h, p + b"\x00"], P.ErrorCode.BAD_LENGTH),
    ]:
        with pytest.raises(P.ProtocolError) as ei:
            P.decode_frames(frames)
        assert ei.value.code == code


def test_unknown_error_code_decodes_as_int():
    data = bytearray(P.Error(1, "x").encode())
    data[32:34] = (999).to_bytes(2, "little")
    msg = P.decode(bytes(data))
    assert msg.code == 999 and msg.message == "x"


def test_set_header_fields_stamps_seq_and_time():
    h, p = P.Heartbeat(1, 2).encode_frames()
    msg = P.decode_frames([P.set_header_fields(h, seq=77, send_time_us=123), p])
    assert (msg.seq, msg.send_time_us, msg.time_us) == (77, 123, 1)


def _face_event(first: int = 7, n: int = 3, flame: bool = True, dtype=np.float32):
    from a2llm_rt.engine.events import FaceFrames

    rng = np.random.default_rng(first)
    fl = rng.normal(size=(n, 58)).astype(dtype) if flame else None
    ar = rng.uniform(size=(n, 52)).astype(dtype)
    ll = np.concatenate([ar, rng.normal(size=(n, 9)).astype(dtype)], axis=1)
    return FaceFrames(3, first, 25.0, fl, ar, ll)


def test_engine_events_encode_as_the_message_classes_do():
    """The server's encoder of the engine's events writes the bytes the message classes write (and decode back)."""
    from a2llm_rt.engine.events import AudioChunk, TextDelta

    text = TextDelta(3, "héllo, wörld")
    assert (
        P.encode_event(text, 9, byte_offset=12, seq=4, send_time_us=77)
        == P.TextDelta(12, "héllo, wörld", turn_id=9, seq=4, send_time_us=77).encode_frames()
    )
    for dtype in (np.float32, np.float64):  # float64 PCM is converted to the wire's float32 on the way
        pcm = np.sin(np.arange(960) / 7.0).astype(dtype)
        frames = P.encode_event(AudioChunk(3, pcm, 4800), 9)
        assert frames == P.AudioChunk(pcm.astype(np.float32), 24000, 4800, turn_id=9).encode_frames()
        assert P.decode_frames([bytes(f) for f in frames]) == P.AudioChunk(pcm.astype(np.float32), 24000, 4800,
                                                                            turn_id=9)  # fmt: skip
    face = _face_event()
    for name, lid in (("flame58", 1), ("arkit52", 2), ("livelink61", 3)):
        frames = P.encode_event(face, 9, layout=name)
        assert frames == P.FaceFrames(7, 25.0, lid, face.frames[name], turn_id=9).encode_frames()


def test_engine_event_encoding_refuses_what_the_wire_cannot_carry():
    from a2llm_rt.engine.events import AudioChunk, TurnEnd

    pcm = np.zeros(960, np.float32)
    pcm[5] = np.nan
    with pytest.raises(P.ProtocolError) as e:
        P.event_payload(AudioChunk(1, pcm, 0))
    assert e.value.code == P.ErrorCode.NON_FINITE
    bad = _face_event()
    bad.arkit52[1, 2] = np.inf
    with pytest.raises(P.ProtocolError) as e:
        P.event_payload(bad, layout="arkit52")
    assert e.value.code == P.ErrorCode.NON_FINITE
    for layout in ("flame58", "nope", None):  # no flame58 frames in this event; unknown layouts
        with pytest.raises(P.ProtocolError) as e:
            P.event_payload(_face_event(flame=False), layout=layout)
        assert e.value.code == P.ErrorCode.BAD_VALUE
    with pytest.raises(P.ProtocolError):
        P.event_payload(AudioChunk(1, np.zeros((2, 960), np.float32), 0))  # not mono
    with pytest.raises(P.ProtocolError):
        P.event_payload(TurnEnd(1, 0.1, 0.2, 0.3))  # the server builds TurnEnd messages itself (counts, status)
