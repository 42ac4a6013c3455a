"""One contract for stateful streaming modules (after kyutai-labs/moshi ``moshi/modules/streaming.py``).

Weights are shared; state is per session and explicit (sherpa-onnx's ``OnlineRecognizer`` / ``OnlineStream``), so many
avatars can step through one module and an exported graph can take the same state as inputs and outputs.

A streaming module:

- ``init_state(batch_size, device)`` returns a fresh typed state (a dataclass deriving :class:`StreamingState`);
- ``step(x, state)`` consumes the next chunk and returns ``(y, new_state)`` without touching ``state`` in place;
- ``flush(state)`` returns ``(y, new_state)``: the outputs still held back at the end of a stream (a module with
  ``lookahead`` > 0 holds back the outputs whose future input has not come; with ``lookahead`` 0 it is empty);
- ``forward(x)`` processes a whole sequence; ``step`` over any chunking of ``x``, then ``flush``, concatenates to
  ``forward(x)``.

Per session means per row: every piece of a state that differs between sessions is a tensor with the batch on dim 0
(counters too, as ``[B]`` int64), so one row can be reset (:meth:`StreamingState.reset`) while the others go on, and
rows at different points of their streams step in one batch. A module with look-ahead then gives rows different
numbers of outputs from one ``step``: ``y`` holds each row's outputs left-aligned, zero-padded to the longest row, and
``output_lengths(n, state)`` (``[B]`` int64, from the state *before* the step) says how many each row got;
``flush_lengths(state)`` does the same for ``flush``. Exported graphs take and return the same state tensors.

Host-side modules (idle life, emotion blending, the voice-activity detector) keep one stream per state, in numpy
arrays and plain values; they follow the same contract (typed state, fresh from ``init_state``, never changed in place)
and, holding no batch of tensors, refuse the batch operations (:meth:`StreamingState.reset`, ``select``, ``cat``).

Tests of every streaming module run the shared checks of ``tests/streaming_checks.py``: chunked == whole, no output
depends on future input beyond the declared ``lookahead``, and resetting one row of a batch gives that row a fresh
stream's outputs while the other rows go on undisturbed.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from typing import Generic, TypeVar

import torch
from torch import nn


@dataclasses.dataclass
class StreamingState:
    """Base of typed streaming states.

    Batched states: fields are tensors with the batch on dim 0 (a fresh row is all zeros), plus plain values shared
    by the batch. Host-side states (no tensor field) hold one stream and refuse the batch operations.
    """

    def tensors(self) -> dict[str, torch.Tensor]:
        """The state's tensor fields by name (the order used for exported graph inputs/outputs)."""
        return {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if torch.is_tensor(getattr(self, f.name))
        }

    def _batched(self, what: str) -> dict[str, torch.Tensor]:
        t = self.tensors()
        if not t:
            raise TypeError(f"{type(self).__name__} holds one host-side stream, not a batch of tensors: {what}")
        return t

    def reset(self, mask: torch.Tensor | None = None) -> None:
        """Return the batch entries where ``mask`` ([B] bool) is True, or all entries, to a fresh stream (zeros, in
        place). Used when one session of a batch starts a new turn while the others go on."""
        for t in self._batched("build a fresh one with the module's init_state").values():
            if mask is None:
                t.zero_()
            else:
                t[mask.to(t.device)] = 0

    def select(self, index: torch.Tensor | list[int]) -> StreamingState:
        """A new state holding only the given batch entries (for regrouping sessions into batches)."""
        self._batched("there are no batch entries to select")
        idx = torch.as_tensor(index, dtype=torch.long)
        kw = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            kw[f.name] = v.index_select(0, idx.to(v.device)) if torch.is_tensor(v) else v
        return type(self)(**kw)

    @classmethod
    def cat(cls, states: list[StreamingState]) -> StreamingState:
        """Stack the batch entries of several states of the same type (inverse of :meth:`select`)."""
        first = states[0]
        first._batched("there are no batch entries to stack")
        kw = {}
        for f in dataclasses.fields(first):
            v = getattr(first, f.name)
            kw[f.name] = torch.cat([getattr(s, f.name) for s in states], 0) if torch.is_tensor(v) else v
        return type(first)(**kw)

    @property
    def batch_size(self) -> int:
        """Rows of the batch (dim 0 of the tensor fields)."""
        return int(next(iter(self._batched("it has no batch size").values())).shape[0])


StateT = TypeVar("StateT", bound=StreamingState)


class StreamingModule(nn.Module, ABC, Generic[StateT]):
    """A module that can run on a whole sequence (``forward``) or chunk by chunk (``step``, then ``flush``).

    ``lookahead`` is the number of future input steps an output may depend on (0: strictly causal).
    """

    lookahead: int = 0

    @abstractmethod
    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> StateT:
        """A fresh state for ``batch_size`` independent streams."""

    @abstractmethod
    def step(self, x: torch.Tensor, state: StateT) -> tuple[torch.Tensor, StateT]:
        """Consume the next chunk ``x`` (batch first, time on dim 1) and return its output and the new state."""

    @abstractmethod
    def flush(self, state: StateT) -> tuple[torch.Tensor, StateT]:
        """The outputs still held back at the end of the streams (batch first; empty when nothing is held)."""

    @abstractmethod
    def output_lengths(self, n: int, state: StateT) -> torch.Tensor:
        """``[B]`` int64: outputs each row gets from a ``step`` of ``n`` input steps from ``state``."""

    @abstractmethod
    def flush_lengths(self, state: StateT) -> torch.Tensor:
        """``[B]`` int64: outputs each row gets from :meth:`flush` of ``state``."""
