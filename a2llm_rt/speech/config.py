"""Hyperparameters of the token2wav models (one dataclass per component, validated).

``FlowConfig.step_audio2()`` / ``HiFTConfig.step_audio2()`` are Step-Audio-2-mini's sizes (flow: encoder width 512,
6 + 4 conformer blocks, 8 heads; DiT estimator depth 16, width 512, 8 heads of 64; HiFT: CosyVoice2's 24 kHz
generator). ``tiny()`` presets are for tests.
"""

from __future__ import annotations

import dataclasses

from a2llm_rt.errors import InputError


@dataclasses.dataclass(frozen=True)
class FlowConfig:
    """The flow model: codes -> mel (``CausalMaskedDiffWithXvec`` with ``UpsampleConformerEncoderV2`` + ``DiT``)."""

    vocab_size: int = 6561
    """Number of speech codes (CosyVoice2's 25 Hz tokenizer)."""
    input_size: int = 512
    """Token embedding width (= encoder input and output width)."""
    output_size: int = 80
    """Mel bins."""
    spk_embed_dim: int = 192
    """CAM++ speaker embedding width."""
    encoder_heads: int = 8
    encoder_blocks: int = 6
    encoder_up_blocks: int = 4
    encoder_linear_units: int = 2048
    pre_lookahead_len: int = 3
    """Future codes the encoder looks at (the streaming look-ahead)."""
    up_stride: int = 2
    """Mel frames per code (25 Hz -> 50 Hz)."""
    dit_depth: int = 16
    dit_hidden: int = 512
    dit_heads: int = 8
    dit_head_dim: int = 64
    dit_mlp_ratio: float = 4.0
    n_timesteps: int = 10
    """Euler steps of the flow-matching ODE."""
    cfg_rate: float = 0.7
    """Classifier-free guidance: v = (1 + r) v_cond - r v_uncond."""
    noise_frames: int = 50 * 600
    """Length of the fixed noise sequence (frames); upstream keeps 600 s of it."""
    noise_seed: int = 0
    """Seed of the fixed noise sequence (upstream draws it at random at start-up)."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v < 0:
                raise InputError(f"FlowConfig.{f.name} must be >= 0, got {v}")
        if self.input_size % self.encoder_heads:
            raise InputError("FlowConfig.input_size must be a multiple of encoder_heads")
        if self.pre_lookahead_len < 1 or self.up_stride < 1 or self.n_timesteps < 1:
            raise InputError("FlowConfig: pre_lookahead_len, up_stride and n_timesteps must be >= 1")

    @property
    def estimator_in_channels(self) -> int:
        """x, mu, speaker and condition stacked on channels."""
        return 4 * self.output_size

    @classmethod
    def step_audio2(cls) -> FlowConfig:
        return cls()

    @classmethod
    def tiny(cls) -> FlowConfig:
        return cls(input_size=32, output_size=16, spk_embed_dim=12, encoder_heads=2, encoder_blocks=2,
                   encoder_up_blocks=1, encoder_linear_units=48, dit_depth=2, dit_hidden=32, dit_heads=2,
                   dit_head_dim=16, noise_frames=2000)


@dataclasses.dataclass(frozen=True)
class HiFTConfig:
    """The HiFT vocoder (CosyVoice2's ``HiFTGenerator`` defaults)."""

    in_channels: int = 80
    base_channels: int = 512
    nb_harmonics: int = 8
    sampling_rate: int = 24000
    nsf_alpha: float = 0.1
    nsf_sigma: float = 0.003
    nsf_voiced_threshold: float = 10.0
    upsample_rates: tuple[int, ...] = (8, 5, 3)
    upsample_kernel_sizes: tuple[int, ...] = (16, 11, 7)
    istft_n_fft: int = 16
    istft_hop_len: int = 4
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    source_resblock_kernel_sizes: tuple[int, ...] = (7, 7, 11)
    source_resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    lrelu_slope: float = 0.1
    audio_limit: float = 0.99
    f0_cond_channels: int = 512

    def __post_init__(self) -> None:
        n = len(self.upsample_rates)
        if n < 1 or len(self.upsample_kernel_sizes) != n or len(self.source_resblock_kernel_sizes) != n:
            raise InputError("HiFTConfig: upsample_rates, upsample_kernel_sizes and source_resblock_kernel_sizes "
                             "must have the same non-zero length")
        if self.base_channels % (2 ** n):
            raise InputError("HiFTConfig.base_channels must be divisible by 2**len(upsample_rates)")
        if self.sampling_rate == 22050:
            raise InputError("HiFTConfig: the 22.05 kHz source module (CosyVoice 1) is not implemented")

    @property
    def samples_per_frame(self) -> int:
        """Output samples per mel frame (480 at 24 kHz / 50 Hz)."""
        p = 1
        for r in self.upsample_rates:
            p *= r
        return p * self.istft_hop_len

    @classmethod
    def step_audio2(cls) -> HiFTConfig:
        return cls()

    @classmethod
    def tiny(cls) -> HiFTConfig:
        return cls(in_channels=16, base_channels=16, nb_harmonics=2, resblock_kernel_sizes=(3, 5),
                   resblock_dilation_sizes=((1, 3), (1, 3)), source_resblock_kernel_sizes=(3, 5, 5),
                   source_resblock_dilation_sizes=((1, 3), (1, 3), (1, 3)), f0_cond_channels=16)
