"""int8 weight-quantized connector graph for CPU (onnxruntime's quantization tools).

Two schemes (``quantize_connector(..., scheme=...)``, ``build_engines --int8-scheme``):

``weight_only`` (default)
    onnxruntime's weight-only quantizer (``MatMulNBitsQuantizer``, 8 bits): every MatMul with a constant weight becomes
    a ``com.microsoft.MatMulNBits`` with symmetric int8 weights in blocks of :data:`BLOCK_SIZE` (16) input rows, one
    fp32 scale per block and output column. ``accuracy_level`` 4 runs it with int8 arithmetic: the kernel quantizes
    the fp32 activations per block of 16 on the fly (levels 0-3 dequantize the weights every call and are ~10x slower
    than the fp32 graph on onnxruntime 1.32). The matmuls that move most of the quantization error into the logits stay
    fp32 (:data:`KEEP_FP32`: the level heads, the query projection after the downsampling, and each attention's value
    and output projections, 16 M of the 73 M parameters at the paper's sizes); the G-frame downsampling, the
    query/key projections and the feed-forwards (the bulk of the weights) are int8.
``dynamic``
    ``quantize_dynamic``: int8 per-channel weights (QInt8) for every MatMul/Gemm with a constant weight, activations
    quantized per tensor to uint8 on every call (``DynamicQuantizeLinear`` -> ``MatMulInteger``). The fastest, and the
    least accurate (~97% of greedy codes unchanged on random weights).

Measured on the paper-size connector with random weights (3072 greedy codes, 1 thread, batch 1, this 2-core machine
under load ~3): fp32 8.6 ms per call; ``weight_only`` 5.0 ms, 99.1-99.3% of codes unchanged (3 seeds); ``dynamic`` 2.5-
2.9 ms, 96.9%. All-int8 variants tried (MatMulNBits blocks 16-128, QDQ per channel, ``quantize_dynamic`` with
``reduce_range`` or without the downsampling or heads) stay at 95.3-98.0%; weight-only int8 with fp32 arithmetic
(MatMulNBits accuracy level 0) reaches 98.7% but takes 70-100 ms. Quality is judged by how many greedy codes change
on fresh inputs (:func:`export.parity.greedy_code_agreement`; goal >= 99% unchanged).

Which module a MatMul belongs to comes from the ``pkg.torch.onnx.name_scopes`` node metadata that
``torch.onnx.export(dynamo=True)`` writes (``down`` for the downsampling, which has no scope of its own).
"""

from __future__ import annotations

import ast
import contextlib
import fnmatch
import json
import logging
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import onnx

from a2llm_rt.utils.fileio import atomic_write
from export.onnx_export import read_metadata

SCHEMES = ("weight_only", "dynamic")
DEFAULT_SCHEME = "weight_only"
#: connector modules (paths without the ``connector.`` prefix, fnmatch patterns) kept fp32 by ``weight_only``
KEEP_FP32: tuple[str, ...] = ("heads", "proj", "*.v_proj", "*.o_proj")
BLOCK_SIZE = 16
ACCURACY_LEVEL = 4
DEFAULT_OP_TYPES = ("MatMul", "Gemm")
_SCOPES_KEY = "pkg.torch.onnx.name_scopes"


def matmul_modules(model: onnx.ModelProto) -> dict[str, str]:
    """Node name -> connector module path (``layers.0.ff.fc1``, ``heads``; ``down`` for the downsampling) of every
    MatMul/Gemm with a constant weight, from the exporter's name-scope metadata (``?`` where it has none)."""
    inits = {i.name for i in model.graph.initializer}
    out: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type not in DEFAULT_OP_TYPES or len(node.input) < 2 or node.input[1] not in inits:
            continue
        props = {p.key: p.value for p in node.metadata_props}
        try:
            scopes = ast.literal_eval(props[_SCOPES_KEY]) if _SCOPES_KEY in props else []
        except (ValueError, SyntaxError):
            scopes = []
        mods = [s for s in scopes if isinstance(s, str) and s.startswith("connector.")]
        out[node.name] = mods[-1].removeprefix("connector.") if mods else ("down" if _SCOPES_KEY in props else "?")
    return out


def fp32_nodes(model: onnx.ModelProto, keep_fp32: Sequence[str]) -> dict[str, str]:
    """The MatMul nodes (name -> module) whose module matches one of the ``keep_fp32`` patterns."""
    mods = matmul_modules(model)
    return {n: m for n, m in mods.items() if any(fnmatch.fnmatchcase(m, p) for p in keep_fp32)}


