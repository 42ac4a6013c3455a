"""Residual VQ: straight-through gradient, k-means init, dead-code restart, EMA, usage/perplexity, commitment."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from a2llm_rt.errors import InputError
from a2llm_rt.quantization.base import codebook_stats
from a2llm_rt.quantization.core_vq import EuclideanCodebook, kmeans
from a2llm_rt.quantization.rvq import ResidualVectorQuantizer


def _clusters(centers: torch.Tensor, n_per: int, noise: float = 0.01) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    pts = centers.repeat_interleave(n_per, 0)
    return pts + noise * torch.randn(pts.shape, generator=g)


def test_straight_through_gradient_reaches_input():
    torch.manual_seed(0)
    q = ResidualVectorQuantizer(dim=4, num_quantizers=3, codebook_size=8).train()
    x = torch.randn(2, 5, 4, requires_grad=True)
    w = torch.randn(2, 5, 4)
    res = q(x)
    (res.x * w).sum().backward()
    # The STE makes d(quantized)/dx the identity, so the gradient is exactly w.
    torch.testing.assert_close(x.grad, w)
    assert res.codes.shape == (2, 5, 3) and res.codes.dtype == torch.long


def test_kmeans_init_uses_the_first_batch():
    torch.manual_seed(0)
    centers = torch.tensor([[5.0, 0.0], [-5.0, 0.0], [0.0, 5.0], [0.0, -5.0]])
    data = _clusters(centers, 50)
    cb = EuclideanCodebook(2, 4, kmeans_iters=20, threshold_ema_dead_code=0).train()
    assert cb.inited.item() == 0
    cb(data)
    assert cb.inited.item() == 1
    # every true centre has a code next to it (a random init would not)
    d = torch.cdist(centers, cb.embed)
    assert d.min(1).values.max() < 0.1


def test_kmeans_function_recovers_clusters():
    centers = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])
    means, sizes = kmeans(_clusters(centers, 30), 2, 10, torch.Generator().manual_seed(0))
    assert sorted(sizes.tolist()) == [30, 30]
    assert torch.cdist(centers, means).min(1).values.max() < 0.05


def test_dead_code_restart_revives_unused_codes():
    torch.manual_seed(0)
    cb = EuclideanCodebook(3, 8, kmeans_init=False, threshold_ema_dead_code=1.0).train()
    with torch.no_grad():
        cb.embed.fill_(100.0)  # far from the data: none will ever be chosen
        cb.embed_avg.copy_(cb.embed)
        cb.cluster_size.zero_()
    batch = torch.randn(64, 3)
    restarted = cb.expire_codes_(batch)
    assert restarted == 8
    # each restarted code is now a vector of the batch
    d = (cb.embed[:, None] - batch[None]).norm(dim=-1)
    assert d.min(1).values.max() < 1e-6
    # and the codes get used: a forward assigns the batch to several of them
    _, codes = cb(batch)
    assert codes.unique().numel() > 1


def test_no_restart_above_threshold():
    cb = EuclideanCodebook(3, 4, kmeans_init=False, threshold_ema_dead_code=1.0)
    with torch.no_grad():
        cb.cluster_size.fill_(5.0)
    before = cb.embed.clone()
    assert cb.expire_codes_(torch.randn(10, 3)) == 0
    assert torch.equal(cb.embed, before)


def test_ema_moves_codes_to_cluster_means():
    torch.manual_seed(0)
    cb = EuclideanCodebook(2, 1, decay=0.5, kmeans_init=False, threshold_ema_dead_code=0).train()
    data = torch.tensor([[2.0, 4.0], [4.0, 6.0]])
    for _ in range(40):
        cb(data)
    torch.testing.assert_close(cb.embed[0], torch.tensor([3.0, 5.0]), atol=1e-3, rtol=0)


def test_usage_and_perplexity_on_known_assignment():
    codes = torch.tensor([[0, 0], [0, 1], [1, 2], [1, 3]])  # [N, N_q=2], K=4
    usage, ppl = codebook_stats(codes, 4)
    torch.testing.assert_close(usage, torch.tensor([0.5, 1.0]))
    torch.testing.assert_close(ppl, torch.tensor([2.0, 4.0]))
    usage, ppl = codebook_stats(torch.zeros(10, 1, dtype=torch.long), 4)
    assert usage.item() == 0.25 and ppl.item() == pytest.approx(1.0)


def test_commitment_loss_and_residual_refinement():
    torch.manual_seed(0)
    x = torch.randn(4, 16, 8)
    q1 = ResidualVectorQuantizer(dim=8, num_quantizers=1, codebook_size=16, commitment=0.25).train()
    r1 = q1(x)
    expected = 0.25 * F.mse_loss(x, q1.vq.layers[0].decode(r1.codes[..., 0]).detach())
    # EMA updated the codebook after quantizing, so compare with the code vectors chosen before the update:
    assert r1.commit_loss.item() > 0
    assert r1.commit_loss.item() == pytest.approx(expected.item(), rel=0.5)
    errs = []
    for nq in (1, 2, 4):
        torch.manual_seed(0)
        q = ResidualVectorQuantizer(dim=8, num_quantizers=nq, codebook_size=16).train()
        for _ in range(3):
            q(x)
        q.eval()
        errs.append(F.mse_loss(q.vq.decode(q.encode(x)), x).item())
    assert errs[0] > errs[1] > errs[2]


def test_eval_forward_matches_encode_decode_and_bad_input():
    torch.manual_seed(0)
    q = ResidualVectorQuantizer(dim=6, num_quantizers=2, codebook_size=8).train()
    x = torch.randn(3, 7, 6)
    q(x)
    q.eval()
    res = q(x)
    assert torch.equal(res.codes, q.encode(x))
    torch.testing.assert_close(res.x, q.decode(res.codes))
    with pytest.raises(InputError):
        q(torch.randn(1, 2, 5))
    with pytest.raises(InputError):
        q.decode(torch.full((1, 2, 2), 8))


def _trained_rvq(beam: int = 1) -> tuple[ResidualVectorQuantizer, torch.Tensor]:
    torch.manual_seed(0)
    q = ResidualVectorQuantizer(dim=6, num_quantizers=3, codebook_size=8, threshold_ema_dead_code=0, encode_beam=beam)
    x = torch.randn(4, 50, 6)
    q.init_from_data(x)
    return q.eval(), x


def test_beam_search_encoding_is_never_worse_than_greedy():
    greedy, x = _trained_rvq(1)
    beam, _ = _trained_rvq(8)
    beam.load_state_dict(greedy.state_dict())
    err_g = (greedy.decode(greedy.encode(x)) - x).pow(2).sum(-1)  # [B, T]
    err_b = (beam.decode(beam.encode(x)) - x).pow(2).sum(-1)
    assert (err_b <= err_g + 1e-5).all()
    assert err_b.mean() < 0.99 * err_g.mean()  # and strictly better on average for random data
    # a beam as wide as all paths is exhaustive search: check one vector against brute force
    full = ResidualVectorQuantizer(dim=6, num_quantizers=3, codebook_size=8, encode_beam=8 * 8 * 8)
    full.load_state_dict(greedy.state_dict())
    full.eval()
    v = x[:1, :1]
    grid = torch.cartesian_prod(*[torch.arange(8)] * 3)  # [512, 3]
    best = (full.decode(grid[None]) - v).pow(2).sum(-1).min()
    torch.testing.assert_close((full.decode(full.encode(v)) - v).pow(2).sum(), best)
    with pytest.raises(ValueError, match="encode_beam"):
        ResidualVectorQuantizer(dim=6, encode_beam=0)


def test_init_from_data_runs_residual_kmeans_on_every_level():
    q, x = _trained_rvq(1)
    assert all(layer.inited.item() == 1 for layer in q.vq.layers)
    # residual k-means: each level lowers the error of the greedy encoding of its own training data
    flat = x.reshape(-1, 6)
    errs = []
    for n in range(1, 4):
        codes = q.encode(x)[..., :n]
        recon = sum(q.vq.layers[i].decode(codes[..., i]) for i in range(n)).reshape(-1, 6)
        errs.append((recon - flat).pow(2).sum(-1).mean().item())
    assert errs[0] > errs[1] > errs[2]
    assert errs[0] < flat.pow(2).sum(-1).mean().item()
    # training after the init does not re-run the first-batch k-means
    before = q.vq.layers[0].embed.clone()
    q.train()(torch.randn(1, 2, 6) + 100.0)
    assert torch.cdist(before, q.vq.layers[0].embed).diagonal().min() < 1e-6  # most codes untouched by that batch


def test_quantizer_dropout_updates_only_the_first_levels():
    torch.manual_seed(0)
    q = ResidualVectorQuantizer(dim=4, num_quantizers=4, codebook_size=8, threshold_ema_dead_code=0,
                                quantizer_dropout=1.0).train()  # fmt: skip
    q.init_from_data(torch.randn(200, 4))
    x = torch.randn(2, 30, 4)
    seen = set()
    for _ in range(12):
        before = [layer.embed.clone() for layer in q.vq.layers]
        res = q(x)
        moved = [not torch.equal(b, layer.embed) for b, layer in zip(before, q.vq.layers, strict=True)]
        n = sum(moved)
        assert moved == [True] * n + [False] * (4 - n) and n >= 1  # a prefix of the levels learns
        seen.add(n)
        assert res.codes.shape == (2, 30, 4)
    assert len(seen) > 1
    q.eval()
    torch.testing.assert_close(q(x).x, q.decode(q.encode(x)))  # no dropout outside training
