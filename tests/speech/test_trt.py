"""TensorRT path of the speech graphs. The profile shapes are checked on the CPU; building and running engines is
gpu-marked and skips without TensorRT (NOT RUN on the project's machines: TensorRT cannot be installed there)."""

from __future__ import annotations

import pytest
import torch

from a2llm_rt.errors import InputError
from a2llm_rt.speech.config import FlowConfig, HiFTConfig
from a2llm_rt.speech.token2wav import Token2Wav
from export.speech_export import EST_INPUTS, HIFT_INPUTS, estimator_example, hift_example
from export.speech_trt import SpeechTrtLimits, estimator_profiles, hift_profiles

from .helpers import tiny_model, tiny_voice


def _check(profiles: dict, names: tuple, example: tuple) -> None:
    assert list(profiles) == list(names)  # every graph input, in the graph's order
    for name, ex in zip(names, example, strict=True):
        lo, opt, hi = profiles[name]
        assert len(lo) == len(opt) == len(hi) == ex.dim(), name
        for d in range(ex.dim()):
            assert 1 <= lo[d] <= opt[d] <= hi[d], (name, d)


def test_profiles_cover_the_graph_inputs():
    model = Token2Wav(FlowConfig.tiny(), HiFTConfig.tiny())
    lim = SpeechTrtLimits(max_sessions=4, opt_sessions=2)
    est, hift = estimator_profiles(model.flow_cfg, lim), hift_profiles(model.hift.cfg, lim)
    _check(est, EST_INPUTS, estimator_example(model))
    _check(hift, HIFT_INPUTS, hift_example(model))
    # static dims are the graph's, dynamic ones agree across inputs
    ex = dict(zip(EST_INPUTS, estimator_example(model), strict=True))
    for name in ("x", "spks", "cnn_cache", "att_cache"):
        lo, _, hi = est[name]
        for d, size in enumerate(ex[name].shape):
            if (name, d) not in {("x", 0), ("x", 2), ("spks", 0), ("cnn_cache", 1), ("att_cache", 1),
                                 ("att_cache", 3)}:
                assert lo[d] == hi[d] == size, (name, d)
    assert {est[n][2][0] for n in ("x", "mu", "t", "spks", "cond", "lengths", "cache_lengths")} == {8}
    assert est["cnn_cache"][2][1] == est["att_cache"][2][1] == 8  # rows: 2 per session
    # the source STFT has 120 frames per mel frame + 1, at every profile point
    for i in range(3):
        assert hift["source_stft"][i][2] == 120 * hift["mel"][i][2] + 1
        assert hift["mel"][i][0] == hift["source_stft"][i][0] == hift["lengths"][i][0]


def test_real_size_profiles():
    est = estimator_profiles(FlowConfig.step_audio2(), SpeechTrtLimits())
    assert est["att_cache"] == ((16, 2, 8, 1, 128), (16, 16, 8, 250, 128), (16, 16, 8, 1600, 128))
    assert est["x"][1] == (16, 80, 50)  # 8 sessions x 2 guidance rows, one 25-code chunk
    hift = hift_profiles(HiFTConfig.step_audio2(), SpeechTrtLimits())
    assert hift["mel"] == ((1, 80, 1), (8, 80, 58), (8, 80, 72))


def test_limits_are_validated():
    with pytest.raises(InputError, match="opt_sessions"):
        SpeechTrtLimits(max_sessions=2, opt_sessions=4)
    with pytest.raises(InputError, match="50 frames"):
        SpeechTrtLimits(max_chunk_frames=40)
    with pytest.raises(InputError, match="cache"):
        SpeechTrtLimits(opt_cache_frames=2000)


def test_cli_refuses_a_folder_that_is_not_an_export(tmp_path, capsys):
    from export.speech_trt import main

    assert main(["--engines", str(tmp_path)]) == 2  # bad input: the command lines' shared exit code
    assert "speech engines" in capsys.readouterr().err


@pytest.mark.gpu
def test_tensorrt_engines_stream_batched_sessions_like_torch(tmp_path):
    pytest.importorskip("tensorrt")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from a2llm_rt.speech.token2wav import SpeechStream, step_batched
    from a2llm_rt.speech.trt_runtime import use_tensorrt
    from export.speech_export import export_speech
    from export.speech_trt import build_speech_engines

    model = tiny_model()
    export_speech(model, tmp_path)
    m = build_speech_engines(tmp_path, SpeechTrtLimits(max_sessions=2, opt_sessions=2))
    assert m["trt"]["built"] and m["trt"]["passed"], m["trt"]
    codes = list(range(0, 6000, 97))[:60]

    def run(mdl):
        voices = [tiny_voice(mdl, n_codes=10, seed=1), tiny_voice(mdl, n_codes=15, seed=2)]
        streams = [SpeechStream(mdl, v, seed=i) for i, v in enumerate(voices)]
        chunks = [streams[0].push(codes, final=True), streams[1].push(codes[7:40], final=True)]
        out = step_batched(mdl, [(streams[0], *chunks[0][0])])
        for k in range(1, 3):  # ragged: different voices, progress and chunk lengths
            out += step_batched(mdl, [(streams[0], *chunks[0][k]), (streams[1], *chunks[1][k - 1])])
        return torch.cat([w.float().cpu() for w in out])

    ref = run(tiny_model().cuda())
    got = run(use_tensorrt(tiny_model().cuda(), tmp_path))
    assert got.shape == ref.shape
    assert float((got - ref).abs().max()) <= 1e-3 * float(ref.abs().max()) + 1e-5
