"""ONNX export of the token2wav estimator step and HiFT decoder: manifest, metadata, onnxruntime parity."""

from __future__ import annotations

import json

import pytest
import torch

from a2llm_rt.speech.config import FlowConfig, HiFTConfig
from a2llm_rt.speech.token2wav import Token2Wav
from export.onnx_export import read_metadata
from export.speech_export import EST_INPUTS, FORMAT, export_speech

pytestmark = pytest.mark.slow


def test_export_tiny_token2wav(tmp_path):
    torch.manual_seed(0)
    model = Token2Wav(FlowConfig.tiny(), HiFTConfig.tiny())
    m = export_speech(model, tmp_path)
    assert m["format"] == FORMAT
    for name in ("estimator_onnx", "hift_onnx"):
        par = m["artifacts"][name]["parity"]
        assert par["passed"], (name, par)
    est = m["artifacts"]["estimator_onnx"]
    assert [i["name"] for i in est["inputs"]] == list(EST_INPUTS)
    assert isinstance(est["inputs"][0]["shape"][0], str)  # dynamic batch
    meta = read_metadata(tmp_path / "estimator_step.onnx")
    assert json.loads(meta["flow"])["dit_depth"] == FlowConfig.tiny().dit_depth
    assert json.loads((tmp_path / "manifest.json").read_text())["artifacts"]["hift_onnx"]["sha256"]


def test_onnx_runtime_path_streams_like_torch(tmp_path):
    from a2llm_rt.errors import InputError
    from a2llm_rt.speech.onnx_runtime import use_onnx
    from a2llm_rt.speech.token2wav import SpeechStream

    from .helpers import tiny_voice

    torch.manual_seed(0)
    model = Token2Wav(FlowConfig.tiny(), HiFTConfig.tiny()).eval()
    export_speech(model, tmp_path)
    voice = tiny_voice(model)
    codes = list(range(0, 6000, 100))[:60]

    def stream(m):
        s = SpeechStream(m, voice)
        g = torch.Generator().manual_seed(0)
        out = []
        for c, last in s.push(codes, final=True):
            w, s.state = m.step(torch.tensor([c]), s.state, last, g)
            out.append(w[0])
        return torch.cat(out)

    ref = stream(model)
    use_onnx(model, tmp_path)
    got = stream(model)
    assert got.shape == ref.shape
    assert float((got - ref).abs().max()) <= 1e-3 * float(ref.abs().max()) + 1e-5
    # a tampered graph is refused
    with open(tmp_path / "hift_decoder.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(InputError, match="sha256"):
        use_onnx(model, tmp_path)
