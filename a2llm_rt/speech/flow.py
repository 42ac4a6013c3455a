"""The flow model: speech codes (25 Hz) + speaker + prompt mel -> 80-bin mel (50 Hz).

Same computation and parameter names as Step-Audio-2's ``CausalMaskedDiffWithXvec`` (``input_embedding``,
``spk_embed_affine_layer``, ``encoder``, ``encoder_proj``, ``decoder.estimator``), so ``flow.pt`` loads as is.

Conditional flow matching (``decoder``): x_0 = fixed noise, 10 Euler steps on a cosine time grid
t_k = 1 - cos(pi/2 * k/10), classifier-free guidance v = (1 + r) v(x | mu, spk, cond) - r v(x | 0, 0, 0), r = 0.7.
The noise is one fixed sequence indexed by mel frame position (upstream's ``rand_noise`` buffer): the whole-sequence
path uses frames [0, T); a streamed chunk uses frames [offset, offset + T) where offset is the length of the
estimator's attention cache.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from a2llm_rt.speech.config import FlowConfig
from a2llm_rt.speech.conformer import UpsampleConformerEncoder
from a2llm_rt.speech.dit import DiT


def cosine_t_span(n_timesteps: int, like: torch.Tensor) -> torch.Tensor:
    """[n+1] time grid 1 - cos(pi/2 * linspace(0, 1, n+1))."""
    t = torch.linspace(0, 1, n_timesteps + 1, device=like.device, dtype=like.dtype)
    return 1 - torch.cos(t * 0.5 * torch.pi)


class ConditionalCFM(nn.Module):
    """Euler solver of the flow-matching ODE around the :class:`DiT` estimator, with classifier-free guidance."""

    def __init__(self, estimator: DiT, cfg_rate: float, noise_frames: int, noise_seed: int):
        super().__init__()
        self.estimator = estimator
        self.inference_cfg_rate = cfg_rate
        g = torch.Generator().manual_seed(noise_seed)
        self.register_buffer("rand_noise", torch.randn(1, estimator.out_channels, noise_frames, generator=g),
                             persistent=False)

    def noise(self, offsets: list[int], length: int | list[int]) -> torch.Tensor:
        """[B, mel, max length] noise frames [o, o + length) for each offset o (and each length: zeros after it)."""
        lengths = [length] * len(offsets) if isinstance(length, int) else list(length)
        if max(o + n for o, n in zip(offsets, lengths, strict=True)) > self.rand_noise.size(2):
            raise ValueError(f"answer too long for the noise table ({self.rand_noise.size(2)} mel frames)")
        width = max(lengths)
        return torch.cat([F.pad(self.rand_noise[:, :, o: o + n], (0, width - n))
                          for o, n in zip(offsets, lengths, strict=True)], dim=0)

    def _guided(self, v: torch.Tensor) -> torch.Tensor:
        v_c, v_u = v.chunk(2, dim=0)
        return (1.0 + self.inference_cfg_rate) * v_c - self.inference_cfg_rate * v_u

    def forward(self, mu: torch.Tensor, mask: torch.Tensor, spks: torch.Tensor, cond: torch.Tensor,
                n_timesteps: int, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Whole sequences. mu, cond [B, mel, T]; mask [B, 1, T]; spks [B, mel] -> mel [B, mel, T]."""
        b = mu.size(0)
        x = self.noise([0], mu.size(2)).expand(b, -1, -1).to(mu) if noise is None else noise
        t_span = cosine_t_span(n_timesteps, mu)
        mask_in = torch.cat([mask, mask])
        mu_in = torch.cat([mu, torch.zeros_like(mu)])
        spks_in = torch.cat([spks, torch.zeros_like(spks)])
        cond_in = torch.cat([cond, torch.zeros_like(cond)])
        t, dt = t_span[0:1], t_span[1] - t_span[0]
        for step in range(1, len(t_span)):
            v = self.estimator(torch.cat([x, x]), mask_in, mu_in, t.expand(2 * b), spks_in, cond_in)
            x = x + dt * self._guided(v)
            t = t + dt
            if step < len(t_span) - 1:
                dt = t_span[step + 1] - t
        return x

    def forward_chunk(self, mu: torch.Tensor, spks: torch.Tensor, cond: torch.Tensor, n_timesteps: int,
                      cnn_cache: torch.Tensor, att_cache: torch.Tensor, noise: torch.Tensor,
                      lengths: torch.Tensor | None = None, cache_lengths: torch.Tensor | None = None,
                      stack: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | list[torch.Tensor]]:
        """One chunk for B streams. mu, cond, noise [B, mel, T]; spks [B, mel];
        cnn_cache [n_t, depth, 2B, 2*hidden, 2]; att_cache [n_t, depth, 2B, H, Tc, 2*head_dim] (rows: B guided
        streams, then the same B unguided); ``lengths`` / ``cache_lengths`` [B] int64 or None: streams of different
        lengths, right-padded (see :meth:`DiT.forward_chunk`). Returns (mel [B, mel, T], new cnn cache, new att cache
        (T + Tc, the chunk's entries first; ``stack=False``: the list of the n_t steps' caches, not copied into one
        tensor))."""
        b = mu.size(0)
        if lengths is not None:
            lengths = torch.cat([lengths, lengths])
        if cache_lengths is not None:
            cache_lengths = torch.cat([cache_lengths, cache_lengths])
        t_span = cosine_t_span(n_timesteps, mu)
        mu_in = torch.cat([mu, torch.zeros_like(mu)])
        spks_in = torch.cat([spks, torch.zeros_like(spks)])
        cond_in = torch.cat([cond, torch.zeros_like(cond)])
        x = noise
        t, dt = t_span[0:1], t_span[1] - t_span[0]
        cnn, att = [], []
        for step in range(1, len(t_span)):
            v, nc, na = self.estimator.forward_chunk(torch.cat([x, x]), mu_in, t.expand(2 * b), spks_in, cond_in,
                                                     cnn_cache[step - 1], att_cache[step - 1], lengths, cache_lengths)
            x = x + dt * self._guided(v)
            t = t + dt
            if step < len(t_span) - 1:
                dt = t_span[step + 1] - t
            cnn.append(nc)
            att.append(na)
        return x, torch.stack(cnn), torch.stack(att) if stack else att


