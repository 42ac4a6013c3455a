"""Benchmark of the native token2wav (flow + HiFT): time to first audio chunk and RTF per batch size.

    python bench/speech.py                                  # Step-Audio-2-mini size, random weights, CPU, batch 1
    python bench/speech.py --device cuda --batch 1 8        # the GPU check
    python bench/speech.py --preset tiny                    # the test-size model (seconds)

Real-size preset: the flow model of Step-Audio-2-mini's ``token2wav/`` (encoder 512 x (6 + 4) blocks, DiT 16 x 512,
10 Euler steps with classifier-free guidance, so 20 estimator passes per chunk) and CosyVoice2's HiFT, random
weights (speed does not depend on the values). Each session has a 3 s voice prompt (75 codes). Measured:

- ``prompt_ms``: a voice's set-up (its prompt through the flow); the vocoder computes it once per voice at start-up
  and every turn starts from it, so it is not part of a turn's latency;
- ``first_chunk_ms``: the first chunk (28 codes -> 0.84 s of audio), i.e. the time to first audio after the 28th
  code; split into flow and HiFT;
- ``rtf``: wall time / audio time over ``--chunks`` full chunks (25 codes = 1 s each) after the first, for B sessions
  batched in one call per chunk (RTF of the batch: wall / (audio of one session));
- ``*_cpu*``: the same with this process's CPU time divided by the threads instead of the wall time: an estimate of
  the idle-machine figure when the machine is shared (load from other processes stretches the wall time).

``--onnx DIR`` runs the estimator and HiFT's decoder through onnxruntime (exporting this run's model into DIR first);
``--onnx DIR --trt --device cuda`` through TensorRT engines built from those graphs (NOT RUN: no TensorRT here).
Goal (issue 15): CPU, 2 threads, batch 1: first chunk < 400 ms and RTF < 1 with the onnxruntime path; H200 batch 8:
RTF < 0.05. Prints a table and writes ``bench/results/speech_<preset>_<device>.json``.
"""

from __future__ import annotations

