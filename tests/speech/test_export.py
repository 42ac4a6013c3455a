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
