"""Former home of the bridge's sources, kept so that imports from before the split keep working.

The sources now live one per module: :mod:`plugin_bridge.turn_source` (the ``TurnSource`` interface, its errors and
the time base), :mod:`plugin_bridge.engine_source` (``EngineSource``), :mod:`plugin_bridge.scripted_source`
(``ScriptedSource``) and :mod:`plugin_bridge.ray_source` (``RaySource``). The events are the engine's
(:mod:`a2llm_rt.engine.events`). Import from those modules; this one only re-exports them.
"""

from __future__ import annotations

from plugin_bridge.engine_source import MAX_FACE_LEAD_S, EngineSource, StackOptions, clean_text
from plugin_bridge.scripted_source import ScriptedSource
from plugin_bridge.turn_source import (
    FPS,
    INPUT_SAMPLE_RATE,
    OUTPUT_SAMPLE_RATE,
    SAMPLES_PER_FRAME,
    AudioChunk,
    CharacterLimits,
    Event,
    FaceFrames,
    SourceBusyError,
    TextDelta,
    TurnEnd,
    TurnError,
    TurnSource,
    convert_face,
)

__all__ = [
    "FPS", "INPUT_SAMPLE_RATE", "MAX_FACE_LEAD_S", "OUTPUT_SAMPLE_RATE", "SAMPLES_PER_FRAME", "AudioChunk",
    "CharacterLimits", "EngineSource", "Event", "FaceFrames", "ScriptedSource", "SourceBusyError", "StackOptions",
    "TextDelta", "TurnEnd", "TurnError", "TurnSource", "clean_text", "convert_face",
]  # fmt: skip
