"""TensorRT path of the token2wav: engines built by ``python -m export.speech_trt`` replace the estimator step and
HiFT decoder, like :mod:`a2llm_rt.speech.onnx_runtime` does with onnxruntime.

NOT RUN on the project's build machines: TensorRT cannot be installed there (and no GPU was available to this work);
the code follows the TensorRT 10 API through the motion stack's :class:`~a2llm_rt.engine.trt_runner.TrtRunner`
(torch-owned CUDA buffers, ``execute_async_v3`` on its own stream). Its end-to-end tests are marked ``gpu``.

``use_tensorrt(model, folder)`` checks the folder's manifest (format, sha256 of every artifact, the model's
hyperparameters), that the manifest lists the engines, that TensorRT imports and that the model is on a CUDA device
-- each with a clear :class:`InputError` -- then routes the streaming estimator passes and HiFT's decoder through the
engines. Shapes outside an engine's optimization profile (a voice's set-up with an empty cache, a whole answer
longer than a chunk, more sessions than the profile's rows are split into several runs) run in torch or in slices;
the first fallback of each kind is logged.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from a2llm_rt.engine.trt_runner import TrtRunner
from a2llm_rt.errors import InputError
from a2llm_rt.speech.dit import DiT
from a2llm_rt.speech.hift import HiFTGenerator
from a2llm_rt.speech.onnx_runtime import check_configs, read_manifest
from a2llm_rt.speech.token2wav import Token2Wav

log = logging.getLogger(__name__)

ENGINES = ("estimator_trt", "hift_trt")


class SpeechTrtRunner(TrtRunner):
    """A :class:`TrtRunner` whose inputs need not share dim 0 (the estimator's caches are depth-first):
    ``runner(feeds)`` runs once, with no slicing (the callers split sessions); :meth:`profile` gives an input's
    (min, opt, max) shapes."""

    def _profile_max_batch(self) -> int:
        return int(self.profile("lengths")[2][0])

    def profile(self, name: str) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        lo, opt, hi = self.engine.get_tensor_profile_shape(name, 0)
        return tuple(lo), tuple(opt), tuple(hi)

    def __call__(self, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        missing = [n for n in self.inputs if n not in feeds]
        if missing:
            raise InputError(f"TensorRT engine inputs missing: {missing}")
        return self._run_once({n: feeds[n] for n in self.inputs})


def _full(n: torch.Tensor | None, rows: int, size: int, device: torch.device) -> torch.Tensor:
    if n is None:
        return torch.full((rows,), size, dtype=torch.int64, device=device)
    return n.to(device, torch.int64)


def _slices(rows: int, most: int) -> list[slice]:
    return [slice(i, min(rows, i + most)) for i in range(0, rows, most)]


class _Fallback:
    """Logs the first torch fallback of each kind."""

    def __init__(self, what: str):
        self.what = what
        self.seen: set[str] = set()

    def note(self, why: str) -> None:
        if why not in self.seen:
            self.seen.add(why)
            log.info("%s: %s, running in torch", self.what, why)


class TrtEstimatorStep:
    """:attr:`DiT.graph_step` through the ``estimator_trt`` engine (rows split to the profile's; torch outside it)."""

    def __init__(self, runner: SpeechTrtRunner, estimator: DiT):
        self.runner = runner
        self.estimator = estimator
        lo, _, hi = runner.profile("att_cache")
        self.cache_range = (lo[3], hi[3])
        lo, _, hi = runner.profile("x")
        self.frame_range = (lo[2], hi[2])
        self.max_rows = hi[0]
        self.fallback = _Fallback("token2wav estimator step")

    def __call__(self, x, mu, t, spks, cond, cnn_cache, att_cache, lengths=None, cache_lengths=None):
        tc, frames = att_cache.size(3), x.size(2)
        why = None
        if not self.cache_range[0] <= tc <= self.cache_range[1]:
            why = f"cache of {tc} entries outside the engine's {self.cache_range}"
        elif not self.frame_range[0] <= frames <= self.frame_range[1]:
            why = f"chunk of {frames} frames outside the engine's {self.frame_range}"
        if why is not None:
            self.fallback.note(why.split(" of ")[0] + " outside the profile")
            return self.estimator.forward_chunk_torch(x, mu, t, spks, cond, cnn_cache, att_cache, lengths,
                                                      cache_lengths)
        rows = x.size(0)
        lengths = _full(lengths, rows, frames, x.device)
        cache_lengths = _full(cache_lengths, rows, tc, x.device)
        parts = []
        for s in _slices(rows, self.max_rows):
            out = self.runner({"x": x[s], "mu": mu[s], "t": t[s], "spks": spks[s], "cond": cond[s],
                               "cnn_cache": cnn_cache[:, s], "att_cache": att_cache[:, s], "lengths": lengths[s],
                               "cache_lengths": cache_lengths[s]})
            parts.append((out["velocity"], out["cnn_cache_out"], out["att_cache_out"]))
        if len(parts) == 1:
            v, c, a = parts[0]
        else:
            v = torch.cat([p[0] for p in parts])
            c = torch.cat([p[1] for p in parts], dim=1)
            a = torch.cat([p[2] for p in parts], dim=1)
        return v.to(x.dtype), c.to(x.dtype), a.to(x.dtype)


class TrtHiFTDecoder:
    """:attr:`HiFTGenerator.graph_decoder` through the ``hift_trt`` engine (sessions split to the profile's; torch
    outside its frame range, e.g. a whole answer)."""

    def __init__(self, runner: SpeechTrtRunner, hift: HiFTGenerator):
        self.runner = runner
        self.hift = hift
        lo, _, hi = runner.profile("mel")
        self.frame_range = (lo[2], hi[2])
        self.max_rows = hi[0]
        self.fallback = _Fallback("token2wav HiFT decoder")

    def __call__(self, mel: torch.Tensor, source_stft: torch.Tensor,
                 lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.frame_range[0] <= mel.size(2) <= self.frame_range[1]:
            self.fallback.note("mel frames outside the profile")
            return self.hift.generate(mel, source_stft, lengths)
        lengths = _full(lengths, mel.size(0), mel.size(2), mel.device)
        mags, phases = [], []
        for s in _slices(mel.size(0), self.max_rows):
            out = self.runner({"mel": mel[s], "source_stft": source_stft[s], "lengths": lengths[s]})
            mags.append(out["magnitude"])
            phases.append(out["phase"])
        return torch.cat(mags).to(mel.dtype), torch.cat(phases).to(mel.dtype)


def engines_listed(manifest: dict[str, Any]) -> bool:
    """Whether a speech manifest lists both TensorRT engines."""
    return all(name in manifest.get("artifacts", {}) for name in ENGINES)


def use_tensorrt(model: Token2Wav, folder: str | Path) -> Token2Wav:
    """Route ``model``'s streaming estimator and HiFT decoder through the TensorRT engines in ``folder`` (in place;
    the model must be on a CUDA device)."""
    folder = Path(folder)
    m = read_manifest(folder)  # format + every artifact's sha256
    check_configs(model, m, folder)
    if not engines_listed(m):
        raise InputError("no TensorRT engines in this speech engines folder (build them with "
                         "python -m export.speech_trt --engines DIR)", folder / "manifest.json")
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        raise InputError("the TensorRT speech path needs TensorRT (pip install tensorrt>=10 on a machine with an "
                         "NVIDIA GPU); use the onnxruntime or torch backend instead") from None
    dev = model.speech_window.device
    if dev.type != "cuda":
        raise InputError(f"the TensorRT speech path runs on a CUDA device; the model is on {dev}")
    arts = m["artifacts"]
    est = model.flow.decoder.estimator
    est.graph_step = TrtEstimatorStep(SpeechTrtRunner(folder / arts["estimator_trt"]["file"], dev), est)
    model.hift.graph_decoder = TrtHiFTDecoder(SpeechTrtRunner(folder / arts["hift_trt"]["file"], dev), model.hift)
    return model
