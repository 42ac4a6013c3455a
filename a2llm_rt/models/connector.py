"""Motion Connector: LLM hidden states at audio positions -> RVQ motion-token logits (the A2-LLM paper's design).

Data flow for one window of ``W`` audio positions (``W`` a multiple of the temporal group ``G``)::

    hidden [B, W, d_llm] --Conv1d(k=G, s=G)--GELU--Linear--> queries [B, W/G, d] (+ learned query positions)
    prev window's motion codes [B, W/G, N_q] --sum of N_q codebook embeddings--> memory [B, W/G, d] (+ positions)
        (first window of a turn: a learned start memory [W/G, d])
    n_layers x layer(queries, memory)          # layer = CrossAttentionLayer, or GatedFusionLayer (fusion="gated")
    final LayerNorm -> N_q level heads (one Linear each, stacked) -> logits [B, W/G, N_q, K]

Design choices (stated because the paper leaves them open):

- Self-attention: each layer first self-attends among the ``W/G`` queries of the *same* window, bidirectionally (all
  ``W`` hidden states of a window exist when it is processed), then cross-attends to the previous window's tokens.
  ``self_attention=False`` drops it (pure cross-attention stack).
- Level heads are independent given the shared representation: all ``N_q`` levels are predicted in parallel, as in
  the paper; no head is conditioned on another level's code.
- Pre-norm everywhere, dropout ``dropout`` on attention weights and residual branches, a final LayerNorm.
- A partial last window (``T % W != 0`` but ``T % G == 0``, e.g. the end of a turn) is supported: its queries use the
  first positions, and :meth:`MotionConnector.forward` masks the padding, so it equals :meth:`MotionConnector.step`
  on the short window. Batch padding (samples of different lengths in one training batch) is masked the same way
  (``token_mask``), so a real token's logits do not depend on what it was batched with.

Model and driver apart: :meth:`MotionConnector.forward` trains on whole sequences with teacher forcing (all windows
of all sequences run as one batch); :meth:`MotionConnector.step` is the engine's call for one window; sampling lives in
:func:`a2llm_rt.engine.sampling.sample_codes`, the paper's loss in :func:`connector_loss`.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from a2llm_rt.config import Config

FUSIONS = ("cross_attention", "gated")


@dataclasses.dataclass
class ConnectorConfig(Config):
    """Hyper-parameters of :class:`MotionConnector` (defaults: the A2-LLM paper, Step-Audio-2-mini backbone)."""

    d_llm: int = 3584
    """Width of the backbone hidden states fed in (Step-Audio-2-mini: 3584)."""
    d_model: int = 768
    """Connector width d."""
    n_layers: int = 6
    """Number of transformer layers."""
    n_heads: int = 12
    """Attention heads (d_model must be divisible by it)."""
    dropout: float = 0.1
    """Dropout on attention weights and residual branches (training only)."""
    ffn_mult: int = 4
    """Feed-forward hidden width = ffn_mult * d_model (GELU)."""
    group: int = 5
    """Temporal group G: audio positions (25 Hz frames) per motion token (5 Hz)."""
    window: int = 10
    """Window W of audio positions processed per step; a multiple of ``group``."""
    n_q: int = 6
    """RVQ levels N_q (one prediction head each)."""
    codebook_size: int = 256
    """Codes per RVQ level K."""
    fusion: str = "cross_attention"
    """Layer type: ``"cross_attention"`` (the paper) or ``"gated"`` (Ex-Omni's token-as-query gated fusion)."""
    self_attention: bool = True
    """Whether each layer self-attends among the window's queries before cross-attending."""

    def validate(self) -> None:
        for name in ("d_llm", "d_model", "n_layers", "n_heads", "ffn_mult", "group", "window", "n_q", "codebook_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.window % self.group:
            raise ValueError(f"window ({self.window}) must be a multiple of group ({self.group})")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {self.fusion!r}")

    @property
    def tokens_per_window(self) -> int:
        """W / G: motion tokens (queries) per window."""
        return self.window // self.group


class Attention(nn.Module):
    """Multi-head attention (q/k/v/o projections + ``scaled_dot_product_attention``), export friendly."""

    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.o_proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, mem: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` [B, Tq, d] attends to ``mem`` [B, Tk, d]; ``key_mask`` [B, Tk] bool, True = attend. -> [B, Tq, d]."""
        b, tq, d = x.shape
        tk = mem.shape[1]
        h = self.n_heads
        q = self.q_proj(x).view(b, tq, h, d // h).transpose(1, 2)
        k = self.k_proj(mem).view(b, tk, h, d // h).transpose(1, 2)
        v = self.v_proj(mem).view(b, tk, h, d // h).transpose(1, 2)
        mask = None if key_mask is None else key_mask[:, None, None, :]
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        return self.o_proj(y.transpose(1, 2).reshape(b, tq, d))


class FeedForward(nn.Module):
    """Linear(d, mult*d) -> GELU -> dropout -> Linear(mult*d, d)."""

    def __init__(self, d_model: int, mult: int, dropout: float):
        super().__init__()
        self.fc1 = nn.Linear(d_model, mult * d_model)
        self.fc2 = nn.Linear(mult * d_model, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(F.gelu(self.fc1(x))))


class CrossAttentionLayer(nn.Module):
    """Pre-norm layer: [self-attention among queries] -> cross-attention to memory -> feed-forward (residual each)."""

    def __init__(self, d_model: int, n_heads: int, dropout: float, ffn_mult: int = 4, self_attention: bool = True):
        super().__init__()
        self.self_attn = Attention(d_model, n_heads, dropout) if self_attention else None
        self.norm_sa = nn.LayerNorm(d_model) if self_attention else None
        self.norm_q = nn.LayerNorm(d_model)
        self.norm_mem = nn.LayerNorm(d_model)
        self.cross_attn = Attention(d_model, n_heads, dropout)
        self.norm_ff = nn.LayerNorm(d_model)
        self.ff = FeedForward(d_model, ffn_mult, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mem: torch.Tensor, query_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` [B, Tq, d] queries, ``mem`` [B, Tk, d], ``query_mask`` [B, Tq] bool (False = padding) -> [B, Tq, d]."""
        if self.self_attn is not None:
            h = self.norm_sa(x)
            x = x + self.drop(self.self_attn(h, h, query_mask))
        x = x + self.drop(self.fuse(self.norm_q(x), self.norm_mem(mem)))
        return x + self.drop(self.ff(self.norm_ff(x)))

    def fuse(self, h: torch.Tensor, mem: torch.Tensor) -> torch.Tensor:
        """What the normalised queries ``h`` [B, Tq, d] take from the normalised memory [B, Tk, d]."""
        return self.cross_attn(h, mem)


class MotionCodeEmbedding(nn.Module):
    """Embeds RVQ codes as the sum of the N_q per-level codebook embeddings: [..., N_q] ints -> [..., d]."""

    def __init__(self, n_q: int, codebook_size: int, d_model: int):
        super().__init__()
        self.tables = nn.ModuleList(nn.Embedding(codebook_size, d_model) for _ in range(n_q))

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        out = self.tables[0](codes[..., 0])
        for level in range(1, len(self.tables)):
            out = out + self.tables[level](codes[..., level])
        return out


class MotionConnector(nn.Module):
    """Window-wise motion-token predictor over backbone hidden states. See the module docstring for the design."""

    def __init__(self, cfg: ConnectorConfig):
        super().__init__()
        self.cfg = cfg
        d, n = cfg.d_model, cfg.tokens_per_window
        self.down = nn.Conv1d(cfg.d_llm, d, kernel_size=cfg.group, stride=cfg.group)
        self.proj = nn.Linear(d, d)
        self.query_pos = nn.Parameter(torch.randn(n, d) * 0.02)
        self.mem_pos = nn.Parameter(torch.randn(n, d) * 0.02)
        self.start = nn.Parameter(torch.randn(n, d) * 0.02)
        self.code_embed = MotionCodeEmbedding(cfg.n_q, cfg.codebook_size, d)
        if cfg.fusion == "gated":
            from a2llm_rt.models.gated_fusion import GatedFusionLayer

            layers = [
                GatedFusionLayer(d, cfg.n_heads, cfg.dropout, cfg.ffn_mult, cfg.self_attention)
                for _ in range(cfg.n_layers)
            ]
        else:
            layers = [
                CrossAttentionLayer(d, cfg.n_heads, cfg.dropout, cfg.ffn_mult, cfg.self_attention)
                for _ in range(cfg.n_layers)
            ]
        self.layers = nn.ModuleList(layers)
        self.norm = nn.LayerNorm(d)
        self.heads = nn.Linear(d, cfg.n_q * cfg.codebook_size)  # the N_q level heads, stacked
        self.drop = nn.Dropout(cfg.dropout)

    # -- building blocks -------------------------------------------------------------------------------------------
    def queries(self, hidden: torch.Tensor) -> torch.Tensor:
        """Downsample hidden states: [B, T, d_llm] (T % G == 0) -> [B, T/G, d] (no positions added)."""
        x = self.down(hidden.transpose(1, 2)).transpose(1, 2)
        return self.proj(F.gelu(x))

    def embed_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Motion codes [..., N_q] int64 -> embeddings [..., d] (sum over levels)."""
        return self.code_embed(codes)

    def _run(self, q: torch.Tensor, mem: torch.Tensor, query_mask: torch.Tensor | None) -> torch.Tensor:
        """q [N, n, d] (positions added here), mem [N, m, d] (positions included) -> logits [N, n, N_q, K]."""
        n = q.shape[1]
        x = self.drop(q + self.query_pos[:n])
        for layer in self.layers:
            x = layer(x, mem, query_mask)
        logits = self.heads(self.norm(x))
        return logits.view(*x.shape[:2], self.cfg.n_q, self.cfg.codebook_size)

    def _check_hidden(self, hidden: torch.Tensor) -> None:
        if hidden.dim() != 3 or hidden.shape[-1] != self.cfg.d_llm:
            raise ValueError(f"hidden must be [B, T, {self.cfg.d_llm}], got {tuple(hidden.shape)}")
        if hidden.shape[1] % self.cfg.group or hidden.shape[1] == 0:
            raise ValueError(f"hidden length {hidden.shape[1]} must be a positive multiple of G={self.cfg.group}")

    # -- training ---------------------------------------------------------------------------------------------------
    def forward(
        self, hidden: torch.Tensor, motion_codes: torch.Tensor, token_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Teacher-forced training pass over whole sequences.

        hidden: [B, T, d_llm] hidden states at audio positions, T a multiple of G (a partial last window is allowed).
        motion_codes: [B, T/G, N_q] ground-truth RVQ codes; window w's memory is window w-1's codes
            (the learned start memory for w = 0).
        token_mask: optional [B, T/G] bool, True for a sample's real motion tokens, False for batch padding; each row
            a prefix (padding only at the end). Padded queries are masked out of the self-attention, so every real
            token's logits equal those of its sample run alone (a padded sample's last real window behaves as the
            engine's short last window, :meth:`step`). None: every token is real.
        Returns logits [B, T/G, N_q, K] (rows at padded tokens are meaningless). All windows run as one batch of
        B * ceil(T/W) windows.
        """
        cfg = self.cfg
        self._check_hidden(hidden)
        b, t, _ = hidden.shape
        n = cfg.tokens_per_window
        tq = t // cfg.group
        if motion_codes.shape != (b, tq, cfg.n_q):
            raise ValueError(f"motion_codes must be [{b}, {tq}, {cfg.n_q}], got {tuple(motion_codes.shape)}")
        n_win = -(-tq // n)
        pad = n_win * n - tq
        q = self.queries(hidden)  # [B, T/G, d]
        emb = self.embed_codes(motion_codes)  # [B, T/G, d]
        if pad:
            q = F.pad(q, (0, 0, 0, pad))
            emb = F.pad(emb, (0, 0, 0, pad))
        q = q.reshape(b * n_win, n, -1)
        prev = emb.reshape(b, n_win, n, -1)[:, :-1]  # window w-1 for w >= 1
        start = self.start.expand(b, 1, n, -1)
        mem = (torch.cat([start, prev], dim=1) + self.mem_pos).reshape(b * n_win, n, -1)
        # With prefix masks, a window holding a real token follows a window of real tokens only, so the memory never
        # needs a mask; only the queries do (the sequence's padding to whole windows, and the batch padding).
        valid = torch.arange(n_win * n, device=hidden.device) < tq  # [n_win * n]
        if token_mask is not None:
            valid = valid[None] & F.pad(_check_token_mask(token_mask, b, tq).to(hidden.device), (0, pad))
        else:
            valid = valid[None].expand(b, -1)
        query_mask = None
        if not bool(valid.all()):
            query_mask = valid.reshape(b * n_win, n)
            # a window with no real query at all: let it attend everywhere (its outputs are ignored) rather than
            # give scaled_dot_product_attention a row with no key (NaN, which would reach the gradients)
            query_mask = query_mask | ~query_mask.any(-1, keepdim=True)
        logits = self._run(q, mem, query_mask)  # [B*n_win, n, N_q, K]
        return logits.reshape(b, n_win * n, cfg.n_q, cfg.codebook_size)[:, :tq]

    # -- engine ----------------------------------------------------------------------------------------------------
    def step(
        self,
        window_hidden: torch.Tensor,
        prev_codes: torch.Tensor | None = None,
        first: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits for one window (the engine's call; stateless: the caller keeps the previous window's codes).

        window_hidden: [B, W', d_llm], W' a multiple of G and at most W (W' < W only for a turn's last window).
        prev_codes: [B, m, N_q] int64 codes of the previous window (m = W/G normally), or None when every entry
            starts a turn (first window: the learned start memory).
        first: optional [B] bool: entries that start a turn (their ``prev_codes`` rows are ignored), so sessions at
            different points of their turns can share one batch.
        Returns logits [B, W'/G, N_q, K].
        """
        cfg = self.cfg
        self._check_hidden(window_hidden)
        b = window_hidden.shape[0]
        n = cfg.tokens_per_window
        if window_hidden.shape[1] > cfg.window:
            raise ValueError(f"window_hidden has {window_hidden.shape[1]} positions, more than W={cfg.window}")
        q = self.queries(window_hidden)
        start = self.start.expand(b, n, -1)
        if prev_codes is None:
            mem = start
        else:
            if prev_codes.dim() != 3 or prev_codes.shape[0] != b or prev_codes.shape[2] != cfg.n_q:
                raise ValueError(f"prev_codes must be [{b}, <= {n}, {cfg.n_q}], got {tuple(prev_codes.shape)}")
            if not 0 < prev_codes.shape[1] <= n:
                raise ValueError(f"prev_codes must hold 1..{n} tokens, got {prev_codes.shape[1]}")
            mem = self.embed_codes(prev_codes)
            if first is not None:
                if mem.shape[1] != n:
                    raise ValueError("a batch mixing first windows with a short previous window is not supported")
                mem = torch.where(first.view(b, 1, 1).to(mem.device), start, mem)
        mem = mem + self.mem_pos[: mem.shape[1]]
        return self._run(q, mem, None)


def _check_token_mask(token_mask: torch.Tensor, b: int, tq: int) -> torch.Tensor:
    """``token_mask`` as a [B, T/G] bool tensor whose rows are prefixes, or ValueError."""
    if token_mask.shape != (b, tq):
        raise ValueError(f"token_mask must be [{b}, {tq}], got {tuple(token_mask.shape)}")
    m = token_mask.to(torch.bool)
    if bool((m[:, 1:] & ~m[:, :-1]).any()):
        raise ValueError("token_mask rows must be prefixes (padding only at the end of a sample)")
    return m


def connector_loss(logits: torch.Tensor, codes: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """The paper's L_motion: the sum over RVQ levels of the mean token cross-entropy.

    logits: [B, n, N_q, K]; codes: [B, n, N_q] int64 (``ignore_index`` marks padding). Returns a scalar.
    """
    n_q, k = logits.shape[-2:]
    per_level = F.cross_entropy(
        logits.reshape(-1, n_q, k).transpose(1, 2),  # [N, K, N_q]
        codes.reshape(-1, n_q),
        ignore_index=ignore_index,
        reduction="none",
    )  # [N, N_q]
    valid = (codes.reshape(-1, n_q) != ignore_index).to(per_level.dtype)
    return ((per_level * valid).sum(0) / valid.sum(0).clamp_min(1.0)).sum()
