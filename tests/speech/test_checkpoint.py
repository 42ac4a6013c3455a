"""Safe loading of a token2wav folder: flow.yaml without hyperpyyaml, weights-only .pt, safetensors converter."""

from __future__ import annotations

import dataclasses
import json
import pickle

import pytest
import torch

from a2llm_rt.errors import InputError
from a2llm_rt.speech.checkpoint import convert_folder, flow_config_from_yaml, fold_weight_norm, read_hyper_yaml
from a2llm_rt.speech.config import FlowConfig
from a2llm_rt.speech.token2wav import load_token2wav

from .helpers import tiny_model, tiny_voice


@pytest.fixture(autouse=True)
def _no_grad():
    """Inference only (a module-level ``set_grad_enabled(False)`` would leak into every later test file)."""
    with torch.no_grad():
        yield


#: Step-Audio-2-mini's flow.yaml layout (hyperpyyaml tags; values as upstream's streaming code builds the model).
FLOW_YAML = """\
__set_seed1: !apply:random.seed [1986]
__set_seed2: !apply:numpy.random.seed [1986]
__set_seed3: !apply:torch.manual_seed [1986]
sample_rate: 24000
llm_input_size: 512
flow: !new:cosyvoice2.flow.flow.CausalMaskedDiffWithXvec
    input_size: !ref <llm_input_size>
    output_size: 80
    spk_embed_dim: 192
    output_type: 'mel'
    vocab_size: 6561
    encoder: !new:cosyvoice2.transformer.upsample_encoder_v2.UpsampleConformerEncoderV2
        input_size: 512
        output_size: 512
        input_layer: 'linear'
        pre_lookahead_len: 3
        num_blocks: 6
        num_up_blocks: 4
        up_stride: 2
        up_scale_factor: 2
        attention_heads: 8
        pos_enc_layer_type: 'rel_pos_espnet'
        selfattention_layer_type: 'rel_selfattn'
        key_bias: true
        linear_units: 2048
        dropout_rate: 0.1
        positional_dropout_rate: 0.1
        attention_dropout_rate: 0.1
        normalize_before: true
    decoder: !new:cosyvoice2.flow.flow_matching.CausalConditionalCFM
        inference_cfg_rate: 0.7
        estimator: !new:cosyvoice2.flow.decoder_dit.DiT
            in_channels: 320
            out_channels: 80
            mlp_ratio: 4.0
            depth: 16
            num_heads: 8
            head_dim: 64
            hidden_size: 512
"""


def _tiny_yaml(c: FlowConfig) -> str:
    y = FLOW_YAML
    for a, b in (
        ("vocab_size: 6561", f"vocab_size: {c.vocab_size}"),
        ("input_size: 512", f"input_size: {c.input_size}"),
        ("output_size: 512", f"output_size: {c.input_size}"),
        ("llm_input_size: 512", f"llm_input_size: {c.input_size}"),
        ("output_size: 80", f"output_size: {c.output_size}"),
        ("spk_embed_dim: 192", f"spk_embed_dim: {c.spk_embed_dim}"),
        ("num_blocks: 6", f"num_blocks: {c.encoder_blocks}"),
        ("num_up_blocks: 4", f"num_up_blocks: {c.encoder_up_blocks}"),
        ("attention_heads: 8", f"attention_heads: {c.encoder_heads}"),
        ("linear_units: 2048", f"linear_units: {c.encoder_linear_units}"),
        ("in_channels: 320", f"in_channels: {4 * c.output_size}"),
        ("out_channels: 80", f"out_channels: {c.output_size}"),
        ("depth: 16", f"depth: {c.dit_depth}"),
        ("num_heads: 8", f"num_heads: {c.dit_heads}"),
        ("head_dim: 64", f"head_dim: {c.dit_head_dim}"),
        ("hidden_size: 512", f"hidden_size: {c.dit_hidden}"),
    ):
        y = y.replace(a, b)
    return y


def test_real_flow_yaml_gives_step_audio2_config(tmp_path):
    p = tmp_path / "flow.yaml"
    p.write_text(FLOW_YAML)
    assert flow_config_from_yaml(p) == FlowConfig.step_audio2()


@pytest.mark.parametrize(
    "evil",
    [
        "x: !!python/object/apply:os.system ['echo pwned']",
        "x: !new:os.system {command: 'echo pwned'}",
        "x: !name:subprocess.Popen",
        "x: !apply:os.system ['echo pwned']",
        "x: !module:os",
        "x: !new:cosyvoice2.flow.decoder_dit.DiT [1, 2]",
        "x: !ref <nowhere>",
        "x: !ref <a>.__class__",
    ],
)
def test_object_building_tags_are_refused(tmp_path, evil):
    p = tmp_path / "flow.yaml"
    p.write_text(evil + "\n")
    with pytest.raises(InputError):
        read_hyper_yaml(p)


