"""TensorRT engines from the exported ONNX graphs (TensorRT 10+ Python API), and a torch-buffer runner.

NOT RUN on the project's build machines: TensorRT cannot be installed there (no GPU). The code follows the TensorRT 10
API (``create_network(0)`` = explicit batch, ``OnnxParser``, one optimization profile per graph covering batch
1..max_batch and, for the decoder, 1..W/G tokens per call, ``build_serialized_network``, and at run time
``set_input_shape`` / ``set_tensor_address`` / ``execute_async_v3`` on ``torch.cuda.current_stream()``); its tests
are marked ``gpu``.
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


class TrtRunner:
    """One deserialized engine; ``runner({name: cuda tensor}) -> {output name: cuda tensor}``.

    Buffers are torch tensors (inputs as given, made contiguous; outputs allocated with ``torch.empty`` on the current
    device), the engine runs with ``execute_async_v3`` on ``torch.cuda.current_stream()``, so later torch ops on that
    stream see the results without an explicit synchronize. No pycuda.
    """

    def __init__(self, engine_path: str | Path):
        trt = _trt()
        self._trt = trt
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise InputError("TensorRT could not deserialize the engine (built by another TensorRT version?)",
                             engine_path)  # fmt: skip
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode = trt.TensorIOMode.INPUT
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == mode]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) != mode]

    def _torch_dtype(self, name: str) -> torch.dtype:
        trt = self._trt
        table = {
            trt.float32: torch.float32, trt.float16: torch.float16, trt.bfloat16: torch.bfloat16,
            trt.int32: torch.int32, trt.int64: torch.int64, trt.bool: torch.bool, trt.int8: torch.int8,
        }  # fmt: skip
        return table[self.engine.get_tensor_dtype(name)]

    def __call__(self, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        keep = []
        for name in self.inputs:
            t = feeds[name].to("cuda", self._torch_dtype(name)).contiguous()
            keep.append(t)
            self.context.set_input_shape(name, tuple(t.shape))
            self.context.set_tensor_address(name, t.data_ptr())
        out = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            t = torch.empty(shape, dtype=self._torch_dtype(name), device="cuda")
            out[name] = t
            self.context.set_tensor_address(name, t.data_ptr())
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        for t in keep:  # inputs must outlive the enqueued work even if the caller drops them
            t.record_stream(stream)
        return out

    def numpy_runner(self, output_names: list[str]):
        """``feeds (numpy) -> outputs (numpy, in output_names order)`` for :mod:`export.parity`."""

        def run(feeds):
            out = self({k: torch.from_numpy(v) for k, v in feeds.items()})
            torch.cuda.current_stream().synchronize()
            return [out[n].float().cpu().numpy() if out[n].is_floating_point() else out[n].cpu().numpy()
                    for n in output_names]  # fmt: skip

        return run
