"""HiFT vocoder: 80-bin mel (50 Hz) -> 24 kHz waveform (HiFTNet: neural source filter + ISTFTNet,
https://arxiv.org/abs/2309.09493), as CosyVoice2 / Step-Audio-2 use it.

Same computation and parameter names as upstream's ``HiFTGenerator`` (``f0_predictor``, ``m_source``, ``conv_pre``,
``ups``, ``source_downs``, ``source_resblocks``, ``resblocks``, ``conv_post``); weight-normalised convolutions are
stored folded (plain ``weight``): :func:`a2llm_rt.speech.checkpoint.fold_weight_norm` converts upstream's
``weight_g``/``weight_v`` or ``parametrizations.weight.original0/1`` keys.

Randomness (the source's initial harmonic phases and its noise) is drawn in upstream's order from ``generator`` (or
torch's global generator when None), so the same seed gives the same waveform as upstream.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from a2llm_rt.speech.config import HiFTConfig


def _padding(kernel: int, dilation: int = 1) -> int:
    return (kernel * dilation - dilation) // 2


def mask_steps(x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """x [B, C, T] with the steps at and after ``lengths[b]`` ([B] int64) set to zero; x itself when None.

    Zero padding after a row's end is what a convolution's own padding puts there, so re-zeroing after every
    convolution makes each row of a right-padded batch compute exactly what it computes alone."""
    if lengths is None:
        return x
    keep = torch.arange(x.size(-1), device=x.device)[None] < lengths[:, None]
    return x * keep[:, None, :].to(x.dtype)


class Snake(nn.Module):
    """x + 1/alpha * sin^2(alpha x), one alpha per channel."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.alpha[None, :, None]
        return x + (1.0 / (a + 1e-9)) * torch.pow(torch.sin(x * a), 2)


class ResBlock(nn.Module):
    """Snake -> dilated conv -> Snake -> conv, residual, once per dilation."""

    def __init__(self, channels: int, kernel: int, dilations: tuple[int, ...]):
        super().__init__()
        self.convs1 = nn.ModuleList([nn.Conv1d(channels, channels, kernel, 1, dilation=d, padding=_padding(kernel, d))
                                     for d in dilations])
        self.convs2 = nn.ModuleList([nn.Conv1d(channels, channels, kernel, 1, padding=_padding(kernel))
                                     for _ in dilations])
        self.activations1 = nn.ModuleList([Snake(channels) for _ in dilations])
        self.activations2 = nn.ModuleList([Snake(channels) for _ in dilations])

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, C, T]; ``lengths`` [B] or None: rows right-padded with zeros after their lengths (kept zero)."""
        for c1, c2, a1, a2 in zip(self.convs1, self.convs2, self.activations1, self.activations2, strict=True):
            x = mask_steps(c2(a2(mask_steps(c1(a1(x)), lengths))), lengths) + x
        return x


class ConvRNNF0Predictor(nn.Module):
    """mel [B, mel, T] -> F0 [B, T] (Hz, >= 0): five conv(k3)+ELU layers, a linear head, abs."""

    def __init__(self, in_channels: int, cond_channels: int):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(5):
            layers += [nn.Conv1d(in_channels if i == 0 else cond_channels, cond_channels, 3, padding=1), nn.ELU()]
        self.condnet = nn.Sequential(*layers)
        self.classifier = nn.Linear(cond_channels, 1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``lengths`` [B] or None: rows right-padded with zeros (the first ``lengths[b]`` outputs are row b's)."""
        for layer in self.condnet:
            x = mask_steps(layer(x), lengths) if isinstance(layer, nn.Conv1d) else layer(x)
        return torch.abs(self.classifier(x.transpose(1, 2)).squeeze(-1))


