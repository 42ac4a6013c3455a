"""Run one TensorRT engine (TensorRT 10+ Python API) on torch-owned CUDA buffers.

NOT RUN on the project's build machines: TensorRT cannot be installed there (no GPU). The code follows the TensorRT 10
API (``Runtime.deserialize_cuda_engine``, ``set_input_shape`` (checked) / ``set_tensor_address`` /
``execute_async_v3`` on a dedicated CUDA stream, no pycuda); its tests are marked ``gpu``. Engines are built by
``export/trt_build.py`` (``python -m export.build_engines``). The batch splitting is tested on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from a2llm_rt.errors import InputError


def _trt():
    import tensorrt as trt

    return trt


def run_in_batches(
    run_one: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]],
    feeds: dict[str, torch.Tensor],
    max_batch: int,
) -> dict[str, torch.Tensor]:
    """Run ``run_one`` on slices of at most ``max_batch`` rows (dim 0 of every feed) and concatenate the outputs
    along dim 0. Every feed must have the same batch size; one call when it fits."""
    sizes = {name: int(t.shape[0]) for name, t in feeds.items()}
    if len(set(sizes.values())) != 1:
        raise InputError(f"TensorRT feeds must share their batch size (dim 0), got {sizes}")
    b = next(iter(sizes.values()))
    if max_batch < 1:
        raise InputError(f"max_batch must be >= 1, got {max_batch}")
    if b <= max_batch:
        return run_one(feeds)
    parts = [run_one({k: t[i : i + max_batch] for k, t in feeds.items()}) for i in range(0, b, max_batch)]
    return {k: torch.cat([p[k] for p in parts], 0) for k in parts[0]}


class TrtRunner:
    """One deserialized engine; ``runner({name: tensor}) -> {output name: cuda tensor}``.

    Buffers are torch tensors on ``device`` (inputs moved there and made contiguous; outputs allocated with
    ``torch.empty``). The engine runs with ``execute_async_v3`` on the runner's own CUDA stream (not the legacy
    default stream), which first waits for the caller's current stream; the caller's stream then waits for the
    engine, so later torch ops see the results without a synchronize. Batches larger than the engine's optimization
    profile (``max_batch``, read from the engine) run in slices; a shape the profile refuses raises. No pycuda.
    """

    def __init__(self, engine_path: str | Path, device: torch.device | str | None = None):
        trt = _trt()
        self._trt = trt
        self.device = torch.device("cuda", torch.cuda.current_device()) if device is None else torch.device(device)
        if self.device.type != "cuda":
            raise InputError(f"TensorRT runs on a CUDA device, not {self.device}", engine_path)
        if self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.logger = trt.Logger(trt.Logger.WARNING)
        with torch.cuda.device(self.device):
            self.runtime = trt.Runtime(self.logger)
            self.engine = self.runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
            if self.engine is None:
                raise InputError("TensorRT could not deserialize the engine (built by another TensorRT version?)",
                                 engine_path)  # fmt: skip
            self.context = self.engine.create_execution_context()
            self.stream = torch.cuda.Stream(device=self.device)
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode = trt.TensorIOMode.INPUT
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == mode]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) != mode]
        self.max_batch = self._profile_max_batch()

    def _profile_max_batch(self) -> int:
        """The largest batch (dim 0) every input's optimization profile 0 accepts (static dims count as fixed)."""
        best = None
        for name in self.inputs:
            shape = tuple(self.engine.get_tensor_shape(name))
            static = bool(shape) and shape[0] >= 0
            hi = shape[0] if static else tuple(self.engine.get_tensor_profile_shape(name, 0)[2])[0]
            best = hi if best is None else min(best, hi)
        return int(best or 1)

    def _torch_dtype(self, name: str) -> torch.dtype:
        trt = self._trt
        table = {
            trt.float32: torch.float32, trt.float16: torch.float16, trt.bfloat16: torch.bfloat16,
            trt.int32: torch.int32, trt.int64: torch.int64, trt.bool: torch.bool, trt.int8: torch.int8,
        }  # fmt: skip
        return table[self.engine.get_tensor_dtype(name)]

    def __call__(self, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        missing = [n for n in self.inputs if n not in feeds]
        if missing:
            raise InputError(f"TensorRT engine inputs missing: {missing}")
        return run_in_batches(self._run_once, {n: feeds[n] for n in self.inputs}, self.max_batch)

    def _run_once(self, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        with torch.cuda.device(self.device):
            caller = torch.cuda.current_stream(self.device)
            keep = []
            for name in self.inputs:
                t = feeds[name].to(self.device, self._torch_dtype(name)).contiguous()
                keep.append(t)
                if not self.context.set_input_shape(name, tuple(t.shape)):
                    raise InputError(f"TensorRT refused input {name!r} of shape {tuple(t.shape)} (outside the "
                                     f"engine's optimization profile; max batch {self.max_batch})")  # fmt: skip
                self.context.set_tensor_address(name, t.data_ptr())
            out = {}
            for name in self.outputs:
                shape = tuple(self.context.get_tensor_shape(name))
                if any(d < 0 for d in shape):
                    raise RuntimeError(f"TensorRT output {name!r} has an unresolved shape {shape}")
                t = torch.empty(shape, dtype=self._torch_dtype(name), device=self.device)
                out[name] = t
                self.context.set_tensor_address(name, t.data_ptr())
            self.stream.wait_stream(caller)  # inputs were made on the caller's stream
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError("TensorRT execute_async_v3 failed")
            for t in [*keep, *out.values()]:  # buffers must outlive the enqueued work even if the caller drops them
                t.record_stream(self.stream)
            caller.wait_stream(self.stream)
        return out

    def numpy_runner(self, output_names: list[str]):
        """``feeds (numpy) -> outputs (numpy, in output_names order)`` (the parity checks of ``export/parity.py``)."""

        def run(feeds):
            out = self({k: torch.from_numpy(v) for k, v in feeds.items()})
            torch.cuda.synchronize(self.device)
            return [out[n].float().cpu().numpy() if out[n].is_floating_point() else out[n].cpu().numpy()
                    for n in output_names]  # fmt: skip

        return run
