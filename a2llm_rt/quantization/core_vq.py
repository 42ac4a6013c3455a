"""Core math of (residual) vector quantization, after facebookresearch/audiocraft ``quantization/core_vq.py``.

Tricks and their sources:

- Straight-through estimator: the quantized vector is ``x + (q - x).detach()`` so the decoder's gradient flows to the
  encoder unchanged (van den Oord et al. 2017, "Neural Discrete Representation Learning", the VQ-VAE paper, §3.1).
- Commitment loss ``gamma * ||x - sg(q)||^2`` with gamma = 0.25 keeps the encoder output near its code (VQ-VAE
  paper, eq. 3).
- Codebook learning by exponential moving averages of assigned vectors (VQ-VAE paper appendix A.1; VQ-VAE-2;
  SoundStream §3.3; audiocraft ``EuclideanCodebook``). We choose EMA over a loss-based codebook because (a) it has
  no codebook-loss weight or codebook learning rate to tune and converges faster on small motion data (SoundStream
  and audiocraft train with it for the same reason), and (b) dead codes can be restarted simply by overwriting the
  EMA buffers. Under DDP the per-batch statistics are all-reduced before the update, so every rank applies the
  same update and the codebooks stay identical (lucidrains/vector-quantize-pytorch ``sync_codebook``).
- Laplace smoothing of the cluster sizes so an empty cluster does not divide by zero (audiocraft
  ``laplace_smoothing``).
- k-means initialisation of each codebook from the first training batch (SoundStream §3.3; audiocraft ``kmeans``).
- Dead-code restart: a code whose EMA cluster size falls below a threshold is replaced by a random vector of the
  current batch (Dhariwal et al. 2020, Jukebox §3.3 / appendix; audiocraft ``expire_codes_``; the EMA buffers are
  reset with the new vector as in lucidrains/vector-quantize-pytorch).
- Residual quantization: each stage quantizes what the previous ones left (Zeghidour et al. 2021, SoundStream §3.3,
  Algorithm 1), and the straight-through estimator is applied once on the sum (facebookresearch/encodec issue 25).
- Optional data-driven initialisation of all codebooks by residual k-means on a large sample (the classic RVQ
  training of Juang & Gray 1982, "Multiple stage vector quantization for speech coding"; Chen, Guan & Wang 2010,
  "Approximate nearest neighbor search by residual vector quantization"), instead of k-means on the first batch.
- Optional quantizer dropout (SoundStream §3.3): in training, with probability ``quantizer_dropout`` a batch uses
  only the first ``n ~ U{1..N_q}`` codebooks, so the early levels learn to carry most of the signal (the later
  codebooks are not updated on such a batch). ``n`` is broadcast from rank 0 so all DDP ranks agree.
- Optional beam-search encoding (multi-path encoding of Liu et al. 2015, "Improved residual vector quantization for
  high-dimensional approximate nearest neighbor search", §3.2): greedy residual encoding is not optimal; keeping the
  ``beam`` best partial sums per level and returning the best full path lowers the quantization error. Decoding is
  unchanged (the sum of the chosen codes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _dist_ready() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _all_reduce_(t: torch.Tensor) -> torch.Tensor:
    if _dist_ready():
        torch.distributed.all_reduce(t)
    return t


def _broadcast_(t: torch.Tensor) -> torch.Tensor:
    if _dist_ready():
        torch.distributed.broadcast(t, 0)
    return t


def sample_vectors(samples: torch.Tensor, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``num`` rows of ``samples`` ``[N, D]``: without replacement when possible, else with (audiocraft)."""
    n = samples.shape[0]
    if n >= num:
        idx = torch.randperm(n, generator=generator, device="cpu")[:num]
    else:
        idx = torch.randint(0, n, (num,), generator=generator, device="cpu")
    return samples[idx.to(samples.device)]


