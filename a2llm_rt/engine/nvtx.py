"""NVTX ranges for Nsight Systems: ``with nvtx_range("step"): ...``.

Uses the ``nvtx`` package when installed (domain ``a2llm``), else ``torch.cuda.nvtx`` when CUDA is available, else
a no-op. Ranges wrap the engine's stages: ``prefill``, ``step``, ``sample``, ``connector``, ``decoder``,
``vocoder``, ``face``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

try:  # pragma: no cover - depends on the environment
    import nvtx as _nvtx
except ImportError:  # the CPU machines: no-ops
    _nvtx = None

DOMAIN = "a2llm"


def backend() -> str:
    """``nvtx``, ``torch`` or ``none``: what :func:`nvtx_range` uses."""
    if _nvtx is not None:
        return "nvtx"
    return "torch" if torch.cuda.is_available() else "none"


@contextlib.contextmanager
def nvtx_range(name: str) -> Iterator[None]:
    if _nvtx is not None:
        with _nvtx.annotate(name, domain=DOMAIN):
            yield
    elif torch.cuda.is_available():
        torch.cuda.nvtx.range_push(name)
        try:
            yield
        finally:
            torch.cuda.nvtx.range_pop()
    else:
        yield
