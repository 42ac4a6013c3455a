"""The flow-matching estimator of Step-Audio-2's flow: a DiT with adaLN-Zero modulation and a causal conv branch.

Same computation and parameter names as upstream's ``cosyvoice2.flow.decoder_dit.DiT`` (DiT-v5: attention, a causal
convolution block and an MLP per block, each gated by the timestep embedding). Input channels are x, mu, the speaker
embedding and the condition stacked (4 x mel bins).

Two modes: :meth:`DiT.forward` on a whole masked batch, and :meth:`DiT.forward_chunk` on one chunk with the keys and
values of all earlier chunks (attention over cache + chunk, no mask) and the causal convolutions' left context.
Upstream puts the new keys *before* the cached ones (``cat([k, k_cache])``); attention does not care about key order,
but the cache layout (and so its trimming) does, so we keep it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class TimestepEmbedder(nn.Module):
    """Sinusoidal embedding of 1000*t (256 features, cos then sin) -> MLP."""

    def __init__(self, hidden: int, freq_dim: int = 256):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.freq_dim = freq_dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """t [B] in [0, 1] -> [B, hidden]."""
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32, device=t.device) / half).to(t)
        args = (t * 1000)[:, None] * freqs[None]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        return self.mlp(emb)


class Attention(nn.Module):
    """Multi-head attention with per-head LayerNorm on q and k (``qk_norm``)."""

    def __init__(self, dim: int, num_heads: int, head_dim: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim
        inner = num_heads * head_dim
        self.to_q = nn.Linear(dim, inner)
        self.to_k = nn.Linear(dim, inner)
        self.to_v = nn.Linear(dim, inner)
        self.q_norm = nn.LayerNorm(head_dim)
        self.k_norm = nn.LayerNorm(head_dim)
        self.proj = nn.Linear(inner, dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.reshape(b, t, self.num_heads, self.head_dim).transpose(1, 2)

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q = self.q_norm(self._heads(self.to_q(x)))
        k = self.k_norm(self._heads(self.to_k(x)))
        return q, k, self._heads(self.to_v(x))

    def _out(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, _, t, _ = q.shape
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(y.transpose(1, 2).reshape(b, t, -1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x [B, T, C]; mask [B, 1, T] bool (valid keys)."""
        q, k, v = self._qkv(x)
        return self._out(q, k, v, mask.unsqueeze(1))

    def forward_chunk(self, x: torch.Tensor, att_cache: torch.Tensor,
                      key_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, T, C]; att_cache [B, H, Tc, 2*head_dim]; key_mask [B, 1, 1, T + Tc] bool (valid keys: the chunk's,
        then the cache's; None: all) -> (y, new cache [B, H, T + Tc, 2*head_dim], the chunk's keys first)."""
        q, k, v = self._qkv(x)
        k_c, v_c = att_cache.chunk(2, dim=3)
        k = torch.cat([k, k_c], dim=2)
        v = torch.cat([v, v_c], dim=2)
        return self._out(q, k, v, key_mask), torch.cat([k, v], dim=3)


def window_before(x: torch.Tensor, ends: torch.Tensor, size: int) -> torch.Tensor:
    """x [B, C, T] -> [B, C, size]: row b's ``size`` steps ending (exclusive) at ``ends[b]`` ([B] int64)."""
    idx = ends[:, None] - size + torch.arange(size, device=x.device)[None]
    return x.gather(2, idx[:, None, :].expand(-1, x.size(1), -1))


def chunk_key_mask(lengths: torch.Tensor | None, cache_lengths: torch.Tensor | None, t: int, tc: int, b: int,
                   device: torch.device) -> torch.Tensor:
    """[B, 1, 1, t + tc] bool: the chunk's first ``lengths[b]`` keys, then the cache's first ``cache_lengths[b]``."""
    def valid(n: torch.Tensor | None, size: int) -> torch.Tensor:
        r = torch.arange(size, device=device)[None]
        return r.expand(b, -1) >= 0 if n is None else r < n[:, None]

    return torch.cat([valid(lengths, t), valid(cache_lengths, tc)], dim=1)[:, None, None, :]


