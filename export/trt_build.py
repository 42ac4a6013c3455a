"""TensorRT engines from the exported ONNX graphs (TensorRT 10+ Python API).

The runner that executes a built engine (torch buffers, ``execute_async_v3``) is runtime code:
:class:`a2llm_rt.engine.trt_runner.TrtRunner`.

NOT RUN on the project's build machines: TensorRT cannot be installed there (no GPU). The code follows the TensorRT 10
API (``create_network(0)`` = explicit batch, ``OnnxParser``, one optimization profile per graph covering batch
1..max_batch and, for the decoder, 1..W/G tokens per call, ``build_serialized_network``); its tests are marked ``gpu``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from a2llm_rt.errors import InputError
from a2llm_rt.utils.fileio import atomic_write


def tensorrt_available() -> tuple[bool, str]:
    """(usable, reason): TensorRT importable and a CUDA GPU present."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False, "TensorRT is not installed (pip install tensorrt>=10 on a machine with an NVIDIA GPU)"
    if not torch.cuda.is_available():
        return False, "no CUDA GPU is visible to torch"
    return True, "ok"


def _trt():
    import tensorrt as trt

    return trt


def build_engine(
    onnx_path: str | Path,
    out_path: str | Path,
    profiles: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]],
    precision: str = "fp32",
    workspace_gb: float = 2.0,
) -> dict[str, Any]:
    """Parse ``onnx_path``, build a serialized engine and write it to ``out_path``.

    profiles: input name -> (min, opt, max) shapes of one optimization profile (every dynamic input must be listed).
    precision: ``fp32``; ``fp16``/``bf16`` graphs already carry their casts, and the builder flag of the same name is
    set so TensorRT may pick reduced-precision kernels. Returns facts for the manifest.
    """
    trt = _trt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: networks are always explicit-batch
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise InputError(f"TensorRT cannot parse the ONNX graph: {errors}", onnx_path)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "bf16":
        config.set_flag(trt.BuilderFlag.BF16)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in profiles.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    blob = builder.build_serialized_network(network, config)
    if blob is None:
        raise InputError("TensorRT failed to build an engine (see the TensorRT log above)", onnx_path)
    with atomic_write(out_path, "wb") as f:
        f.write(bytes(blob))
    return {"tensorrt": trt.__version__, "profiles": {k: [list(s) for s in v] for k, v in profiles.items()}}


def connector_profiles(window: int, d_llm: int, n_q: int, tokens: int, max_batch: int) -> dict:
    def shapes(*rest: int):
        return ((1, *rest), (max_batch, *rest), (max_batch, *rest))

    return {"hidden": shapes(window, d_llm), "prev_codes": shapes(tokens, n_q), "has_prev": shapes(),
            "n_valid": shapes()}  # fmt: skip


def decoder_profiles(n_q: int, state_shapes: dict[str, tuple[int, ...]], tokens: int, max_batch: int) -> dict:
    prof = {
        "codes": ((1, 1, n_q), (max_batch, tokens, n_q), (max_batch, tokens, n_q)),
        "code_mask": ((1, 1), (max_batch, tokens), (max_batch, tokens)),
    }
    for k, s in state_shapes.items():
        prof[f"state_{k}"] = ((1, *s), (max_batch, *s), (max_batch, *s))
    return prof
