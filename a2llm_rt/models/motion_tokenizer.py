"""The motion tokenizer: a causal, streaming RVQ-VAE over face-motion frames (25 fps -> 5 Hz tokens).

Encoder (frame rate)   : causal conv(D->W, k3) | N residual blocks (causal k3, dilation 3^i) | ELU, conv(k=G, s=G)
Encoder (token rate)   : ELU, conv 1x1 (W -> latent)                                      -> latents [B, T/G, latent]
Residual VQ            : N_q EMA codebooks of K codes                                      -> codes   [B, T/G, N_q]
Decoder (token rate)   : conv(latent->W, k = context + 1 + lookahead) (the only non-causal layer, by ``lookahead``)
Decoder (frame rate)   : ELU, transposed conv (k=G, s=G) | N residual blocks | ELU, causal conv(W->D, k3)
Optional linear skip   : frames -> latent (conv k=G, s=G) and latent -> frames (transposed conv) beside the convs

Every conv is causal, so both halves stream with explicit per-layer caches (typed states below): decoding token by
token gives exactly the frames of a whole-sequence decode, and frame j of token i depends on tokens ``<= i +
lookahead`` only. Every field of both states is per session (``[B, ...]``: the encoder's phase in its token and the
decoder's look-ahead counter too), so one row can be reset (``StreamingState.reset``) while the others go on, and
rows at different points of their streams step together; ``output_lengths`` says how many outputs each row gets
from a step, and the decoder's ``step_padded`` is the static-shape form the exported graph runs. Frames are
normalised by per-curve mean/std buffers set from the training data.

Eq. 4 of the paper and our EMA codebooks. The paper's objective is
``L_VQVAE = L_rec + ||sg[z] - q||^2 + gamma ||z - sg[q]||^2`` (weighted by ``lambda_vq`` = 1 in App. B). We train the
encoder with the commitment term ``gamma ||z - sg[q]||^2`` exactly (gamma = 0.25, :attr:`MotionTokenizerConfig.
commitment`; ``MotionLossConfig.commit_weight`` is ``lambda_vq``), and replace the codebook term ``||sg[z] - q||^2``
by exponential-moving-average codebook updates (:mod:`a2llm_rt.quantization.core_vq`), as the VQ-VAE paper proposes
in its place (van den Oord et al. 2017, "Neural Discrete Representation Learning", arXiv:1711.00937, §3.2 and
appendix A.1; also VQ-VAE-2, SoundStream §3.3, audiocraft). Why this is the same objective in expectation: the
codebook term only moves the codes (``sg[z]``); for code ``e_k`` with ``n_k`` assigned encoder outputs of batch mean
``zbar_k`` its gradient is ``2 n_k (e_k - zbar_k)``, so an SGD step of size ``eta`` gives
``e_k <- (1 - 2 eta n_k) e_k + 2 eta n_k zbar_k``: a moving average towards the mean of the vectors assigned to it.
The EMA update is that same moving average with a fixed rate (``ema_decay``), normalised by the smoothed cluster
size; both have the fixed point ``e_k = E[z | z assigned to k]``, the minimiser of the expected codebook loss
(the k-means / online-EM view of Roy et al. 2018, "Theory and Experiments on Vector Quantized Autoencoders",
arXiv:1805.11063). The codebook term itself therefore never enters the loss (it would have no trainable parameter).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from a2llm_rt.audio import FACE_FPS
from a2llm_rt.config import Config
from a2llm_rt.errors import InputError
from a2llm_rt.face.layouts import get_layout
from a2llm_rt.quantization.base import QuantizedResult
from a2llm_rt.quantization.rvq import ResidualVectorQuantizer
from a2llm_rt.streaming import StreamingModule, StreamingState


@dataclass
class MotionTokenizerConfig(Config):
    """RVQ-VAE hyperparameters; the defaults are the paper's (ARCHITECTURE §2)."""

    layout: str = "flame58"
    """Face layout of the frames (``flame58``: 58 values, ``arkit52``: 52)."""
    fps: float = FACE_FPS
    """Frame rate of the motion the tokenizer was trained on."""
    group: int = 5
    """G: frames per token (25 fps / 5 = 5 Hz tokens)."""
    width: int = 128
    """Channels of the encoder and decoder convs."""
    num_res_blocks: int = 3
    """Residual blocks in the encoder and in the decoder."""
    latent_dim: int = 256
    """Size of the quantized latent vectors."""
    num_quantizers: int = 6
    """N_q residual codebooks."""
    codebook_size: int = 256
    """K codes per codebook."""
    dropout: float = 0.05
    """Dropout in the residual blocks."""
    commitment: float = 0.25
    """gamma of the VQ commitment loss (eq. 4)."""
    ema_decay: float = 0.99
    """EMA decay of the codebooks (they stand in for eq. 4's codebook term; see the module docstring)."""
    kmeans_init: bool = True
    """Initialise the codebooks by k-means on the first batch."""
    dead_code_threshold: float = 1.0
    """A code whose EMA cluster size falls below this is restarted (0: never)."""
    kernel_size: int = 3
    """Kernel of the frame-rate causal convs."""
    dilation_growth: int = 3
    """Dilation of residual block i is ``dilation_growth ** i``."""
    token_context: int = 2
    """Past tokens the decoder's first conv sees."""
    lookahead: int = 0
    """Future tokens the decoder's first conv sees (frames of token i depend on tokens <= i + lookahead)."""
    std_floor: float = 0.05
    """Lower bound of the per-curve std used to normalise frames (keeps near-constant curves from blowing up)."""
    linear_skip: bool = False
    """Add a linear path beside the convs: frames -> latent (conv k=G, s=G) in the encoder and latent -> frames
    (transposed conv) in the decoder. Not in the paper; it helps the tokenizer generalise to blendshape
    combinations it has not seen (small data, e.g. one capture)."""
    encode_beam: int = 1
    """Beam width of the residual-VQ encoding (1: the paper's greedy encoding; > 1: beam search over the levels,
    which lowers the quantization error at no cost to decoding or to the token format)."""
    quantizer_dropout: float = 0.0
    """Probability that a training batch uses only the first n ~ U{1..N_q} codebooks (SoundStream's quantizer
    dropout; 0: off, as in the paper)."""
    clamp_output: bool = False
    """Clamp decoded frames to the blendshape range [0, 1] (arkit52 only; inference paths, not the training
    forward). Not in the paper."""

    @property
    def motion_dim(self) -> int:
        return get_layout(self.layout).dim

    def validate(self) -> None:
        try:
            get_layout(self.layout)
        except KeyError as e:
            raise ValueError(str(e.args[0])) from None
        for name in ("group", "width", "latent_dim", "num_quantizers", "codebook_size", "kernel_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_res_blocks < 0 or self.token_context < 0 or self.lookahead < 0:
            raise ValueError("num_res_blocks, token_context and lookahead must be >= 0")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.fps <= 0 or self.std_floor <= 0:
            raise ValueError("fps and std_floor must be > 0")
        if self.encode_beam < 1:
            raise ValueError(f"encode_beam must be >= 1, got {self.encode_beam}")
        if not 0 <= self.quantizer_dropout <= 1:
            raise ValueError(f"quantizer_dropout must be in [0, 1], got {self.quantizer_dropout}")
        if self.clamp_output and self.layout != "arkit52":
            raise ValueError("clamp_output needs layout arkit52 (values in [0, 1])")


def _shift_left(x: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
    """``x [B, C, n]`` with row b shifted left by ``drop[b]`` steps (0..n), zero-filled at the end."""
    n = x.shape[-1]
    j = torch.arange(n, device=x.device).view(1, 1, n)
    src = j + drop.view(-1, 1, 1)
    out = torch.gather(x, 2, src.clamp(max=n - 1).expand(x.shape[0], x.shape[1], n))
    return out * (src < n).to(x.dtype)


def _context_at(inp: torch.Tensor, end: torch.Tensor, size: int) -> torch.Tensor:
    """The ``size`` steps of ``inp [B, C, L]`` that end at ``end[b]`` (exclusive) in each row -> ``[B, C, size]``."""
    idx = end.view(-1, 1, 1) - size + torch.arange(size, device=inp.device).view(1, 1, size)
    return torch.gather(inp, 2, idx.expand(inp.shape[0], inp.shape[1], size))


# --- building blocks ----------------------------------------------------------------------------------------------
class CausalConv1d(nn.Conv1d):
    """Conv1d padded on the left only; ``step`` carries the last ``context`` inputs ``[B, C_in, context]``."""

    def __init__(self, cin: int, cout: int, kernel_size: int, dilation: int = 1):
        super().__init__(cin, cout, kernel_size, dilation=dilation)
        self.context = (kernel_size - 1) * dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, T] -> [B, C', T]
        return super().forward(F.pad(x, (self.context, 0)))

    def step(
        self, x: torch.Tensor, ctx: torch.Tensor, valid: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [B, C_in, n]`` after the context ``ctx`` -> (outputs ``[B, C_out, n]``, new context). ``valid``
        (``[B]`` int64, optional): only each row's first ``valid[b]`` steps are real (the rest is padding, which a
        causal conv's real outputs never see), so its new context ends there."""
        inp = torch.cat([ctx, x], -1)
        y = super().forward(inp)
        if valid is None:
            return y, inp[..., inp.shape[-1] - self.context :]
        return y, _context_at(inp, valid + self.context, self.context)


class ResBlock(nn.Module):
    """``x + dropout(conv1x1(elu(causal_conv(elu(x)))))`` (SEANet-style block, causal)."""

    def __init__(self, width: int, kernel_size: int, dilation: int, dropout: float):
        super().__init__()
        self.conv = CausalConv1d(width, width, kernel_size, dilation)
        self.proj = nn.Conv1d(width, width, 1)
        self.drop = nn.Dropout(dropout)
        self.context = self.conv.context

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, W, T]
        return x + self.drop(self.proj(F.elu(self.conv(F.elu(x)))))

    def step(
        self, x: torch.Tensor, ctx: torch.Tensor, valid: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h, ctx = self.conv.step(F.elu(x), ctx, valid)
        return x + self.drop(self.proj(F.elu(h))), ctx


def _split(t: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    return list(torch.split(t, sizes, dim=-1))


# --- encoder ------------------------------------------------------------------------------------------------------
@dataclass
class EncoderState(StreamingState):
    """Streaming state of :class:`MotionEncoder`, every field per session (batch on dim 0; all zeros when fresh).

    Attributes:
        frames_in: ``[B, D, k-1]`` last input frames (the first conv's context).
        frames: ``[B, W, sum of residual contexts]`` the residual blocks' contexts, packed.
        group: ``[B, W, G-1]`` features of the frames of the token being filled, right-aligned (the last ``phase``
            columns are valid, the others zero).
        group_in: ``[B, D, G-1]`` those frames' inputs, for the linear skip (``[B, D, 0]`` without it).
        phase: ``[B]`` int64, frames already in each row's current token (0..G-1).
    """

    frames_in: torch.Tensor
    frames: torch.Tensor
    group: torch.Tensor
    group_in: torch.Tensor
    phase: torch.Tensor


class MotionEncoder(StreamingModule[EncoderState]):
    """Normalised frames ``[B, T, D]`` -> latents ``[B, T/G, latent]``; causal (token i sees frames < (i+1)G)."""

    lookahead = 0

    def __init__(self, dim: int, cfg: MotionTokenizerConfig):
        super().__init__()
        w, g = cfg.width, cfg.group
        self.group = g
        self.inp = CausalConv1d(dim, w, cfg.kernel_size)
        self.blocks = nn.ModuleList(
            ResBlock(w, cfg.kernel_size, cfg.dilation_growth**i, cfg.dropout) for i in range(cfg.num_res_blocks)
        )
        self.down = nn.Conv1d(w, w, g, stride=g)
        self.out = nn.Conv1d(w, cfg.latent_dim, 1)
        self.skip = nn.Conv1d(dim, cfg.latent_dim, g, stride=g) if cfg.linear_skip else None
        self._ctx = [b.context for b in self.blocks]

    def _frames(self, x: torch.Tensor) -> torch.Tensor:  # [B, D, T] -> [B, W, T]
        h = self.inp(x)
        for b in self.blocks:
            h = b(h)
        return F.elu(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xt = x.transpose(1, 2)
        y = self.out(F.elu(self.down(self._frames(xt))))
        if self.skip is not None:
            y = y + self.skip(xt)
        return y.transpose(1, 2)

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> EncoderState:
        w = self.down.in_channels
        return EncoderState(
            frames_in=torch.zeros(batch_size, self.inp.in_channels, self.inp.context, device=device),
            frames=torch.zeros(batch_size, w, sum(self._ctx), device=device),
            group=torch.zeros(batch_size, w, self.group - 1, device=device),
            group_in=torch.zeros(
                batch_size, self.inp.in_channels, self.group - 1 if self.skip is not None else 0, device=device
            ),
            phase=torch.zeros(batch_size, dtype=torch.long, device=device),
        )

    def output_lengths(self, n: int, state: EncoderState) -> torch.Tensor:
        """``[B]`` int64: tokens each row completes with ``n`` more frames."""
        return (state.phase + n) // self.group

    def flush_lengths(self, state: EncoderState) -> torch.Tensor:
        return torch.zeros_like(state.phase)

    def flush(self, state: EncoderState) -> tuple[torch.Tensor, EncoderState]:
        """Nothing: a partial last token is not encoded (``forward`` takes whole tokens only)."""
        return state.group.new_zeros(state.group.shape[0], 0, self.out.out_channels), state

    def step(self, x: torch.Tensor, state: EncoderState) -> tuple[torch.Tensor, EncoderState]:
        """Frames ``[B, n, D]`` (any n) -> latents of the tokens completed by them ``[B, m, latent]``, ``m`` the most
        any row completes (rows left-aligned, zero-padded; :meth:`output_lengths` gives each row's count)."""
        if x.shape[1] == 0:
            return x.new_zeros(x.shape[0], 0, self.out.out_channels), state
        g, n = self.group, x.shape[1]
        xt = x.transpose(1, 2)
        h, frames_in = self.inp.step(xt, state.frames_in)
        ctxs = []
        for b, c in zip(self.blocks, _split(state.frames, self._ctx), strict=True):
            h, c = b.step(h, c)
            ctxs.append(c)
        # each row's current token starts (G-1-phase) columns into [group | new frames]
        start = g - 1 - state.phase
        count = self.output_lengths(n, state)
        seq = _shift_left(torch.cat([state.group, F.elu(h)], -1), start)
        m = int(count.max())
        seq_in = torch.cat([state.group_in, xt], -1) if self.skip is not None else None
        if m:
            y = self.out(F.elu(self.down(seq[..., : m * g])))
            if self.skip is not None and seq_in is not None:
                y = y + self.skip(_shift_left(seq_in, start)[..., : m * g])
            y = y * (torch.arange(m, device=y.device).view(1, 1, m) < count.view(-1, 1, 1)).to(y.dtype)
        else:
            y = h.new_zeros(h.shape[0], self.out.out_channels, 0)
        # the frames of each row's new partial token are the last (phase + n) % G columns, kept right-aligned
        phase = (state.phase + n) % g
        keep = (torch.arange(g - 1, device=x.device).view(1, 1, -1) >= (g - 1 - phase).view(-1, 1, 1)).to(h.dtype)
        full = torch.cat([state.group, F.elu(h)], -1)
        group = full[..., full.shape[-1] - (g - 1) :] * keep
        group_in = state.group_in
        if seq_in is not None:
            group_in = seq_in[..., seq_in.shape[-1] - (g - 1) :] * keep
        frames = torch.cat(ctxs, -1) if ctxs else state.frames
        return y.transpose(1, 2), EncoderState(frames_in, frames, group, group_in, phase)


# --- decoder ------------------------------------------------------------------------------------------------------
@dataclass
class DecoderState(StreamingState):
    """Streaming state of :class:`MotionDecoder`, every field per session (batch on dim 0; all zeros when fresh).

    Attributes:
        tokens: ``[B, latent, context + lookahead]`` last latents (the first conv's window).
        frames: ``[B, W, sum of frame-rate contexts]`` residual blocks' and output conv's contexts, packed.
        filled: ``[B]`` int64, look-ahead tokens received so far (0..lookahead): a row's frames come out once its
            look-ahead is filled, so rows reset at different times hold back their own first tokens.
    """

    tokens: torch.Tensor
    frames: torch.Tensor
    filled: torch.Tensor


class MotionDecoder(StreamingModule[DecoderState]):
    """Latents ``[B, T', latent]`` -> normalised frames ``[B, T'G, D]``; frames of token i see tokens <= i + lookahead.

    In streaming, the frames of token i come out of the ``step`` that receives token ``i + lookahead``; ``flush``
    returns the held-back frames at the end of a stream (as ``forward`` does by padding with zero latents). The
    hold-back is counted per row (``DecoderState.filled``), so after a per-row ``reset`` the rows of one batch emit
    different numbers of frames: ``step`` returns them left-aligned, zero-padded to the longest row, and
    :meth:`output_lengths` says how many each row got.
    """

    def __init__(self, dim: int, cfg: MotionTokenizerConfig):
        super().__init__()
        w, g = cfg.width, cfg.group
        self.group = g
        self.lookahead = cfg.lookahead
        self.token_context = cfg.token_context
        self.inp = nn.Conv1d(cfg.latent_dim, w, cfg.token_context + 1 + cfg.lookahead)
        self.up = nn.ConvTranspose1d(w, w, g, stride=g)
        self.blocks = nn.ModuleList(
            ResBlock(w, cfg.kernel_size, cfg.dilation_growth**i, cfg.dropout) for i in range(cfg.num_res_blocks)
        )
        self.out = CausalConv1d(w, dim, cfg.kernel_size)
        self.skip = nn.ConvTranspose1d(cfg.latent_dim, dim, g, stride=g) if cfg.linear_skip else None
        self._ctx = [b.context for b in self.blocks] + [self.out.context]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        zt = z.transpose(1, 2)
        h = self.up(F.elu(self.inp(F.pad(zt, (self.token_context, self.lookahead)))))
        for b in self.blocks:
            h = b(h)
        y = self.out(F.elu(h))
        if self.skip is not None:
            y = y + self.skip(zt)
        return y.transpose(1, 2)

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> DecoderState:
        return DecoderState(
            tokens=torch.zeros(batch_size, self.inp.in_channels, self.token_context + self.lookahead, device=device),
            frames=torch.zeros(batch_size, self.up.out_channels, sum(self._ctx), device=device),
            filled=torch.zeros(batch_size, dtype=torch.long, device=device),
        )

    def held_tokens(self, n: int, state: DecoderState) -> torch.Tensor:
        """``[B]`` int64: of ``n`` tokens stepped from ``state``, how many each row holds back (its look-ahead)."""
        return (self.lookahead - state.filled).clamp(0, n)

    def output_lengths(self, n: int, state: DecoderState) -> torch.Tensor:
        """``[B]`` int64: frames each row gets from a ``step`` of ``n`` tokens from ``state`` (``(n - held) * G``)."""
        return (n - self.held_tokens(n, state)) * self.group

    def step_padded(self, z: torch.Tensor, state: DecoderState) -> tuple[torch.Tensor, torch.Tensor, DecoderState]:
        """Latents ``[B, n, latent]`` (n >= 1) -> (frames ``[B, n G, D]`` left-aligned per row, zeros past a row's
        length; lengths ``[B]`` int64; new state). Static shapes: this is what the exported decoder graph runs."""
        n, g = z.shape[1], self.group
        inp = torch.cat([state.tokens, z.transpose(1, 2)], -1)  # [B, latent, ctx + la + n]
        keep = state.tokens.shape[-1]
        tokens = inp[..., inp.shape[-1] - keep :]
        drop = self.held_tokens(n, state)  # outputs of a row's first `lookahead` tokens belong to no frame
        valid = n - drop
        # one conv output per new token (the output of token new index - lookahead), shifted left past the held ones
        h = self.up(F.elu(_shift_left(self.inp(inp), drop)))  # [B, W, n G]
        end = valid * g  # each causal conv's context ends at the row's last valid frame
        ctxs = []
        old = _split(state.frames, self._ctx)
        for b, c in zip(self.blocks, old[:-1], strict=True):
            h, c = b.step(h, c, end)
            ctxs.append(c)
        y, c = self.out.step(F.elu(h), old[-1], end)
        ctxs.append(c)
        if self.skip is not None:
            # the token whose frames come out is the window's centre position (token_context) of each output
            c = self.token_context
            y = y + self.skip(_shift_left(inp[..., c : c + n], drop))
        mask = (torch.arange(n * g, device=y.device).view(1, 1, -1) < end.view(-1, 1, 1)).to(y.dtype)
        return (y * mask).transpose(1, 2), end, DecoderState(tokens, torch.cat(ctxs, -1), state.filled + drop)

    def step(self, z: torch.Tensor, state: DecoderState) -> tuple[torch.Tensor, DecoderState]:
        """Latents ``[B, n, latent]`` -> frames ``[B, m G, D]``: ``m = n`` once a row's look-ahead is filled; rows are
        left-aligned and zero-padded to the longest (:meth:`output_lengths` gives each row's frames)."""
        if z.shape[1] == 0:
            return z.new_zeros(z.shape[0], 0, self.out.out_channels), state
        y, lengths, new = self.step_padded(z, state)
        return y[:, : int(lengths.max())], new

    def flush(self, state: DecoderState) -> tuple[torch.Tensor, DecoderState]:
        """Frames of each row's held-back tokens (up to ``lookahead``), decoded as if zero latents followed (as
        ``forward`` pads); a row that received k < lookahead tokens gets k tokens' frames. The rows' lengths are
        :meth:`flush_lengths`."""
        z = state.tokens.new_zeros(state.tokens.shape[0], self.lookahead, state.tokens.shape[1])
        return self.step(z, state)

    def flush_lengths(self, state: DecoderState) -> torch.Tensor:
        """``[B]`` int64: frames each row gets from :meth:`flush` of ``state``."""
        return self.output_lengths(self.lookahead, state)


# --- the tokenizer ------------------------------------------------------------------------------------------------
@dataclass
class TokenizerOutput:
    """Training-time output of :class:`MotionTokenizer`.

    Attributes:
        recon: ``[B, T, D]`` reconstructed frames (original units).
        quant: the quantizer's result (codes ``[B, T/G, N_q]``, commitment loss, usage, perplexity).
    """

    recon: torch.Tensor
    quant: QuantizedResult


class MotionTokenizer(nn.Module):
    """RVQ-VAE: ``encode(motion [B, T, D]) -> codes [B, T/G, N_q]``, ``decode(codes) -> motion [B, T, D]``."""

    def __init__(self, cfg: MotionTokenizerConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.motion_dim
        self.dim = d
        self.group = cfg.group
        self.register_buffer("motion_mean", torch.zeros(d))
        self.register_buffer("motion_std", torch.ones(d))
        self.encoder = MotionEncoder(d, cfg)
        self.quantizer = ResidualVectorQuantizer(
            cfg.latent_dim,
            cfg.num_quantizers,
            cfg.codebook_size,
            commitment=cfg.commitment,
            decay=cfg.ema_decay,
            kmeans_init=cfg.kmeans_init,
            threshold_ema_dead_code=cfg.dead_code_threshold,
            encode_beam=cfg.encode_beam,
            quantizer_dropout=cfg.quantizer_dropout,
        )
        self.decoder = MotionDecoder(d, cfg)

    @property
    def lookahead(self) -> int:
        return self.decoder.lookahead

    @torch.no_grad()
    def set_normalization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Per-curve ``[D]`` statistics of the training frames (std is floored at ``cfg.std_floor``)."""
        self.motion_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.motion_std.copy_(torch.as_tensor(std, dtype=torch.float32).clamp_min(self.cfg.std_floor))

    @torch.no_grad()
    def init_linear_skip_pca(self, motion: torch.Tensor) -> None:
        """Start as a PCA autoencoder: the linear skips project token frames on their top principal components.

        ``motion``: ``[N, T, D]`` training windows (T a multiple of G). The encoder skip maps each token's ``G x D``
        normalised frames to their first ``latent_dim`` principal components, the decoder skip maps them back, and
        the conv paths' output layers start at zero, so the untrained model is exactly that PCA autoencoder and
        training learns the non-linear corrections (and the codebooks) on top. Requires ``linear_skip``.
        """
        enc, dec = self.encoder.skip, self.decoder.skip
        if enc is None or dec is None:
            raise ValueError("init_linear_skip_pca needs a tokenizer built with linear_skip=True")
        self.check_motion(motion)
        x = self.normalize(motion.float())
        n, t, d = x.shape
        g = self.group
        tok = x.reshape(n, t // g, g, d).permute(0, 1, 3, 2).reshape(-1, d * g)  # [N T/G, D G], (d, k) order
        # centre by the per-curve mean (a transposed conv's bias is per channel, not per frame of the token)
        mean = tok.reshape(-1, d, g).mean((0, 2)).repeat_interleave(g)  # [D G]
        _, _, vh = torch.linalg.svd(tok - mean, full_matrices=False)
        latent = enc.out_channels
        k = min(latent, vh.shape[0])
        w = torch.zeros(latent, d * g, device=tok.device)
        w[:k] = vh[:k]
        enc.weight.copy_(w.reshape(latent, d, g))
        enc.bias.copy_(-(w @ mean))
        dec.weight.copy_(w.reshape(latent, d, g))
        dec.bias.copy_(mean.reshape(d, g)[:, 0])
        for conv in (self.encoder.out, self.decoder.out):
            conv.weight.zero_()
            conv.bias.zero_()

    @torch.no_grad()
    def init_codebooks(self, motion: torch.Tensor, batch: int = 256) -> None:
        """Initialise all codebooks by residual k-means on the latents of ``motion`` ``[N, T, D]`` (many training
        windows) instead of k-means on the first training batch (see :mod:`a2llm_rt.quantization.core_vq`)."""
        self.check_motion(motion)
        was = self.training
        self.eval()
        chunks = [motion[i : i + batch].float() for i in range(0, len(motion), batch)]
        z = torch.cat([self.encoder(self.normalize(c)) for c in chunks])
        self.train(was)
        self.quantizer.init_from_data(z)

    def to_frames(self, y: torch.Tensor) -> torch.Tensor:
        """Normalised decoder frames -> frames in original units (clamped to [0, 1] with ``clamp_output``)."""
        y = self.denormalize(y)
        return y.clamp(0.0, 1.0) if self.cfg.clamp_output else y

    def normalize(self, motion: torch.Tensor) -> torch.Tensor:
        return (motion - self.motion_mean) / self.motion_std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.motion_std + self.motion_mean

    def check_motion(self, motion: torch.Tensor, *, whole_tokens: bool = True) -> None:
        """Raise :class:`InputError` on a wrong shape, a length not a multiple of G, or non-finite frames."""
        if motion.ndim != 3 or motion.shape[-1] != self.dim:
            raise InputError(f"motion must have shape [B, T, {self.dim}] ({self.cfg.layout}), got {list(motion.shape)}")
        if whole_tokens and (motion.shape[1] == 0 or motion.shape[1] % self.group):
            raise InputError(f"motion length {motion.shape[1]} is not a positive multiple of G={self.group} frames")
        if not torch.isfinite(motion).all():
            bad = (~torch.isfinite(motion)).nonzero()[0].tolist()
            raise InputError(f"non-finite value in motion at (batch, frame, curve) {tuple(bad)}")

    def forward(self, motion: torch.Tensor) -> TokenizerOutput:
        """Encode, quantize (EMA update in training) and decode ``[B, T, D]`` frames."""
        self.check_motion(motion)
        q = self.quantizer(self.encoder(self.normalize(motion)))
        return TokenizerOutput(self.denormalize(self.decoder(q.x)), q)

    @torch.no_grad()
    def encode(self, motion: torch.Tensor) -> torch.Tensor:
        """``[B, T, D]`` frames (T a multiple of G) -> codes ``[B, T/G, N_q]`` int64."""
        self.check_motion(motion)
        return self.quantizer.encode(self.encoder(self.normalize(motion)))

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes ``[B, T', N_q]`` -> frames ``[B, T' G, D]``."""
        return self.to_frames(self.decoder(self.quantizer.decode(codes)))

    # streaming -------------------------------------------------------------------------------------------------
    def init_encode_state(self, batch_size: int, device: torch.device | str | None = None) -> EncoderState:
        return self.encoder.init_state(batch_size, device)

    @torch.no_grad()
    def encode_step(self, motion: torch.Tensor, state: EncoderState) -> tuple[torch.Tensor, EncoderState]:
        """Frames ``[B, n, D]`` (any n) -> codes of the tokens they complete ``[B, m, N_q]`` (rows at different
        phases complete different numbers: :meth:`encode_lengths` gives each row's count, codes past it are
        padding)."""
        self.check_motion(motion, whole_tokens=False)
        z, state = self.encoder.step(self.normalize(motion), state)
        return self.quantizer.encode(z), state

    def encode_lengths(self, n: int, state: EncoderState) -> torch.Tensor:
        """``[B]`` int64: tokens each row completes in :meth:`encode_step` of ``n`` frames from ``state``."""
        return self.encoder.output_lengths(n, state)

    def init_decode_state(self, batch_size: int, device: torch.device | str | None = None) -> DecoderState:
        return self.decoder.init_state(batch_size, device)

    @torch.no_grad()
    def decode_step(self, codes: torch.Tensor, state: DecoderState) -> tuple[torch.Tensor, DecoderState]:
        """codes ``[B, n, N_q]`` -> frames ``[B, m G, D]`` (held back by ``lookahead`` tokens at the start of each
        row's stream; rows left-aligned and zero-padded, :meth:`decode_lengths` gives each row's count)."""
        y, state = self.decoder.step(self.quantizer.decode(codes), state)
        return self.to_frames(y), state

    @torch.no_grad()
    def decode_step_padded(
        self, codes: torch.Tensor, state: DecoderState
    ) -> tuple[torch.Tensor, torch.Tensor, DecoderState]:
        """codes ``[B, n, N_q]`` (n >= 1) -> (frames ``[B, n G, D]``, each row's left-aligned and zero past its
        count; counts ``[B]`` int64; new state): :meth:`decode_step` with static shapes and no host read (what the
        exported graph and a CUDA graph capture run)."""
        if codes.shape[1] == 0:
            return self._no_frames(state)
        return self._padded(*self.decoder.step_padded(self.quantizer.decode(codes), state))

    @torch.no_grad()
    def decode_flush_padded(self, state: DecoderState) -> tuple[torch.Tensor, torch.Tensor, DecoderState]:
        """:meth:`decode_flush` with static shapes (``[B, lookahead G, D]``, counts ``[B]``, new state)."""
        if self.lookahead == 0:
            return self._no_frames(state)
        t = state.tokens
        return self._padded(*self.decoder.step_padded(t.new_zeros(t.shape[0], self.lookahead, t.shape[1]), state))

    def _padded(self, y: torch.Tensor, lengths: torch.Tensor, state: DecoderState):
        keep = torch.arange(y.shape[1], device=y.device).view(1, -1, 1) < lengths.view(-1, 1, 1)
        return self.to_frames(y) * keep.to(y.dtype), lengths, state

    def _no_frames(self, state: DecoderState):
        b, dev = state.tokens.shape[0], state.tokens.device
        return state.tokens.new_zeros(b, 0, self.dim), torch.zeros(b, dtype=torch.long, device=dev), state

    def decode_lengths(self, n: int, state: DecoderState) -> torch.Tensor:
        """``[B]`` int64: frames each row gets from :meth:`decode_step` of ``n`` tokens from ``state``."""
        return self.decoder.output_lengths(n, state)

    @torch.no_grad()
    def decode_flush(self, state: DecoderState) -> tuple[torch.Tensor, DecoderState]:
        """The held-back frames at the end of a stream (empty when ``lookahead`` is 0); each row's count is
        ``decode_lengths(lookahead, state)``."""
        y, state = self.decoder.flush(state)
        return self.to_frames(y), state


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = [
    "DecoderState",
    "EncoderState",
    "MotionDecoder",
    "MotionEncoder",
    "MotionTokenizer",
    "MotionTokenizerConfig",
    "TokenizerOutput",
    "count_parameters",
]
