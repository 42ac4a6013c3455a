"""``manifest.json`` of an engines folder: what was exported, how, and how well it matched PyTorch.

Layout (one entry per artifact; the runtime reads only this file and the artifacts, ARCHITECTURE principle 6)::

    {
      "format": "a2llm-motion-engines/1",
      "precision": "fp32", "window": 10, "max_batch": 8,
      "versions": {"torch": ..., "onnx": ..., "onnxruntime": ..., "a2llm": ..., "tensorrt": ... | null},
      "connector": {...ConnectorConfig...}, "tokenizer": {...MotionTokenizerConfig...},
      "artifacts": {
        "connector_onnx": {"file": "connector_step.onnx", "sha256": ..., "bytes": ..., "kind": "onnx",
                           "graph": "connector_step", "precision": "fp32", "weights_sha256": ...,
                           "inputs":  [{"name": "hidden", "shape": ["batch", 10, 3584], "dtype": "float32"}, ...],
                           "outputs": [...], "parity": {...errors measured, tolerance, passed...}},
        "decoder_onnx": {...}, "connector_int8_onnx": {...}, "connector_trt": {...}, "decoder_trt": {...}
      },
      "trt": {"built": false, "reason": "..."}
    }

This module writes the manifest; reading it and checking artifact hashes is runtime code and lives in
:mod:`a2llm_rt.engine.artifacts` (``read_manifest``, ``verify_artifact``, ``file_sha256``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from a2llm_rt.engine.artifacts import FORMAT, MANIFEST, file_sha256
from a2llm_rt.utils.fileio import atomic_write_json


def io_spec(path: str | Path) -> dict[str, list[dict[str, Any]]]:
    """Input/output names, shapes (symbolic axes as strings) and element types of an ONNX file."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)

    def spec(values) -> list[dict[str, Any]]:
        out = []
        for v in values:
            t = v.type.tensor_type
            dims = [d.dim_param if d.dim_param else int(d.dim_value) for d in t.shape.dim]
            out.append({"name": v.name, "shape": dims, "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name})
        return out

    return {"inputs": spec(model.graph.input), "outputs": spec(model.graph.output)}


def artifact_entry(folder: str | Path, file: str, kind: str, **extra: Any) -> dict[str, Any]:
    """A manifest entry for ``folder/file`` (sha256, size, and for ONNX files its inputs/outputs)."""
    path = Path(folder) / file
    entry: dict[str, Any] = {"file": file, "kind": kind, "sha256": file_sha256(path), "bytes": path.stat().st_size}
    if kind == "onnx":
        entry.update(io_spec(path))
    entry.update(extra)
    return entry


def write_manifest(folder: str | Path, manifest: dict[str, Any]) -> Path:
    path = Path(folder) / MANIFEST
    manifest = {"format": FORMAT, **manifest}
    atomic_write_json(path, manifest)
    return path
