"""``python -m training.curate``: stages, resumability, fake OpenAI-compatible endpoint, process pool, Ray gate."""

from __future__ import annotations

import importlib.util
import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from a2llm_rt.audio import write_wav
from a2llm_rt.face.layouts import ARKIT_INDEX
from training.curate.__main__ import main
from training.curate.stages import import_mediapipe, parse_question
from training.data.format import read_samples
from training.validate import validate_dataset

JAW = ARKIT_INDEX["jawOpen"]


class _FakeChat(BaseHTTPRequestHandler):
    calls: list[dict] = []

    def do_POST(self):  # noqa: N802 (http.server API)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).calls.append(body)
        utter = body["messages"][-1]["content"].rsplit("Utterance:", 1)[1].strip()
        reply = {"choices": [{"message": {"content": json.dumps({"question": f"What did you say about {utter}?"})}}]}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def chat_server():
    _FakeChat.calls = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _FakeChat)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1", _FakeChat.calls
    srv.shutdown()
    srv.server_close()


def _clips(d):
    d.mkdir()
    rng = np.random.default_rng(0)
    sr = 16000
    for stem in ("c1", "c2", "c3"):
        write_wav(d / f"{stem}.wav", 0.3 * np.sin(np.arange(int(1.2 * sr)) * 0.05) * rng.uniform(0.5, 1), sr)
    (d / "c1.txt").write_text("the weather is lovely today")
    (d / "c1.emotion.txt").write_text("happy")
    t = 36  # 1.2 s at 30 fps
    np.savez(
        d / "c1.smirk.npz",
        expression_params=rng.normal(size=(t, 50)).astype(np.float32),
        jaw_params=rng.normal(scale=0.1, size=(t, 3)).astype(np.float32),
        fps=np.float32(30),
    )
    (d / "c2.txt").write_text("I would love a cup of tea")
    lines = ["timestamp_ms,_neutral,jawOpen,mouthSmileLeft,eyeBlinkLeft"]
    lines += [f"{i * 1000 / 30:.3f},0.1,{0.5 + 0.4 * np.sin(i / 3):.4f},0.2,0.0" for i in range(t)]
    (d / "c2.mediapipe.csv").write_text("\n".join(lines) + "\n")
    return d  # c3: no transcript, no face file


def test_curate_end_to_end_and_resume(tmp_path, chat_server, capsys):
    url, calls = chat_server
    clips, out = _clips(tmp_path / "clips"), tmp_path / "out"
    args = ["--clips", str(clips), "--out", str(out), "--llm-url", url, "--llm-model", "fake", "--no-progress"]
    assert main([*args, "--workers", "2"]) == 0  # c3's skipped stages are reported, not failures
    printed = capsys.readouterr().out
    assert "c3: asr: skipped" in printed and "faster-whisper" in printed
    man = json.loads((out / "manifest.json").read_text())
    assert man["clips"]["c1"]["stages"]["qa"] == "done" and "done" in man["clips"]["c1"]["stages"]["tts"]
    assert (
        len(calls) == 2
        and "the weather is lovely today" in calls[0]["messages"][0]["content"] + calls[1]["messages"][0]["content"]
    )
    rep = validate_dataset(out / "dataset")
    assert rep.ok and rep.total == 8 and dict(rep.tasks) == {"asr": 2, "tts": 2, "repeat": 2, "aqaa": 2}
    samples = {s.key: s for s in read_samples(out / "dataset")}
    aq = samples["c1-aqaa"]
    assert aq.motion_layout == "flame58" and aq.emotion == "happy" and aq.question_text.startswith("What did")
    assert aq.motion.shape == (30, 58)  # 1.2 s of answer audio at 25 fps
    c2 = samples["c2-tts"]
    assert c2.motion_layout == "arkit52" and c2.emotion == "neutral" and c2.motion[:, JAW].max() > 0.5

    # a second run does nothing again
    assert main(args) == 0
    man = json.loads((out / "manifest.json").read_text())
    assert man["clips"]["c1"]["stages"]["asr"] == "cached" and man["clips"]["c2"]["stages"]["qa"] == "cached"
    assert len(calls) == 2
    # losing one output redoes only that stage
    (out / "work" / "c1" / "qa.json").unlink()
    assert main(args) == 0
    man = json.loads((out / "manifest.json").read_text())
    assert man["clips"]["c1"]["stages"]["qa"] == "done" and man["clips"]["c1"]["stages"]["face"] == "cached"
    assert len(calls) == 3
    assert validate_dataset(out / "dataset").total == 8


def test_without_endpoint_no_aqaa(tmp_path):
    clips, out = _clips(tmp_path / "clips"), tmp_path / "out"
    shutil.copy(clips / "c1.txt", clips / "c3.txt")
    assert main(["--clips", str(clips), "--out", str(out), "--no-progress", "--tts", "none"]) == 0
    rep = validate_dataset(out / "dataset")
    assert rep.ok and dict(rep.tasks) == {"asr": 3, "tts": 2}  # c3 has a transcript but no face: ASR only
    man = json.loads((out / "manifest.json").read_text())
    assert man["clips"]["c1"]["stages"]["qa"].startswith("skipped: QA skipped: no --llm-url")


def test_bad_input_and_ray_gate(tmp_path, capsys):
    assert main(["--clips", str(tmp_path / "nope"), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    clips = _clips(tmp_path / "clips")
    if importlib.util.find_spec("ray") is None:
        assert main(["--clips", str(clips), "--out", str(tmp_path / "o"), "--ray", "--no-progress"]) == 2
        assert "pip install" in capsys.readouterr().err
    else:  # make test installs ray: a local single-node Ray runs the same stages as the process pool
        args = ["--clips", str(clips), "--no-progress", "--tts", "none"]
        assert main([*args, "--out", str(tmp_path / "ray"), "--ray", "--ray-local-mode"]) == 0
        assert main([*args, "--out", str(tmp_path / "pool"), "--workers", "2"]) == 0
        ray_rep, pool_rep = (
            validate_dataset(tmp_path / "ray" / "dataset"),
            validate_dataset(tmp_path / "pool" / "dataset"),
        )
        assert ray_rep.ok and dict(ray_rep.tasks) == dict(pool_rep.tasks) == {"asr": 2, "tts": 2}  # c3: no inputs
        man = json.loads((tmp_path / "ray" / "manifest.json").read_text())
        assert sorted(man["clips"]) == ["c1", "c2", "c3"]


def test_parsers(tmp_path):
    assert parse_question('Sure! {"question": "Why?"}') == "Why?"
    assert parse_question("How are you?") == "How are you?"
    p = tmp_path / "x.mediapipe.json"
    p.write_text(json.dumps([{"timestamp_ms": i * 40, "blendshapes": [{"categoryName": "jawOpen", "score": 0.5}]}
                             for i in range(5)]))  # fmt: skip
    clip = import_mediapipe(p, 30.0)
    assert clip.layout == "arkit52" and abs(clip.fps - 25.0) < 1e-6 and clip.values[:, JAW].tolist() == [0.5] * 5
