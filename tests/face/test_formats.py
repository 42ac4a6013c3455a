"""File formats: Live Link Face CSV, npz, Audio2Face-style JSON, LLV .gesichter; load_clip/save_clip; convert CLI."""

from __future__ import annotations

import csv
import gzip
import json
import struct

import numpy as np
import pytest

from a2llm_rt.errors import InputError
from a2llm_rt.face.clip import MotionClip
from a2llm_rt.face.formats.gesichter import read_gesichter_packets, write_gesichter_packets
from a2llm_rt.face.formats.livelink_csv import LIVELINK_CSV_HEADER, format_timecode, parse_timecode
from a2llm_rt.face.io import convert_layout, load_clip, save_clip
from a2llm_rt.face.layouts import ARKIT52_NAMES, LIVELINK61_NAMES
from a2llm_rt.face.livelink_packet import LiveLinkPacket
from a2llm_rt.face.resample import resample
from a2llm_rt.face_tools.convert import main as convert_main


def rand_clip(layout: str = "livelink61", frames: int = 20, fps: float = 30.0, seed: int = 0) -> MotionClip:
    dim = {"flame58": 58, "arkit52": 52, "livelink61": 61}[layout]
    v = np.random.default_rng(seed).random((frames, dim), dtype=np.float32)
    return MotionClip(v, fps, layout, {"note": "synthetic"})


def csv_text(rows: int = 3, fps: float = 30.0) -> str:
    lines = [",".join(LIVELINK_CSV_HEADER)]
    for k in range(rows):
        lines.append(
            f"{format_timecode(3600 + k / fps)},61," + ",".join(f"{0.01 * (k + 1) * (j + 1):.10f}" for j in range(61))
        )
    return "\n".join(lines) + "\n"


# --- Live Link Face CSV -----------------------------------------------------------------------------------------


def test_real_capture_csv_maps_curves_by_name(arkit_capture_csv):
    clip = load_clip(arkit_capture_csv)
    assert clip.layout == "livelink61" and clip.values.shape == (4030, 61)
    assert clip.fps == 30.0
    assert clip.meta["timecode_start"] == "13:13:04:31.652"
    assert clip.duration == pytest.approx(134.33, abs=0.01)
    with open(arkit_capture_csv, newline="") as f:
        rows = list(csv.reader(f))
    header = rows[0]
    assert header.index("JawRight") < header.index("JawLeft")  # the app's order differs from the enum's
    assert LIVELINK61_NAMES.index("JawLeft") < LIVELINK61_NAMES.index("JawRight")
    raw = np.array([[float(x) for x in r[2:]] for r in rows[1:]], dtype=np.float32)
    for name in ("JawLeft", "JawRight", "MouthLeft", "MouthRight", "JawOpen", "HeadYaw", "RightEyeRoll"):
        np.testing.assert_array_equal(clip.curve(name), raw[:, header.index(name) - 2], err_msg=name)
    assert np.abs(clip.curve("JawLeft") - clip.curve("JawRight")).max() > 0.01  # a swap would be visible


def test_csv_written_like_the_app(arkit_capture_csv, tmp_path):
    clip = load_clip(arkit_capture_csv)
    out = tmp_path / "take.csv"
    save_clip(clip, out)
    ours = out.read_text().splitlines()
    theirs = arkit_capture_csv.read_text().splitlines()
    assert ours[0] == theirs[0]  # same header, same curve order
    assert ours[1] == theirs[1]  # same timecode, count and 10-decimal values
    # later timecodes differ only by the app's clock jitter (its steps are 1.998-2.000 sixtieths)
    assert [r.split(",", 1)[1] for r in ours[1:]] == [r.split(",", 1)[1] for r in theirs[1:]]
    back = load_clip(out)
    np.testing.assert_array_equal(back.values, clip.values)
    assert back.fps == 30.0 and back.meta["timecode_start"] == "13:13:04:31.652"


