"""The one place where "tiny test models vs real weights" defaults are decided.

``backbone == "tiny"`` (seeded random test models on the CPU) gets short answers, a small cache row, one torch thread
and real-time pacing on the bridge, so that tests, demos and benches stay fast and look like a real-time model; real
weights get the engine's full limits and no pacing (the model's own speed is the pace). Every CLI and builder that
needs one of these defaults calls :func:`preset` or :func:`engine_config`; an explicit value always wins. Importing
this module is cheap (no torch): command lines read :func:`preset` for their help and defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from a2llm_rt.engine.engine import EngineConfig


@dataclass(frozen=True)
class Preset:
    """Defaults that depend on the kind of weights."""

    max_seconds: float
    """Answer audio per turn (s)."""
    min_seconds: float
    """Answer audio before the model may stop (s)."""
    max_len: int
    """Tokens per engine cache row."""
    threads: int | None
    """torch CPU threads (None: torch's default)."""
    pace: float
    """Bridge release pace (1 = real time, 0 = as generated)."""


TINY = Preset(max_seconds=3.0, min_seconds=2.0, max_len=2048, threads=1, pace=1.0)
REAL = Preset(max_seconds=30.0, min_seconds=0.0, max_len=8192, threads=None, pace=0.0)


def is_tiny(backbone: str | Path) -> bool:
    return str(backbone) == "tiny"


def preset(backbone: str | Path) -> Preset:
    """:data:`TINY` for the ``tiny`` backbone, :data:`REAL` for a weights folder."""
    return TINY if is_tiny(backbone) else REAL


def engine_config(
    backbone: str | Path,
    *,
    max_seconds: float | None = None,
    min_seconds: float | None = None,
    max_len: int | None = None,
    **fields: Any,
) -> EngineConfig:
    """An :class:`EngineConfig` for ``backbone``: ``None`` limits take the preset's value (``min_seconds`` never above
    ``max_seconds``), ``fields`` are any other :class:`EngineConfig` fields. ``ValueError`` on invalid values."""
    from a2llm_rt.engine.engine import EngineConfig  # torch and transformers: only where an engine is built

    p = preset(backbone)
    max_s = p.max_seconds if max_seconds is None else max_seconds
    min_s = min(p.min_seconds, max_s) if min_seconds is None else min_seconds
    return EngineConfig(max_seconds=max_s, min_seconds=min_s, max_len=p.max_len if max_len is None else max_len,
                        **fields)  # fmt: skip
