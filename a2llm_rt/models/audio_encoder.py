"""Step-Audio-2's audio encoder (Whisper-style, Whisper's original module names) and its adapter.

Module names equal the checkpoint's (``encoder.*``, ``adapter.*``; stepfun-ai vLLM ``step_audio2.py``):
``conv1`` (k3 s1 p1) -> GELU -> ``conv2`` (k3 s2 p1) -> GELU -> + ``positional_embedding`` (a learned
``nn.Embedding``) -> ``blocks.{i}`` (``attn.query/key/value/out``, ``attn_ln``, ``mlp.0``/``mlp.2``, ``mlp_ln``;
key without bias) -> ``avg_pooler`` (k2 s2) -> ``after_norm``. Adapter: ``conv`` (k3 s2 p1) -> GELU -> ``linear1``
(-> 2048) -> ReLU -> ``linear2`` (-> d_llm).

Lengths follow the reference exactly: a chunk of ``T`` mel frames has ``T - 2`` valid frames (the reference passes
``mel.shape[1] - 2``), keys beyond them are masked in attention, the encoder keeps ``e = (T - 2 + 1) // 2 // 2``
frames and the adapter ``n = (e - 1) // 2 + 1``: :func:`audio_placeholder_count`. The adapter output is cut to
``n`` rows per chunk; those rows replace the chunk's ``n`` ``<audio_patch>`` embeddings.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from a2llm_rt.errors import InputError


def encoder_output_count(mel_frames: int) -> int:
    """Valid encoder frames for a chunk of ``mel_frames`` mel frames (after conv2 and the average pooler)."""
    return (mel_frames - 2 + 1) // 2 // 2


def audio_placeholder_count(mel_frames: int, kernel_size: int = 3, stride: int = 2, padding: int = 1) -> int:
    """Number of ``<audio_patch>`` tokens (adapter outputs) for a chunk of ``mel_frames`` mel frames.

    ``e = (T - 2 + 1) // 2 // 2``; ``n = (e + 2 * padding - kernel_size) // stride + 1`` (STEP_AUDIO2.md; the
    reference ``compute_token_num``). About 12.5 per second of audio.
    """
    e = encoder_output_count(mel_frames)
    return (e + 2 * padding - kernel_size) // stride + 1


class MultiHeadAttention(nn.Module):
    """Whisper's self-attention (``query``/``key``/``value``/``out``; ``key`` has no bias)."""

    def __init__(self, n_state: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.query = nn.Linear(n_state, n_state)
        self.key = nn.Linear(n_state, n_state, bias=False)
        self.value = nn.Linear(n_state, n_state)
        self.out = nn.Linear(n_state, n_state)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """x: ``[B, T, C]``; bias: additive key mask ``[B, 1, 1, T]`` (0 or -1e10). Returns ``[B, T, C]``."""
        b, t, c = x.shape
        h = self.n_head

        def heads(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, h, c // h).transpose(1, 2)

        y = F.scaled_dot_product_attention(heads(self.query(x)), heads(self.key(x)), heads(self.value(x)), bias)
        return self.out(y.transpose(1, 2).reshape(b, t, c))


class ResidualAttentionBlock(nn.Module):
    def __init__(self, n_state: int, n_head: int):
        super().__init__()
        self.attn = MultiHeadAttention(n_state, n_head)
        self.attn_ln = nn.LayerNorm(n_state)
        self.mlp = nn.Sequential(nn.Linear(n_state, 4 * n_state), nn.GELU(), nn.Linear(4 * n_state, n_state))
        self.mlp_ln = nn.LayerNorm(n_state)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.attn_ln(x), bias)
        return x + self.mlp(self.mlp_ln(x))


class AudioEncoder(nn.Module):
    """Whisper-style encoder with Step-Audio-2's average pooler and ``after_norm``."""

    def __init__(self, n_mels: int, n_ctx: int, n_state: int, n_head: int, n_layer: int):
        super().__init__()
        self.n_mels = n_mels
        self.n_ctx = n_ctx
        self.conv1 = nn.Conv1d(n_mels, n_state, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(n_state, n_state, kernel_size=3, stride=2, padding=1)
        self.positional_embedding = nn.Embedding(n_ctx, n_state)
        self.blocks = nn.ModuleList([ResidualAttentionBlock(n_state, n_head) for _ in range(n_layer)])
        self.avg_pooler = nn.AvgPool1d(2, stride=2)
        self.after_norm = nn.LayerNorm(n_state)

    def forward(self, mel: torch.Tensor, valid_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mel: ``[B, n_mels, T]`` (right-padded); valid_lens: ``[B]`` valid frames (reference: ``T_i - 2``).

        Returns (features ``[B, ((T - 1) // 2 + 1) // 2, n_state]``, valid lengths ``[B]`` = ``(len + 1) // 2 // 2``).
        """
        t = mel.shape[-1]
        x = F.gelu(self.conv1(mel))
        x = F.gelu(self.conv2(x)).permute(0, 2, 1)  # [B, L2, C]
        if x.shape[1] > self.n_ctx:
            raise InputError(f"audio chunk of {t} mel frames exceeds the encoder context of {self.n_ctx} positions")
        keep = torch.arange(t, device=mel.device)[None, :] < valid_lens[:, None]  # [B, T]
        keep = keep[:, (t + 1) % 2 :: 2]  # the mel frame under each conv2 output, as the reference picks it
        bias = torch.zeros(keep.shape, dtype=x.dtype, device=x.device).masked_fill(~keep, -1.0e10)
        bias = bias[:, None, None, :]
        x = x + self.positional_embedding.weight[: x.shape[1]].to(x.dtype)
        for block in self.blocks:
            x = block(x, bias)
        x = self.avg_pooler(x.permute(0, 2, 1)).permute(0, 2, 1)
        return self.after_norm(x), (valid_lens + 1) // 2 // 2


class AudioAdapter(nn.Module):
    """conv (k3, stride, p1) -> GELU -> linear1 (-> hidden) -> ReLU -> linear2 (-> d_llm)."""

    def __init__(self, n_state: int, d_llm: int, kernel_size: int = 3, stride: int = 2, hidden: int = 2048):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride
        self.conv = nn.Conv1d(n_state, n_state, kernel_size, stride, padding=1)
        self.linear1 = nn.Linear(n_state, hidden)
        self.relu = nn.ReLU()
        self.linear2 = nn.Linear(hidden, d_llm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``[B, L, n_state]`` -> ``[B, (L - 1) // stride + 1, d_llm]``."""
        x = F.gelu(self.conv(x.permute(0, 2, 1))).permute(0, 2, 1)
        return self.linear2(self.relu(self.linear1(x)))

    def output_lens(self, encoder_lens: torch.Tensor) -> torch.Tensor:
        return (encoder_lens + 2 * 1 - self.kernel_size) // self.stride + 1


def encode_audio(encoder: AudioEncoder, adapter: AudioAdapter, mels: list[torch.Tensor]) -> list[torch.Tensor]:
    """Adapter outputs of each chunk: mels ``[n_mels, T_i]`` -> list of ``[audio_placeholder_count(T_i), d_llm]``.

    Chunks are right-padded to one batch; their valid lengths are ``T_i - 2`` as in the reference.
    """
    if not mels:
        return []
    for m in mels:
        if m.ndim != 2 or m.shape[0] != encoder.n_mels or m.shape[1] < 3:
            raise InputError(f"audio features must be [{encoder.n_mels}, T>=3], got {tuple(m.shape)}")
    p = next(encoder.parameters())
    t_max = max(m.shape[1] for m in mels)
    batch = torch.zeros(len(mels), encoder.n_mels, t_max, dtype=p.dtype, device=p.device)
    for i, m in enumerate(mels):
        batch[i, :, : m.shape[1]] = m.to(device=p.device, dtype=p.dtype)
    lens = torch.tensor([m.shape[1] - 2 for m in mels], device=p.device)
    feats, enc_lens = encoder(batch, lens)
    out = adapter(feats)
    n = adapter.output_lens(enc_lens).tolist()
    return [out[i, : n[i]] for i in range(len(mels))]