class CausalConv1d(nn.Conv1d):
    """Conv1d padded with kernel-1 steps on the left."""

    def __init__(self, cin: int, cout: int, kernel_size: int):
        super().__init__(cin, cout, kernel_size)
        self.left = kernel_size - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, (self.left, 0)))

    def forward_chunk(self, x: torch.Tensor, cache: torch.Tensor,
                      lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, C, T], cache [B, C, kernel-1] -> (y, new cache). ``lengths`` [B] int64: valid steps of each row
        (right padding after them); the new cache is the ``kernel-1`` steps before each row's end."""
        x = torch.cat([cache, x], dim=2)
        return super().forward(x), x[..., -self.left:] if lengths is None else window_before(x, lengths + self.left,
                                                                                            self.left)


class _Transpose(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)


class CausalConvBlock(nn.Module):
    """[B, T, C] -> causal conv -> LayerNorm -> Mish -> causal conv (``block`` indices as upstream)."""

    def __init__(self, channels: int, kernel_size: int = 3):
        super().__init__()
        self.channels = channels
        self.block = nn.Sequential(_Transpose(), CausalConv1d(channels, channels, kernel_size), _Transpose(),
                                   nn.LayerNorm(channels), nn.Mish(), _Transpose(),
                                   CausalConv1d(channels, channels, kernel_size), _Transpose())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)

    def forward_chunk(self, x: torch.Tensor, cache: torch.Tensor,
                      lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, T, C], cache [B, 2C, kernel-1], lengths [B] or None (see :meth:`CausalConv1d.forward_chunk`)."""
        c1, c2 = cache.split((self.channels, self.channels), dim=1)
        x, n1 = self.block[1].forward_chunk(x.transpose(1, 2), c1, lengths)
        x = self.block[4](self.block[3](x.transpose(1, 2)))
        x, n2 = self.block[6].forward_chunk(x.transpose(1, 2), c2, lengths)
        return x.transpose(1, 2), torch.cat([n1, n2], dim=1)


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class DiTBlock(nn.Module):
    """x += g_a * Attn(mod(LN1 x)); x += g_c * Conv(mod(LN3 x)); x += g_m * MLP(mod(LN2 x))."""

    def __init__(self, hidden: int, num_heads: int, head_dim: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden, num_heads, head_dim)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.mlp = MLP(hidden, int(hidden * mlp_ratio))
        self.norm3 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.conv = CausalConvBlock(hidden, 3)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 9 * hidden))

    def forward(self, x: torch.Tensor, c: torch.Tensor, mask: torch.Tensor | None = None,
                cnn_cache: torch.Tensor | None = None, att_cache: torch.Tensor | None = None,
                lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """x [B, T, C], c [B, 1, C]. Whole mode: mask [B, 1, T], no caches. Chunk mode: both caches, and ``mask``
        None or the keys' [B, 1, 1, T + Tc] with ``lengths`` [B] (rows of different lengths, right-padded)."""
        sa, ca, ga, sm, cm, gm, sc, cc, gc = self.adaLN_modulation(c).chunk(9, dim=-1)
        chunk = att_cache is not None
        if chunk:
            a, new_att = self.attn.forward_chunk(modulate(self.norm1(x), sa, ca), att_cache, mask)
        else:
            a, new_att = self.attn(modulate(self.norm1(x), sa, ca), mask), None
        x = x + ga * a
        if chunk:
            y, new_cnn = self.conv.forward_chunk(modulate(self.norm3(x), sc, cc), cnn_cache, lengths)
        else:
            y, new_cnn = self.conv(modulate(self.norm3(x), sc, cc)), None
        x = x + gc * y
        x = x + gm * self.mlp(modulate(self.norm2(x), sm, cm))
        return x, new_cnn, new_att


