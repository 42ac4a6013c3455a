"""int8 weight-quantized connector graph for CPU (onnxruntime.quantization ``quantize_dynamic``).

Weights of every MatMul/Gemm with a constant weight (the G-frame downsampling, which the exported graph writes as a
MatMul, the attention projections, feed-forward and level heads: all but the code embeddings) are stored as int8
with per-channel scales; activations are quantized dynamically per call (``DynamicQuantizeLinear`` ->
``MatMulInteger``), so no calibration data is needed. Quality is judged by how many greedy codes change on fresh inputs
(:func:`export.parity.greedy_code_agreement`; goal: >= 99% unchanged).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from a2llm_rt.utils.fileio import atomic_write
from export.onnx_export import read_metadata, set_metadata

DEFAULT_OP_TYPES = ("MatMul", "Gemm")


def quantize_connector(
    src: str | Path, dst: str | Path, op_types: Sequence[str] = DEFAULT_OP_TYPES, per_channel: bool = True
) -> dict[str, str]:
    """Write an int8 weight-quantized copy of the connector graph ``src`` to ``dst``; returns ``dst``'s metadata
    (the source's, with ``a2llm.precision`` = ``int8`` and the quantization settings)."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))  # its "pre-process" hint

    src, dst = Path(src), Path(dst)
    meta = read_metadata(src)
    with tempfile.TemporaryDirectory(dir=dst.parent) as tmp:
        out = Path(tmp) / "q.onnx"
        quantize_dynamic(
            str(src),
            str(out),
            op_types_to_quantize=list(op_types),
            per_channel=per_channel,
            weight_type=QuantType.QInt8,
            extra_options={"MatMulConstBOnly": True},
        )
        with atomic_write(dst, "wb") as f:
            f.write(out.read_bytes())
    meta.update({
        "a2llm.precision": "int8",
        "a2llm.source_precision": meta.get("a2llm.precision", "fp32"),
        "a2llm.quantization": (f"onnxruntime quantize_dynamic, int8 weights (QInt8, per_channel={per_channel}), "
                               f"dynamic uint8 activations, ops {list(op_types)}"),
    })  # fmt: skip
    set_metadata(dst, meta)
    return meta
