"""The session engine: ``Engine`` (shared weights, batched decoding), ``Session``, events, builders.

Names are imported lazily so that ``a2llm_rt.engine.vocoder`` and friends load without the whole stack.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Engine": "a2llm_rt.engine.engine",
    "EngineConfig": "a2llm_rt.engine.engine",
    "EngineBusyError": "a2llm_rt.engine.engine",
    "Session": "a2llm_rt.engine.session",
    "SamplingConfig": "a2llm_rt.engine.sampling",
    "SamplingParams": "a2llm_rt.engine.sampling",
    "TextDelta": "a2llm_rt.engine.events",
    "AudioChunk": "a2llm_rt.engine.events",
    "FaceFrames": "a2llm_rt.engine.events",
    "TurnEnd": "a2llm_rt.engine.events",
    "Error": "a2llm_rt.engine.events",
    "build_tiny_stack": "a2llm_rt.engine.builders",
    "load_stack": "a2llm_rt.engine.builders",
    "tiny_motion_models": "a2llm_rt.engine.builders",
    "MotionBackend": "a2llm_rt.engine.motion_backend",
    "MotionBackendConfig": "a2llm_rt.engine.motion_backend",
    "DecodedFrames": "a2llm_rt.engine.motion_backend",
    "load_motion_backend": "a2llm_rt.engine.motion_backend",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'a2llm_rt.engine' has no attribute {name!r}")
