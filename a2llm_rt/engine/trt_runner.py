"""Run one TensorRT engine (TensorRT 10+ Python API) on torch-owned CUDA buffers.

NOT RUN on the project's build machines: TensorRT cannot be installed there (no GPU). The code follows the TensorRT 10
API (``Runtime.deserialize_cuda_engine``, ``set_input_shape`` / ``set_tensor_address`` / ``execute_async_v3`` on
``torch.cuda.current_stream()``, no pycuda); its tests are marked ``gpu``. Engines are built by
``export/trt_build.py`` (``python -m export.build_engines``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from a2llm_rt.errors import InputError


def _trt():
    import tensorrt as trt

    return trt


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
        """``feeds (numpy) -> outputs (numpy, in output_names order)`` (the parity checks of ``export/parity.py``)."""

        def run(feeds):
            out = self({k: torch.from_numpy(v) for k, v in feeds.items()})
            torch.cuda.current_stream().synchronize()
            return [out[n].float().cpu().numpy() if out[n].is_floating_point() else out[n].cpu().numpy()
                    for n in output_names]  # fmt: skip

        return run
