"""NVTX ranges for Nsight Systems: ``with nvtx_range("step"): ...``.

Uses the ``nvtx`` package when installed (domain ``a2llm``), else ``torch.cuda.nvtx`` when CUDA is available, else
a no-op. Ranges wrap the engine's stages: ``prefill``, ``step``, ``sample``, ``connector``, ``decoder``,
``vocoder``, ``face``. While the torch profiler records, each range is also a ``record_function`` of the same name,
so a Chrome trace from ``torch.profiler`` shows the stages where Nsight Systems cannot run (``tools/gpu_check.sh``).
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


STAGES = ("prefill", "step", "sample", "connector", "decoder", "vocoder", "face")


def _profiling() -> bool:
    enabled = getattr(torch.autograd.profiler, "_is_profiler_enabled", False)
    return bool(enabled)


@contextlib.contextmanager
def nvtx_range(name: str) -> Iterator[None]:
    if _profiling():
        with torch.profiler.record_function(name), _nvtx_only(name):
            yield
    else:
        with _nvtx_only(name):
            yield


@contextlib.contextmanager
def _nvtx_only(name: str) -> Iterator[None]:
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
