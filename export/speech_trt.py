"""TensorRT engines for the token2wav graphs (estimator step, HiFT decoder), built from the speech ONNX export.

    python -m export.speech_export --token2wav DIR/token2wav --out engines/speech      # ONNX first
    python -m export.speech_trt --engines engines/speech [--max-sessions 8] [--precision fp32|fp16|bf16]

NOT RUN on the project's build machines: TensorRT cannot be installed there (and no GPU was available to this work).
Written the way the motion stack's TensorRT path is (:mod:`export.trt_build`: TensorRT 10 API, explicit batch, one
optimization profile per graph; the engines run on torch-owned buffers through
:class:`a2llm_rt.speech.trt_runtime.SpeechTrtRunner`); its end-to-end tests are marked ``gpu`` and skip without
TensorRT. The profile shapes, the manifest entries and the refusal without TensorRT are tested on the CPU.

Profiles (:class:`SpeechTrtLimits`), per graph, dims min / opt / max:

- estimator step: rows (2 per session: guided and unguided) 2 / 2*opt_sessions / 2*max_sessions; chunk frames
  T 1 / 50 (25 codes) / max_chunk_frames; cache Tc 1 / opt_cache_frames / max_cache_frames (a voice's prompt frames
  + the 100 newest ones; the voice set-up itself, with an empty cache, runs in torch);
- HiFT decoder: sessions 1 / opt_sessions / max_sessions; mel frames 1 / 58 (50 + the 8 re-vocoded) /
  max_chunk_frames + 8, and the source STFT's 120 frames per mel frame + 1.

A shape outside a profile runs in torch (logged once) rather than failing: the speech stays correct, only slower.
Each engine is verified against PyTorch on fresh ragged inputs and described in the folder's ``manifest.json``
(``estimator_trt``, ``hift_trt``: file, sha256, source graph, precision, profiles, TensorRT version, parity).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from a2llm_rt.errors import InputError
from a2llm_rt.speech.config import FlowConfig, HiFTConfig
from a2llm_rt.speech.token2wav import ESTIMATOR_KEEP_RECENT, MEL_CACHE_FRAMES
from a2llm_rt.speech.voice import MAX_PROMPT_CODES
from a2llm_rt.utils.cli import cli_main
from a2llm_rt.utils.fileio import atomic_write_json
from export.manifest import artifact_entry

FILES = {"estimator_trt": "estimator_step.plan", "hift_trt": "hift_decoder.plan"}
SOURCES = {"estimator_trt": "estimator_onnx", "hift_trt": "hift_onnx"}

Shapes = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]


@dataclasses.dataclass(frozen=True)
class SpeechTrtLimits:
    """The shapes the engines are optimised for (opt) and accept (min..max)."""

    max_sessions: int = 8
    """Sessions in one batched chunk (the estimator sees twice as many rows)."""
    opt_sessions: int = 8
    max_chunk_frames: int = 64
    """Mel frames of one chunk: 50 for 25 codes, up to 54 on a last chunk; 64 leaves room."""
    opt_cache_frames: int = 2 * 75 + ESTIMATOR_KEEP_RECENT
    """Estimator cache entries of a 3 s voice (its prompt frames + the 100 newest kept)."""
    max_cache_frames: int = 2 * MAX_PROMPT_CODES + ESTIMATOR_KEEP_RECENT
    """The longest voice prompt (30 s) + the 100 newest."""

    def __post_init__(self) -> None:
        if not 1 <= self.opt_sessions <= self.max_sessions:
            raise InputError("SpeechTrtLimits: need 1 <= opt_sessions <= max_sessions")
        if self.max_chunk_frames < 50:
            raise InputError("SpeechTrtLimits.max_chunk_frames must cover a 25-code chunk (50 frames)")
        if not 1 <= self.opt_cache_frames <= self.max_cache_frames:
            raise InputError("SpeechTrtLimits: need 1 <= opt_cache_frames <= max_cache_frames")


def estimator_profiles(cfg: FlowConfig, lim: SpeechTrtLimits) -> dict[str, Shapes]:
    """Optimization profile of ``estimator_step.onnx`` (every input, as the ONNX export names them)."""
    rows = (2, 2 * lim.opt_sessions, 2 * lim.max_sessions)
    t = (1, min(50, lim.max_chunk_frames), lim.max_chunk_frames)
    tc = (1, lim.opt_cache_frames, lim.max_cache_frames)
    mel, depth, hidden, heads, hd = cfg.output_size, cfg.dit_depth, cfg.dit_hidden, cfg.dit_heads, cfg.dit_head_dim

    def per(fn) -> Shapes:
        return tuple(fn(i) for i in range(3))  # type: ignore[return-value]

    return {
        "x": per(lambda i: (rows[i], mel, t[i])),
        "mu": per(lambda i: (rows[i], mel, t[i])),
        "t": per(lambda i: (rows[i],)),
        "spks": per(lambda i: (rows[i], mel)),
        "cond": per(lambda i: (rows[i], mel, t[i])),
        "cnn_cache": per(lambda i: (depth, rows[i], 2 * hidden, 2)),
        "att_cache": per(lambda i: (depth, rows[i], heads, tc[i], 2 * hd)),
        "lengths": per(lambda i: (rows[i],)),
        "cache_lengths": per(lambda i: (rows[i],)),
    }


def hift_profiles(cfg: HiFTConfig, lim: SpeechTrtLimits) -> dict[str, Shapes]:
    """Optimization profile of ``hift_decoder.onnx``."""
    b = (1, lim.opt_sessions, lim.max_sessions)
    f = (1, 50 + MEL_CACHE_FRAMES, lim.max_chunk_frames + MEL_CACHE_FRAMES)
    per_frame = cfg.samples_per_frame // cfg.istft_hop_len
    return {
        "mel": tuple((b[i], cfg.in_channels, f[i]) for i in range(3)),  # type: ignore[dict-item]
        "source_stft": tuple((b[i], cfg.istft_n_fft + 2, per_frame * f[i] + 1) for i in range(3)),  # type: ignore
        "lengths": tuple((b[i],) for i in range(3)),  # type: ignore[dict-item]
    }


def _read_onnx_manifest(folder: Path) -> dict[str, Any]:
    from a2llm_rt.speech.onnx_runtime import read_manifest

    m = read_manifest(folder)
    for src in SOURCES.values():
        if src not in m["artifacts"]:
            raise InputError(f"the speech engines folder has no {src!r} (run python -m export.speech_export)", folder)
    return m


def record_engines(folder: str | Path, manifest: dict[str, Any], built: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Describe built engines in ``manifest`` (and write it): built = {name: facts (profiles, tensorrt version,
    precision, parity)}; each entry gets its file's sha256 and size and the ONNX graph it came from."""
    folder = Path(folder)
    arts = manifest["artifacts"]
    for name, facts in built.items():
        arts[name] = artifact_entry(folder, FILES[name], "tensorrt", source=arts[SOURCES[name]]["file"], **facts)
    passed = all(bool(f.get("parity", {}).get("passed")) for f in built.values())
    manifest["trt"] = {"built": bool(built), "passed": passed,
                       "tensorrt": next((f.get("tensorrt") for f in built.values()), None)}
    manifest.setdefault("versions", {})["tensorrt"] = manifest["trt"]["tensorrt"]
    atomic_write_json(folder / "manifest.json", manifest)
    return manifest


