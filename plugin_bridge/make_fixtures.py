"""Generate the golden byte fixtures of the bridge protocol: plugin_bridge/fixtures/*.bin + index.json.

``python -m plugin_bridge.make_fixtures`` rewrites them; ``--check`` exits 1 when the files on disk differ from what
this script builds (the Python test does the same). Each ``.bin`` is one message in the concatenated form (32-byte
header followed by the payload; split at byte 32 to get the two ZeroMQ frames). ``index.json`` lists, per file, the
header fields and every decoded payload field (arrays as nested lists; all float values are exact in float32 and
in JSON), and for the ``malformed`` files the error code a decoder must raise. C++ and C# tests read the same files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import struct
import sys
from pathlib import Path

import numpy as np

from a2llm_rt.face.layouts import get_layout
from a2llm_rt.utils.cli import cli_main
from a2llm_rt.utils.fileio import atomic_write
from plugin_bridge import protocol as P

FIXTURES_DIR = Path(__file__).resolve().parent / "fixtures"


def _ramp(shape: tuple[int, ...], scale: float = 1 / 8, offset: float = 0.0) -> np.ndarray:
    """Values k * scale + offset: exact in float32 and in JSON."""
    return (np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape) * scale + offset).astype(np.float32)


def golden_messages() -> dict[str, P.Message]:
    """The well-formed fixtures: file stem -> message."""
    lay = {n: get_layout(n) for n in ("flame58", "arkit52", "livelink61")}
    return {
        "hello": P.Hello(1, 1, 7, (2, 3), "a2llm-test-client/1.0", seq=0, send_time_us=1_000_000),
        "welcome": P.Welcome(
            version=1,
            session_id=42,
            capabilities=15,
            heartbeat_ms=1000,
            session_timeout_ms=10000,
            input_sample_rate=16000,
            output_sample_rate=24000,
            fps=25.0,
            max_payload=P.MAX_PAYLOAD,
            layouts=tuple(P.LayoutInfo(lay[n].layout_id, lay[n].names) for n in ("arkit52", "livelink61", "flame58")),
            server_name="a2llm-bridge/0.1",
            seq=0,
            send_time_us=1_000_100,
        ),  # fmt: skip
        "user_audio_pcm16": P.UserAudio(
            np.array([0, 1, -1, 32767, -32768, 1000, -1000, 12345], np.int16),
            16000,
            0,
            False,
            turn_id=1,
            seq=1,
            send_time_us=1_100_000,
        ),  # fmt: skip
        "user_audio_f32_eou": P.UserAudio(
            np.array([0.0, 0.5, -0.5, 0.25, -1.0, 1.0], np.float32),
            48000,
            8,
            True,
            turn_id=1,
            seq=2,
            send_time_us=1_200_000,
        ),  # fmt: skip
        "text_delta": P.TextDelta(6, " Grüß dich 👋", turn_id=1, seq=3, send_time_us=2_000_000),
        "audio_chunk": P.AudioChunk(_ramp((8,), 1 / 16, -0.25), 24000, 960, turn_id=1, seq=4, send_time_us=2_000_001),
        "face_frames_arkit52": P.FaceFrames(
            5, 25.0, 2, _ramp((2, 52), 1 / 128), turn_id=1, seq=5, send_time_us=2_100_000
        ),
        "face_frames_livelink61": P.FaceFrames(
            5, 25.0, 3, _ramp((1, 61), 1 / 64, -0.5), turn_id=1, seq=6, send_time_us=2_100_001
        ),
        "face_frames_flame58": P.FaceFrames(
            5, 25.0, 1, _ramp((3, 58), 1 / 32, -2.0), turn_id=1, seq=7, send_time_us=2_100_002
        ),
        "turn_end": P.TurnEnd(
            P.TurnStatus.COMPLETED,
            0.25,
            0.5,
            0.5,
            0.75,
            3.5,
            14,
            2,
            48000,
            10,
            50,
            turn_id=1,
            seq=8,
            send_time_us=5_000_000,
        ),  # fmt: skip
        "turn_end_cancelled": P.TurnEnd(
            P.TurnStatus.CANCELLED, -1.0, -1.0, -1.0, -1.0, 0.5, 5, 1, 0, 0, 0, turn_id=2, seq=9, send_time_us=6_000_000
        ),
        # a cancelled turn that had streamed: counts of what the client got and when its first audio went out (§4.6)
        "turn_end_cancelled_streamed": P.TurnEnd(
            P.TurnStatus.CANCELLED, -1.0, -1.0, 0.5, -1.0, 1.25, 5, 1, 9600, 2, 10, turn_id=3, seq=12,
            send_time_us=6_500_000,
        ),  # fmt: skip
        # a refused utterance ends once: this Error, then a TurnEnd(FAILED) with nothing measured (§4.3)
        "error_audio_too_long": P.Error(
            P.ErrorCode.AUDIO_TOO_LONG, "utterance longer than 60 s; dropped", turn_id=4, seq=13, send_time_us=6_600_000
        ),
        "turn_end_failed": P.TurnEnd(P.TurnStatus.FAILED, turn_id=4, seq=14, send_time_us=6_600_001),
        "cancel": P.Cancel(turn_id=2, seq=3, send_time_us=5_900_000),
        "heartbeat": P.Heartbeat(7_000_000, 6_999_000, seq=10, send_time_us=7_000_000),
        "error": P.Error(P.ErrorCode.CLIENT_TOO_SLOW, "client too slow: turn 2 cancelled", turn_id=2, seq=11),
        "bye": P.Bye(seq=4, send_time_us=8_000_000),
        **golden_messages_v2(),
    }


def golden_messages_v2() -> dict[str, P.Message]:
    """The version 2 fixtures (PROTOCOL.md §10.12); all but ``v2_hello`` have header version 2."""
    lay = {n: get_layout(n) for n in ("arkit52", "livelink61")}
    idle = P.Capability.TEXT | P.Capability.AUDIO | P.Capability.FACE | P.Capability.IDLE_FACE
    emotions = ("neutral", "happy", "sad", "angry", "surprised", "afraid", "disgusted")
    s = P.SERVER_TURN_BIT | 1
    return {
        "v2_hello": P.Hello(1, 2, int(idle), (2,), "a2llm-test-client/2.0", seq=0, send_time_us=1_000_000),
        "v2_welcome": P.Welcome(
            version=2, session_id=7, capabilities=int(idle), heartbeat_ms=1000, session_timeout_ms=10000,
            input_sample_rate=16000, output_sample_rate=24000, fps=25.0, max_payload=P.MAX_PAYLOAD,
            layouts=(P.LayoutInfo(lay["arkit52"].layout_id, lay["arkit52"].names),), server_name="a2llm-bridge/0.2",
            seq=0, send_time_us=1_000_100,
        ),  # fmt: skip
        "v2_server_info": P.ServerInfo(
            4000, 700, 2000, 100, 500, 64, (16000, 32000, 48000), ("alice", "bob"), emotions, seq=1,
            send_time_us=1_000_101,
        ),  # fmt: skip
        "v2_character": P.Character(
            P.EMOTION_MODE_PROMPT | P.EMOTION_MODE_FACE, 0.5, "bob", "happy",
            "You are Brökk, the dwarven smith of Ironhold. You speak in short, gruff sentences. ⚒",
            seq=1, send_time_us=1_100_000,
        ),  # fmt: skip
        "v2_character_defaults": P.Character(0, 0.0, "", "", "", seq=2, send_time_us=1_100_001),
        "v2_config_ack": P.ConfigAck(P.Kind.CHARACTER, P.CONFIG_ACK_CONVERSATION_RESET, seq=2, send_time_us=1_100_100),
        "v2_game_context": P.GameContext("The player just lost the battle.", seq=3, send_time_us=1_200_000),
        "v2_game_context_clear": P.GameContext("", seq=4, send_time_us=1_200_001),
        "v2_user_text": P.UserText("How much for the sword? Wie viel kostet es?", turn_id=5, seq=5,
                                   send_time_us=1_300_000),  # fmt: skip
        "v2_set_emotion": P.SetEmotion(P.EmotionScope.NEXT_TURN, 0.75, "angry", seq=6, send_time_us=1_400_000),
        "v2_mic_audio_pcm16": P.MicAudio(
            np.array([0, 3, -3, 32767, -32768, 7, -7, 100], np.int16), 48000, 0, False, seq=7, send_time_us=1_500_000
        ),
        "v2_mic_audio_f32_end": P.MicAudio(
            np.array([0.0, 0.125, -0.125, 1.0, -1.0], np.float32), 16000, 1600, True, seq=8, send_time_us=1_600_000
        ),
        "v2_speech_started": P.SpeechStarted(12_000, 14_400, turn_id=s, seq=9, send_time_us=1_700_000),
        "v2_speech_ended": P.SpeechEnded(
            12_000, 60_480, 84_480, P.SpeechEndReason.SILENCE, turn_id=s, seq=10, send_time_us=1_800_000
        ),
        "v2_barge_in": P.BargeIn(96_000, 99_072, turn_id=s, seq=11, send_time_us=1_900_000),
        "v2_idle_face_frames": P.FaceFrames(
            250, 25.0, 2, _ramp((2, 52), 1 / 128), turn_id=0, seq=12, send_time_us=2_000_000
        ),
        "v2_error_unknown_voice": P.Error(
            P.ErrorCode.UNKNOWN_VOICE, "unknown voice 'carol' (this server has alice, bob)", seq=13,
            send_time_us=2_100_000,
        ),  # fmt: skip
    }


def header_version(stem: str) -> int:
    """The header version of fixture ``stem``: 2 for the version 2 files (their Hello excepted), else 1."""
    return P.VERSION_2 if stem.startswith("v2_") and stem != "v2_hello" else P.VERSION


def _header(kind: int, length: int, *, magic: bytes = P.MAGIC, version: int = P.VERSION, turn: int = 1) -> bytes:
    return P.HEADER.pack(magic, version, kind, turn, length, 0, 0)


def malformed_messages() -> dict[str, tuple[bytes, P.ErrorCode, str]]:
    """Bytes every decoder must reject: file stem -> (bytes, error code, what is wrong)."""
    good = golden_messages()
    face = good["face_frames_arkit52"].encode()
    text = good["text_delta"].encode()
    nan_face = bytearray(face)
    struct.pack_into("<f", nan_face, P.HEADER_SIZE + 20 + 4 * 7, float("nan"))
    dims = bytearray(face)
    struct.pack_into("<H", dims, P.HEADER_SIZE + 14, 61)
    bad_utf8 = P.TextDelta(0, "ab", turn_id=1).encode()[:-2] + b"\xc3\x28"
    nan_audio = bytearray(good["audio_chunk"].encode())
    struct.pack_into("<f", nan_audio, P.HEADER_SIZE + 20, float("inf"))
    v2 = {k: m.encode(header_version(k)) for k, m in golden_messages_v2().items()}
    in_v1 = bytearray(v2["v2_user_text"])
    struct.pack_into("<H", in_v1, 4, 1)
    intensity = bytearray(v2["v2_set_emotion"])
    struct.pack_into("<f", intensity, P.HEADER_SIZE + 4, 1.5)
    nan_int = bytearray(v2["v2_character"])
    struct.pack_into("<f", nan_int, P.HEADER_SIZE + 4, float("nan"))
    modes = bytearray(v2["v2_character"])
    modes[P.HEADER_SIZE] = 4
    scope = bytearray(v2["v2_set_emotion"])
    scope[P.HEADER_SIZE] = 2
    reason = bytearray(v2["v2_speech_ended"])
    reason[P.HEADER_SIZE + 24] = 3
    overrun = bytearray(v2["v2_user_text"])
    struct.pack_into("<I", overrun, P.HEADER_SIZE, len(overrun) - P.HEADER_SIZE - 4 + 1)
    persona = bytearray(v2["v2_character"])
    persona[-3:] = b"\xff\xfe\xfd"  # the persona is the last field
    mic_flags = bytearray(v2["v2_mic_audio_pcm16"])
    mic_flags[P.HEADER_SIZE + 1] = 2
    v2_bad = {
        "v2_malformed_kind_in_v1_header": (in_v1, P.ErrorCode.UNKNOWN_KIND, "UserText (kind 16) with header version 1"),
        "v2_malformed_bad_intensity": (intensity, P.ErrorCode.BAD_VALUE, "SetEmotion intensity 1.5"),
        "v2_malformed_nan_intensity": (nan_int, P.ErrorCode.NON_FINITE, "Character intensity NaN"),
        "v2_malformed_bad_modes": (modes, P.ErrorCode.BAD_VALUE, "Character emotion_modes 4"),
        "v2_malformed_bad_scope": (scope, P.ErrorCode.BAD_VALUE, "SetEmotion scope 2"),
        "v2_malformed_bad_reason": (reason, P.ErrorCode.BAD_VALUE, "SpeechEnded reason 3"),
        "v2_malformed_text_overrun": (overrun, P.ErrorCode.BAD_LENGTH, "UserText n_bytes one past the payload"),
        "v2_malformed_bad_utf8_persona": (persona, P.ErrorCode.BAD_UTF8, "Character persona ends in ff fe fd"),
        "v2_malformed_mic_flags": (mic_flags, P.ErrorCode.BAD_VALUE, "MicAudio flags bit 1"),
    }
    return {
        **{k: (bytes(d), c, w) for k, (d, c, w) in v2_bad.items()},
        "bad_magic": (b"A2LX" + face[4:], P.ErrorCode.BAD_MAGIC, "magic is A2LX"),
        "bad_version": (
            _header(6, len(face) - 32, version=99) + face[32:],
            P.ErrorCode.UNSUPPORTED_VERSION,
            "header version 99",
        ),
        "unknown_kind": (_header(200, 0), P.ErrorCode.UNKNOWN_KIND, "kind 200"),
        "short_header": (face[:20], P.ErrorCode.BAD_LENGTH, "only 20 bytes"),
        "truncated_payload": (face[:-4], P.ErrorCode.BAD_LENGTH, "payload 4 bytes shorter than payload_length"),
        "trailing_bytes": (
            _header(4, len(text) - 32 + 2) + text[32:] + b"\x00\x00",
            P.ErrorCode.BAD_LENGTH,
            "TextDelta with 2 bytes after its text (payload_length agrees with the frame)",
        ),
        "payload_too_large": (_header(5, P.MAX_PAYLOAD + 1), P.ErrorCode.PAYLOAD_TOO_LARGE, "payload_length 4 MiB + 1"),
        "nan_face": (bytes(nan_face), P.ErrorCode.NON_FINITE, "NaN in face value [0, 7]"),
        "inf_audio": (bytes(nan_audio), P.ErrorCode.NON_FINITE, "+inf in audio sample 0"),
        "face_dims_mismatch": (bytes(dims), P.ErrorCode.BAD_VALUE, "arkit52 (layout 2) with dims 61"),
        "bad_utf8_text": (bad_utf8, P.ErrorCode.BAD_UTF8, "TextDelta bytes c3 28"),
    }


def _entry(stem: str, msg: P.Message, data: bytes) -> dict:
    return {
        "file": f"{stem}.bin",
        "kind": int(msg.KIND),
        "kind_name": msg.KIND.name,
        "class": type(msg).__name__,
        "turn_id": msg.turn_id,
        "seq": msg.seq,
        "send_time_us": msg.send_time_us,
        "version": header_version(stem),
        "payload_length": len(data) - P.HEADER_SIZE,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "fields": {k: v for k, v in msg.fields().items() if k not in ("turn_id", "seq", "send_time_us")},
    }


def build() -> dict[str, bytes]:
    """File name -> exact bytes of every fixture, index.json included."""
    files: dict[str, bytes] = {}
    index = {
        "protocol_version": P.VERSION,
        "header_size": P.HEADER_SIZE,
        "max_payload": P.MAX_PAYLOAD,
        "note": "Each .bin = header (32 bytes) + payload. Generated by `python -m plugin_bridge.make_fixtures`.",
        "messages": [],
        "malformed": [],
    }
    for stem, msg in golden_messages().items():
        data = msg.encode(header_version(stem))
        files[f"{stem}.bin"] = data
        index["messages"].append(_entry(stem, msg, data))
    for stem, (data, code, what) in malformed_messages().items():
        name = stem if stem.startswith("v2_") else f"malformed_{stem}"
        files[f"{name}.bin"] = data
        index["malformed"].append(
            {"file": f"{name}.bin", "error_code": int(code), "error_name": code.name, "what": what}
        )
    files["index.json"] = (json.dumps(index, indent=1, ensure_ascii=False) + "\n").encode("utf-8")
    return files


@cli_main(failures=(OSError,))
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=FIXTURES_DIR, help="folder to write (default: plugin_bridge/fixtures)")
    ap.add_argument("--check", action="store_true", help="compare with the files on disk instead of writing")
    args = ap.parse_args(argv)
    files = build()
    if args.check:
        bad = [n for n, data in files.items() if not (args.out / n).is_file() or (args.out / n).read_bytes() != data]
        for n in bad:
            print(f"differs or missing: {args.out / n}", file=sys.stderr)
        return 1 if bad else 0
    for name, data in files.items():
        with atomic_write(args.out / name, "wb") as f:
            f.write(data)
    print(f"wrote {len(files)} files to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
