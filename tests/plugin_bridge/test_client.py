"""The client CLI: reads a wav (any rate), runs a turn, writes answer.wav, face files, text and a latency report."""

from __future__ import annotations

import json
import wave

import numpy as np

from a2llm_rt.audio import read_wav, write_wav
from a2llm_rt.face.io import load_clip
from plugin_bridge import client
from plugin_bridge.scripted_source import ScriptedSource
from tests.plugin_bridge.helpers import start_server


def test_client_cli_writes_every_output(tmp_path, capsys):
    source = ScriptedSource(seconds=0.8)
    server = start_server(source)
    wav = tmp_path / "question.wav"
    write_wav(wav, 0.3 * np.sin(np.arange(22050) / 44100 * 2 * np.pi * 200), 44100)  # 0.5 s at 44.1 kHz
    assert read_wav(wav, sample_rate=16000)[0].shape == (8000,)
    out = tmp_path / "out"
    try:
        assert client.main(["--server", server.endpoint, "--wav", str(wav), "--out", str(out)]) == 0
    finally:
        server.stop()
    with wave.open(str(out / "answer.wav")) as w:
        assert w.getframerate() == 24000 and w.getnframes() == 20 * 960
    assert (out / "answer.txt").read_text().strip() == source.text
    clip = load_clip(out / "face_arkit52.npz")
    assert clip.layout == "arkit52" and clip.fps == 25.0
    np.testing.assert_array_equal(clip.values, ScriptedSource.face(0, 20)["arkit52"])
    assert load_clip(out / "face_livelink.csv").num_frames == 20
    assert load_clip(out / "face_a2f.json").num_frames == 20
    assert load_clip(out / "face_flame58.npz").values.shape == (20, 58)
    rep = json.loads((out / "latency.json").read_text())
    assert rep["status"] == "COMPLETED" and rep["seq_gaps"] == 0
    assert 0 <= rep["first_text_received_s"] <= rep["first_audio_chunk_received_s"] <= rep["turn_end_received_s"]
    assert 0 <= rep["ttft_s"] <= rep["ttfa_s"] <= rep["server_total_s"] and rep["rtf"] > 0  # the paper's (§6.1)
    assert rep["delivery_latency_ms"]["count"] == len(rep["messages"]) > 0


def test_client_cli_bad_wav_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not a wav")
    assert client.main(["--wav", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "bad.wav" in capsys.readouterr().err