def build_speech_engines(folder: str | Path, limits: SpeechTrtLimits | None = None, precision: str = "fp32",
                         rel_tol: float | None = None) -> dict[str, Any]:
    """Build both engines from the ONNX graphs in ``folder``, verify them against PyTorch and record them in its
    manifest. :class:`InputError` without TensorRT or a CUDA GPU (nothing is written then)."""
    from export import trt_build

    folder = Path(folder)
    lim = limits or SpeechTrtLimits()
    m = _read_onnx_manifest(folder)
    usable, reason = trt_build.tensorrt_available()
    if not usable:
        raise InputError(f"TensorRT engines for the speech graphs not built: {reason}", folder)
    if precision not in ("fp32", "fp16", "bf16"):
        raise InputError(f"precision must be fp32, fp16 or bf16, got {precision!r}")
    tol = rel_tol if rel_tol is not None else (1e-3 if precision == "fp32" else 3e-2)
    flow_cfg = FlowConfig(**m["flow"])
    hift_cfg = HiFTConfig(**{k: _tuples(v) for k, v in m["hift"].items()})
    jobs = {"estimator_trt": estimator_profiles(flow_cfg, lim), "hift_trt": hift_profiles(hift_cfg, lim)}
    built = {}
    for name, prof in jobs.items():
        facts = trt_build.build_engine(folder / m["artifacts"][SOURCES[name]]["file"], folder / FILES[name], prof,
                                       precision)
        facts["parity"] = engine_parity(folder, m, name, flow_cfg, hift_cfg, tol)
        facts["precision"] = precision
        facts["limits"] = dataclasses.asdict(lim)
        built[name] = facts
    return record_engines(folder, m, built)


