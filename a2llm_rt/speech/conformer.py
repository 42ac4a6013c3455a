"""The flow model's token encoder: linear embed -> pre-lookahead conv -> conformer blocks -> x2 upsample -> blocks.

Same computation and parameter names as Step-Audio-2's ``UpsampleConformerEncoderV2`` (ESPnet relative-position
self-attention, pre-norm blocks without conv module or macaron FFN). Two modes:

- :meth:`UpsampleConformerEncoder.forward`: a whole (padded) batch with full attention inside each sequence;
- :meth:`UpsampleConformerEncoder.forward_chunk`: one chunk with explicit caches (keys/values of all earlier chunks
  and the convolutions' left context), as upstream's streaming uses it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from a2llm_rt.speech.dit import window_before as _window_before


def _chunk_mask(cache_lens: Sequence[int], cache_width: int, new_lens: Sequence[int], new_width: int,
                device: torch.device) -> torch.Tensor:
    """[B, 1, cache_width + new_width] bool: valid keys of left-padded caches followed by right-padded chunks."""
    j = torch.arange(cache_width + new_width, device=device)[None]
    c = torch.tensor(list(cache_lens), device=device)[:, None]
    n = torch.tensor(list(new_lens), device=device)[:, None]
    return ((j >= cache_width - c) & (j < cache_width + n))[:, None, :]


def pad_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """[B] lengths -> [B, max_len] bool, True at valid positions."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


class RelPositionalEncoding(nn.Module):
    """ESPnet relative positional encoding: scales x by sqrt(d) and returns the [1, 2*T-1, d] table of positions."""

    def __init__(self, d_model: int, max_len: int = 5000):
        super().__init__()
        self.d_model = d_model
        self.xscale = math.sqrt(d_model)
        self.pe = self._table(max_len)

    def _table(self, n: int) -> torch.Tensor:
        pos = torch.arange(0, n, dtype=torch.float32).unsqueeze(1)
        div = torch.exp(torch.arange(0, self.d_model, 2, dtype=torch.float32) * -(math.log(10000.0) / self.d_model))
        pos_p = torch.zeros(n, self.d_model)
        pos_n = torch.zeros(n, self.d_model)
        pos_p[:, 0::2] = torch.sin(pos * div)
        pos_p[:, 1::2] = torch.cos(pos * div)
        pos_n[:, 0::2] = torch.sin(-pos * div)
        pos_n[:, 1::2] = torch.cos(-pos * div)
        return torch.cat([torch.flip(pos_p, [0]).unsqueeze(0), pos_n[1:].unsqueeze(0)], dim=1)

    def position_encoding(self, size: int, like: torch.Tensor) -> torch.Tensor:
        """[1, 2*size-1, d] relative positions size-1 .. -(size-1)."""
        if self.pe.size(1) < 2 * size - 1:
            self.pe = self._table(size)
        self.pe = self.pe.to(device=like.device, dtype=like.dtype)
        c = self.pe.size(1) // 2
        return self.pe[:, c - size + 1: c + size]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x * self.xscale, self.position_encoding(x.size(1), x)


