"""onnxruntime path of the token2wav: the exported estimator step and HiFT decoder replace their torch forms.

``use_onnx(model, folder)`` reads ``folder/manifest.json`` (written by ``python -m export.speech_export``), checks
the format, that the exported hyperparameters equal the model's and every artifact's sha256, and routes the
streaming estimator passes and HiFT's decoder through onnxruntime (CPU, or CUDA when available). The whole-sequence
estimator path stays in torch. Weights come from the graphs; the torch model keeps the embedding, encoder, F0
predictor and source, which are cheap.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from a2llm_rt.engine.artifacts import file_sha256
from a2llm_rt.errors import InputError
from a2llm_rt.speech.token2wav import Token2Wav

FORMAT = "a2llm-speech-engines/2"


def _session(path: Path, threads: int | None):
    import onnxruntime as ort

    opt = ort.SessionOptions()
    if threads:
        opt.intra_op_num_threads = threads
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
    return ort.InferenceSession(str(path), opt, providers=providers)


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The folder's speech ``manifest.json``, its format and every listed artifact's sha256 checked."""
    folder = Path(folder)
    path = folder / "manifest.json"
    try:
        m = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"unreadable speech engines manifest: {e}", path) from None
    if not isinstance(m, dict) or m.get("format") != FORMAT or not isinstance(m.get("artifacts"), dict):
        raise InputError(f"not a speech engines folder (format {FORMAT!r} expected)", path)
    for name, entry in m["artifacts"].items():
        f = folder / str(entry.get("file", ""))
        if not f.is_file() or file_sha256(f) != entry.get("sha256"):
            raise InputError(f"artifact {name!r} is missing or its sha256 differs from the manifest", f)
    return m


def _lengths(n: torch.Tensor | None, rows: int, full: int) -> np.ndarray:
    """[rows] int64 valid lengths for a graph (None: every row full)."""
    if n is None:
        return np.full(rows, full, dtype=np.int64)
    return n.detach().to("cpu", torch.int64).numpy()


class _OrtEstimatorStep:
    def __init__(self, session):
        self.session = session

    def __call__(self, x, mu, t, spks, cond, cnn_cache, att_cache, lengths=None, cache_lengths=None):
        feeds = {k: np.ascontiguousarray(v.detach().float().cpu().numpy()) for k, v in
                 {"x": x, "mu": mu, "t": t, "spks": spks, "cond": cond, "cnn_cache": cnn_cache,
                  "att_cache": att_cache}.items()}
        feeds["lengths"] = _lengths(lengths, x.size(0), x.size(2))
        feeds["cache_lengths"] = _lengths(cache_lengths, x.size(0), att_cache.size(3))
        out = self.session.run(None, feeds)
        return tuple(torch.from_numpy(o).to(x.device, x.dtype) for o in out)


class _OrtHiFTDecoder:
    def __init__(self, session):
        self.session = session

    def __call__(self, mel: torch.Tensor, source_stft: torch.Tensor,
                 lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        mag, phase = self.session.run(None, {"mel": mel.float().cpu().numpy(),
                                             "source_stft": source_stft.float().cpu().numpy(),
                                             "lengths": _lengths(lengths, mel.size(0), mel.size(2))})
        return torch.from_numpy(mag).to(mel.device), torch.from_numpy(phase).to(mel.device)


def check_configs(model: Token2Wav, manifest: dict[str, Any], folder: Path) -> None:
    """:class:`InputError` unless the graphs were exported for ``model``'s hyperparameters."""
    if manifest.get("flow") != json.loads(json.dumps(dataclasses.asdict(model.flow_cfg))) or manifest.get(
            "hift") != json.loads(json.dumps(dataclasses.asdict(model.hift.cfg))):
        raise InputError("the exported graphs were made for other token2wav hyperparameters", folder / "manifest.json")


def use_onnx(model: Token2Wav, folder: str | Path, threads: int | None = None) -> Token2Wav:
    """Route ``model``'s streaming estimator and HiFT decoder through the ONNX graphs in ``folder`` (in place)."""
    folder = Path(folder)
    m = read_manifest(folder)
    check_configs(model, m, folder)
    arts = m["artifacts"]
    model.flow.decoder.estimator.graph_step = _OrtEstimatorStep(_session(folder / arts["estimator_onnx"]["file"],
                                                                        threads))
    model.hift.graph_decoder = _OrtHiFTDecoder(_session(folder / arts["hift_onnx"]["file"], threads))
    return model