def kmeans(
    samples: torch.Tensor, num_clusters: int, num_iters: int = 10, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means on ``samples`` ``[N, D]``: returns centroids ``[K, D]`` and cluster sizes ``[K]``.

    Centroids start at random samples; an empty cluster keeps its previous centroid (audiocraft ``kmeans``).
    """
    means = sample_vectors(samples, num_clusters, generator)
    bins = torch.zeros(num_clusters, device=samples.device)
    for _ in range(num_iters):
        dists = torch.cdist(samples, means)  # [N, K]
        buckets = dists.argmin(-1)
        bins = torch.bincount(buckets, minlength=num_clusters).to(samples.dtype)
        new_means = torch.zeros_like(means).index_add_(0, buckets, samples)
        new_means = new_means / bins.clamp_min(1).unsqueeze(1)
        means = torch.where((bins == 0).unsqueeze(1), means, new_means)
    return means, bins


def laplace_smoothing(x: torch.Tensor, n_categories: int, epsilon: float = 1e-5) -> torch.Tensor:
    return (x + epsilon) / (x.sum() + n_categories * epsilon)


class EuclideanCodebook(nn.Module):
    """One codebook of ``codebook_size`` vectors of ``dim``, learnt by EMA (see the module docstring).

    Args:
        dim: vector size.
        codebook_size: number of codes K.
        decay: EMA decay of the cluster sizes and sums.
        epsilon: Laplace smoothing.
        kmeans_init: initialise from k-means on the first training batch (else random normal, marked initialised).
        kmeans_iters: k-means iterations.
        threshold_ema_dead_code: a code whose EMA cluster size is below this is restarted (0 disables restarts).
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        decay: float = 0.99,
        epsilon: float = 1e-5,
        kmeans_init: bool = True,
        kmeans_iters: int = 10,
        threshold_ema_dead_code: float = 1.0,
    ):
        super().__init__()
        self.dim = dim
        self.codebook_size = codebook_size
        self.decay = decay
        self.epsilon = epsilon
        self.kmeans_iters = kmeans_iters
        self.threshold_ema_dead_code = threshold_ema_dead_code
        embed = torch.zeros(codebook_size, dim) if kmeans_init else torch.randn(codebook_size, dim)
        self.register_buffer("inited", torch.tensor([0.0 if kmeans_init else 1.0]))
        self.register_buffer("cluster_size", torch.zeros(codebook_size))
        self.register_buffer("embed", embed)
        self.register_buffer("embed_avg", embed.clone())
        self.generator: torch.Generator | None = None  # optional, for reproducible k-means / restarts in tests

    @torch.no_grad()
    def init_embed_(self, data: torch.Tensor) -> None:
        """k-means on ``data`` ``[N, dim]`` (rank 0's batch under DDP, broadcast to all ranks)."""
        if bool(self.inited.item()):
            return
        embed, cluster_size = kmeans(data.float(), self.codebook_size, self.kmeans_iters, self.generator)
        self.embed.copy_(_broadcast_(embed.contiguous()))
        self.cluster_size.copy_(_broadcast_(cluster_size.contiguous()))
        # Keep the EMA sums consistent with the means (embed = embed_avg / cluster_size); audiocraft copies embed
        # into embed_avg, which shrinks every code towards 0 on the first update when clusters hold many vectors.
        self.embed_avg.copy_(self.embed * self.cluster_size.clamp_min(self.epsilon).unsqueeze(1))
        self.inited.fill_(1.0)

    @torch.no_grad()
    def expire_codes_(self, batch: torch.Tensor) -> int:
        """Restart the codes whose EMA cluster size is below the threshold with vectors of ``batch`` ``[N, dim]``.

        Returns how many codes were restarted. The decision uses the synchronised buffers, so all ranks agree; the
        replacement vectors come from rank 0's batch.
        """
        if self.threshold_ema_dead_code <= 0:
            return 0
        expired = self.cluster_size < self.threshold_ema_dead_code  # [K]
        n = int(expired.sum().item())
        if n == 0:
            return 0
        samples = _broadcast_(sample_vectors(batch.float(), self.codebook_size, self.generator).contiguous())
        mask = expired.unsqueeze(1)
        self.embed.copy_(torch.where(mask, samples, self.embed))
        self.embed_avg.copy_(torch.where(mask, samples * self.threshold_ema_dead_code, self.embed_avg))
        self.cluster_size.copy_(torch.where(expired, torch.full_like(self.cluster_size, self.threshold_ema_dead_code),
                                            self.cluster_size))  # fmt: skip
        return n

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """Nearest code index ``[N]`` of each row of ``x`` ``[N, dim]`` (Euclidean)."""
        embed = self.embed
        dist = x.pow(2).sum(1, keepdim=True) - 2 * x @ embed.t() + embed.pow(2).sum(1)[None]
        return dist.argmin(-1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """``[...]`` int codes -> ``[..., dim]`` vectors."""
        return F.embedding(codes, self.embed)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` ``[..., dim]`` -> (quantized ``[..., dim]``, no gradient; codes ``[...]``); EMA update in training."""
        shape = x.shape[:-1]
        flat = x.reshape(-1, self.dim)
        if self.training:
            self.init_embed_(flat.detach())
        codes = self.quantize(flat.detach())
        quantized = self.decode(codes)
        if self.training:
            with torch.no_grad():
                # audiocraft expires codes here, before the update, while the buffers are in sync across ranks.
                self.expire_codes_(flat.detach())
                onehot = F.one_hot(codes, self.codebook_size).to(flat.dtype)  # [N, K]
                counts = _all_reduce_(onehot.sum(0))
                embed_sum = _all_reduce_((onehot.t() @ flat.detach()).contiguous())  # [K, dim]
                self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
                self.embed_avg.mul_(self.decay).add_(embed_sum, alpha=1 - self.decay)
                n = self.cluster_size.sum()
                smoothed = laplace_smoothing(self.cluster_size, self.codebook_size, self.epsilon) * n
                self.embed.copy_(self.embed_avg / smoothed.unsqueeze(1))
        return quantized.reshape(*shape, self.dim), codes.reshape(shape)


class ResidualVectorQuantization(nn.Module):
    """``num_quantizers`` EMA codebooks applied to successive residuals (SoundStream Algorithm 1).

    Works on channel-last latents ``[B, T, dim]``.
    """

    def __init__(
        self,
        num_quantizers: int,
        dim: int,
        codebook_size: int,
        commitment: float = 0.25,
        quantizer_dropout: float = 0.0,
        **codebook_kw,
    ):
        super().__init__()
        self.commitment = commitment
        self.quantizer_dropout = quantizer_dropout
        self.codebook_size = codebook_size
        self.layers = nn.ModuleList(EuclideanCodebook(dim, codebook_size, **codebook_kw) for _ in range(num_quantizers))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x`` ``[B, T, dim]`` -> (quantized ``[B, T, dim]`` with STE, codes ``[B, T, N_q]``, commitment loss)."""
        residual = x
        quantized_out = torch.zeros_like(x)
        codes = []
        commit = x.new_zeros(())
        n_active = len(self.layers)
        if self.training and self.quantizer_dropout > 0:
            use = float(torch.rand(()) < self.quantizer_dropout)
            use, n = _broadcast_(torch.tensor([use, float(torch.randint(1, n_active + 1, ()))])).tolist()
            n_active = int(n) if use else n_active
        for i, layer in enumerate(self.layers):
            if i >= n_active:  # dropped level: no EMA update; its code is still reported (eval-style lookup)
                idx = layer.quantize(residual.reshape(-1, residual.shape[-1]).detach()).reshape(residual.shape[:-1])
                codes.append(idx)
                continue
            q, idx = layer(residual)
            if self.training and self.commitment > 0:
                # VQ-VAE eq. 3: the encoder commits to its code; the code itself is not pulled (EMA learns it).
                commit = commit + self.commitment * F.mse_loss(residual, q.detach())
            residual = residual - q.detach()
            quantized_out = quantized_out + q.detach()
            codes.append(idx)
        if self.training:
            # One straight-through estimator on the sum (facebookresearch/encodec issue 25).
            quantized_out = x + (quantized_out - x).detach()
        return quantized_out, torch.stack(codes, -1), commit

    def encode(self, x: torch.Tensor, beam: int = 1) -> torch.Tensor:
        """``[B, T, dim]`` -> codes ``[B, T, N_q]`` (no EMA update); ``beam`` > 1: beam-search encoding."""
        if beam > 1:
            return self._encode_beam(x, beam)
        residual = x
        codes = []
        for layer in self.layers:
            idx = layer.quantize(residual.reshape(-1, residual.shape[-1])).reshape(residual.shape[:-1])
            residual = residual - layer.decode(idx)
            codes.append(idx)
        return torch.stack(codes, -1)

    def _encode_beam(self, x: torch.Tensor, beam: int) -> torch.Tensor:
        """Beam search over the levels (Liu et al. 2015): the codes ``[B, T, N_q]`` of the best of ``beam`` paths."""
        flat = x.reshape(-1, x.shape[-1])  # [N, d]
        n, d = flat.shape
        res = flat[:, None, :]  # [N, b, d] residual of every kept path
        paths = flat.new_zeros(n, 1, 0, dtype=torch.long)  # [N, b, level]
        for layer in self.layers:
            embed = layer.embed  # [K, d]
            k = embed.shape[0]
            dist = res.pow(2).sum(-1, keepdim=True) - 2 * res @ embed.t() + embed.pow(2).sum(-1)  # [N, b, K]
            top = dist.reshape(n, -1).topk(min(beam, dist.shape[1] * k), largest=False).indices  # [N, b']
            src, code = top // k, top % k
            res = torch.gather(res, 1, src[..., None].expand(-1, -1, d)) - embed[code]
            kept = torch.gather(paths, 1, src[..., None].expand(-1, -1, paths.shape[-1]))
            paths = torch.cat([kept, code[..., None]], -1)
        best = res.pow(2).sum(-1).argmin(-1)  # [N]
        return paths[torch.arange(n), best].reshape(*x.shape[:-1], len(self.layers))

    @torch.no_grad()
    def init_from_data_(self, x: torch.Tensor) -> None:
        """Initialise every codebook by residual k-means on latents ``x`` ``[..., dim]`` (a large sample)."""
        residual = x.reshape(-1, x.shape[-1]).float()
        for layer in self.layers:
            layer.inited.fill_(0.0)
            layer.init_embed_(residual)
            residual = residual - layer.decode(layer.quantize(residual))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes ``[B, T, N_q]`` -> latents ``[B, T, dim]``: the sum of the codebooks' vectors."""
        out = self.layers[0].decode(codes[..., 0])
        for i, layer in enumerate(self.layers[1:], 1):
            out = out + layer.decode(codes[..., i])
        return out