class LinearEmbed(nn.Module):
    """``out`` = Linear -> LayerNorm -> (Dropout), then the relative positional encoding (``LinearNoSubsampling``)."""

    def __init__(self, idim: int, odim: int):
        super().__init__()
        self.out = nn.Sequential(nn.Linear(idim, odim), nn.LayerNorm(odim, eps=1e-5), nn.Dropout(0.0))
        self.pos_enc = RelPositionalEncoding(odim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, T, idim] -> (x [B, T, odim], pos_emb [1, 2T-1, odim])."""
        return self.pos_enc(self.out(x))


class RelPositionMultiHeadedAttention(nn.Module):
    """Self-attention with ESPnet relative positions (Transformer-XL ``pos_bias_u`` / ``pos_bias_v``)."""

    def __init__(self, n_head: int, n_feat: int, key_bias: bool = True):
        super().__init__()
        self.d_k = n_feat // n_head
        self.h = n_head
        self.linear_q = nn.Linear(n_feat, n_feat)
        self.linear_k = nn.Linear(n_feat, n_feat, bias=key_bias)
        self.linear_v = nn.Linear(n_feat, n_feat)
        self.linear_out = nn.Linear(n_feat, n_feat)
        self.linear_pos = nn.Linear(n_feat, n_feat, bias=False)
        self.pos_bias_u = nn.Parameter(torch.empty(self.h, self.d_k))
        self.pos_bias_v = nn.Parameter(torch.empty(self.h, self.d_k))
        nn.init.xavier_uniform_(self.pos_bias_u)
        nn.init.xavier_uniform_(self.pos_bias_v)

    @staticmethod
    def rel_shift(x: torch.Tensor) -> torch.Tensor:
        """[B, H, T1, P] scores against positions -> [B, H, T1, P // 2 + 1] scores against keys (ESPnet)."""
        b, h, t1, p = x.shape
        x_padded = torch.cat([x.new_zeros(b, h, t1, 1), x], dim=-1).view(b, h, p + 1, t1)
        return x_padded[:, :, 1:].reshape(b, h, t1, p)[:, :, :, : p // 2 + 1]

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, pos_emb: torch.Tensor,
                cache: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, T, D]; mask [B, 1, Tk] bool or None; pos_emb [1, 2Tk-1, D]; cache [B, H, Tc, 2*d_k] (keys|values).

        Returns (out [B, T, D], new cache [B, H, Tc + T, 2*d_k]).
        """
        b, t, _ = x.shape
        q = self.linear_q(x).view(b, t, self.h, self.d_k)
        k = self.linear_k(x).view(b, t, self.h, self.d_k).transpose(1, 2)
        v = self.linear_v(x).view(b, t, self.h, self.d_k).transpose(1, 2)
        if cache is not None and cache.size(0) > 0:
            k_c, v_c = torch.split(cache, cache.size(-1) // 2, dim=-1)
            k = torch.cat([k_c, k], dim=2)
            v = torch.cat([v_c, v], dim=2)
        new_cache = torch.cat((k, v), dim=-1)
        p = self.linear_pos(pos_emb).view(pos_emb.size(0), -1, self.h, self.d_k).transpose(1, 2)
        ac = torch.matmul((q + self.pos_bias_u).transpose(1, 2), k.transpose(-2, -1))
        bd = torch.matmul((q + self.pos_bias_v).transpose(1, 2), p.transpose(-2, -1))
        if ac.shape != bd.shape:
            bd = self.rel_shift(bd)
        scores = (ac + bd) / math.sqrt(self.d_k)
        if mask is not None:
            m = ~mask.unsqueeze(1)[:, :, :, : scores.size(-1)]
            attn = torch.softmax(scores.masked_fill(m, -float("inf")), dim=-1).masked_fill(m, 0.0)
        else:
            attn = torch.softmax(scores, dim=-1)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(b, t, self.h * self.d_k)
        return self.linear_out(out), new_cache


class PositionwiseFeedForward(nn.Module):
    """w_2(SiLU(w_1(x)))."""

    def __init__(self, idim: int, hidden: int):
        super().__init__()
        self.w_1 = nn.Linear(idim, hidden)
        self.activation = nn.SiLU()
        self.w_2 = nn.Linear(hidden, idim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_2(self.activation(self.w_1(x)))


class ConformerEncoderLayer(nn.Module):
    """Pre-norm block: x + MHA(LN(x)), then x + FFN(LN(x)) (no conv module, no macaron FFN)."""

    def __init__(self, size: int, heads: int, linear_units: int, key_bias: bool = True):
        super().__init__()
        self.self_attn = RelPositionMultiHeadedAttention(heads, size, key_bias)
        self.feed_forward = PositionwiseFeedForward(size, linear_units)
        self.norm_ff = nn.LayerNorm(size, eps=1e-12)
        self.norm_mha = nn.LayerNorm(size, eps=1e-12)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, pos_emb: torch.Tensor,
                att_cache: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        a, new_cache = self.self_attn(self.norm_mha(x), mask, pos_emb, att_cache)
        x = x + a
        x = x + self.feed_forward(self.norm_ff(x))
        return x, new_cache


class PreLookaheadLayer(nn.Module):
    """conv1 (kernel lookahead+1) sees ``pre_lookahead_len`` future steps; conv2 (kernel 3) is causal; residual."""

    def __init__(self, channels: int, pre_lookahead_len: int):
        super().__init__()
        self.pre_lookahead_len = pre_lookahead_len
        self.conv1 = nn.Conv1d(channels, channels, kernel_size=pre_lookahead_len + 1)
        self.conv2 = nn.Conv1d(channels, channels, kernel_size=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, T, C] -> [B, T, C]; the last steps see zeros as their future."""
        y = F.pad(x.transpose(1, 2), (0, self.pre_lookahead_len))
        y = F.leaky_relu(self.conv1(y))
        y = self.conv2(F.pad(y, (2, 0)))
        return y.transpose(1, 2) + x

    def forward_chunk(self, x: torch.Tensor, cache: torch.Tensor,
                      lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, T, C] whose last ``pre_lookahead_len`` steps are look-ahead; cache [B, C, 2]; ``lengths`` [B] int64
        or None: each row's valid output steps (right padding after them; the new cache ends at each row's end).

        Returns ([B, T - lookahead, C], new cache [B, C, 2]).
        """
        y = F.leaky_relu(self.conv1(x.transpose(1, 2)))
        y = torch.cat([cache, y], dim=2)
        new_cache = y[..., -2:] if lengths is None else _window_before(y, lengths + 2, 2)
        y = self.conv2(y).transpose(1, 2)
        return y + x[:, : -self.pre_lookahead_len], new_cache


class Upsample1D(nn.Module):
    """Nearest x``stride`` repeat, then a causal conv of kernel 2*stride+1."""

    def __init__(self, channels: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv1d(channels, channels, stride * 2 + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, T] -> [B, C, stride*T]."""
        y = F.interpolate(x, scale_factor=float(self.stride), mode="nearest")
        return self.conv(F.pad(y, (self.stride * 2, 0)))

    def forward_chunk(self, x: torch.Tensor, cache: torch.Tensor,
                      lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, C, T], cache [B, C, 2*stride] -> ([B, C, stride*T], new cache); ``lengths`` [B] int64 or None: each
        row's valid input steps (the new cache ends at each row's end)."""
        y = torch.cat([cache, F.interpolate(x, scale_factor=float(self.stride), mode="nearest")], dim=2)
        k = 2 * self.stride
        return self.conv(y), y[..., -k:] if lengths is None else _window_before(y, k + self.stride * lengths, k)


class UpsampleConformerEncoder(nn.Module):
    """Token embeddings [B, T, D] (25 Hz) -> encoder states [B, stride*T, D] (50 Hz)."""

    def __init__(self, size: int, heads: int, num_blocks: int, num_up_blocks: int, linear_units: int,
                 pre_lookahead_len: int, up_stride: int):
        super().__init__()
        self.embed = LinearEmbed(size, size)
        self.pre_lookahead_layer = PreLookaheadLayer(size, pre_lookahead_len)
        self.encoders = nn.ModuleList([ConformerEncoderLayer(size, heads, linear_units) for _ in range(num_blocks)])
        self.up_layer = Upsample1D(size, up_stride)
        self.up_embed = LinearEmbed(size, size)
        self.up_encoders = nn.ModuleList(
            [ConformerEncoderLayer(size, heads, linear_units) for _ in range(num_up_blocks)])
        self.after_norm = nn.LayerNorm(size, eps=1e-5)
        self.size = size
        self.heads = heads

    def forward(self, xs: torch.Tensor, xs_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """xs [B, T, D], xs_lens [B] -> (h [B, stride*T, D], valid mask [B, 1, stride*T])."""
        mask = pad_mask(xs_lens, xs.size(1)).unsqueeze(1)
        xs, pos = self.embed(xs)
        xs = self.pre_lookahead_layer(xs)
        for layer in self.encoders:
            xs, _ = layer(xs, mask, pos)
        xs = self.up_layer(xs.transpose(1, 2)).transpose(1, 2)
        lens = xs_lens * self.up_layer.stride
        mask = pad_mask(lens, xs.size(1)).unsqueeze(1)
        xs, pos = self.up_embed(xs)
        for layer in self.up_encoders:
            xs, _ = layer(xs, mask, pos)
        return self.after_norm(xs), mask

    def empty_caches(self, batch: int, device: torch.device | str | None = None,
                     dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """Caches before the first chunk: cnn [B, D, 2 + 2*stride] (zeros), att [L1+L2, B, H, 0, 2*D/H]."""
        cnn = torch.zeros(batch, self.size, 2 + 2 * self.up_layer.stride, device=device, dtype=dtype)
        att = torch.zeros(len(self.encoders) + len(self.up_encoders), batch, self.heads, 0,
                          2 * self.size // self.heads, device=device, dtype=dtype)
        return cnn, att

    def forward_chunk(self, xs: torch.Tensor, last_chunk: bool | Sequence[bool], cnn_cache: torch.Tensor,
                      att_cache: torch.Tensor, lengths: Sequence[int] | None = None,
                      cache_lengths: Sequence[int] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One chunk of token embeddings [B, T, D] including ``pre_lookahead_len`` look-ahead steps.

        att_cache [L1+L2, B, H, 2*t1, 2*d_k] (the first L1 layers use the first t1 steps, the layout upstream uses),
        cnn_cache [B, D, 2 + 2*stride]. Returns (h [B, stride*(T - lookahead), D] or stride*T on the last chunk,
        new cnn cache, new att cache).

        Sessions of different lengths in one batch: ``lengths`` [B] codes of each row (right-padded to T; look-ahead
        included except on a last chunk), ``last_chunk`` one flag per row, ``cache_lengths`` [B] the t1 of each row's
        cache, left-padded to t1 (:meth:`pad_caches`). Padded keys are masked out and relative positions are those
        of each row alone, so row b gets what it gets alone: its first stride*(lengths[b] - lookahead) output steps
        (stride*lengths[b] on its last chunk) and its new cache by :meth:`split_cache`.
        """
        b, t = xs.shape[:2]
        look = self.pre_lookahead_layer.pre_lookahead_len
        stride = self.up_layer.stride
        lasts = [bool(last_chunk)] * b if isinstance(last_chunk, bool) else [bool(v) for v in last_chunk]
        lens = [t] * b if lengths is None else [int(n) for n in lengths]
        n1 = len(self.encoders)
        offset1 = att_cache.size(3) // 2
        cache_lens = [offset1] * b if cache_lengths is None else [int(n) for n in cache_lengths]
        ins = [n + (look if last else 0) for n, last in zip(lens, lasts, strict=True)]  # steps incl. look-ahead
        width = max(ins)
        xs, _ = self.embed(xs)
        if width > t:
            xs = F.pad(xs, (0, 0, 0, width - t))
        if min(lens) < width:  # zeros after each row's codes: a last chunk's look-ahead, and the batch padding
            keep = torch.arange(width, device=xs.device)[None] < torch.tensor(lens, device=xs.device)[:, None]
            xs = xs * keep[..., None].to(xs.dtype)
        outs = [e - look for e in ins]
        ragged = min(ins) < width or min(cache_lens) < offset1
        out_lens = torch.tensor(outs, device=xs.device) if ragged else None
        xs, new_cnn1 = self.pre_lookahead_layer.forward_chunk(xs, cnn_cache[:, :, :2], out_lens)
        pos = self.embed.pos_enc.position_encoding(offset1 + xs.size(1), xs)
        mask = _chunk_mask(cache_lens, offset1, outs, xs.size(1), xs.device) if ragged else None
        new_att1 = []
        for i, layer in enumerate(self.encoders):
            xs, c = layer(xs, mask, pos, att_cache[i, :, :, :offset1])
            new_att1.append(c)
        xs, new_cnn2 = self.up_layer.forward_chunk(xs.transpose(1, 2), cnn_cache[:, :, 2:], out_lens)
        xs, _ = self.up_embed(xs.transpose(1, 2))
        pos = self.embed.pos_enc.position_encoding(offset1 * stride + xs.size(1), xs)
        mask = _chunk_mask([stride * n for n in cache_lens], stride * offset1, [stride * n for n in outs], xs.size(1),
                           xs.device) if ragged else None
        new_att2 = []
        for i, layer in enumerate(self.up_encoders):
            xs, c = layer(xs, mask, pos, att_cache[n1 + i])
            new_att2.append(c)
        new_att = torch.cat([torch.stack(new_att1).repeat(1, 1, 1, 2, 1), torch.stack(new_att2)], dim=0)
        return self.after_norm(xs), torch.cat([new_cnn1, new_cnn2], dim=2), new_att

    def pad_caches(self, caches: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[int]]:
        """One-session caches [1, L1+L2, H, 2*t1_b, 2*d_k] (batch first) -> the batch's [L1+L2, B, H, 2*t1, 2*d_k]
        (t1 = max t1_b; each layer's steps left-padded with zeros) and the t1_b, for :meth:`forward_chunk`."""
        n1, stride = len(self.encoders), self.up_layer.stride
        t1 = [c.size(3) // 2 for c in caches]
        w = max(t1)
        if min(t1) == w:
            return torch.cat(list(caches), dim=0).transpose(0, 1), t1
        first = caches[0]
        out = first.new_zeros(first.size(1), len(caches), first.size(2), 2 * w, first.size(4))
        for b, (c, n) in enumerate(zip(caches, t1, strict=True)):
            out[:n1, b, :, w - n: w] = c[0, :n1, :, :n]
            out[n1:, b, :, stride * (w - n): stride * w] = c[0, n1:, :, : stride * n]
        return out, t1

    def split_cache(self, att: torch.Tensor, row: int, cache_width: int, cache_length: int,
                    new_length: int) -> torch.Tensor:
        """Row ``row`` of a new cache from :meth:`forward_chunk` on caches padded by :meth:`pad_caches` (to
        ``cache_width`` t1 steps) as a one-session cache [1, L1+L2, H, 2*(t1_b + n_b), 2*d_k]; ``cache_length`` t1_b,
        ``new_length`` n_b: the row's 25 Hz output steps of the chunk."""
        n1, stride = len(self.encoders), self.up_layer.stride
        lo, hi = cache_width - cache_length, cache_width + new_length
        first = att[:n1, row, :, lo:hi]
        return torch.cat([torch.cat([first, first], dim=2), att[n1:, row, :, stride * lo: stride * hi]], dim=0)[None]