def quantize_connector(
    src: str | Path,
    dst: str | Path,
    scheme: str = DEFAULT_SCHEME,
    keep_fp32: Sequence[str] | None = None,
    block_size: int = BLOCK_SIZE,
    accuracy_level: int = ACCURACY_LEVEL,
    per_channel: bool = True,
) -> dict[str, str]:
    """Write an int8 weight-quantized copy of the connector graph ``src`` to ``dst``; returns ``dst``'s metadata
    (the source's, with ``a2llm.precision`` = ``int8``, ``a2llm.int8_scheme``, ``a2llm.int8_settings`` (JSON) and a
    readable ``a2llm.quantization``).

    ``keep_fp32``: module patterns left fp32 (default: :data:`KEEP_FP32` for ``weight_only``, none for ``dynamic``).
    ``block_size`` / ``accuracy_level``: ``weight_only`` only; ``per_channel``: ``dynamic`` only.
    Raises ``ValueError`` on an unknown scheme, or when ``keep_fp32`` is given but matches no node (the graph lacks
    the exporter's name scopes: quantizing everything would silently lose accuracy).
    """
    if scheme not in SCHEMES:
        raise ValueError(f"unknown int8 scheme {scheme!r} (one of {', '.join(SCHEMES)})")
    src, dst = Path(src), Path(dst)
    keep = tuple(KEEP_FP32 if scheme == "weight_only" else ()) if keep_fp32 is None else tuple(keep_fp32)
    model = onnx.load(str(src))
    kept = fp32_nodes(model, keep) if keep else {}
    if keep and not kept:
        raise ValueError(f"keep_fp32 {list(keep)} matches no MatMul of {src} (no exporter name scopes?)")
    n_total = len(matmul_modules(model))
    meta = read_metadata(src)
    settings: dict[str, Any] = {"scheme": scheme, "fp32_modules": sorted(set(kept.values())),
                                "int8_matmuls": n_total - len(kept), "fp32_matmuls": len(kept)}  # fmt: skip
    if scheme == "weight_only":
        settings.update(bits=8, block_size=block_size, accuracy_level=accuracy_level, symmetric=True)
        out = _weight_only(model, sorted(kept), block_size, accuracy_level)
        desc = (
            f"onnxruntime MatMulNBits (weight-only quantizer): int8 weights, symmetric, blocks of {block_size}, "
            f"accuracy_level {accuracy_level}; fp32 kept for {len(kept)} of {n_total} matmuls ({list(keep)})"
        )
    else:
        settings.update(per_channel=per_channel, weight_type="QInt8", activations="dynamic uint8 per tensor")
        out = _dynamic(src, dst.parent, sorted(kept), per_channel)
        desc = (
            f"onnxruntime quantize_dynamic, int8 weights (QInt8, per_channel={per_channel}), dynamic uint8 "
            f"activations, ops {list(DEFAULT_OP_TYPES)}" + (f"; fp32 kept for {len(kept)} matmuls" if kept else "")
        )
    meta.update({
        "a2llm.precision": "int8",
        "a2llm.source_precision": meta.get("a2llm.precision", "fp32"),
        "a2llm.int8_scheme": scheme,
        "a2llm.int8_settings": json.dumps(settings, sort_keys=True),
        "a2llm.quantization": desc,
    })  # fmt: skip
    props = {p.key: p.value for p in out.metadata_props}
    props.update(meta)
    del out.metadata_props[:]
    for k, v in props.items():
        out.metadata_props.add(key=k, value=v)
    with atomic_write(dst, "wb") as f:
        f.write(out.SerializeToString())
    return meta


def _weight_only(model: onnx.ModelProto, exclude: list[str], block_size: int, accuracy_level: int) -> onnx.ModelProto:
    with _quiet_quantizer():
        nbits = _ort_quantization().matmul_nbits_quantizer
        q = nbits.MatMulNBitsQuantizer(model, bits=8, block_size=block_size, is_symmetric=True,
                                       accuracy_level=accuracy_level, nodes_to_exclude=exclude,
                                       op_types_to_quantize=("MatMul",))  # fmt: skip
        q.process()
    return q.model.model


def _dynamic(src: Path, tmp_dir: Path, exclude: list[str], per_channel: bool) -> onnx.ModelProto:
    oq = _ort_quantization()
    with _quiet_quantizer(), tempfile.TemporaryDirectory(dir=tmp_dir) as tmp:
        out = Path(tmp) / "q.onnx"
        oq.quantize_dynamic(str(src), str(out), op_types_to_quantize=list(DEFAULT_OP_TYPES), per_channel=per_channel,
                            weight_type=oq.QuantType.QInt8, nodes_to_exclude=exclude,
                            extra_options={"MatMulConstBOnly": True})  # fmt: skip
        return onnx.load(str(out))


def _ort_quantization():
    """``onnxruntime.quantization`` (with ``matmul_nbits_quantizer``), imported without its global side effect: the
    import calls ``logging.basicConfig(level=INFO)``, which would add a root handler and level to the caller's
    logging."""
    import sys

    if "onnxruntime.quantization.matmul_nbits_quantizer" not in sys.modules:
        root = logging.getLogger()
        handlers, level = list(root.handlers), root.level
        try:
            import onnxruntime.quantization.matmul_nbits_quantizer  # noqa: F401
        finally:
            root.handlers[:] = handlers
            root.setLevel(level)
    import onnxruntime.quantization as oq

    return oq


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """Silence onnxruntime.quantization's INFO lines (one per node) and its "pre-process" hint, and undo the root
    handler that its module-level ``logging.warning`` calls install (``logging.basicConfig``)."""
    names = ["", "onnxruntime.quantization", "onnxruntime.quantization.matmul_nbits_quantizer"]
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    handlers = list(loggers[0].handlers)
    for lg in loggers:
        lg.setLevel(max(lg.getEffectiveLevel(), logging.ERROR))
    try:
        yield
    finally:
        loggers[0].handlers[:] = handlers
        for lg, lv in zip(loggers, levels, strict=True):
            lg.setLevel(lv)
