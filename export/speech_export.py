"""Export the native token2wav's heavy graphs to ONNX, with metadata, a manifest and onnxruntime parity.

    python -m export.speech_export --token2wav DIR/token2wav --out engines/speech     # a real folder
    python -m export.speech_export --tiny --out /tmp/speech                          # the tiny test model

Graphs (caches are explicit inputs/outputs; ARCHITECTURE principle 6):

- ``estimator_step.onnx``: one Euler step of the flow's DiT on a chunk, both guidance rows in the batch:
  ``x, mu, cond [2B, mel, T]``, ``t [2B]``, ``spks [2B, mel]``, ``cnn_cache [depth, 2B, 2*hidden, 2]``,
  ``att_cache [depth, 2B, H, Tc, 2*head_dim]`` (Tc >= 1: after the voice set-up the cache is never empty),
  ``lengths [2B]`` / ``cache_lengths [2B]`` int64 (each row's valid frames and cache entries: sessions of different
  lengths in one batch, right-padded, padded keys masked) -> ``velocity [2B, mel, T]``, ``cnn_cache_out``,
  ``att_cache_out [.., T + Tc, ..]``. The 10-step solver, the guidance mix, the encoder and the cache bookkeeping
  stay in torch (cheap next to 20 estimator passes per chunk).
- ``hift_decoder.onnx``: HiFT's generator from the mel and the source's STFT to the iSTFT's magnitude and phase:
  ``mel [B, mel, T]``, ``source_stft [B, n_fft + 2, F]``, ``lengths [B]`` int64 (each row's mel frames; right
  padding re-zeroed after every convolution) -> ``magnitude, phase [B, n_fft/2 + 1, F']``. The F0 predictor, the
  source (random draws) and the STFT/iSTFT stay in torch.

Manifest format ``a2llm-speech-engines/2``; each artifact lists its inputs/outputs, sha256 and the parity measured
against PyTorch on fresh random inputs of other sizes than the export example (ragged rows included). TensorRT
engines are built from these graphs by ``python -m export.speech_trt`` (:mod:`export.speech_trt`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from a2llm_rt.speech.token2wav import Token2Wav
from a2llm_rt.utils.cli import cli_main
from a2llm_rt.utils.fileio import atomic_write_json
from export.manifest import artifact_entry
from export.onnx_export import set_metadata, versions

OPSET = 18
FORMAT = "a2llm-speech-engines/2"
EST_INPUTS = ("x", "mu", "t", "spks", "cond", "cnn_cache", "att_cache", "lengths", "cache_lengths")
EST_OUTPUTS = ("velocity", "cnn_cache_out", "att_cache_out")
HIFT_INPUTS = ("mel", "source_stft", "lengths")
HIFT_OUTPUTS = ("magnitude", "phase")


class EstimatorStepGraph(nn.Module):
    def __init__(self, model: Token2Wav):
        super().__init__()
        self.estimator = model.flow.decoder.estimator

    def forward(self, x, mu, t, spks, cond, cnn_cache, att_cache, lengths, cache_lengths):
        return self.estimator.forward_chunk(x, mu, t, spks, cond, cnn_cache, att_cache, lengths, cache_lengths)


class HiFTDecoderGraph(nn.Module):
    """HiFT's ``decode`` between the source STFT and the iSTFT."""

    def __init__(self, model: Token2Wav):
        super().__init__()
        self.h = model.hift

    def forward(self, mel: torch.Tensor, source_stft: torch.Tensor,
                lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.h.generate(mel, source_stft, lengths)


def _ragged(rows: int, full: int) -> torch.Tensor:
    """[rows] int64 lengths in 1..full, the first one full (sessions of different lengths in one batch)."""
    n = torch.randint(1, full + 1, (rows,))
    n[0] = full
    return n


def estimator_example(model: Token2Wav, rows: int = 4, t: int = 6, tc: int = 5) -> tuple[torch.Tensor, ...]:
    c = model.flow_cfg
    return (torch.randn(rows, c.output_size, t), torch.randn(rows, c.output_size, t), torch.rand(rows),
            torch.randn(rows, c.output_size), torch.randn(rows, c.output_size, t),
            torch.randn(c.dit_depth, rows, 2 * c.dit_hidden, 2),
            torch.randn(c.dit_depth, rows, c.dit_heads, tc, 2 * c.dit_head_dim), _ragged(rows, t), _ragged(rows, tc))


def hift_example(model: Token2Wav, b: int = 2, t: int = 5) -> tuple[torch.Tensor, ...]:
    h = model.hift
    frames = t * h.upsample_scale // h.hop + 1
    return torch.randn(b, h.cfg.in_channels, t), torch.randn(b, h.n_fft + 2, frames), _ragged(b, t)


def _export(module: nn.Module, args: tuple, path: Path, names_in: tuple, names_out: tuple, dyn: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(module, args, dynamo=True, input_names=list(names_in), output_names=list(names_out),
                                 dynamic_shapes=dyn, opset_version=OPSET, optimize=True, verbose=False)
    tmp = path.with_name(f".{path.name}.tmp")
    prog.save(str(tmp))
    tmp.replace(path)


def _parity(path: Path, module: nn.Module, examples: list[tuple], names: tuple, rel_tol: float) -> dict[str, Any]:
    """Largest |ort - torch| / max|torch| over outputs and examples."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    with torch.no_grad():
        for ex in examples:
            ref = module(*ex)
            out = sess.run(None, {n: a.numpy() for n, a in zip(names, ex, strict=True)})
            for o, r in zip(out, ref, strict=True):
                worst = max(worst, float((torch.from_numpy(o) - r).abs().max() / r.abs().max().clamp_min(1e-12)))
    return {"max_rel_error": worst, "tolerance": rel_tol, "passed": worst <= rel_tol, "runtime": "onnxruntime cpu"}


def export_speech(model: Token2Wav, out: str | Path, rel_tol: float = 1e-3) -> dict[str, Any]:
    """Write both graphs, their metadata and ``manifest.json`` into ``out``; returns the manifest."""
    out = Path(out)
    model = model.eval().float().cpu()
    meta = {"flow": dataclasses.asdict(model.flow_cfg), "hift": dataclasses.asdict(model.hift.cfg),
            "versions": versions()}
    batch = torch.export.Dim("rows", min=1, max=1024)
    t = torch.export.Dim("t", min=1, max=30000)
    tc = torch.export.Dim("tc", min=1, max=30000)
    est = EstimatorStepGraph(model).eval()
    dyn = {"x": {0: batch, 2: t}, "mu": {0: batch, 2: t}, "t": {0: batch}, "spks": {0: batch},
           "cond": {0: batch, 2: t}, "cnn_cache": {1: batch}, "att_cache": {1: batch, 3: tc},
           "lengths": {0: batch}, "cache_lengths": {0: batch}}
    _export(est, estimator_example(model), out / "estimator_step.onnx", EST_INPUTS, EST_OUTPUTS, dyn)
    set_metadata(out / "estimator_step.onnx", {"graph": "estimator_step", **meta})
    hift = HiFTDecoderGraph(model).eval()
    hb = torch.export.Dim("batch", min=1, max=1024)
    ht = torch.export.Dim("frames", min=2, max=30000)
    hf = ht * (model.hift.upsample_scale // model.hift.hop) + 1  # the source STFT has 120 frames per mel frame + 1
    _export(hift, hift_example(model), out / "hift_decoder.onnx", HIFT_INPUTS, HIFT_OUTPUTS,
            {"mel": {0: hb, 2: ht}, "source_stft": {0: hb, 2: hf}, "lengths": {0: hb}})
    set_metadata(out / "hift_decoder.onnx", {"graph": "hift_decoder", **meta})
    est_par = _parity(out / "estimator_step.onnx", est, [estimator_example(model, 2, 9, 3),
                                                         estimator_example(model, 6, 50, 124)], EST_INPUTS, rel_tol)
    hift_par = _parity(out / "hift_decoder.onnx", hift, [hift_example(model, 1, 7), hift_example(model, 3, 58)],
                       HIFT_INPUTS, rel_tol)
    manifest = {"format": FORMAT, **meta, "artifacts": {
        "estimator_onnx": artifact_entry(out, "estimator_step.onnx", "onnx", graph="estimator_step", parity=est_par),
        "hift_onnx": artifact_entry(out, "hift_decoder.onnx", "onnx", graph="hift_decoder", parity=hift_par)},
        "trt": {"built": False, "reason": "not built by the ONNX export (python -m export.speech_trt)"}}
    atomic_write_json(out / "manifest.json", manifest)
    return manifest


@cli_main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Export the token2wav estimator step and HiFT decoder to ONNX.")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--token2wav", help="a token2wav/ folder (flow.yaml, flow.pt|safetensors, hift.pt|safetensors)")
    src.add_argument("--tiny", action="store_true", help="the tiny random test model")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    if a.tiny:
        from a2llm_rt.speech.config import FlowConfig, HiFTConfig

        torch.manual_seed(0)
        model = Token2Wav(FlowConfig.tiny(), HiFTConfig.tiny())
    else:
        from a2llm_rt.speech.token2wav import load_token2wav

        model = load_token2wav(a.token2wav)
    m = export_speech(model, a.out)
    print(json.dumps({k: v["parity"] for k, v in m["artifacts"].items()}, indent=1))
    return 0 if all(v["parity"]["passed"] for v in m["artifacts"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
