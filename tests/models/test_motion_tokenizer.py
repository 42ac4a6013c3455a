"""The streaming RVQ-VAE: shapes, streaming == full, causality / look-ahead, typed state, bad input."""

from __future__ import annotations

import pytest
import torch

from a2llm_rt.errors import InputError
from a2llm_rt.models.motion_tokenizer import DecoderState, MotionTokenizer, MotionTokenizerConfig


def _tiny(lookahead: int = 0, layout: str = "arkit52", **kw) -> MotionTokenizer:
    torch.manual_seed(0)
    cfg = MotionTokenizerConfig(
        layout=layout, width=16, latent_dim=8, num_quantizers=3, codebook_size=16, lookahead=lookahead, **kw
    )
    m = MotionTokenizer(cfg)
    m.train()
    m(torch.rand(4, 40, cfg.motion_dim))  # k-means init so codes are not all equal
    return m.eval()


def test_paper_defaults_and_shapes():
    cfg = MotionTokenizerConfig()
    assert (cfg.group, cfg.width, cfg.num_res_blocks, cfg.latent_dim) == (5, 128, 3, 256)
    assert (cfg.num_quantizers, cfg.codebook_size, cfg.dropout, cfg.commitment, cfg.lookahead) == (
        6,
        256,
        0.05,
        0.25,
        0,
    )
    assert cfg.motion_dim == 58
    torch.manual_seed(0)
    m = MotionTokenizer(MotionTokenizerConfig(layout="arkit52")).eval()
    x = torch.rand(2, 25, 52)
    codes = m.encode(x)
    assert codes.shape == (2, 5, 6) and codes.dtype == torch.long
    assert m.decode(codes).shape == (2, 25, 52)


def test_config_round_trip_and_validation(tmp_path):
    cfg = MotionTokenizerConfig(layout="arkit52", lookahead=1)
    cfg.to_file(tmp_path / "c.json")
    assert MotionTokenizerConfig.from_file(tmp_path / "c.json") == cfg
    with pytest.raises(ValueError):
        MotionTokenizerConfig(lookahead=-1)
    with pytest.raises(ValueError):
        MotionTokenizerConfig(layout="nope")


@pytest.mark.parametrize(("lookahead", "skip"), [(0, False), (2, False), (1, True)])
def test_streaming_decode_equals_full(lookahead, skip):
    m = _tiny(lookahead, linear_skip=skip)
    x = torch.rand(2, 60, 52)
    codes = m.encode(x)
    full = m.decode(codes)
    for chunk in (1, 3):
        state = m.init_decode_state(2)
        outs = []
        for i in range(0, codes.shape[1], chunk):
            y, state = m.decode_step(codes[:, i : i + chunk], state)
            outs.append(y)
        y, state = m.decode_flush(state)
        outs.append(y)
        torch.testing.assert_close(torch.cat(outs, 1), full)
    # token by token, frames come out G per token once the look-ahead is filled
    state = m.init_decode_state(2)
    sizes = []
    for i in range(codes.shape[1]):
        y, state = m.decode_step(codes[:, i : i + 1], state)
        sizes.append(y.shape[1])
    assert sizes == [0] * lookahead + [5] * (codes.shape[1] - lookahead)


@pytest.mark.parametrize("skip", [False, True])
def test_streaming_encode_equals_full(skip):
    m = _tiny(linear_skip=skip)
    x = torch.rand(2, 55, 52)
    full = m.encode(x)
    state = m.init_encode_state(2)
    out = []
    for a, b in [(0, 1), (1, 4), (4, 5), (5, 18), (18, 18), (18, 55)]:
        c, state = m.encode_step(x[:, a:b], state)
        out.append(c)
    assert torch.equal(torch.cat(out, 1), full)


@pytest.mark.parametrize(("lookahead", "skip"), [(0, False), (1, False), (1, True)])
def test_decoder_causality(lookahead, skip):
    m = _tiny(lookahead, linear_skip=skip)
    g = m.group
    codes = m.encode(torch.rand(1, 50, 52))
    ref = m.decode(codes)
    for i in (3, 7):
        changed = codes.clone()
        changed[:, i:] = (changed[:, i:] + 5) % 16
        out = m.decode(changed)
        first_affected = (i - lookahead) * g
        torch.testing.assert_close(out[:, :first_affected], ref[:, :first_affected])
        assert not torch.allclose(
            out[:, first_affected : first_affected + g], ref[:, first_affected : first_affected + g]
        )


@pytest.mark.parametrize("skip", [False, True])
def test_encoder_causality(skip):
    m = _tiny(linear_skip=skip)
    x = torch.rand(1, 50, 52)
    z = m.encoder(m.normalize(x))
    x2 = x.clone()
    x2[:, 23:] += 1.0  # frame 23 lies in token 4
    z2 = m.encoder(m.normalize(x2))
    torch.testing.assert_close(z2[:, :4], z[:, :4])
    assert not torch.allclose(z2[:, 4], z[:, 4])


