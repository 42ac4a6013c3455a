"""ONNX export of the token2wav estimator step and HiFT decoder: manifest, metadata, onnxruntime parity."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from a2llm_rt.speech.config import FlowConfig, HiFTConfig
from a2llm_rt.speech.token2wav import Token2Wav
from export.onnx_export import read_metadata
from export.speech_export import EST_INPUTS, FORMAT, export_speech

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One export of the tiny model (seed 0) for the tests of this file: (folder, manifest, model)."""
    torch.manual_seed(0)
    model = Token2Wav(FlowConfig.tiny(), HiFTConfig.tiny()).eval()
    folder = tmp_path_factory.mktemp("speech_onnx")
    return folder, export_speech(model, folder), model


def _copy(exported, tmp_path):
    import shutil

    shutil.copytree(exported[0], tmp_path / "engines")
    return tmp_path / "engines"


def test_export_tiny_token2wav(exported):
    tmp_path, m, _ = exported
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


def test_onnx_runtime_path_streams_like_torch(exported, tmp_path):
    from a2llm_rt.errors import InputError
    from a2llm_rt.speech.onnx_runtime import use_onnx
    from a2llm_rt.speech.token2wav import SpeechStream, step_batched

    from .helpers import tiny_voice

    tmp_path = _copy(exported, tmp_path)
    model = copy.deepcopy(exported[2])
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


def test_speech_trt_manifest_and_refusals_without_tensorrt(exported, tmp_path):
    """The CPU side of the TensorRT path: engines are recorded in the manifest with their source, profiles and
    sha256; the runtime refuses a folder without engines, a tampered engine, a missing TensorRT and a CPU model."""
    from a2llm_rt.errors import InputError
    from a2llm_rt.speech.onnx_runtime import read_manifest
    from a2llm_rt.speech.trt_runtime import use_tensorrt
    from export.speech_trt import FILES, SpeechTrtLimits, estimator_profiles, hift_profiles, record_engines

    folder = _copy(exported, tmp_path)
    model = copy.deepcopy(exported[2])
    with pytest.raises(InputError, match="no TensorRT engines"):
        use_tensorrt(model, folder)
    # placeholder bytes stand in for built engines here: only the manifest bookkeeping is under test
    lim = SpeechTrtLimits(max_sessions=4, opt_sessions=2)
    built = {}
    for name, prof in (("estimator_trt", estimator_profiles(model.flow_cfg, lim)),
                       ("hift_trt", hift_profiles(model.hift.cfg, lim))):
        (folder / FILES[name]).write_bytes(name.encode())
        built[name] = {"profiles": {k: [list(s) for s in v] for k, v in prof.items()}, "tensorrt": "10.x",
                       "precision": "fp32", "parity": {"passed": True}}
    m = record_engines(folder, read_manifest(folder), built)
    again = json.loads((folder / "manifest.json").read_text())
    assert again == json.loads(json.dumps(m)) and again["trt"]["built"] and again["trt"]["passed"]
    est = again["artifacts"]["estimator_trt"]
    assert est["source"] == "estimator_step.onnx" and est["kind"] == "tensorrt" and len(est["sha256"]) == 64
    assert est["profiles"]["att_cache"][2][1] == 8  # rows: 2 per session
    try:
        import tensorrt  # noqa: F401

        has_trt = True
    except ImportError:
        has_trt = False
    if not has_trt:
        with pytest.raises(InputError, match="needs TensorRT"):
            use_tensorrt(model, folder)
    elif not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA"):
            use_tensorrt(model, folder)
    with open(folder / FILES["hift_trt"], "ab") as f:
        f.write(b"tampered")
    with pytest.raises(InputError, match="sha256"):
        use_tensorrt(model, folder)


def test_backend_selection(exported, tmp_path):
    from a2llm_rt.errors import InputError
    from a2llm_rt.speech.backend import choose_backend, use_backend

    folder = exported[0]
    model = copy.deepcopy(exported[2])
    assert choose_backend(None) == ("torch", "no speech engines folder")
    name, why = choose_backend(folder, "auto", "cpu")
    assert name == "onnxruntime" and "TensorRT" in why  # this folder has no engines
    with pytest.raises(InputError, match="unknown speech backend"):
        choose_backend(folder, "cuda-magic")
    with pytest.raises(InputError, match="needs a speech engines folder"):
        choose_backend(None, "tensorrt")
    with pytest.raises(InputError, match="no TensorRT engines"):
        use_backend(model, folder, "tensorrt")  # asked for explicitly: refused, never silently downgraded
    assert model.flow.decoder.estimator.graph_step is None
    assert use_backend(model, folder, "auto") == "onnxruntime"
    assert model.flow.decoder.estimator.graph_step is not None and model.hift.graph_decoder is not None
    with pytest.raises(InputError, match="speech engines"):
        choose_backend(tmp_path, "auto")  # not an engines folder