class FinalLayer(nn.Module):
    def __init__(self, hidden: int, out_channels: int):
        super().__init__()
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))
        self.norm_final = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden, out_channels)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class DiT(nn.Module):
    """v(x_t, t | mu, spk, cond): [B, 4*mel, T] stacked inputs -> velocity [B, mel, T]."""

    def __init__(self, in_channels: int, out_channels: int, mlp_ratio: float, depth: int, num_heads: int,
                 head_dim: int, hidden_size: int):
        super().__init__()
        self.out_channels = out_channels
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.hidden_size = hidden_size
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.in_proj = nn.Linear(in_channels, hidden_size)
        self.blocks = nn.ModuleList([DiTBlock(hidden_size, num_heads, head_dim, mlp_ratio) for _ in range(depth)])
        self.final_layer = FinalLayer(hidden_size, out_channels)
        self.graph_step = None
        """Set by :func:`a2llm_rt.speech.onnx_runtime.use_onnx` / :func:`a2llm_rt.speech.trt_runtime.use_tensorrt`: runs
        :meth:`forward_chunk` through the exported graph (same arguments, lengths included)."""

    @staticmethod
    def _stack(x: torch.Tensor, mu: torch.Tensor, spks: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, mu, spks.unsqueeze(-1).expand(-1, -1, x.size(-1)), cond], dim=1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, mu: torch.Tensor, t: torch.Tensor, spks: torch.Tensor,
                cond: torch.Tensor) -> torch.Tensor:
        """x, mu, cond [B, mel, T]; mask [B, 1, T]; t [B]; spks [B, mel] -> [B, mel, T]."""
        c = self.t_embedder(t).unsqueeze(1)
        h = self.in_proj(self._stack(x, mu, spks, cond).transpose(1, 2))
        m = mask.bool()
        for block in self.blocks:
            h, _, _ = block(h, c, m)
        return self.final_layer(h, c).transpose(1, 2)

    def forward_chunk(self, x: torch.Tensor, mu: torch.Tensor, t: torch.Tensor, spks: torch.Tensor,
                      cond: torch.Tensor, cnn_cache: torch.Tensor, att_cache: torch.Tensor,
                      lengths: torch.Tensor | None = None,
                      cache_lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One chunk. cnn_cache [depth, B, 2*hidden, 2]; att_cache [depth, B, H, Tc, 2*head_dim].

        Rows of different lengths (several sessions in one batch): ``lengths`` [B] int64 valid frames of x/mu/cond
        (right-padded to T) and ``cache_lengths`` [B] valid cache entries (right-padded to Tc); padded keys are
        masked out and each row's conv cache ends at its own last frame, so every row computes what it computes
        alone. Both None: every row is full.

        Returns (velocity [B, mel, T], new cnn cache, new att cache [depth, B, H, T + Tc, 2*head_dim]: row b's valid
        entries are [0, lengths[b]) and [T, T + cache_lengths[b])).
        """
        if self.graph_step is not None:
            return self.graph_step(x, mu, t, spks, cond, cnn_cache, att_cache, lengths, cache_lengths)
        return self.forward_chunk_torch(x, mu, t, spks, cond, cnn_cache, att_cache, lengths, cache_lengths)

    def forward_chunk_torch(self, x: torch.Tensor, mu: torch.Tensor, t: torch.Tensor, spks: torch.Tensor,
                            cond: torch.Tensor, cnn_cache: torch.Tensor, att_cache: torch.Tensor,
                            lengths: torch.Tensor | None = None,
                            cache_lengths: torch.Tensor | None = None
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`forward_chunk` in torch whatever :attr:`graph_step` is (what the exported graph computes)."""
        mask = None
        if lengths is not None or cache_lengths is not None:
            mask = chunk_key_mask(lengths, cache_lengths, x.size(2), att_cache.size(3), x.size(0), x.device)
            if lengths is None:
                lengths = torch.full((x.size(0),), x.size(2), dtype=torch.int64, device=x.device)
        c = self.t_embedder(t).unsqueeze(1)
        h = self.in_proj(self._stack(x, mu, spks, cond).transpose(1, 2))
        cnn, att = [], []
        for i, block in enumerate(self.blocks):
            h, nc, na = block(h, c, mask, cnn_cache[i], att_cache[i], lengths)
            cnn.append(nc)
            att.append(na)
        return self.final_layer(h, c).transpose(1, 2), torch.stack(cnn), torch.stack(att)