def test_timecode_roundtrip():
    assert parse_timecode("13:13:04:31.652") == pytest.approx(13 * 3600 + 13 * 60 + 4 + 31.652 / 60)
    for s in (0.0, 47584.52753, 86399.99):
        assert parse_timecode(format_timecode(s)) == pytest.approx(s % 86400, abs=1e-3 / 60 + 1e-9)
    assert format_timecode(59.5 / 60 + 1) == "00:00:01:59.500"
    with pytest.raises(ValueError):
        parse_timecode("12:00:61:00.000")


def test_csv_fps_from_timecodes_and_fallback(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text(csv_text(rows=5, fps=25.0))
    assert load_clip(p).fps == 25.0
    assert load_clip(p, fps=60.0).fps == 25.0  # the file's own rate wins
    p.write_text(csv_text(rows=1))
    with pytest.raises(InputError, match="pass fps"):
        load_clip(p)
    assert load_clip(p, fps=30.0).fps == 30.0


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: "", "empty"),
        (lambda t: t.splitlines()[0] + "\n", "no frames"),
        (lambda t: t[: len(t) - 40], r"line 4: \d+ columns, the header has 63"),
        (lambda t: t.replace("JawOpen", "JawOpn"), "unknown curve names \\['JawOpn'\\]"),
        (lambda t: t.replace(",TongueOut", "", 1), "missing \\['TongueOut'\\]"),
        (lambda t: t.replace("\n01:00:00:02.000,61,", "\n01:00:00:02.000,61,0.5,", 1), "line 3: 64 columns"),
        (lambda t: t.replace("0.0600000000", "nan", 1), "line 2: curve EyeSquintLeft is nan"),
        (lambda t: t.replace("0.0600000000", "abc", 1), "line 2: curve EyeSquintLeft has value 'abc'"),
        (lambda t: t.replace("01:00:00:02.000", "01:00:00:2x", 1), "line 3: timecode"),
        (lambda t: t.replace(",61,", ",60,", 1), "line 2: BlendShapeCount"),
        (lambda t: t.replace("Timecode", "Time"), "Timecode,BlendShapeCount"),
    ],
)
def test_bad_csv_raises_input_error_with_place(tmp_path, edit, message):
    p = tmp_path / "bad.csv"
    p.write_text(edit(csv_text()))
    with pytest.raises(InputError, match=message) as e:
        load_clip(p)
    assert str(p) in str(e.value)


def test_csv_not_utf8(tmp_path):
    p = tmp_path / "bin.csv"
    p.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(InputError, match="UTF-8"):
        load_clip(p)


# --- npz --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["flame58", "arkit52", "livelink61"])
def test_npz_roundtrip(tmp_path, layout):
    clip = rand_clip(layout, fps=29.97)
    save_clip(clip, tmp_path / "c.npz")
    back = load_clip(tmp_path / "c.npz")
    np.testing.assert_array_equal(back.values, clip.values)
    assert back.layout == layout and back.fps == 29.97 and back.meta["note"] == "synthetic"
    assert back.meta["source"] == str(tmp_path / "c.npz")


def test_npz_problems(tmp_path):
    p = tmp_path / "x.npz"
    np.savez(p, values=np.array([[{"a": 1}]], dtype=object), fps=25.0)
    with pytest.raises(InputError, match="not a readable"):  # allow_pickle=False refuses object arrays
        load_clip(p)
    np.savez(p, values=np.zeros((3, 52), np.float32), fps=25.0, layout="livelink61")
    with pytest.raises(InputError, match=r"shape \[T, 61\]"):
        load_clip(p)
    np.savez(p, values=np.full((3, 52), np.inf, np.float32), fps=25.0)
    with pytest.raises(InputError, match="non-finite"):
        load_clip(p)
    np.savez(p, values=np.zeros((3, 52), np.float32))
    with pytest.raises(InputError, match="pass fps"):
        load_clip(p)
    assert load_clip(p, fps=25.0).layout == "arkit52"  # layout from D, fps from the caller
    save_clip(rand_clip(), p)
    p.write_bytes(p.read_bytes()[:200])
    with pytest.raises(InputError, match="not a readable"):
        load_clip(p)


