"""Voices: prompt wav -> cached voice file, through tiny synthetic ONNX graphs with the real models' signatures."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from a2llm_rt.errors import InputError
from a2llm_rt.speech.make_voice import VoiceMaker, kaldi_fbank, main, prompt_mel_24k
from a2llm_rt.speech.token2wav import SpeechStream
from a2llm_rt.speech.voice import Voice

from .helpers import tiny_model


def _tokenizer_onnx(path):
    """feats [1, 128, T], feats_length [1] -> codes [1, ceil(T/4)] (argmax over bins, every 4th frame)."""
    g = helper.make_graph(
        [
            helper.make_node("ArgMax", ["feats"], ["am"], axis=1, keepdims=0),
            helper.make_node("Slice", ["am", "starts", "ends", "axes", "steps"], ["codes"]),
        ],
        "tok",
        [
            helper.make_tensor_value_info("feats", TensorProto.FLOAT, [1, 128, "T"]),
            helper.make_tensor_value_info("feats_length", TensorProto.INT32, [1]),
        ],
        [helper.make_tensor_value_info("codes", TensorProto.INT64, [1, "N"])],
        [
            numpy_helper.from_array(np.array([0], np.int64), "starts"),
            numpy_helper.from_array(np.array([1 << 30], np.int64), "ends"),
            numpy_helper.from_array(np.array([1], np.int64), "axes"),
            numpy_helper.from_array(np.array([4], np.int64), "steps"),
        ],
    )
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _campplus_onnx(path, dim):
    w = np.random.default_rng(0).standard_normal((80, dim)).astype(np.float32)
    g = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["x"], ["m"], axes=[1], keepdims=0),
            helper.make_node("Add", ["m", "one"], ["m1"]),
            helper.make_node("MatMul", ["m1", "w"], ["emb"]),
        ],
        "cam",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "T", 80])],
        [helper.make_tensor_value_info("emb", TensorProto.FLOAT, [1, dim])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.ones(80, np.float32), "one")],
    )
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))


@pytest.fixture()
def folder(tmp_path):
    _tokenizer_onnx(tmp_path / "speech_tokenizer_v2_25hz.onnx")
    _campplus_onnx(tmp_path / "campplus.onnx", 12)
    return tmp_path


def _speechy(seconds=2.0, sr=22050):
    t = np.arange(int(seconds * sr)) / sr
    f0 = 140 + 30 * np.sin(2 * np.pi * 1.5 * t)
    x = sum(np.sin(2 * np.pi * np.cumsum(f0 * k) / sr) / k for k in range(1, 6)) * 0.2
    return (x * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.float32), sr


def test_voice_from_wav_and_file_round_trip(folder, tmp_path):
    x, sr = _speechy()
    from a2llm_rt.audio import write_wav

    write_wav(tmp_path / "p.wav", x, sr)
    assert main([str(tmp_path / "p.wav"), str(tmp_path / "p.voice.safetensors"), "--token2wav", str(folder)]) == 0
    v = Voice.load(tmp_path / "p.voice.safetensors")
    assert v.name == "p"
    assert v.prompt_tokens.numel() == 50  # 2 s -> 200 frames at 100 Hz -> every 4th (the toy tokenizer)
    assert v.prompt_mel.shape == (100, 80)
    assert v.embedding.shape == (12,)
    # usable by a model with 80 mel bins: the voice conditions a stream
    from a2llm_rt.speech.config import FlowConfig, HiFTConfig

    m = tiny_model(
        flow=FlowConfig(**{**FlowConfig.tiny().__dict__, "output_size": 80}),
        hift=HiFTConfig(**{**HiFTConfig.tiny().__dict__, "in_channels": 80}),
    )
    s = SpeechStream(m, v)
    wav = s.run(s.push(list(range(30)), final=True))
    assert wav.numel() == 30 * 960


@pytest.mark.parametrize("case,match", [("short", "at least"), ("silent", "silent"), ("nan", "NaN")])
def test_bad_prompts_are_refused(folder, case, match):
    vm = VoiceMaker.from_folder(folder)
    x, sr = _speechy()
    if case == "short":
        x = x[: sr // 4]
    elif case == "silent":
        x = x * 1e-5
    else:
        x = x.copy()
        x[100] = np.nan
    with pytest.raises(InputError, match=match):
        vm(x, sr)


def test_not_audio_is_refused(folder, tmp_path, capsys):
    (tmp_path / "x.wav").write_bytes(b"this is not a wav file" * 10)
    with pytest.raises(InputError, match="WAV"):
        VoiceMaker.from_folder(folder).from_wav(tmp_path / "x.wav")
    assert main([str(tmp_path / "x.wav"), str(tmp_path / "o"), "--token2wav", str(folder)]) == 2
    out = capsys.readouterr()
    assert "WAV" in out.err and out.err.startswith("error: ") and not out.out  # the error on stderr, not stdout


def test_bad_voice_file_is_refused(tmp_path):
    (tmp_path / "v.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(InputError, match="voice"):
        Voice.load(tmp_path / "v.safetensors")


def test_kaldi_fbank_and_prompt_mel_shapes():
    x = torch.from_numpy(_speechy(1.0, 16000)[0])
    fb = kaldi_fbank(x)
    assert fb.shape == (1 + (16000 - 400) // 160, 80) and torch.isfinite(fb).all()
    # a 150 Hz-ish harmonic signal: low mel bins carry more energy than the top ones
    assert fb[:, :20].mean() > fb[:, -20:].mean()
    mel = prompt_mel_24k(torch.from_numpy(_speechy(1.0, 24000)[0]))
    assert mel.shape == (50, 80) and mel.min() >= np.log(1e-5) - 1e-6
