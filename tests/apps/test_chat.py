"""The chat CLI with tiny models: every output file, readable, consistent with timings.json; bad input -> exit 2."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
import torch
from scipy.io import wavfile

from a2llm_rt.face.io import load_clip
from apps.chat import main


@pytest.fixture
def question(tmp_path):
    path = tmp_path / "q.wav"
    if shutil.which("espeak-ng"):
        subprocess.run(["espeak-ng", "-w", str(path), "What is the weather in Paris?"], check=True, timeout=30)
    else:  # a 22.05 kHz tone (exercises resampling as espeak-ng's output does)
        t = np.arange(22050) / 22050
        wavfile.write(path, 22050, (0.3 * np.sin(2 * np.pi * 220 * t) * 32767).astype(np.int16))
    return path


def test_chat_tiny_writes_every_output(question, tmp_path, capsys):
    n = torch.get_num_threads()
    try:
        rc = main(["--backbone", "tiny", "--motion", "tiny", "--wav", str(question), "--out", str(tmp_path / "o"),
                   "--max-seconds", "1.2", "--min-seconds", "1.2", "--greedy"])  # fmt: skip
    finally:
        torch.set_num_threads(n)
    assert rc == 0
    out = tmp_path / "o"
    timings = json.loads((out / "timings.json").read_text())
    for k in ("ttft_s", "ttfa_s", "rtf"):
        assert timings[k] > 0
    assert timings["ttft_s"] <= timings["ttfa_s"]
    sr, pcm = wavfile.read(out / "answer.wav")
    a = timings["counts"]["audio_tokens"]
    assert sr == 24000 and pcm.shape == (a * 960,) and a >= 30 and np.abs(pcm).max() > 0
    flame = load_clip(out / "face.npz")
    assert flame.layout == "flame58" and flame.num_frames == a == timings["face_frames"]
    assert load_clip(out / "face.csv").values.shape == (a, 61)
    assert load_clip(out / "face.json").values.shape == (a, 52)
    assert load_clip(out / "face_arkit.npz").layout == "arkit52"
    assert (out / "answer.txt").read_text().endswith("\n")
    assert "TTFT" in capsys.readouterr().out


def test_chat_bad_input_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.wav"
    wavfile.write(bad, 16000, np.full(1600, np.nan, np.float32))
    for wav in (bad, tmp_path / "missing.wav"):
        rc = main(["--backbone", "tiny", "--motion", "tiny", "--wav", str(wav), "--out", str(tmp_path / "o")])
        assert rc == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "Traceback" not in err
    assert not (tmp_path / "o").exists()
