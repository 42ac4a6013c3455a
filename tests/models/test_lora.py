"""LoRA through peft on a tiny Qwen2ForCausalLM: trainable set, merge parity, save/load round trip, reset."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from transformers import Qwen2Config, Qwen2ForCausalLM

from a2llm_rt.errors import InputError
from a2llm_rt.models.lora import (
    PAPER_TARGETS,
    LoraSettings,
    apply_lora,
    load_lora,
    lora_parameters,
    merge_lora,
    reset_lora,
    save_lora,
    trainable_parameters,
)


def tiny_qwen2(seed: int = 0) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=97,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        rope_theta=1e6,
        tie_word_embeddings=False,
    )
    return Qwen2ForCausalLM(cfg).eval()


SETTINGS = LoraSettings(r=8, alpha=16)
IDS = torch.tensor([[1, 5, 9, 33, 2, 70, 11, 4]])


def logits(model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS).logits


def randomise_b(model: nn.Module, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in lora_parameters(model).items():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def test_paper_defaults():
    s = LoraSettings()
    assert (s.r, s.alpha, s.dropout, s.target_modules) == (64, 32, 0.05, PAPER_TARGETS)
    p = s.to_peft()
    assert (p.r, p.lora_alpha, p.lora_dropout) == (64, 32, 0.05)
    assert set(p.target_modules) == set(PAPER_TARGETS)
    with pytest.raises(ValueError):
        LoraSettings(r=0)
    assert LoraSettings.from_dict(s.to_dict()) == s


def test_only_adapters_are_trainable_and_start_as_identity():
    base_out = logits(tiny_qwen2())
    model = apply_lora(tiny_qwen2(), SETTINGS).eval()
    trainable = trainable_parameters(model)
    assert trainable and set(trainable) == set(lora_parameters(model))
    # 7 projections x 2 layers, A and B each
    assert len(trainable) == 2 * 7 * 2
    adapted = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable}
    assert adapted == set(PAPER_TARGETS)
    torch.testing.assert_close(logits(model), base_out)  # B = 0 at start


def test_merge_matches_unmerged_adapter():
    model = apply_lora(tiny_qwen2(), SETTINGS).eval()
    randomise_b(model)
    unmerged = logits(model)
    assert not torch.allclose(unmerged, logits(tiny_qwen2()), atol=1e-4)  # the adapter does change the output
    merged = merge_lora(model)
    assert isinstance(merged, Qwen2ForCausalLM) and not lora_parameters(merged)
    torch.testing.assert_close(logits(merged), unmerged, rtol=1e-4, atol=1e-4)


def test_save_load_round_trip(tmp_path):
    model = apply_lora(tiny_qwen2(), SETTINGS).eval()
    randomise_b(model)
    want = logits(model)
    out = save_lora(model, tmp_path / "adapter")
    assert (out / "adapter_model.safetensors").is_file()
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 8
    save_lora(model, tmp_path / "adapter")  # overwriting an existing adapter works
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary leftovers
    loaded = load_lora(tiny_qwen2(), tmp_path / "adapter").eval()
    torch.testing.assert_close(logits(loaded), want, rtol=0, atol=0)
    assert not trainable_parameters(loaded)  # inference load is frozen
    loaded_t = load_lora(tiny_qwen2(), tmp_path / "adapter", is_trainable=True)
    assert set(trainable_parameters(loaded_t)) == set(lora_parameters(loaded_t))


def test_load_refuses_missing_or_mismatched_adapter(tmp_path):
    with pytest.raises(InputError, match="missing adapter_config.json"):
        load_lora(tiny_qwen2(), tmp_path)
    model = apply_lora(tiny_qwen2(), SETTINGS)
    save_lora(model, tmp_path / "a")
    torch.manual_seed(0)
    bigger = Qwen2ForCausalLM(
        Qwen2Config(
            vocab_size=97,
            hidden_size=96,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
    )
    with pytest.raises(InputError, match="does not fit"):
        load_lora(bigger, tmp_path / "a")


def test_reset_lora_reinitialises_the_adapter():
    base_out = logits(tiny_qwen2())
    model = apply_lora(tiny_qwen2(), SETTINGS).eval()
    randomise_b(model)
    a_name = next(n for n in lora_parameters(model) if "lora_A" in n)
    a_before = lora_parameters(model)[a_name].detach().clone()
    n = reset_lora(model, seed=123)
    assert n == 14
    params = lora_parameters(model)
    assert all(torch.count_nonzero(p) == 0 for name, p in params.items() if "lora_B" in name)
    assert not torch.equal(params[a_name], a_before)
    torch.testing.assert_close(logits(model), base_out)
    assert set(trainable_parameters(model)) == set(params)


def test_module_prefix_restricts_targets():
    class Wrapper(nn.Module):  # like the backbone: an LLM plus another part with the same projection names
        def __init__(self):
            super().__init__()
            self.llm = tiny_qwen2()
            self.encoder = nn.ModuleDict({"q_proj": nn.Linear(8, 8)})

        def forward(self, input_ids):
            return self.llm(input_ids=input_ids)

    model = apply_lora(Wrapper(), LoraSettings(r=4, alpha=8, module_prefix="llm"))
    names = list(lora_parameters(model))
    assert names and not any("encoder" in n for n in names)
    with pytest.raises(ValueError, match="no module matched"):
        apply_lora(Wrapper(), LoraSettings(r=4, alpha=8, module_prefix="nothing"))
