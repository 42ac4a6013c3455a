"""Reading an engines folder at run time: ``manifest.json``, artifact sha256 checks, weight hashes.

An engines folder is written by ``python -m export.build_engines`` (the writing side, ``export/manifest.py``, imports
this module; the runtime never imports ``export/``). Layout of ``manifest.json``::

    {
      "format": "a2llm-motion-engines/1",
      "precision": "fp32", "window": 10, "max_batch": 8,
      "versions": {"torch": ..., "onnx": ..., "onnxruntime": ..., "a2llm": ..., "tensorrt": ... | null},
      "connector": {...ConnectorConfig...}, "tokenizer": {...MotionTokenizerConfig...},
      "decoder_state": ["tokens", "frames"], "decoder_state_shapes": {"tokens": [...], "frames": [...]},
      "artifacts": {
        "connector_onnx": {"file": "connector_step.onnx", "sha256": ..., "bytes": ..., "kind": "onnx",
                           "graph": "connector_step", "precision": "fp32", "weights_sha256": ...,
                           "inputs": [...], "outputs": [...], "parity": {...}},
        "decoder_onnx": {...}, "connector_int8_onnx": {...}, "connector_trt": {...}, "decoder_trt": {...}
      },
      "trt": {"built": false, "reason": "..."}
    }

:func:`verify_artifact` is what every exported backend calls before loading a file: a missing file, an unknown
artifact or a sha256 that differs from the manifest's raises :class:`~a2llm_rt.errors.InputError` naming the file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from a2llm_rt.errors import InputError

FORMAT = "a2llm-motion-engines/1"
MANIFEST = "manifest.json"


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def weights_sha256(module: nn.Module) -> str:
    """sha256 over the state dict (sorted names, dtype, shape, raw bytes): identifies the weights, not the file."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


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