# --- Audio2Face JSON --------------------------------------------------------------------------------------------


def test_a2f_json_roundtrip_exact(tmp_path):
    clip = rand_clip("arkit52", fps=30.0)
    save_clip(clip, tmp_path / "a.json")
    doc = json.loads((tmp_path / "a.json").read_text())
    assert doc["facsNames"] == list(ARKIT52_NAMES) and doc["numPoses"] == 52 and doc["numFrames"] == 20
    assert doc["exportFps"] == 30
    back = load_clip(tmp_path / "a.json")
    np.testing.assert_array_equal(back.values, clip.values)
    assert back.layout == "arkit52"


def test_a2f_json_maps_by_name_and_fills_missing(tmp_path):
    p = tmp_path / "a.json"
    names = ["jawOpen", "eyeBlinkLeft", "MouthSmileRight"]  # a Live Link spelling is accepted too
    doc = {
        "exportFps": 60,
        "facsNames": names,
        "numPoses": 3,
        "numFrames": 2,
        "weightMat": [[0.5, 0.1, 0.2], [1, 0, 0]],
    }
    p.write_text(json.dumps(doc))
    clip = load_clip(p)
    assert clip.fps == 60.0 and clip.values.shape == (2, 52)
    np.testing.assert_allclose(clip.curve("jawOpen"), [0.5, 1.0])
    np.testing.assert_allclose(clip.curve("eyeBlinkLeft"), [0.1, 0.0])
    np.testing.assert_allclose(clip.curve("mouthSmileRight"), [0.2, 0.0])
    assert clip.values.sum() == pytest.approx(1.8)
    assert len(clip.meta["a2f_missing_curves"]) == 49 and "tongueOut" in clip.meta["a2f_missing_curves"]
    live = load_clip(p, layout="livelink61")
    assert live.values.shape == (2, 61) and live.curve("JawOpen")[0] == 0.5


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (
            '{"exportFps": 30, "facsNames": ["jawOpen", "smile"], "weightMat": [[0, 0]]}',
            "unknown facsNames \\['smile'\\]",
        ),
        ('{"exportFps": 30, "facsNames": ["jawOpen"], "weightMat": [[0], [0, 1]]}', "frame 1: weightMat row has 2"),
        ('{"exportFps": 30, "facsNames": ["jawOpen"], "weightMat": [[NaN]]}', "NaN"),
        ('{"exportFps": 30, "facsNames": ["jawOpen"], "weightMat": [[1e40]]}', "frame 0: curve jawOpen"),
        ('{"exportFps": 30, "facsNames": ["jawOpen"], "weightMat": [["x"]]}', "frame 0: weightMat holds 'x'"),
        ('{"exportFps": 30, "facsNames": ["jawOpen"], "numFrames": 3, "weightMat": [[0]]}', "numFrames is 3"),
        ('{"exportFps": 30, "facsNames": ["jawOpen", "jawOpen"], "weightMat": [[0, 0]]}', "duplicate"),
        ('{"exportFps": 30, "facsNames": ["jawOpen"], "weightMat": []}', "no frames"),
        ('{"facsNames": ["jawOpen"], "weightMat": [[0]]}', "pass fps"),
        ('{"exportFps": -1, "facsNames": ["jawOpen"], "weightMat": [[0]]}', "exportFps"),
        ('{"exportFps": 30, "facsNames": ["jawOpen"], "weightMat": [[0.1], [0.', "truncated"),
        ("", "empty"),
        ("[1, 2]", "JSON object"),
    ],
)
def test_bad_a2f_json(tmp_path, doc, message):
    p = tmp_path / "bad.json"
    p.write_text(doc)
    with pytest.raises(InputError, match=message) as e:
        load_clip(p)
    assert str(p) in str(e.value)


# --- .gesichter -------------------------------------------------------------------------------------------------