def test_decode_state_is_per_session():
    m = _tiny()
    codes = m.encode(torch.rand(2, 30, 52))
    state = m.init_decode_state(2)
    _, state = m.decode_step(codes[:, :3], state)
    assert isinstance(state, DecoderState) and set(state.tensors()) == {"tokens", "frames", "filled"}
    # session 1 restarts: its output equals a fresh stream's, session 0 goes on undisturbed
    state.reset(torch.tensor([False, True]))
    y, _ = m.decode_step(codes[:, 3:6], state)
    fresh, _ = m.decode_step(codes[1:, 3:6], m.init_decode_state(1))
    torch.testing.assert_close(y[1:], fresh)
    full0 = m.decode(codes[:1, :6])
    torch.testing.assert_close(y[:1], full0[:, 15:])
    # select / cat regroup sessions
    s0 = state.select([0])
    both = DecoderState.cat([s0, state.select([1])])
    torch.testing.assert_close(both.frames, state.frames)


def test_bad_input():
    m = _tiny()
    with pytest.raises(InputError, match="non-finite"):
        x = torch.rand(1, 10, 52)
        x[0, 3, 2] = float("nan")
        m.encode(x)
    with pytest.raises(InputError, match=r"\[B, T, 52\]"):
        m.encode(torch.rand(1, 10, 58))
    with pytest.raises(InputError, match="multiple of G"):
        m.encode(torch.rand(1, 12, 52))
    with pytest.raises(InputError):
        m.decode(torch.zeros(1, 2, 5, dtype=torch.long))


def test_training_reduces_reconstruction_error():
    torch.manual_seed(0)
    cfg = MotionTokenizerConfig(
        layout="arkit52", width=32, latent_dim=16, num_quantizers=2, codebook_size=32, dropout=0
    )
    m = MotionTokenizer(cfg).train()
    t = torch.arange(40).float()[None, :, None]
    phase = torch.rand(8, 1, 52) * 6.28
    x = 0.5 + 0.4 * torch.sin(t / 4 + phase)
    opt = torch.optim.AdamW(m.parameters(), 3e-3)
    first = None
    for _ in range(60):
        out = m(x)
        loss = (out.recon - x).pow(2).mean() + out.quant.commit_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert loss.item() < 0.5 * first


def test_pca_init_starts_as_a_pca_autoencoder():
    torch.manual_seed(0)
    cfg = MotionTokenizerConfig(layout="arkit52", width=16, latent_dim=12, num_quantizers=2, codebook_size=8,
                                linear_skip=True)  # fmt: skip
    m = MotionTokenizer(cfg)
    basis = torch.randn(2, 52)  # motion of rank 2 per frame -> rank <= 10 per token of 5 frames
    x = 0.5 + 0.1 * torch.einsum("ntk,kd->ntd", torch.randn(16, 20, 2), basis)
    m.init_linear_skip_pca(x)
    m.eval()
    recon = m.denormalize(m.decoder(m.encoder(m.normalize(x))))
    torch.testing.assert_close(recon, x, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="linear_skip"):
        _tiny().init_linear_skip_pca(x)


def test_clamp_output_and_codebook_init_from_windows():
    m = _tiny(clamp_output=True, encode_beam=4)
    with torch.no_grad():
        m.motion_mean.fill_(0.5)
        m.motion_std.fill_(10.0)  # decoded frames far outside [0, 1]
    x = torch.rand(2, 20, 52)
    y = m.decode(m.encode(x))
    assert y.min() >= 0 and y.max() <= 1 and ((y == 0) | (y == 1)).any()
    st = m.init_decode_state(2)
    ys, _ = m.decode_step(m.encode(x), st)
    torch.testing.assert_close(ys, y)
    with pytest.raises(ValueError, match="clamp_output"):
        MotionTokenizerConfig(layout="flame58", clamp_output=True).validate()
    torch.manual_seed(0)
    cfg = MotionTokenizerConfig(layout="arkit52", width=16, latent_dim=8, num_quantizers=3, codebook_size=16)
    m2 = MotionTokenizer(cfg)
    windows = torch.rand(32, 20, 52)
    m2.init_codebooks(windows)
    assert all(layer.inited.item() == 1 for layer in m2.quantizer.vq.layers)
    assert m2.training  # mode restored
    z = m2.encoder(m2.normalize(windows)).detach()
    err = (m2.quantizer.decode(m2.quantizer.encode(z)) - z).pow(2).mean()
    assert err < 0.5 * z.pow(2).mean()


def test_reset_one_row_with_lookahead_emits_what_a_fresh_stream_emits():
    """Issue 16's bug: with look-ahead 1, resetting row 1 of 2 made it emit 15 frames for 3 tokens (the batch's
    shared hold-back counter was already spent) where a fresh stream emits 10 (token 0's frames wait for token 1)."""
    m = _tiny(1)
    codes = m.encode(torch.rand(2, 30, 52))
    state = m.init_decode_state(2)
    _, state = m.decode_step(codes[:, :3], state)
    state.reset(torch.tensor([False, True]))
    lengths = m.decode_lengths(3, state)
    y, state = m.decode_step(codes[:, 3:6], state)
    fresh, _ = m.decode_step(codes[1:, 3:6], m.init_decode_state(1))
    assert fresh.shape[1] == 10
    assert lengths.tolist() == [15, 10] and y.shape[1] == 15
    assert torch.all(y[1:, 10:] == 0)  # padding past row 1's frames
    torch.testing.assert_close(y[1:, :10], fresh)
    torch.testing.assert_close(y[:1], m.decode(codes[:1, :6])[:, 10:25])
