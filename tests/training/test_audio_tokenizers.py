"""Answer-audio tokenizers: the CosyVoice2 speech tokenizer wrapper on a synthetic ONNX graph with the real file's
input/output signature, the toy tokenizer refused for a real backbone, tokenizer specs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from a2llm_rt.errors import InputError
from a2llm_rt.models.mel import log_mel_spectrogram
from a2llm_rt.models.token_layout import STEP_AUDIO2, TINY
from a2llm_rt.models.tokenizer import build_tiny_tokenizer
from training.data.audio_tokenizers import (
    COSYVOICE2_FILE,
    CosyVoice2SpeechTokenizer,
    ToyBandEnergyTokenizer,
    check_audio_tokenizer,
    load_audio_tokenizer,
)
from training.data.builders import SequenceBuilder

ROOT = Path(__file__).resolve().parents[2]


def synthetic_speech_tokenizer(path: Path, len_type: int | None = None, mel_bins: int = 128, out_float=False):
    """An ONNX graph with the signature of speech_tokenizer_v2_25hz.onnx: feats [1, 128, T] float32 + feats_length
    [1] int32 -> indices [1, ceil(T/4)] int64. Code of token k: int(|mean over bins of frame 4k| * 1000) % 6561
    (so the test can recompute it from the features)."""
    import onnx
    from onnx import TensorProto, helper

    len_type = TensorProto.INT32 if len_type is None else len_type
    nodes = [
        helper.make_node("ReduceMean", ["feats", "axes1"], ["m"], keepdims=0),
        helper.make_node("Slice", ["m", "st", "en", "ax", "sp"], ["s"]),
        helper.make_node("Mul", ["s", "k"], ["y"]),
        helper.make_node("Abs", ["y"], ["z"]),
        helper.make_node("Cast", ["z"], ["zi"], to=TensorProto.INT64),
        helper.make_node("Mod", ["zi", "n"], ["codes"]),
    ]
    if out_float:
        nodes.append(helper.make_node("Cast", ["codes"], ["indices"], to=TensorProto.FLOAT))
    else:
        nodes.append(helper.make_node("Identity", ["codes"], ["indices"]))
    init = [
        helper.make_tensor("axes1", TensorProto.INT64, [1], [1]),
        helper.make_tensor("st", TensorProto.INT64, [1], [0]),
        helper.make_tensor("en", TensorProto.INT64, [1], [2**31 - 1]),
        helper.make_tensor("ax", TensorProto.INT64, [1], [1]),
        helper.make_tensor("sp", TensorProto.INT64, [1], [4]),
        helper.make_tensor("k", TensorProto.FLOAT, [], [1000.0]),
        helper.make_tensor("n", TensorProto.INT64, [], [6561]),
    ]
    graph = helper.make_graph(
        nodes,
        "speech_tokenizer",
        [helper.make_tensor_value_info("feats", TensorProto.FLOAT, [1, mel_bins, "T"]),
         helper.make_tensor_value_info("feats_length", len_type, [1])],
        [helper.make_tensor_value_info("indices", TensorProto.FLOAT if out_float else TensorProto.INT64, [1, "N"])],
        init,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def expected_codes(wave16k: np.ndarray) -> np.ndarray:
    x = log_mel_spectrogram(torch.from_numpy(wave16k.astype(np.float32)), 128, padding=0).numpy()
    m = x.mean(0)[::4]
    return (np.abs(m * np.float32(1000.0)).astype(np.int64)) % 6561


def speech(seconds: float, sr: int) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def test_cosyvoice2_tokenizer_runs_the_graph_on_whisper_features(tmp_path):
    path = synthetic_speech_tokenizer(tmp_path / "ckpt" / "token2wav" / COSYVOICE2_FILE)
    tok = load_audio_tokenizer(f"cosyvoice2:{tmp_path / 'ckpt'}")  # a checkpoint folder finds token2wav/
    assert isinstance(tok, CosyVoice2SpeechTokenizer) and tok.path == path and tok.codebook_size == 6561
    w = speech(2.0, 16000)
    codes = tok.encode(w, 16000)
    assert codes.dtype == np.int64 and np.array_equal(codes, expected_codes(w))
    assert abs(len(codes) - 2.0 * 25) <= 1  # 25 Hz
    # 24 kHz answer audio is resampled to 16 kHz first
    from scipy.signal import resample_poly

    w24 = speech(2.0, 24000)
    assert np.array_equal(tok.encode(w24, 24000), expected_codes(resample_poly(w24, 2, 3).astype(np.float32)))


def test_long_audio_is_cut_on_code_boundaries(tmp_path):
    tok = CosyVoice2SpeechTokenizer(synthetic_speech_tokenizer(tmp_path / COSYVOICE2_FILE), max_seconds=1.0)
    w = speech(2.5, 16000)
    codes = tok.encode(w, 16000)
    pieces = [w[:16000], w[16000:32000], w[32000:]]
    assert np.array_equal(codes, np.concatenate([expected_codes(p) for p in pieces]))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"mel_bins": 80}, "want float \\[1, 128, T\\]"), ({"out_float": True}, "not integer codes")],
)
def test_a_graph_with_another_signature_is_refused(tmp_path, kwargs, match):
    path = synthetic_speech_tokenizer(tmp_path / COSYVOICE2_FILE, **kwargs)
    with pytest.raises(InputError, match=match) as e:
        CosyVoice2SpeechTokenizer(path)
    assert COSYVOICE2_FILE in str(e.value)


def test_missing_or_broken_files_and_bad_audio(tmp_path):
    with pytest.raises(InputError, match="no CosyVoice2 speech tokenizer"):
        load_audio_tokenizer(f"cosyvoice2:{tmp_path}")
    (tmp_path / COSYVOICE2_FILE).write_bytes(b"not onnx")
    with pytest.raises(InputError, match="cannot load"):
        CosyVoice2SpeechTokenizer(tmp_path / COSYVOICE2_FILE)
    tok = CosyVoice2SpeechTokenizer(synthetic_speech_tokenizer(tmp_path / "ok.onnx"))
    with pytest.raises(InputError, match="NaN"):
        tok.encode(np.array([0.0, np.nan] * 1000, np.float32), 16000)
    with pytest.raises(InputError, match="empty"):
        tok.encode(np.zeros(0, np.float32), 16000)
    with pytest.raises(InputError, match="cosyvoice2 needs a path"):
        load_audio_tokenizer("cosyvoice2")


def test_toy_tokenizer_is_refused_for_a_real_backbone():
    toy = load_audio_tokenizer("toy")
    assert isinstance(toy, ToyBandEnergyTokenizer) and isinstance(load_audio_tokenizer("builtin"), type(toy))
    check_audio_tokenizer(toy, TINY)  # the tiny test backbone may use it
    with pytest.raises(InputError, match="a toy .* backbone .step_audio2. needs its real speech codes"):
        check_audio_tokenizer(toy, STEP_AUDIO2)
    with pytest.raises(InputError, match="toy"):
        SequenceBuilder(build_tiny_tokenizer(), STEP_AUDIO2, audio_tokenizer=toy)

    class NotToyButSmall:
        codebook_size = 64

        def encode(self, wave, sample_rate):
            return np.zeros(1, np.int64)

    with pytest.raises(InputError, match="64 codes, backbone 'step_audio2' has 6561"):
        check_audio_tokenizer(NotToyButSmall(), STEP_AUDIO2)


def test_real_recipe_names_the_cosyvoice2_tokenizer():
    recipe = yaml.safe_load((ROOT / "training/recipes/a2llm_step_audio2_mini.yaml").read_text())
    spec = recipe["model"]["audio_tokenizer"]
    assert spec.startswith("cosyvoice2:") and spec.endswith(COSYVOICE2_FILE)
    tiny = yaml.safe_load((ROOT / "training/recipes/a2llm_tiny.yaml").read_text())
    assert tiny["model"]["audio_tokenizer"] == "toy"


def test_curation_step_adds_answer_codes(tmp_path, capsys):
    from tests.training.flame_qa_fixtures import make_sample
    from training.data.audio_tokenizers import main
    from training.data.format import ANSWER_SR, ShardWriter, read_index, read_samples, sample_problems

    onnx_path = synthetic_speech_tokenizer(tmp_path / COSYVOICE2_FILE)
    samples = [make_sample("a", "aqaa", seed=1), make_sample("b", "asr", seed=2), make_sample("c", "tts", seed=3)]
    with ShardWriter(tmp_path / "src", attrs={"source": "unit"}) as w:
        for s in samples:
            w.write(s)
    assert main([str(tmp_path / "src"), "--tokenizer", f"cosyvoice2:{onnx_path}", "--out", str(tmp_path / "dst")]) == 0
    out = {s.key: s for s in read_samples(tmp_path / "dst")}
    tok = CosyVoice2SpeechTokenizer(onnx_path)
    assert out["a"].answer_codes is not None and out["b"].answer_codes is None  # spoken answers coded, ASR not
    for s in samples:
        o = out[s.key]
        if s.answer_audio is not None and s.answer_codes is None:
            assert np.array_equal(o.answer_codes, tok.encode(s.answer_audio, ANSWER_SR))
            assert sample_problems(o) == []
        else:
            assert (o.answer_codes is None) == (s.answer_codes is None)
    attrs = read_index(tmp_path / "dst")["attrs"]
    assert attrs["source"] == "unit" and attrs["answer_codes"]["codebook_size"] == 6561
    assert main([str(tmp_path / "src"), "--tokenizer", "toy", "--out", str(tmp_path / "src")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "another directory" in err and "Traceback" not in err