def test_unsupported_variants_are_refused(tmp_path):
    p = tmp_path / "flow.yaml"
    p.write_text(FLOW_YAML.replace("rel_pos_espnet", "abs_pos"))
    with pytest.raises(InputError, match="pos_enc_layer_type"):
        flow_config_from_yaml(p)
    p.write_text(FLOW_YAML.replace("decoder_dit.DiT", "decoder.CausalConditionalDecoder"))
    with pytest.raises(InputError, match="CausalConditionalDecoder"):
        flow_config_from_yaml(p)
    p.write_text("flow: [1, 2\n")
    with pytest.raises(InputError, match="YAML"):
        flow_config_from_yaml(p)


def test_fold_weight_norm_matches_torch():
    conv = torch.nn.utils.parametrizations.weight_norm(torch.nn.Conv1d(3, 4, 5))
    sd = fold_weight_norm(conv.state_dict())
    assert set(sd) == {"weight", "bias"}
    torch.testing.assert_close(sd["weight"], conv.weight)
    old = {"weight_g": conv.parametrizations.weight.original0, "weight_v": conv.parametrizations.weight.original1}
    torch.testing.assert_close(fold_weight_norm(old)["weight"], conv.weight)
    with pytest.raises(InputError, match="g and v"):
        fold_weight_norm({"weight_g": old["weight_g"]})


def _write_folder(tmp_path, model):
    d = tmp_path / "token2wav"
    d.mkdir()
    (d / "flow.yaml").write_text(_tiny_yaml(model.flow_cfg))
    (d / "hift.json").write_text(json.dumps(dataclasses.asdict(model.hift.cfg)))
    torch.save(model.flow.state_dict(), d / "flow.pt")
    # hift.pt as upstream saves it: "generator." prefix, weight-normalised convs as weight_g / weight_v
    hsd = {}
    for k, v in model.hift.state_dict().items():
        wn = k.endswith(".weight") and v.dim() == 3 and not k.startswith("source_downs")
        if wn:
            norm = v.flatten(1).norm(dim=1).view(-1, 1, 1)
            hsd[f"generator.{k[:-7]}.weight_g"] = norm
            hsd[f"generator.{k[:-7]}.weight_v"] = v
        else:
            hsd[f"generator.{k}"] = v
    torch.save(hsd, d / "hift.pt")
    return d


def test_folder_round_trip_and_safetensors_converter(tmp_path):
    model = tiny_model(seed=4)
    d = _write_folder(tmp_path, model)
    v = tiny_voice(model)
    ref = model.synthesize(list(range(40)), v, generator=torch.Generator().manual_seed(0))
    loaded = load_token2wav(d)
    loaded.flow.decoder.rand_noise = model.flow.decoder.rand_noise
    torch.testing.assert_close(
        loaded.synthesize(list(range(40)), v, generator=torch.Generator().manual_seed(0)), ref, atol=1e-5, rtol=0
    )
    written = convert_folder(d)
    assert [p.name for p in written] == ["flow.safetensors", "hift.safetensors"]
    (d / "flow.pt").unlink()
    (d / "hift.pt").unlink()
    again = load_token2wav(d)
    again.flow.decoder.rand_noise = model.flow.decoder.rand_noise
    torch.testing.assert_close(
        again.synthesize(list(range(40)), v, generator=torch.Generator().manual_seed(0)), ref, atol=1e-5, rtol=0
    )


class _Evil:
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_pickled_code_in_pt_is_refused(tmp_path, capsys):
    model = tiny_model(seed=4)
    d = _write_folder(tmp_path, model)
    with open(d / "flow.pt", "wb") as f:
        pickle.dump({"x": _Evil()}, f)
    with pytest.raises(InputError, match="weights-only"):
        load_token2wav(d)
    assert "unpickled!" not in capsys.readouterr().out


def test_wrong_shapes_are_reported(tmp_path):
    model = tiny_model(seed=4)
    d = _write_folder(tmp_path, model)
    (d / "flow.yaml").write_text(_tiny_yaml(model.flow_cfg).replace("depth: 2", "depth: 3"))
    with pytest.raises(InputError, match="missing"):
        load_token2wav(d)
    with pytest.raises(InputError, match="not a token2wav folder"):
        load_token2wav(tmp_path / "nope")
