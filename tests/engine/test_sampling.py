"""Sampling: masks, greedy, top-k/top-p, repetition penalty, seeded per-row generators (batched == alone)."""

from __future__ import annotations

import pytest
import torch

from a2llm_rt.engine.sampling import (
    SamplingConfig,
    SamplingParams,
    apply_repetition_penalty,
    make_generator,
    sample_codes,
    sample_tokens,
)
from a2llm_rt.errors import InputError

V = 50


def logits(b: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, V, generator=torch.Generator().manual_seed(seed)) * 3


def test_greedy_is_masked_argmax():
    x = logits()
    allowed = torch.zeros(4, V, dtype=torch.bool)
    allowed[:, 10:20] = True
    g = SamplingParams(temperature=0.0, repetition_penalty=1.0)
    out = sample_tokens(x, [g] * 4, [None] * 4, allowed)
    want = (x.masked_fill(~allowed, float("-inf"))).argmax(-1)
    assert torch.equal(out, want)
    assert ((out >= 10) & (out < 20)).all()


def test_sampling_never_leaves_the_mask_and_is_seeded():
    x = logits()
    allowed = torch.zeros(4, V, dtype=torch.bool)
    allowed[:, 30:35] = True
    p = SamplingParams(temperature=1.5, top_p=1.0, repetition_penalty=1.0)
    g1 = [make_generator(i) for i in range(4)]
    g2 = [make_generator(i) for i in range(4)]
    a = torch.stack([sample_tokens(x, [p] * 4, g1, allowed) for _ in range(30)])
    b = torch.stack([sample_tokens(x, [p] * 4, g2, allowed) for _ in range(30)])
    assert torch.equal(a, b)
    assert ((a >= 30) & (a < 35)).all()
    assert len(set(a.flatten().tolist())) > 1  # it does sample


def test_batched_rows_sample_as_alone():
    x = logits()
    p = [SamplingParams(temperature=t, top_k=k, top_p=tp) for t, k, tp in [(0.7, 0, 0.9), (1.0, 5, 1.0),
                                                                            (0.0, 0, 1.0), (1.2, 0, 0.5)]]  # fmt: skip
    batched = [make_generator(10 + i) for i in range(4)]
    alone = [make_generator(10 + i) for i in range(4)]
    for _ in range(10):
        out = sample_tokens(x, p, batched)
        for i in range(4):
            assert int(sample_tokens(x[i : i + 1], [p[i]], [alone[i]])[0]) == int(out[i])


def test_top_k_1_and_tiny_top_p_are_greedy():
    x = logits(seed=3)
    gens = [make_generator(i) for i in range(4)]
    for p in (SamplingParams(temperature=1.0, top_k=1), SamplingParams(temperature=1.0, top_p=1e-6)):
        assert torch.equal(sample_tokens(x, [p] * 4, gens), x.argmax(-1))


def test_top_k_restricts_to_the_k_best():
    x = logits(seed=4)
    p = SamplingParams(temperature=5.0, top_k=3, top_p=1.0, repetition_penalty=1.0)
    gens = [make_generator(i) for i in range(4)]
    top3 = x.topk(3, -1).indices
    for _ in range(20):
        out = sample_tokens(x, [p] * 4, gens)
        assert (top3 == out[:, None]).any(-1).all()


def test_repetition_penalty():
    x = torch.tensor([[2.0, 1.9, -1.0, 0.0]])
    y = apply_repetition_penalty(x, [[0, 2]], [1.5])
    assert torch.allclose(y, torch.tensor([[2.0 / 1.5, 1.9, -1.5, 0.0]]))
    g = SamplingParams(temperature=0.0, repetition_penalty=1.5)
    assert int(sample_tokens(x, [g], [None], history=[[0]])[0]) == 1
    assert int(sample_tokens(x, [g], [None], history=[[]])[0]) == 0


def test_config_validation_and_round_trip(tmp_path):
    with pytest.raises(ValueError):
        SamplingParams(top_p=0.0)
    with pytest.raises(ValueError):
        SamplingParams(temperature=-1)
    cfg = SamplingConfig(text=SamplingParams(temperature=0.5), seed=7)
    cfg.to_file(tmp_path / "s.json")
    back = SamplingConfig.from_file(tmp_path / "s.json")
    assert back == cfg and isinstance(back.text, SamplingParams)
    with pytest.raises(InputError):
        SamplingConfig.from_dict({"txt": {}})
    assert SamplingConfig.greedy().text.greedy and SamplingConfig.greedy().audio.greedy


def test_sample_codes_greedy_and_sampled():
    logits = torch.full((2, 3, 4, 8), -10.0)
    logits[..., 5] = 10.0
    assert torch.equal(sample_codes(logits), torch.full((2, 3, 4), 5))
    g = torch.Generator().manual_seed(0)
    assert torch.equal(sample_codes(logits, temperature=1.0, generator=g), torch.full((2, 3, 4), 5))
    flat = torch.zeros(1, 1, 1, 8)
    flat[..., :2] = 1.0
    draws = torch.stack([sample_codes(flat, temperature=1.0, top_k=2, generator=g) for _ in range(50)])
    assert set(draws.flatten().tolist()) == {0, 1}
