"""Static key/value cache with per-row lengths, for batched decoding of sessions of different lengths.

Design (why not transformers' ``StaticCache``): ``StaticCache`` writes every row at one shared cache position, so
batching sessions whose histories differ in length needs left padding and re-alignment whenever a session joins.
Here each batch row is one session slot with its own length:

- ``k``/``v``: ``[B, L, H_kv, S, D]`` preallocated (``S`` = ``max_len``); row ``b`` holds its tokens in slots
  ``0 .. lengths[b] - 1``, token ``j`` of the row at slot ``j`` and RoPE position ``j`` (no padding inside a row).
- ``lengths``: ``[B]`` int64; the next token of row ``b`` is written at slot ``lengths[b]`` with position
  ``lengths[b]`` and attends to slots ``<= lengths[b]`` of its own row only.

So a batched step gives each row exactly what it would get alone (same positions, same visible keys), sessions can
join (prefill into a free row), continue (a new turn extends the row) or leave (``reset(mask)``) independently, and
all shapes stay static for CUDA-graph capture. Slots past a row's length are never visible, but a masked attention
weight of 0 times a stale NaN value is still NaN: so every slot that leaves a row (``reset``, ``truncate``) is zeroed,
and a value written by one session (or by a failed turn) can never reach the next one. The cache is updated in
place (the one exception to ``StreamingState``'s copy-on-step rule, as a static cache must be for graph capture);
``select``/``cat`` come from :class:`StreamingState`.
"""

from __future__ import annotations

import dataclasses

import torch

from a2llm_rt.streaming import StreamingState


@dataclasses.dataclass
class KVCache(StreamingState):
    """Per-row static KV cache of a decoder: see the module docstring."""

    k: torch.Tensor
    """``[B, L, H_kv, S, D]`` keys (RoPE applied)."""
    v: torch.Tensor
    """``[B, L, H_kv, S, D]`` values."""
    lengths: torch.Tensor
    """``[B]`` int64 tokens held per row (= next write slot and next position)."""

    @classmethod
    def allocate(
        cls,
        batch_size: int,
        num_layers: int,
        num_kv_heads: int,
        head_dim: int,
        max_len: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> KVCache:
        shape = (batch_size, num_layers, num_kv_heads, max_len, head_dim)
        return cls(
            k=torch.zeros(shape, dtype=dtype, device=device),
            v=torch.zeros(shape, dtype=dtype, device=device),
            lengths=torch.zeros(batch_size, dtype=torch.long, device=device),
        )

    @property
    def batch_size(self) -> int:
        return self.k.shape[0]

    @property
    def max_len(self) -> int:
        return self.k.shape[3]

    def reset(self, mask: torch.Tensor | None = None) -> None:
        """Empty the rows where ``mask`` ([B] bool) is True, or all rows: lengths to 0 and the rows' keys and values
        zeroed (a stale NaN would otherwise leak through the zero attention weights of the masked slots)."""
        if mask is None:
            self.lengths.zero_()
            self.k.zero_()
            self.v.zero_()
            return
        mask = mask.to(self.lengths.device)
        self.lengths.masked_fill_(mask, 0)
        rows = mask.nonzero().flatten()
        if rows.numel():
            self.k.index_fill_(0, rows, 0)
            self.v.index_fill_(0, rows, 0)

    def truncate(self, row: int, length: int) -> None:
        """Forget the tokens of ``row`` from ``length`` on (e.g. to drop a cancelled turn's tail); the freed slots are
        zeroed."""
        if not 0 <= length <= int(self.lengths[row]):
            raise ValueError(f"cannot truncate row {row} of length {int(self.lengths[row])} to {length}")
        self.lengths[row] = length
        self.k[row, :, :, length:] = 0
        self.v[row, :, :, length:] = 0

    def layer(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Views ``[B, H_kv, S, D]`` of layer ``i``'s keys and values."""
        return self.k[:, i], self.v[:, i]
