"""TensorRT engines (gpu-marked: skipped without CUDA; also skipped when TensorRT is not installed).

NOT RUN on the project's CPU machines: TensorRT cannot be installed there.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.export.helpers import tiny_engines

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def trt_engines(tmp_path_factory):
    pytest.importorskip("tensorrt")
    from a2llm_rt.engine.builders import tiny_motion_models
    from export.build_engines import build

    connector, motion = tiny_motion_models()
    folder = tmp_path_factory.mktemp("trt")
    manifest = build(connector, motion, folder, "fp32", max_batch=4, trt=True)
    return folder, manifest, connector, motion


def test_engines_built_and_verified(trt_engines):
    _, manifest, _, _ = trt_engines
    assert manifest["trt"]["built"] and manifest["ok"]
    for name in ("connector_trt", "decoder_trt"):
        assert manifest["artifacts"][name]["parity"]["passed"]


def test_tensorrt_backend_matches_torch(trt_engines):
    from a2llm_rt.engine.motion_backend import TensorRTBackend, TorchBackend
    from tests.export.test_backends import drive

    folder, _, connector, motion = trt_engines
    torch.manual_seed(0)
    hidden = torch.randn(2, 3 * connector.cfg.window + 3, connector.cfg.d_llm)
    codes_t, frames_t = drive(TorchBackend(connector, motion), hidden, restart_at=2)
    codes_r, frames_r = drive(TensorRTBackend(folder), hidden.cuda(), restart_at=2)
    assert (codes_r == codes_t).mean() > 0.99
    for r, t in zip(frames_r, frames_t, strict=True):
        np.testing.assert_allclose(r, t, atol=1e-3, rtol=1e-3)


def test_onnxruntime_cuda_provider_matches_cpu():
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu not installed")
    from a2llm_rt.engine.motion_backend import OnnxRuntimeBackend

    built = tiny_engines()
    cpu, gpu = OnnxRuntimeBackend(built.folder), OnnxRuntimeBackend(built.folder, provider="cuda")
    x = torch.randn(3, built.connector.cfg.window, built.connector.cfg.d_llm)
    np.testing.assert_allclose(gpu.connector_step(x).numpy(), cpu.connector_step(x).numpy(), atol=1e-4)


def test_tensorrt_decoder_keeps_the_streaming_contract(trt_engines):
    """The shared streaming checks (chunked == whole, causality, reset one row) on the TensorRT decoder engine, whose
    per-session state (the look-ahead counter included) is an engine input and output like the ONNX graph's."""
    from a2llm_rt.engine.motion_backend import TensorRTBackend
    from tests.export.test_streaming_graphs import backend_case
    from tests.streaming_checks import check_all

    folder, _, _, motion = trt_engines
    with torch.no_grad():
        check_all(backend_case("tensorrt la=1", TensorRTBackend(folder), motion, atol=1e-3))
