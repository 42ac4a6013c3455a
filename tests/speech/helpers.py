"""Shared helpers of the speech tests: the golden fixture (written by tools/make_token2wav_fixtures.py from an
upstream Step-Audio2 checkout) and tiny models built from configs in code."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import torch

from a2llm_rt.speech.checkpoint import fold_weight_norm, load_strict
from a2llm_rt.speech.config import FlowConfig, HiFTConfig
from a2llm_rt.speech.token2wav import Token2Wav
from a2llm_rt.speech.voice import Voice

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "token2wav"


def _tuples(v):
    return tuple(_tuples(x) for x in v) if isinstance(v, list) else v


@functools.lru_cache(maxsize=1)
def golden() -> tuple[dict, dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    meta = json.loads((FIXTURE / "meta.json").read_text())
    return meta, load_file(str(FIXTURE / "golden.safetensors"))


def golden_configs() -> tuple[FlowConfig, HiFTConfig]:
    meta, t = golden()
    flow = FlowConfig(**meta["flow"], noise_frames=t["noise"].size(2))
    hift = HiFTConfig(**{k: _tuples(v) for k, v in meta["hift"].items()})
    return flow, hift


def golden_model() -> Token2Wav:
    """The fixture's tiny model with upstream's state dicts loaded (HiFT's weight norm folded) and its noise."""
    _, t = golden()
    fc, hc = golden_configs()
    m = Token2Wav(fc, hc).eval()
    load_strict(m.flow, {k[5:]: v for k, v in t.items() if k.startswith("flow.")}, "flow")
    load_strict(m.hift, fold_weight_norm({k[5:]: v for k, v in t.items() if k.startswith("hift.")}), "hift")
    m.flow.decoder.rand_noise = t["noise"].clone()
    return m


def golden_voice() -> Voice:
    _, t = golden()
    return Voice(t["prompt_tokens"][0], t["prompt_mel"][0], t["spk"][0], "golden")


def tiny_model(seed: int = 0, flow: FlowConfig | None = None, hift: HiFTConfig | None = None) -> Token2Wav:
    """A tiny random model of the real architecture (DiT modulation layers randomised, unlike upstream's init)."""
    torch.manual_seed(seed)
    m = Token2Wav(flow or FlowConfig.tiny(), hift or HiFTConfig.tiny()).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("alpha"):
                p.copy_(0.5 + torch.rand(p.shape, generator=g))
            else:  # HiFT smaller: deep random conv stacks otherwise saturate and amplify rounding
                p.copy_((0.3 if name.startswith("flow.") else 0.08) * torch.randn(p.shape, generator=g))
        m.hift.f0_predictor.classifier.bias.fill_(150.0)
    return m


def tiny_voice(model: Token2Wav, n_codes: int = 10, seed: int = 1, name: str = "tiny") -> Voice:
    g = torch.Generator().manual_seed(seed)
    c = model.flow_cfg
    return Voice(
        torch.randint(0, c.vocab_size, (n_codes,), generator=g),
        torch.randn(2 * n_codes, c.output_size, generator=g) - 4.0,
        torch.randn(c.spk_embed_dim, generator=g),
        name,
    )
