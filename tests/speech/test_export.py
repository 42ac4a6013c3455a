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
    assert "lengths" in EST_INPUTS and "cache_lengths" in EST_INPUTS  # ragged batches of sessions
    assert isinstance(est["inputs"][0]["shape"][0], str)  # dynamic batch
    meta = read_metadata(tmp_path / "estimator_step.onnx")
    assert json.loads(meta["flow"])["dit_depth"] == FlowConfig.tiny().dit_depth
    assert json.loads((tmp_path / "manifest.json").read_text())["artifacts"]["hift_onnx"]["sha256"]


def test_onnx_runtime_path_streams_like_torch(tmp_path):
    from a2llm_rt.errors import InputError
    from a2llm_rt.speech.onnx_runtime import use_onnx
    from a2llm_rt.speech.token2wav import SpeechStream, step_batched

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

    def batched(m):
        """Two sessions of different voices and lengths, the second one chunk behind, in one batch per chunk."""
        voices = [voice, tiny_voice(m, n_codes=15, seed=5)]
        streams = [SpeechStream(m, v, seed=i) for i, v in enumerate(voices)]
        chunks = [streams[0].push(codes, final=True), streams[1].push(codes[5:40], final=True)]
        out = [step_batched(m, [(streams[0], *chunks[0][0])])]
        for k in range(1, 3):
            out.append(step_batched(m, [(streams[0], *chunks[0][k]), (streams[1], *chunks[1][k - 1])]))
        return torch.cat([w for ws in out for w in ws])

    ref, ref_b = stream(model), batched(model)
    use_onnx(model, tmp_path)
    got, got_b = stream(model), batched(model)
    for g, r in ((got, ref), (got_b, ref_b)):
        assert g.shape == r.shape
        assert float((g - r).abs().max()) <= 1e-3 * float(r.abs().max()) + 1e-5
    # a tampered graph is refused
    with open(tmp_path / "hift_decoder.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(InputError, match="sha256"):
        use_onnx(model, tmp_path)
