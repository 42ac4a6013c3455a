"""A tokenizer with ``clamp_output`` exports a decoder graph that clamps too (parity against the clamped reference)."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnxruntime as ort
import torch

from a2llm_rt.engine.builders import TINY_MOTION
from a2llm_rt.models.motion_tokenizer import MotionTokenizer
from export.onnx_export import export_decoder
from export.parity import decoder_inputs, decoder_parity, ort_runner


def test_exported_decoder_clamps_like_the_tokenizer(tmp_path):
    torch.manual_seed(0)
    tok = MotionTokenizer(dataclasses.replace(TINY_MOTION, layout="arkit52", clamp_output=True)).eval()
    tok.set_normalization(torch.full((tok.dim,), 0.5), torch.full((tok.dim,), 3.0))  # wide: outputs leave [0, 1]
    export_decoder(tok, tmp_path / "dec.onnx")
    run = ort_runner(ort.InferenceSession(str(tmp_path / "dec.onnx"), providers=["CPUExecutionProvider"]))
    assert decoder_parity(tok, run, "fp32")["passed"]
    frames = run({k: v.numpy() for k, v in decoder_inputs(tok, 2, 2, torch.Generator().manual_seed(1)).items()})[0]
    assert frames.min() >= 0.0 and frames.max() <= 1.0 and np.isin([0.0, 1.0], frames).all()
