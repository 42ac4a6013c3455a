"""Motion Connector: window-by-window stepping equals the teacher-forced training forward, for both fusions."""

from __future__ import annotations

import pytest
import torch

from a2llm_rt.config import Config
from a2llm_rt.errors import InputError
from a2llm_rt.models.connector import ConnectorConfig, MotionConnector, connector_loss
from a2llm_rt.models.gated_fusion import GatedFusionLayer

FUSIONS = ["cross_attention", "gated"]


def tiny_cfg(fusion: str = "cross_attention", **kw) -> ConnectorConfig:
    base = dict(d_llm=24, d_model=32, n_layers=2, n_heads=4, group=5, window=10, n_q=3, codebook_size=16)
    base.update(kw)
    return ConnectorConfig(fusion=fusion, **base)


def make(fusion: str = "cross_attention", seed: int = 0, **kw) -> MotionConnector:
    torch.manual_seed(seed)
    return MotionConnector(tiny_cfg(fusion, **kw)).eval()


def data(cfg: ConnectorConfig, b: int, t: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(b, t, cfg.d_llm, generator=g)
    codes = torch.randint(0, cfg.codebook_size, (b, t // cfg.group, cfg.n_q), generator=g)
    return hidden, codes


def step_all(model: MotionConnector, hidden: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    cfg = model.cfg
    out, prev = [], None
    for s in range(0, hidden.shape[1], cfg.window):
        w = hidden[:, s : s + cfg.window]
        out.append(model.step(w, prev))
        t0 = s // cfg.group
        prev = codes[:, t0 : t0 + w.shape[1] // cfg.group]
    return torch.cat(out, 1)


def test_config_defaults_are_the_papers_and_validate():
    cfg = ConnectorConfig()
    assert (cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.dropout, cfg.group, cfg.n_q, cfg.codebook_size) == (
        768,
        6,
        12,
        0.1,
        5,
        6,
        256,
    )
    assert cfg.window == 10 and cfg.tokens_per_window == 2
    assert isinstance(cfg, Config)
    with pytest.raises(ValueError, match="multiple of group"):
        ConnectorConfig(window=12)
    with pytest.raises(ValueError, match="fusion"):
        ConnectorConfig(fusion="concat")
    with pytest.raises(InputError):
        ConnectorConfig.from_dict({"d_model": 30, "n_heads": 4})
    assert ConnectorConfig.from_dict(tiny_cfg("gated").to_dict()) == tiny_cfg("gated")


@pytest.mark.parametrize("fusion", FUSIONS)
def test_forward_shapes_and_layer_type(fusion):
    model = make(fusion)
    hidden, codes = data(model.cfg, 2, 30)
    logits = model(hidden, codes)
    assert logits.shape == (2, 6, 3, 16)
    assert torch.isfinite(logits).all()
    assert isinstance(model.layers[0], GatedFusionLayer) == (fusion == "gated")


@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize("t", [40, 35])  # 4 full windows; 3 full windows + a partial one (5 positions)
def test_step_by_window_equals_training_forward(fusion, t):
    model = make(fusion)
    hidden, codes = data(model.cfg, 3, t)
    with torch.no_grad():
        full = model(hidden, codes)
        stepped = step_all(model, hidden, codes)
    torch.testing.assert_close(stepped, full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_window_depends_only_on_own_hidden_and_previous_codes(fusion):
    model = make(fusion)
    hidden, codes = data(model.cfg, 1, 40)
    with torch.no_grad():
        base = model(hidden, codes)
        h2 = hidden.clone()
        h2[:, 20:30] += 1.0  # window 2's hidden states
        out_h = model(h2, codes)
        c2 = codes.clone()
        c2[:, 4:6] = (c2[:, 4:6] + 1) % 16  # window 2's codes: memory of window 3 only
        out_c = model(hidden, c2)
    # windows are tokens [0:2], [2:4], [4:6], [6:8]
    assert torch.equal(out_h[:, :4], base[:, :4]) and torch.equal(out_h[:, 6:], base[:, 6:])
    assert not torch.allclose(out_h[:, 4:6], base[:, 4:6])
    assert torch.equal(out_c[:, :6], base[:, :6])
    assert not torch.allclose(out_c[:, 6:], base[:, 6:])


def test_first_mask_lets_sessions_at_different_points_share_a_batch():
    model = make()
    cfg = model.cfg
    hidden, codes = data(cfg, 2, 10)
    prev = torch.randint(0, 16, (2, 2, 3))
    with torch.no_grad():
        mixed = model.step(hidden, prev, first=torch.tensor([True, False]))
        alone_first = model.step(hidden[:1], None)
        alone_cont = model.step(hidden[1:], prev[1:])
    torch.testing.assert_close(mixed[:1], alone_first)
    torch.testing.assert_close(mixed[1:], alone_cont)


def test_batch_entries_are_independent():
    model = make()
    hidden, codes = data(model.cfg, 3, 20)
    with torch.no_grad():
        full = model(hidden, codes)
        one = model(hidden[1:2], codes[1:2])
    torch.testing.assert_close(full[1:2], one, rtol=1e-5, atol=1e-5)


def test_bad_shapes_are_refused():
    model = make()
    hidden, codes = data(model.cfg, 1, 20)
    with pytest.raises(ValueError, match="multiple of G"):
        model(hidden[:, :12], codes[:, :2])
    with pytest.raises(ValueError, match="motion_codes"):
        model(hidden, codes[:, :3])
    with pytest.raises(ValueError, match="more than W"):
        model.step(hidden, None)
    with pytest.raises(ValueError, match="prev_codes"):
        model.step(hidden[:, :10], codes[:, :, :2])


def test_loss_is_sum_over_levels_and_training_reduces_it():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 3, 16)
    codes = torch.randint(0, 16, (2, 4, 3))
    expected = sum(
        torch.nn.functional.cross_entropy(logits[:, :, q].reshape(-1, 16), codes[:, :, q].reshape(-1)) for q in range(3)
    )
    torch.testing.assert_close(connector_loss(logits, codes), expected)
    # padding is ignored
    padded = codes.clone()
    padded[:, 3] = -100
    expected_pad = sum(
        torch.nn.functional.cross_entropy(logits[:, :3, q].reshape(-1, 16), codes[:, :3, q].reshape(-1))
        for q in range(3)
    )
    torch.testing.assert_close(connector_loss(logits, padded), expected_pad)
    # a few optimiser steps on one batch lower the loss (gradients reach every part)
    model = make(seed=3).train()
    hidden, codes = data(model.cfg, 2, 20, seed=4)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(15):
        loss = connector_loss(model(hidden, codes), codes)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.7 * first
    assert model.code_embed.tables[2].weight.grad is not None and model.start.grad is not None


@pytest.mark.parametrize("fusion", FUSIONS)
def test_padded_batch_equals_each_sample_alone(fusion):
    """Batch padding is masked: every real token's logits equal those of its sample run alone (window 4 tokens)."""
    model = make(fusion, window=20)  # 4 tokens per window: padding inside a window is visible to self-attention
    cfg = model.cfg
    lengths = [9, 3, 12, 4]  # motion tokens per sample; the batch is padded to 12 tokens (60 positions)
    t = max(lengths) * cfg.group
    hidden, codes = data(cfg, len(lengths), t, seed=3)
    hidden = hidden * 3.0  # garbage (large) hidden states at padded positions make any leak obvious
    mask = torch.arange(max(lengths))[None] < torch.tensor(lengths)[:, None]
    with torch.no_grad():
        batched = model(hidden, codes, mask)
        unmasked = model(hidden, codes)
        for i, n in enumerate(lengths):
            alone = model(hidden[i : i + 1, : n * cfg.group], codes[i : i + 1, :n])
            torch.testing.assert_close(batched[i, :n], alone[0], rtol=1e-5, atol=1e-5)
            # and alone equals the engine's window-by-window step
            stepped = step_all(model, hidden[i : i + 1, : n * cfg.group], codes[i : i + 1, :n])
            torch.testing.assert_close(alone, stepped, rtol=1e-5, atol=1e-5)
    # without the mask a padded query leaks into real tokens (the bug this guards against)
    assert (unmasked[1, :3] - batched[1, :3]).abs().max() > 1e-3


def test_padded_batch_trains_without_nan_and_refuses_bad_masks():
    model = make(window=20)
    model.train()
    cfg = model.cfg
    hidden, codes = data(cfg, 2, 40)
    mask = torch.tensor([[True] * 8, [True] * 2 + [False] * 6])  # sample 1: windows 1 has no real token
    target = codes.masked_fill(~mask[..., None], -100)
    loss = connector_loss(model(hidden, codes, mask), target)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    with pytest.raises(ValueError, match="prefix"):
        model(hidden, codes, torch.tensor([[True] * 8, [False] + [True] * 7]))
    with pytest.raises(ValueError, match="token_mask"):
        model(hidden, codes, mask[:, :4])
