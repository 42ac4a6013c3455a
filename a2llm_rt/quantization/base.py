"""Quantizer result type and codebook statistics (after facebookresearch/audiocraft ``quantization/base.py``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class QuantizedResult:
    """What a residual quantizer returns for a batch of latents.

    Attributes:
        x: ``[B, T, D]`` quantized latents (with the straight-through gradient to the input in training).
        codes: ``[B, T, N_q]`` int64 code indices, one column per codebook.
        commit_loss: scalar, the commitment loss summed over codebooks (already weighted by gamma).
        usage: ``[N_q]`` fraction of each codebook's codes used at least once in this batch.
        perplexity: ``[N_q]`` ``exp(entropy)`` of each codebook's code histogram in this batch (1 .. K).
    """

    x: torch.Tensor
    codes: torch.Tensor
    commit_loss: torch.Tensor
    usage: torch.Tensor
    perplexity: torch.Tensor


def code_histogram(codes: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """Counts ``[N_q, K]`` of each code in ``codes`` (``[..., N_q]`` int)."""
    flat = codes.reshape(-1, codes.shape[-1]).long()  # [N, N_q]
    n_q = flat.shape[-1]
    offsets = torch.arange(n_q, device=flat.device) * codebook_size
    counts = torch.bincount((flat + offsets).reshape(-1), minlength=n_q * codebook_size)
    return counts.reshape(n_q, codebook_size).float()


def codebook_stats(codes: torch.Tensor, codebook_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-codebook usage (fraction of codes seen at least once) and perplexity for ``codes`` ``[..., N_q]``.

    Returns two ``[N_q]`` float tensors. Perplexity is ``exp(-sum p log p)`` of the code histogram: K when every code
    is equally used, 1 when a single code is.
    """
    counts = code_histogram(codes, codebook_size)  # [N_q, K]
    usage = (counts > 0).float().mean(-1)
    p = counts / counts.sum(-1, keepdim=True).clamp_min(1.0)
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum(-1)
    return usage, entropy.exp()