import argparse
import copy
import platform
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from a2llm_rt.speech.config import FlowConfig, HiFTConfig  # noqa: E402
from a2llm_rt.speech.token2wav import CHUNK_CODES, Token2Wav, Token2WavState  # noqa: E402
from a2llm_rt.speech.voice import Voice  # noqa: E402
from a2llm_rt.utils.fileio import atomic_write_json  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run(preset: str, device: torch.device, batches: list[int], chunks: int, dtype: torch.dtype,
        onnx_dir: str | None = None, trt: bool = False) -> dict:
    flow_cfg, hift_cfg = (FlowConfig.step_audio2(), HiFTConfig.step_audio2()) if preset == "full" else (
        FlowConfig.tiny(), HiFTConfig.tiny())
    torch.manual_seed(0)
    model = Token2Wav(flow_cfg, hift_cfg).to(device).eval()
    with torch.no_grad():
        for p in model.parameters():  # random but not degenerate (upstream zero-inits the DiT's modulation)
            p.normal_(0.0, 0.02)
    runtime = "torch eager"
    if onnx_dir is not None:
        if not (Path(onnx_dir) / "manifest.json").exists():  # export this model's graphs first (from a CPU copy)
            from export.speech_export import export_speech

            export_speech(copy.deepcopy(model).cpu(), onnx_dir)
        if trt:
            from a2llm_rt.speech.onnx_runtime import read_manifest
            from a2llm_rt.speech.trt_runtime import engines_listed, use_tensorrt
            from export.speech_trt import SpeechTrtLimits, build_speech_engines

            if not engines_listed(read_manifest(onnx_dir)):
                n = max(batches)
                build_speech_engines(onnx_dir, SpeechTrtLimits(max_sessions=n, opt_sessions=n))
            use_tensorrt(model, onnx_dir)
            runtime = "tensorrt (estimator step + HiFT decoder)"
        else:
            from a2llm_rt.speech.onnx_runtime import use_onnx

            use_onnx(model, onnx_dir, threads=torch.get_num_threads())
            runtime = "onnxruntime (estimator step + HiFT decoder)"
    n_prompt = 75
    g = torch.Generator().manual_seed(1)
    voice = Voice(torch.randint(0, flow_cfg.vocab_size, (n_prompt,), generator=g),
                  torch.randn(2 * n_prompt, flow_cfg.output_size, generator=g) - 5,
                  torch.randn(flow_cfg.spk_embed_dim, generator=g))
    n_params = {"flow": sum(p.numel() for p in model.flow.parameters()),
                "hift": sum(p.numel() for p in model.hift.parameters())}
    rows = []
    per_chunk = CHUNK_CODES + model.lookahead
    warm = model.init_state(voice)  # warm-up (first-call allocations, kernel selection)
    model.step(torch.randint(0, flow_cfg.vocab_size, (1, per_chunk), generator=g), warm, False)
    for b in batches:
        t0 = time.perf_counter()
        states = [model.init_state(voice) for _ in range(b)]
        _sync(device)
        prompt_ms = (time.perf_counter() - t0) * 1000 / b
        state = Token2WavState.cat(states) if b > 1 else states[0]
        codes = torch.randint(0, flow_cfg.vocab_size, (b, per_chunk + CHUNK_CODES * chunks), generator=g)
        # first chunk, flow and HiFT timed apart on a copy, then the real step
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        wav, state = model.step(codes[:, :per_chunk], state, False)
        _sync(device)
        first_ms = (time.perf_counter() - t0) * 1000
        first_cpu_ms = (time.process_time() - c0) * 1000
        t0 = time.perf_counter()
        with torch.inference_mode():
            model.hift(torch.zeros(b, flow_cfg.output_size, 2 * CHUNK_CODES + 8, device=device), state.hift_source)
        _sync(device)
        hift_ms = (time.perf_counter() - t0) * 1000
        t0, c0 = time.perf_counter(), time.process_time()
        audio = 0
        for k in range(chunks):
            c = codes[:, CHUNK_CODES * (k + 1): CHUNK_CODES * (k + 1) + per_chunk]
            w, state = model.step(c, state, False)
            audio += w.size(1)
        _sync(device)
        wall = time.perf_counter() - t0
        cpu = time.process_time() - c0
        rtf = wall / (audio / model.sample_rate) if audio else float("nan")
        # CPU seconds / threads: what the wall time would be on an otherwise idle machine (a shared, loaded machine
        # stretches the wall time; the CPU time of this process does not change much)
        threads = torch.get_num_threads() if device.type == "cpu" else 1
        rtf_cpu = cpu / threads / (audio / model.sample_rate) if audio else float("nan")
        rows.append({"batch": b, "prompt_ms": round(prompt_ms, 1), "first_chunk_ms": round(first_ms, 1),
                     "first_chunk_hift_ms": round(hift_ms, 1), "rtf": round(rtf, 3),
                     "first_chunk_cpu_ms_per_thread": round(first_cpu_ms / threads, 1), "rtf_cpu": round(rtf_cpu, 3),
                     "first_chunk_audio_s": round(wav.size(1) / model.sample_rate, 3)})
        print(f"batch {b:2d}: prompt {prompt_ms:8.1f} ms/session  first chunk {first_ms:8.1f} ms "
              f"(HiFT ~{hift_ms:.1f} ms; CPU/thread {first_cpu_ms / threads:.1f} ms)  RTF {rtf:.3f} "
              f"(CPU/thread {rtf_cpu:.3f})", flush=True)
    return {"preset": preset, "device": str(device), "dtype": str(dtype), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "cpu": platform.processor() or platform.machine(), "params": n_params,
            "chunks": chunks, "runtime": runtime, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", choices=("full", "tiny"), default="full")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, nargs="+", default=[1])
    ap.add_argument("--chunks", type=int, default=2, help="timed chunks after the first")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--onnx", default=None, help="engines folder for the onnxruntime path (exported there first if "
                    "it has no manifest; the weights are this run's random ones)")
    ap.add_argument("--trt", action="store_true", help="with --onnx on a CUDA device: build TensorRT engines from the "
                    "graphs (python -m export.speech_trt) unless the folder has them, and run through them")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    device = torch.device(a.device)
    if device.type == "cpu":
        torch.set_num_threads(a.threads)
    if a.trt and not a.onnx:
        ap.error("--trt needs --onnx DIR (the engines are built from its graphs)")
    info = run(a.preset, device, a.batch, a.chunks, torch.float32, a.onnx, a.trt)
    tag = "_trt" if a.trt else "_ort" if a.onnx else ""
    out = Path(a.out) if a.out else REPO / "bench" / "results" / f"speech_{a.preset}_{device.type}{tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, info)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
