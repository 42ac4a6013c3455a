"""Token-as-query gated fusion (after Ex-Omni's TQGF, arXiv 2602.07106), the connector's ``fusion="gated"`` option.

The window's query tokens ask the memory (the previous window's motion-token embeddings) through a pre-norm
cross-attention, and a sigmoid gate computed from the (normalised) query decides, per channel, how much of the
answer is injected into the residual stream ("controlled semantic injection"); then a x4 GELU feed-forward::

    [x = x + SelfAttn(LN(x))]                       # optional, as in the cross-attention layer
    h = LN_q(x);  a = CrossAttn(h, LN_m(mem))
    x = x + sigmoid(W_g h + b_g) * a                # gate from the query
    x = x + FFN(LN(x))                              # Linear(d, 4d) -> GELU -> Linear(4d, d)

The gate bias starts at 0 (gate 0.5). Same call signature as
:class:`a2llm_rt.models.connector.CrossAttentionLayer`, so :class:`~a2llm_rt.models.connector.MotionConnector`
swaps one for the other through ``ConnectorConfig.fusion``.
"""

from __future__ import annotations

import torch
from torch import nn

from a2llm_rt.models.connector import CrossAttentionLayer


class GatedFusionLayer(CrossAttentionLayer):
    """One token-as-query gated fusion layer: queries [B, Tq, d] x memory [B, Tk, d] -> [B, Tq, d]."""

    def __init__(self, d_model: int, n_heads: int, dropout: float, ffn_mult: int = 4, self_attention: bool = True):
        super().__init__(d_model, n_heads, dropout, ffn_mult, self_attention)
        self.gate = nn.Linear(d_model, d_model)
        nn.init.zeros_(self.gate.bias)

    def fuse(self, h: torch.Tensor, mem: torch.Tensor) -> torch.Tensor:
        """The cross-attention answer scaled per channel by a sigmoid gate computed from the query ``h``."""
        return torch.sigmoid(self.gate(h)) * self.cross_attn(h, mem)