def test_gesichter_real_recording(livelink_dir, tmp_path):
    clip = load_clip(livelink_dir / "dao.gesichter")
    assert clip.layout == "livelink61" and clip.values.shape == (180, 61) and clip.fps == 60.0
    assert clip.meta["subject"] == "LLV Default Device"
    # packets survive a write byte-for-byte
    packets = read_gesichter_packets(livelink_dir / "dao.gesichter")
    write_gesichter_packets(packets, tmp_path / "copy.gesichter")
    assert gzip.decompress((tmp_path / "copy.gesichter").read_bytes()) == gzip.decompress(
        (livelink_dir / "dao.gesichter").read_bytes()
    )
    # the clip survives a write: values, rate, device, subject, first frame
    save_clip(clip, tmp_path / "clip.gesichter")
    back = load_clip(tmp_path / "clip.gesichter")
    np.testing.assert_array_equal(back.values, clip.values)
    assert back.fps == 60.0 and back.meta["first_frame"] == clip.meta["first_frame"]
    assert back.meta["device_id"] == clip.meta["device_id"]


def test_gesichter_from_other_rates_and_layouts(tmp_path):
    clip = rand_clip("arkit52", fps=30000 / 1001)
    save_clip(clip, tmp_path / "a.gesichter")
    packets = read_gesichter_packets(tmp_path / "a.gesichter")
    assert (packets[0].fps_num, packets[0].fps_den) == (30000, 1001)
    back = load_clip(tmp_path / "a.gesichter")
    np.testing.assert_array_equal(back.values[:, :52], clip.values)
    assert not back.values[:, 52:].any()


def _container(packets: list[bytes], count: int | None = None, tail: bytes = b"") -> bytes:
    body = struct.pack(">BI", 6, len(packets) if count is None else count)
    body += b"".join(struct.pack(">I", len(p)) + p for p in packets)
    return gzip.compress(body + tail)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda raw: b"", "truncated .gesichter header"),
        (lambda raw: b"not gzip at all", "gzip"),
        (lambda raw: _container([raw, raw])[:-20], "gzip"),  # truncated gzip stream
        (lambda raw: gzip.compress(b"\x06\x00"), "truncated .gesichter header"),
        (lambda raw: gzip.compress(b"\x05" + _container([raw])[1:]), "gzip|version"),
        (lambda raw: _container([raw], count=3), "promises 3 frames"),
        (lambda raw: _container([raw], tail=b"xx"), "2 trailing bytes"),
        (lambda raw: _container([raw, raw[:100]]), "frame 1: Live Link packet truncated"),
        (lambda raw: _container([]), "no frames"),
    ],
)
def test_bad_gesichter(tmp_path, make, message):
    packet = LiveLinkPacket("dev", "subj", 7, 0.0, 60, 1, np.zeros(61, np.float32))
    p = tmp_path / "bad.gesichter"
    p.write_bytes(make(packet.encode()))
    with pytest.raises(InputError, match=message) as e:
        load_clip(p)
    assert str(p) in str(e.value)


# --- layouts, dispatch, atomicity -------------------------------------------------------------------------------


def test_convert_layout():
    live = rand_clip("livelink61")
    ark = convert_layout(live, "arkit52")
    np.testing.assert_array_equal(ark.values, live.values[:, :52])
    back = convert_layout(ark, "livelink61")
    np.testing.assert_array_equal(back.values[:, :52], live.values[:, :52])
    assert not back.values[:, 52:].any()
    assert convert_layout(live, "livelink61") is live
    with pytest.raises(InputError, match="flame_to_arkit"):
        convert_layout(rand_clip("flame58"), "arkit52")
    with pytest.raises(InputError, match="flame_to_arkit"):
        convert_layout(live, "flame58")
    with pytest.raises(InputError, match="unknown face layout"):
        convert_layout(live, "mixamo")


def test_save_dispatch_and_errors(tmp_path):
    save_clip(rand_clip("livelink61"), tmp_path / "a.json")  # rotations dropped
    assert load_clip(tmp_path / "a.json").layout == "arkit52"
    save_clip(rand_clip("arkit52"), tmp_path / "a.csv")  # rotations = 0
    assert not load_clip(tmp_path / "a.csv").values[:, 52:].any()
    with pytest.raises(InputError, match="flame_to_arkit"):
        save_clip(rand_clip("flame58"), tmp_path / "f.csv")
    with pytest.raises(InputError, match="unknown clip format '.txt'"):
        save_clip(rand_clip(), tmp_path / "a.txt")
    with pytest.raises(InputError, match="file not found"):
        load_clip(tmp_path / "missing.csv")


