"""Public residual vector quantizer (after facebookresearch/audiocraft ``quantization/vq.py``).

The numerical tricks (EMA codebooks, k-means init, dead-code restart, straight-through estimator, commitment loss)
live in :mod:`a2llm_rt.quantization.core_vq` with their sources.
"""

from __future__ import annotations

import torch
from torch import nn

from a2llm_rt.errors import InputError
from a2llm_rt.quantization.base import QuantizedResult, codebook_stats
from a2llm_rt.quantization.core_vq import ResidualVectorQuantization


class ResidualVectorQuantizer(nn.Module):
    """Residual VQ over channel-last latents ``[B, T, dim]``.

    Args:
        dim: latent size.
        num_quantizers: N_q codebooks.
        codebook_size: K codes per codebook.
        commitment: gamma of the commitment loss (VQ-VAE: 0.25).
        decay: EMA decay of the codebooks.
        kmeans_init: k-means initialisation from the first training batch.
        kmeans_iters: k-means iterations.
        threshold_ema_dead_code: EMA cluster size under which a code is restarted (0: never).
        quantizer_dropout: probability that a training batch uses only the first ``n ~ U{1..N_q}`` codebooks.
        encode_beam: beam width of :meth:`encode` (1: greedy residual encoding; > 1: beam search, see core_vq).
    """

    def __init__(
        self,
        dim: int = 256,
        num_quantizers: int = 6,
        codebook_size: int = 256,
        commitment: float = 0.25,
        decay: float = 0.99,
        kmeans_init: bool = True,
        kmeans_iters: int = 10,
        threshold_ema_dead_code: float = 1.0,
        encode_beam: int = 1,
        quantizer_dropout: float = 0.0,
    ):
        super().__init__()
        if encode_beam < 1:
            raise ValueError(f"encode_beam must be >= 1, got {encode_beam}")
        self.encode_beam = encode_beam
        self.dim = dim
        self.num_quantizers = num_quantizers
        self.codebook_size = codebook_size
        self.vq = ResidualVectorQuantization(
            num_quantizers,
            dim,
            codebook_size,
            commitment=commitment,
            quantizer_dropout=quantizer_dropout,
            decay=decay,
            kmeans_init=kmeans_init,
            kmeans_iters=kmeans_iters,
            threshold_ema_dead_code=threshold_ema_dead_code,
        )

    def forward(self, x: torch.Tensor) -> QuantizedResult:
        """``x`` ``[B, T, dim]`` -> :class:`QuantizedResult` (EMA update and restarts in training mode)."""
        self._check(x)
        quantized, codes, commit = self.vq(x)
        usage, perplexity = codebook_stats(codes, self.codebook_size)
        return QuantizedResult(quantized, codes, commit, usage, perplexity)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, dim]`` -> codes ``[B, T, N_q]`` int64."""
        self._check(x)
        return self.vq.encode(x, self.encode_beam)

    def init_from_data(self, x: torch.Tensor) -> None:
        """Initialise all codebooks by residual k-means on latents ``x`` ``[..., dim]`` (replaces first-batch init)."""
        self._check(x)
        self.vq.init_from_data_(x)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes ``[B, T, N_q]`` -> latents ``[B, T, dim]``."""
        if codes.shape[-1] != self.num_quantizers:
            raise InputError(f"codes must have {self.num_quantizers} codebooks on the last axis, got {codes.shape[-1]}")
        # one host sync (none while a CUDA graph is being captured: the captured caller owns the codes' range)
        capturing = codes.is_cuda and torch.cuda.is_current_stream_capturing()
        if codes.numel() and not capturing and bool(((codes < 0) | (codes >= self.codebook_size)).any()):
            raise InputError(f"codes must lie in 0..{self.codebook_size - 1}")
        return self.vq.decode(codes.long())

    def _check(self, x: torch.Tensor) -> None:
        if x.shape[-1] != self.dim:
            raise InputError(f"latents must have {self.dim} channels on the last axis, got {list(x.shape)}")
