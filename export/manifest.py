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

:func:`verify_artifact` is what every backend calls before loading a file: a missing file, an unknown artifact or a
sha256 that differs from the manifest's raises :class:`~a2llm_rt.errors.InputError` naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from a2llm_rt.errors import InputError
from a2llm_rt.utils.fileio import atomic_write_json
from export.onnx_export import file_sha256

FORMAT = "a2llm-motion-engines/1"
MANIFEST = "manifest.json"


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


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The manifest of an engines folder; :class:`InputError` when missing, unreadable or of another format."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise InputError("no manifest.json: not an engines folder (make one: python -m export.build_engines)", path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"unreadable manifest: {e}", path) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(f"manifest format is {data.get('format') if isinstance(data, dict) else None!r}, "
                         f"expected {FORMAT!r}", path)  # fmt: skip
    if not isinstance(data.get("artifacts"), dict):
        raise InputError("manifest has no 'artifacts' mapping", path)
    return data


def verify_artifact(folder: str | Path, manifest: dict[str, Any], name: str) -> Path:
    """Path of artifact ``name`` after checking that its file exists and its sha256 matches the manifest.

    Raises :class:`InputError` (naming the file) when the manifest lacks the artifact, the file is missing, or the
    file's sha256 differs from the recorded one (a tampered, truncated or re-exported file is refused).
    """
    folder = Path(folder)
    entry = manifest["artifacts"].get(name)
    if entry is None:
        have = sorted(manifest["artifacts"])
        raise InputError(f"the manifest lists no artifact {name!r} (it has {have})", folder / MANIFEST)
    path = folder / entry["file"]
    if not path.is_file():
        raise InputError(f"artifact {name!r} listed in the manifest is missing", path)
    digest = file_sha256(path)
    if digest != entry["sha256"]:
        raise InputError(
            f"sha256 mismatch for artifact {name!r}: the file has {digest[:16]}..., the manifest records "
            f"{entry['sha256'][:16]}...; the file was modified or belongs to another export, refusing to load it "
            "(re-run python -m export.build_engines)",
            path,
        )
    return path