def _tuples(v):
    return tuple(_tuples(x) for x in v) if isinstance(v, list) else v


def engine_parity(folder: Path, manifest: dict[str, Any], name: str, flow_cfg: FlowConfig, hift_cfg: HiFTConfig,
                  rel_tol: float) -> dict[str, Any]:
    """Largest |TensorRT - onnxruntime| / max|onnxruntime| on fresh ragged inputs (two batch sizes)."""
    import onnxruntime as ort

    from a2llm_rt.speech.token2wav import Token2Wav
    from a2llm_rt.speech.trt_runtime import SpeechTrtRunner
    from export.speech_export import EST_INPUTS, HIFT_INPUTS, estimator_example, hift_example

    model = Token2Wav(flow_cfg, hift_cfg)  # only the shapes of its examples are used
    if name == "estimator_trt":
        names, examples = EST_INPUTS, [estimator_example(model, 2, 50, 250), estimator_example(model, 6, 37, 120)]
    else:
        names, examples = HIFT_INPUTS, [hift_example(model, 1, 58), hift_example(model, 3, 50)]
    sess = ort.InferenceSession(str(folder / manifest["artifacts"][SOURCES[name]]["file"]),
                                providers=["CPUExecutionProvider"])
    runner = SpeechTrtRunner(folder / FILES[name])
    worst = 0.0
    for ex in examples:
        feeds = dict(zip(names, ex, strict=True))
        ref = sess.run(None, {k: v.numpy() for k, v in feeds.items()})
        out = runner(feeds)
        for o, r in zip([out[n] for n in runner.outputs], ref, strict=True):
            r = torch.from_numpy(r)
            worst = max(worst, float((o.float().cpu() - r).abs().max() / r.abs().max().clamp_min(1e-12)))
    return {"max_rel_error": worst, "tolerance": rel_tol, "passed": worst <= rel_tol,
            "runtime": "tensorrt vs onnxruntime cpu"}


@cli_main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m export.speech_trt", description=__doc__.split("\n\n")[0])
    ap.add_argument("--engines", required=True, help="a folder written by python -m export.speech_export")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"))
    ap.add_argument("--max-sessions", type=int, default=8)
    ap.add_argument("--opt-sessions", type=int, default=None)
    ap.add_argument("--max-cache-frames", type=int, default=SpeechTrtLimits.max_cache_frames)
    a = ap.parse_args(argv)
    lim = SpeechTrtLimits(max_sessions=a.max_sessions, opt_sessions=a.opt_sessions or a.max_sessions,
                          max_cache_frames=a.max_cache_frames,
                          opt_cache_frames=min(SpeechTrtLimits.opt_cache_frames, a.max_cache_frames))
    m = build_speech_engines(a.engines, lim, a.precision)
    print(json.dumps({k: m["artifacts"][k]["parity"] for k in FILES}, indent=1))
    return 0 if m["trt"]["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
