"""Which runtime runs the token2wav's heavy graphs: torch, onnxruntime or TensorRT.

``use_backend(model, folder, "auto")`` picks TensorRT when the speech engines folder lists TensorRT engines, TensorRT
imports and the model is on a CUDA device; otherwise onnxruntime on the folder's ONNX graphs; torch when there is no
folder. An explicit choice is honoured or refused with a clear :class:`InputError` (never silently downgraded).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from a2llm_rt.errors import InputError
from a2llm_rt.speech.token2wav import Token2Wav

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt")


def choose_backend(folder: str | Path | None, requested: str = "auto",
                   device: torch.device | str = "cpu") -> tuple[str, str]:
    """(backend, why) for a speech engines ``folder`` (None: no exported graphs)."""
    from a2llm_rt.speech.onnx_runtime import read_manifest
    from a2llm_rt.speech.trt_runtime import engines_listed

    if requested not in BACKENDS:
        raise InputError(f"unknown speech backend {requested!r} (one of {', '.join(BACKENDS)})")
    if requested == "torch":
        return "torch", "asked"
    if folder is None:
        if requested != "auto":
            raise InputError(f"the {requested} speech backend needs a speech engines folder "
                             "(python -m export.speech_export)")
        return "torch", "no speech engines folder"
    m = read_manifest(folder)
    if requested != "auto":
        return requested, "asked"
    if not engines_listed(m):
        return "onnxruntime", "the folder has no TensorRT engines"
    if torch.device(device).type != "cuda":
        return "onnxruntime", f"TensorRT needs a CUDA device, the model is on {device}"
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "onnxruntime", "TensorRT is not installed"
    return "tensorrt", "engines listed, TensorRT and a CUDA device present"


def use_backend(model: Token2Wav, folder: str | Path | None, backend: str = "auto",
                threads: int | None = None) -> str:
    """Route ``model`` through the chosen runtime (in place); returns its name."""
    name, why = choose_backend(folder, backend, model.speech_window.device)
    if name == "tensorrt":
        from a2llm_rt.speech.trt_runtime import use_tensorrt

        use_tensorrt(model, folder)  # type: ignore[arg-type]
    elif name == "onnxruntime":
        from a2llm_rt.speech.onnx_runtime import use_onnx

        use_onnx(model, folder, threads)  # type: ignore[arg-type]
    log.info("token2wav backend: %s (%s)", name, why)
    return name