class FlowModel(nn.Module):
    """Codes -> mel. See the module docstring."""

    def __init__(self, cfg: FlowConfig):
        super().__init__()
        self.cfg = cfg
        self.input_embedding = nn.Embedding(cfg.vocab_size, cfg.input_size)
        self.spk_embed_affine_layer = nn.Linear(cfg.spk_embed_dim, cfg.output_size)
        self.encoder = UpsampleConformerEncoder(cfg.input_size, cfg.encoder_heads, cfg.encoder_blocks,
                                                cfg.encoder_up_blocks, cfg.encoder_linear_units,
                                                cfg.pre_lookahead_len, cfg.up_stride)
        self.encoder_proj = nn.Linear(cfg.input_size, cfg.output_size)
        estimator = DiT(cfg.estimator_in_channels, cfg.output_size, cfg.dit_mlp_ratio, cfg.dit_depth, cfg.dit_heads,
                        cfg.dit_head_dim, cfg.dit_hidden)
        self.decoder = ConditionalCFM(estimator, cfg.cfg_rate, cfg.noise_frames, cfg.noise_seed)

    @property
    def pre_lookahead_len(self) -> int:
        return self.cfg.pre_lookahead_len

    @property
    def up_rate(self) -> int:
        return self.cfg.up_stride

    def speaker(self, embedding: torch.Tensor) -> torch.Tensor:
        """CAM++ embedding [B, spk_dim] -> L2-normalised and projected [B, mel]."""
        return self.spk_embed_affine_layer(F.normalize(embedding, dim=1))

    @torch.inference_mode()
    def inference(self, token: torch.Tensor, prompt_token: torch.Tensor, prompt_feat: torch.Tensor,
                  embedding: torch.Tensor, n_timesteps: int | None = None) -> torch.Tensor:
        """Whole answers (upstream ``inference``): the prompt's codes are put before the answer's, the prompt mel
        conditions the first frames, and the answer's part of the mel is returned.

        token [B, T] answer codes; prompt_token [B, Tp]; prompt_feat [B, Tf, mel] (Tf <= 2*Tp); embedding
        [B, spk_dim]. All entries of a batch have the same lengths. Returns mel [B, mel, 2*T].
        """
        spk = self.speaker(embedding)
        tok = torch.cat([prompt_token, token], dim=1)
        lens = torch.full((tok.size(0),), tok.size(1), dtype=torch.long, device=tok.device)
        x = self.input_embedding(torch.clamp(tok, min=0))
        h, _ = self.encoder(x, lens)
        h = self.encoder_proj(h)
        n1 = prompt_feat.size(1)
        conds = torch.zeros_like(h)
        conds[:, :n1] = prompt_feat
        mask = torch.ones(h.size(0), 1, h.size(1), dtype=h.dtype, device=h.device)
        feat = self.decoder(h.transpose(1, 2).contiguous(), mask, spk, conds.transpose(1, 2).contiguous(),
                            n_timesteps or self.cfg.n_timesteps)
        return feat[:, :, n1:]
