"""The demo (`make demo`): server + tiny engine + espeak-ng question + Python client, every output checked.

The real-capture part and the contact sheets need ../shared/data; without it the demo says they are skipped, and
this test checks that instead.
"""

from __future__ import annotations

import json
import re
import wave

import numpy as np
import pytest
from PIL import Image

from apps import demo


def _png(path, min_w: int, min_h: int) -> None:
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size[0] >= min_w and im.size[1] >= min_h, (path.name, im.size)
        im.load()  # the whole file decodes
        assert len(np.unique(np.asarray(im.convert("L")))) > 20, f"{path.name} is blank"


def _wav(path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2
        return np.frombuffer(w.readframes(w.getnframes()), "<i2"), w.getframerate()


@pytest.mark.slow
def test_demo_end_to_end(tmp_path, capsys, monkeypatch):
    from a2llm_rt.face.io import load_clip

    stopped = []

    def extra(ctx):  # the hook for extra services: gets the live endpoint, its stop runs at shutdown
        assert ctx.endpoint.startswith("tcp://127.0.0.1:") and ctx.server.poll() is None
        ctx.services.append(lambda: stopped.append(ctx.server.poll()))
        ctx.notes.append("extra service: test hook")

    monkeypatch.setattr(demo, "start_extra_services", extra)
    data = demo.shared_data_dir()
    mesh, capture = data / "arkit_mesh", data / "arkit_capture" / "livelinkface_rom_3.csv"
    out = tmp_path / "demo_out"
    rc = demo.main(["--out", str(out), "--mesh", str(mesh), "--capture", str(capture), "--seconds", "8"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert stopped == [None], "extra services stop before the server"

    q, q_rate = _wav(out / "question.wav")
    assert q.size > q_rate * 0.5 and np.abs(q).max() > 1000  # espeak-ng speech (or the tone fallback)
    a, rate = _wav(out / "answer.wav")
    assert rate == 24000 and a.size >= 24000 and np.abs(a).max() > 100
    lat = json.loads((out / "latency.json").read_text())
    assert lat["status"] == "COMPLETED" and lat["seq_gaps"] == 0 and not lat["errors"]
    assert 0 <= lat["ttft_s"] <= lat["server_first_audio_sent_s"] and lat["ttfa_s"] >= 0 and lat["rtf"] > 0
    frames = load_clip(out / "face_arkit52.npz")
    n = frames.num_frames
    assert frames.layout == "arkit52" and n > 25 and abs(n * 960 - a.size) <= 5 * 960
    for name, layout in (("face_livelink61.npz", "livelink61"), ("face_flame58.npz", "flame58"),
                         ("face_livelink.csv", "livelink61"), ("face_a2f.json", None)):  # fmt: skip
        clip = load_clip(out / name)
        assert clip.num_frames == n and np.isfinite(clip.values).all(), name
        assert layout is None or clip.layout == layout, (name, clip.layout)
    _png(out / "curves.png", 800, 600)
    assert (out / "answer.txt").is_file()
    assert "bridge server stopped" in (out / "server.log").read_text()  # SIGTERM: a graceful shutdown

    if mesh.is_dir():
        _png(out / "sheet.png", 800, 300)
        assert str((out / "sheet.png").resolve()) in printed
    else:
        assert "contact sheet skipped" in printed
    if mesh.is_dir() and capture.is_file():
        _png(out / "capture_curves.png", 800, 600)
        _png(out / "capture_sheet.png", 800, 300)
        m = json.loads((out / "capture_metrics.json").read_text())
        assert m["peak_align_ms"] == 80.0 and m["xcorr_lag_signed_ms"] == 80.0
        assert re.search(r"^Peak Align\s+80\.0+\s+ms", printed, re.MULTILINE), printed
    else:
        assert "real-capture section skipped" in printed
    assert "no meaningful speech" in printed and "--backbone DIR --motion DIR" in printed
    assert "extra service: test hook" in printed
    assert str((out / "answer.wav").resolve()) in printed


@pytest.mark.slow
def test_demo_stops_the_server_on_errors(tmp_path, monkeypatch, capsys):
    seen = {}

    def boom(ctx):
        seen["server"] = ctx.server
        raise RuntimeError("an extra service failed to start")

    monkeypatch.setattr(demo, "start_extra_services", boom)
    rc = demo.main(["--out", str(tmp_path / "o"), "--capture", "", "--mesh", str(tmp_path / "none")])
    assert rc == 1
    assert "an extra service failed to start" in capsys.readouterr().err
    assert seen["server"].poll() == 0, "the server was not shut down gracefully"


def test_question_falls_back_to_a_tone_without_espeak(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo.shutil, "which", lambda _name: None)
    assert demo.make_question(tmp_path / "q.wav", "hello") == "tone"
    assert "espeak-ng is not installed" in capsys.readouterr().out
    x, rate = _wav(tmp_path / "q.wav")
    assert rate == 16000 and x.size == 32000 and 5000 < np.abs(x).max() < 32767


def test_demo_refuses_a_missing_weights_folder(tmp_path, capsys):
    rc = demo.main(["--out", str(tmp_path / "o"), "--backbone", str(tmp_path / "nope"), "--motion", "tiny"])
    assert rc == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_demo_keeps_the_browser_viewer_up_until_stopped(tmp_path):
    """`--viewer yes`: after the outputs the demo serves the page and the bridge until SIGTERM, then stops both."""
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    if not (demo.REPO / "plugin_bridge/web/page/dist/index.html").is_file():
        pytest.skip("the viewer page is not built (make page / make test build it with npm)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "apps.demo", "--out", str(tmp_path), "--capture", "", "--mesh", "",
           "--viewer", "yes", "--viewer-port", str(port)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=demo.REPO)
    try:
        lines = []
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, "demo exited before serving the viewer:\n" + "".join(lines)
            lines.append(line)
            if "Talk to the avatar" in line:
                break
        assert (tmp_path / "answer.wav").is_file()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
            assert r.status == 200 and b"a2llm" in r.read()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