def test_save_is_atomic(tmp_path):
    out = tmp_path / "keep.npz"
    save_clip(rand_clip(seed=1), out)
    before = out.read_bytes()
    bad = rand_clip(seed=2)
    bad.values[3, 4] = np.nan  # made invalid after construction
    for name in ("keep.npz", "keep.csv", "keep.json", "keep.gesichter"):
        with pytest.raises(InputError, match="non-finite"):
            save_clip(bad, tmp_path / name)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.npz"]  # no temp files, no partial outputs


# --- convert CLI ------------------------------------------------------------------------------------------------


def test_convert_cli_end_to_end(arkit_capture_csv, tmp_path, capsys):
    npz, js, out = tmp_path / "a.npz", tmp_path / "a.json", tmp_path / "a.csv"
    assert convert_main([str(arkit_capture_csv), str(npz), "--fps", "25"]) == 0
    assert convert_main([str(npz), str(js)]) == 0
    assert convert_main([str(js), str(out)]) == 0
    assert "25 fps" in capsys.readouterr().out
    original = load_clip(arkit_capture_csv)
    expect = resample(original, 25.0)
    final = load_clip(out)
    assert final.fps == 25.0 and final.num_frames == expect.num_frames == 3358
    with open(out, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == list(LIVELINK_CSV_HEADER)
    assert rows[1][0] == "00:00:00:00.000"  # A2F JSON carries no timecode
    table = np.array([[float(x) for x in r[2:]] for r in rows[1:]])
    for name in ARKIT52_NAMES:  # values preserved by name through npz -> JSON -> CSV
        live = name[0].upper() + name[1:]
        np.testing.assert_allclose(table[:, rows[0].index(live) - 2], expect.curve(live), atol=1e-7, err_msg=name)
    assert not final.values[:, 52:].any()  # the JSON step dropped the rotations


def test_convert_cli_bad_input(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("Timecode,BlendShapeCount,Nope\n")
    assert convert_main([str(bad), str(tmp_path / "o.npz")]) == 2
    err = capsys.readouterr().err
    assert "bad.csv" in err and "Nope" in err and "Traceback" not in err
    assert convert_main([str(bad), str(tmp_path / "o.xyz")]) == 2
    assert convert_main([str(tmp_path / "none.json"), str(tmp_path / "o.npz")]) == 2
    assert not (tmp_path / "o.npz").exists()
    clip = rand_clip("flame58")
    save_clip(clip, tmp_path / "f.npz")
    assert convert_main([str(tmp_path / "f.npz"), str(tmp_path / "f.csv")]) == 2
    assert "flame_to_arkit" in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".csv", ".json", ".npz", ".gesichter"])
def test_truncated_or_corrupted_files_raise_only_input_error(tmp_path, suffix):
    """Every prefix length (sampled) and random byte flips: the reader loads or raises InputError, nothing else."""
    rng = np.random.default_rng(0)
    save_clip(rand_clip("livelink61", frames=12), tmp_path / f"a{suffix}")
    data = (tmp_path / f"a{suffix}").read_bytes()
    bad = tmp_path / f"bad{suffix}"
    cases = [data[:n] for n in np.linspace(0, len(data) - 1, 60).astype(int)]
    for _ in range(60):
        b = bytearray(data)
        for i in rng.integers(0, len(b), size=3):
            b[i] = rng.integers(0, 256)
        cases.append(bytes(b))
    failures = 0
    for case in cases:
        bad.write_bytes(case)
        try:
            load_clip(bad)
        except InputError as e:
            assert str(bad) in str(e)
            failures += 1
    assert failures >= 60  # at least every truncation of a binary format / a good share of the text ones
