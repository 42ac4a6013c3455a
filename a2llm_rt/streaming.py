"""One contract for stateful streaming modules (after kyutai-labs/moshi ``moshi/modules/streaming.py``).

Weights are shared; state is per session and explicit (sherpa-onnx's ``OnlineRecognizer`` / ``OnlineStream``), so many
avatars can step through one module and an exported graph can take the same state as inputs and outputs.

A streaming module:

- ``init_state(batch_size, device)`` returns a fresh typed state (a dataclass deriving :class:`StreamingState`);
- ``step(x, state)`` consumes the next chunk and returns ``(y, new_state)`` without touching ``state`` in place;
- ``forward(x)`` processes a whole sequence; ``step`` over any chunking of ``x`` concatenates to ``forward(x)``.

Tests of every streaming module check chunked == full and that no output depends on future input beyond the module's
declared ``lookahead`` (see ``tests/streaming_checks.py``).
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from typing import Generic, TypeVar

import torch
from torch import nn


@dataclasses.dataclass
class StreamingState:
    """Base of typed streaming states. Fields are tensors with the batch on dim 0, or plain ints."""

    def tensors(self) -> dict[str, torch.Tensor]:
        """The state's tensor fields by name (the order used for exported graph inputs/outputs)."""
        return {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if torch.is_tensor(getattr(self, f.name))
        }

    def reset(self, mask: torch.Tensor | None = None) -> None:
        """Zero the state of the batch entries where ``mask`` ([B] bool) is True, or of all entries (in place).

        Used when one session of a batch starts a new turn while the others go on.
        """
        for t in self.tensors().values():
            if mask is None:
                t.zero_()
            else:
                t[mask.to(t.device)] = 0

    def select(self, index: torch.Tensor | list[int]) -> StreamingState:
        """A new state holding only the given batch entries (for regrouping sessions into batches)."""
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
        kw = {}
        for f in dataclasses.fields(first):
            v = getattr(first, f.name)
            kw[f.name] = torch.cat([getattr(s, f.name) for s in states], 0) if torch.is_tensor(v) else v
        return type(first)(**kw)


StateT = TypeVar("StateT", bound=StreamingState)


class StreamingModule(nn.Module, ABC, Generic[StateT]):
    """A module that can run on a whole sequence (``forward``) or chunk by chunk (``step``).

    ``lookahead`` is the number of future input steps an output may depend on (0: strictly causal).
    """

    lookahead: int = 0

    @abstractmethod
    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> StateT:
        """A fresh state for ``batch_size`` independent streams."""

    @abstractmethod
    def step(self, x: torch.Tensor, state: StateT) -> tuple[torch.Tensor, StateT]:
        """Consume the next chunk ``x`` (batch first, time on dim 1) and return its output and the new state."""


@dataclasses.dataclass
class HostStreamingState(StreamingState):
    """Base of the states of host-side streaming modules (numpy arrays and plain values, one stream per state:
    idle life, emotion blending, the voice-activity detector). Such a state is never changed in place, so
    :meth:`reset` is refused: start over with the module's ``init_state``."""

    def reset(self, mask: torch.Tensor | None = None) -> None:
        raise TypeError(f"{type(self).__name__} is not reset in place; build a fresh one with the module's init_state")
