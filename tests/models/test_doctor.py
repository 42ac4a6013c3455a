"""``python -m a2llm_rt.models.doctor DIR``: a tiny checkpoint in the real layout (sharded safetensors + index,
tokenizer, token2wav/) passes; broken copies of it are reported naming the file and the tensor, without loading."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from a2llm_rt.errors import InputError
from a2llm_rt.models.backbone import TINY_BACKBONE, StepAudio2Backbone
from a2llm_rt.models.checkpoint import from_pretrained_dir, save_pretrained_dir
from a2llm_rt.models.doctor import TOKEN2WAV_FILES, diagnose, main
from a2llm_rt.models.token_layout import TINY
from a2llm_rt.models.tokenizer import build_tiny_tokenizer


def write_token2wav(d):
    import onnx
    from onnx import TensorProto, helper

    d.mkdir(parents=True, exist_ok=True)
    (d / "flow.yaml").write_text("flow: !new:cosyvoice.flow.flow.CausalMaskedDiffWithXvec\n")
    torch.save({"w": torch.zeros(2)}, d / "flow.pt")
    torch.save({"generator.w": torch.zeros(2)}, d / "hift.pt")
    for name in ("campplus.onnx", "speech_tokenizer_v2_25hz.onnx"):
        g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])  # fmt: skip
        onnx.save(helper.make_model(g), str(d / name))


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    model = StepAudio2Backbone(TINY_BACKBONE, TINY)
    save_pretrained_dir(model, d, tokenizer=build_tiny_tokenizer(), max_shard_bytes=40_000)
    write_token2wav(d / "token2wav")
    return d


@pytest.fixture
def copy(good, tmp_path):
    d = tmp_path / "ckpt"
    shutil.copytree(good, d)
    return d


def shard_of(d, name):
    return d / json.loads((d / "model.safetensors.index.json").read_text())["weight_map"][name]


def test_tiny_checkpoint_in_the_real_layout_passes(good, capsys):
    rep = diagnose(good)
    assert rep.ok, rep.problems
    text = "\n".join(rep.notes)
    assert "2 layers" in text and "token layout 'tiny'" in text and "<tts_pad>=295" in text
    assert "speech_tokenizer_v2_25hz.onnx" in text
    assert main([str(good)]) == 0 and "no problems found" in capsys.readouterr().out


def test_wrong_shape_missing_and_unexpected_tensors_name_file_and_tensor(copy, capsys):
    f = shard_of(copy, "lm_head.weight")
    sd = load_file(str(f))
    sd["lm_head.weight"] = torch.zeros(10, 64)
    save_file(sd, str(f))
    g = shard_of(copy, "encoder.after_norm.bias")
    sd = load_file(str(g))
    del sd["encoder.after_norm.bias"]
    sd["vision_tower.weight"] = torch.zeros(2)
    save_file(sd, str(g))
    rep = diagnose(copy)
    msg = "\n".join(rep.problems)
    assert f"lm_head.weight: shape [10, 64], expected [368, 64] (in {f.name})" in msg
    assert f"encoder.after_norm.bias: listed in the index but absent from {g.name}" in msg
    assert f"vision_tower.weight: in {g.name} but not in model.safetensors.index.json" in msg
    assert main([str(copy), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is False and len(out["problems"]) == 3
    # the loader refuses the same folder before it allocates the model (meta device), naming file and tensor
    with pytest.raises(InputError, match=f"lm_head.weight: shape \\[10, 64\\], expected \\[368, 64\\] \\(in {f.name}"):
        from_pretrained_dir(copy, dtype=torch.float32)


def test_missing_shard_and_unindexed_tensor(copy):
    index = json.loads((copy / "model.safetensors.index.json").read_text())
    name = "model.norm.weight"
    del index["weight_map"][name]
    (copy / "model.safetensors.index.json").write_text(json.dumps(index))
    rep = diagnose(copy)
    assert any(p.startswith(f"{name}: missing") for p in rep.problems)
    shard_of(copy, "lm_head.weight").unlink()
    rep = diagnose(copy)
    assert any("model.safetensors.index.json" in p and "missing shard files" in p for p in rep.problems)


def test_different_vocabulary_and_broken_config(copy):
    cfg = json.loads((copy / "config.json").read_text())
    cfg["text_config"]["vocab_size"] = 400
    (copy / "config.json").write_text(json.dumps(cfg))
    rep = diagnose(copy)
    assert any("vocab_size 400" in p for p in rep.problems)
    with pytest.raises(InputError, match="config.json: text_config.vocab_size 400 differs from token layout 'tiny'"):
        from_pretrained_dir(copy, dtype=torch.float32)
    del cfg["text_config"]["hidden_size"]
    (copy / "config.json").write_text(json.dumps(cfg))
    assert any("config.json" in p and "text_config.hidden_size missing" in p for p in diagnose(copy).problems)
    (copy / "config.json").write_text("{")
    assert any(p.startswith("config.json: not JSON") for p in diagnose(copy).problems)


def test_tokenizer_without_a_special_is_reported(copy):
    tj = json.loads((copy / "tokenizer.json").read_text())
    for t in tj["added_tokens"]:
        if t["content"] == "<audio_patch>":
            t["content"] = "<audio_patch_x>"
    (copy / "tokenizer.json").write_text(json.dumps(tj))
    assert diagnose(copy).problems == ["tokenizer.json: no <audio_patch> token (the token layout expects id 290)"]


def test_tokenizer_with_other_special_ids_is_reported(copy):
    tj = json.loads((copy / "tokenizer.json").read_text())
    for t in tj["added_tokens"]:
        if t["content"] == "<tts_pad>":
            t["content"] = "<tts_padding>"
        elif t["content"] == "<audio_patch>":
            t["content"] = "<tts_pad>"
    tj["model"]["vocab"] = {k: v for k, v in tj["model"]["vocab"].items() if k not in ("<tts_pad>", "<audio_patch>")}
    (copy / "tokenizer.json").write_text(json.dumps(tj))
    rep = diagnose(copy)
    msg = "\n".join(rep.problems)
    assert "tokenizer.json: tokenizer does not match token layout 'tiny': <tts_pad>: layout 295, tokenizer 290" in msg
    with pytest.raises(InputError, match="tokenizer.json.*<tts_pad>: layout 295, tokenizer 290"):
        from_pretrained_dir(copy, dtype=torch.float32)


@pytest.mark.parametrize("name", TOKEN2WAV_FILES)
def test_token2wav_files(copy, name):
    (copy / "token2wav" / name).unlink()
    assert diagnose(copy).problems == [f"token2wav/{name}: missing"]
    (copy / "token2wav" / name).write_bytes(b"")
    assert diagnose(copy).problems == [f"token2wav/{name}: empty file"]
    if not name.endswith(".yaml"):
        (copy / "token2wav" / name).write_bytes(b"<html>")
        assert len(diagnose(copy).problems) == 1


def test_not_a_directory(tmp_path):
    assert not diagnose(tmp_path / "nope").ok
    (tmp_path / "empty").mkdir()
    rep = diagnose(tmp_path / "empty")
    assert any(p.startswith("config.json: cannot read") for p in rep.problems)
    assert any(p.startswith("token2wav/: missing") for p in rep.problems)


def test_full_size_config_is_checked_against_step_audio2_mini_without_allocating(tmp_path):
    from a2llm_rt.models.backbone import STEP_AUDIO2_MINI
    from a2llm_rt.models.checkpoint import config_to_hf_dict

    data = config_to_hf_dict(STEP_AUDIO2_MINI)
    data["text_config"]["num_hidden_layers"] = 27
    (tmp_path / "config.json").write_text(json.dumps(data))
    save_file({"lm_head.weight": torch.zeros(2, 2)}, str(tmp_path / "model.safetensors"))
    rep = diagnose(tmp_path)  # builds the 7 B model on the meta device only
    msg = "\n".join(rep.problems)
    assert "config.json: num_layers 27, Step-Audio-2-mini has 28" in msg
    assert "lm_head.weight: shape [2, 2], expected [158720, 3584] (in model.safetensors)" in msg
    assert "model.embed_tokens.weight: missing" in msg and "tokenizer.json: missing" in msg
    assert "token2wav/: missing" in msg