class SineGen(nn.Module):
    """F0 [B, L, 1] at the output rate -> harmonic sines + noise [B, L, H+1] and voiced flag (``SineGen2``)."""

    def __init__(self, sampling_rate: int, upsample_scale: int, harmonic_num: int, sine_amp: float, noise_std: float,
                 voiced_threshold: float):
        super().__init__()
        self.sampling_rate = sampling_rate
        self.upsample_scale = upsample_scale
        self.harmonic_num = harmonic_num
        self.sine_amp = sine_amp
        self.noise_std = noise_std
        self.voiced_threshold = voiced_threshold

    def forward(self, f0: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        harmonics = torch.arange(1, self.harmonic_num + 2, dtype=f0.dtype, device=f0.device)
        fn = f0 * harmonics[None, None, :]
        rad = (fn / self.sampling_rate) % 1
        rand_ini = torch.rand(fn.shape[0], fn.shape[2], device=f0.device, generator=generator)
        rand_ini[:, 0] = 0
        rad[:, 0, :] = rad[:, 0, :] + rand_ini
        rad = F.interpolate(rad.transpose(1, 2), scale_factor=1 / self.upsample_scale, mode="linear").transpose(1, 2)
        phase = torch.cumsum(rad, dim=1) * 2 * np.pi
        phase = F.interpolate(phase.transpose(1, 2) * self.upsample_scale, scale_factor=self.upsample_scale,
                              mode="linear").transpose(1, 2)
        sines = torch.sin(phase) * self.sine_amp
        uv = (f0 > self.voiced_threshold).to(torch.float32)
        noise_amp = uv * self.noise_std + (1 - uv) * self.sine_amp / 3
        # empty_like(...).normal_ = randn_like: same memory layout as upstream, so the same draws land on the same
        # samples (``sines`` is a transposed view)
        noise = noise_amp * torch.empty_like(sines).normal_(generator=generator)
        return sines * uv + noise, uv


class SourceModuleHnNSF(nn.Module):
    """Harmonic-plus-noise source: tanh(linear(sines)) [B, L, 1]."""

    def __init__(self, cfg: HiFTConfig):
        super().__init__()
        self.sine_amp = cfg.nsf_alpha
        self.l_sin_gen = SineGen(cfg.sampling_rate, cfg.samples_per_frame, cfg.nb_harmonics, cfg.nsf_alpha,
                                 cfg.nsf_sigma, cfg.nsf_voiced_threshold)
        self.l_linear = nn.Linear(cfg.nb_harmonics + 1, 1)

    def forward(self, f0: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        with torch.no_grad():
            sines, uv = self.l_sin_gen(f0, generator)
        merged = torch.tanh(self.l_linear(sines))
        # upstream also draws (and discards) a noise tensor here; draw it so that the generator stays in step
        torch.empty_like(uv).normal_(generator=generator)
        return merged


class HiFTGenerator(nn.Module):
    """mel [B, mel, T] (+ optional source cache) -> (waveform [B, T*480], source [B, 1, T*480])."""

    def __init__(self, cfg: HiFTConfig):
        super().__init__()
        self.cfg = cfg
        self.n_fft = cfg.istft_n_fft
        self.hop = cfg.istft_hop_len
        self.num_kernels = len(cfg.resblock_kernel_sizes)
        self.num_upsamples = len(cfg.upsample_rates)
        self.upsample_scale = cfg.samples_per_frame
        self.m_source = SourceModuleHnNSF(cfg)
        base = cfg.base_channels
        self.conv_pre = nn.Conv1d(cfg.in_channels, base, 7, 1, padding=3)
        self.ups = nn.ModuleList([
            nn.ConvTranspose1d(base // 2 ** i, base // 2 ** (i + 1), k, u, padding=(k - u) // 2)
            for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes, strict=True))])
        self.source_downs = nn.ModuleList()
        self.source_resblocks = nn.ModuleList()
        down_rates = [1, *list(cfg.upsample_rates[::-1][:-1])]
        cum = np.cumprod(down_rates)[::-1]
        for i, (u, k, d) in enumerate(zip(cum, cfg.source_resblock_kernel_sizes, cfg.source_resblock_dilation_sizes,
                                          strict=True)):
            ch = base // 2 ** (i + 1)
            u = int(u)
            if u == 1:
                self.source_downs.append(nn.Conv1d(self.n_fft + 2, ch, 1, 1))
            else:
                self.source_downs.append(nn.Conv1d(self.n_fft + 2, ch, u * 2, u, padding=u // 2))
            self.source_resblocks.append(ResBlock(ch, k, tuple(d)))
        self.resblocks = nn.ModuleList()
        for i in range(self.num_upsamples):
            ch = base // 2 ** (i + 1)
            for k, d in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes, strict=True):
                self.resblocks.append(ResBlock(ch, k, tuple(d)))
        self.conv_post = nn.Conv1d(ch, self.n_fft + 2, 7, 1, padding=3)
        self.f0_predictor = ConvRNNF0Predictor(cfg.in_channels, cfg.f0_cond_channels)
        self.register_buffer("stft_window", torch.hann_window(self.n_fft, periodic=True), persistent=False)
        self.graph_decoder = None
        """Set by :func:`a2llm_rt.speech.onnx_runtime.use_onnx` / :func:`a2llm_rt.speech.trt_runtime.use_tensorrt`:
        (mel, source STFT, lengths or None) -> (magnitude, phase) through the exported graph."""

    def source(self, mel: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """mel [B, mel, T] -> source excitation [B, 1, T*480]."""
        return self.source_from_f0(self.f0_predictor(mel), generator)

    def source_from_f0(self, f0: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """F0 [B, T] (Hz, 50 Hz frames) -> source excitation [B, 1, T*480] (random draws from ``generator``)."""
        s = F.interpolate(f0[:, None], scale_factor=float(self.upsample_scale), mode="nearest").transpose(1, 2)
        return self.m_source(s, generator).transpose(1, 2)

    def source_stft(self, s: torch.Tensor) -> torch.Tensor:
        """source [B, 1, L] -> real|imaginary STFT [B, n_fft + 2, L/hop + 1]."""
        spec = torch.view_as_real(torch.stft(s.squeeze(1), self.n_fft, self.hop, self.n_fft, window=self.stft_window,
                                             return_complex=True))
        return torch.cat([spec[..., 0], spec[..., 1]], dim=1)

    def istft(self, magnitude: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        """[B, n_fft/2 + 1, F] magnitude and phase -> waveform [B, (F - 1) * hop] clamped to +-audio_limit."""
        spec = torch.complex(magnitude * torch.cos(phase), magnitude * torch.sin(phase))
        wav = torch.istft(spec, self.n_fft, self.hop, self.n_fft, window=self.stft_window)
        return torch.clamp(wav, -self.cfg.audio_limit, self.cfg.audio_limit)

    def _generate(self, x: torch.Tensor, s_stft: torch.Tensor,
                  lengths: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.graph_decoder is not None:
            return self.graph_decoder(x, s_stft, lengths)
        return self.generate(x, s_stft, lengths)

    def decode(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """mel [B, mel, T], source [B, 1, L] -> waveform [B, L] clamped to +-audio_limit."""
        return self.istft(*self._generate(x, self.source_stft(s), None))

    def generate(self, x: torch.Tensor, s_stft: torch.Tensor,
                 lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """mel [B, mel, T], source STFT [B, n_fft + 2, 120T + 1] -> iSTFT magnitude and phase [B, n_fft/2 + 1, F].

        ``lengths`` [B] int64 or None: rows of different lengths right-padded with zeros (row b: ``lengths[b]`` mel
        frames and 120 ``lengths[b]`` + 1 STFT frames); every convolution's output is re-zeroed after each row's end
        (:func:`mask_steps`), so row b's first 120 ``lengths[b]`` + 1 output frames are what it gets alone.
        """
        x = mask_steps(self.conv_pre(x), lengths)
        n = lengths
        for i in range(self.num_upsamples):
            x = self.ups[i](F.leaky_relu(x, self.cfg.lrelu_slope))
            n = None if n is None else n * self.cfg.upsample_rates[i]
            if i == self.num_upsamples - 1:
                x = F.pad(x, (1, 0), mode="reflect")
                n = None if n is None else n + 1
            x = mask_steps(x, n)
            x = x + self.source_resblocks[i](mask_steps(self.source_downs[i](s_stft), n), n)
            xs = self.resblocks[i * self.num_kernels](x, n)
            for j in range(1, self.num_kernels):
                xs = xs + self.resblocks[i * self.num_kernels + j](x, n)
            x = xs / self.num_kernels
        x = self.conv_post(F.leaky_relu(x))
        half = self.n_fft // 2 + 1
        return torch.clip(torch.exp(x[:, :half, :]), max=1e2), torch.sin(x[:, half:, :])

    @torch.inference_mode()
    def forward(self, speech_feat: torch.Tensor, cache_source: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """mel [B, mel, T]; cache_source [B, 1, n] replaces the first n source samples (streaming overlap)."""
        s = self.source(speech_feat, generator)
        if cache_source is not None and cache_source.size(2) > 0:
            s = s.clone()
            s[:, :, : cache_source.size(2)] = cache_source
        return self.decode(speech_feat, s), s

    @torch.inference_mode()
    def forward_many(self, mels: list[torch.Tensor], cache_sources: list[torch.Tensor | None],
                     generators: list[torch.Generator | None]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Several sessions of different lengths in one batch: mels [mel, T_b], cache_sources [1, n_b] or None,
        one generator each (drawn in session order) -> (waveforms [T_b*480], sources [1, T_b*480]), each what
        :meth:`forward` gives for that session alone (to float rounding; the F0 predictor and the generator run
        batched, right-padded and masked; the source, STFT and iSTFT per session)."""
        frames = [int(m.size(-1)) for m in mels]
        w = max(frames)
        x = torch.stack([F.pad(m, (0, w - f)) for m, f in zip(mels, frames, strict=True)])
        lengths = torch.tensor(frames, device=x.device) if min(frames) < w else None
        f0 = self.f0_predictor(x, lengths)
        sources, stfts = [], []
        for i, (f, cache, g) in enumerate(zip(frames, cache_sources, generators, strict=True)):
            s = self.source_from_f0(f0[i: i + 1, :f], g)
            if cache is not None and cache.size(-1) > 0:
                s = s.clone()
                s[:, :, : cache.size(-1)] = cache
            sources.append(s[0])
            stfts.append(self.source_stft(s))
        width = max(st.size(2) for st in stfts)
        s_stft = torch.cat([F.pad(st, (0, width - st.size(2))) for st in stfts])
        mag, phase = self._generate(x, s_stft, lengths)
        wavs = [self.istft(mag[i: i + 1, :, : st.size(2)], phase[i: i + 1, :, : st.size(2)])[0]
                for i, st in enumerate(stfts)]
        return wavs, sources
