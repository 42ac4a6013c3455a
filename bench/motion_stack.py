"""Bench: the motion stack per step (W hidden states in -> connector -> greedy codes -> RVQ decoder -> W frames out).

    python -m bench.motion_stack [--window 10] [--repeats 20] [--out bench/results/motion_stack.json] [--tiny]
        [--int8-schemes weight_only dynamic]

At the paper's sizes (connector d 768 x 6 layers, 12 heads, fed by d_llm 3584; RVQ decoder width 128, 3 residual
blocks, latent 256, 6 x 256 codes, FLAME58) with seeded random weights, it compares in one run: torch eager, onnxruntime
fp32 and onnxruntime int8 (connector int8 with each scheme of ``export/quantize.py``: ``weight_only``, the
``build_engines --int8`` default, and the all-int8 ``dynamic``; decoder fp32), each with 1 and 2 threads, at batch 1
and 8.
``--compare-graph`` (the GPU check): torch eager against one CUDA graph of the whole step (connector, argmax, decoder,
state carried in place) on ``--device``, per motion token at ``--batches`` (e.g. 1 32); on a CPU the graph rows are
recorded as skipped (the dry run of ``tools/gpu_check.sh``).

Reported: median ms per step (one window of W states = W/G motion tokens per session), ms per motion token
(step / (W/G)), the speed-up over torch eager with the same threads and batch, and batch 8's cost per call relative to
batch 1. The graphs are exported and verified with ``export.build_engines.build`` first (parity errors and int8 code
agreement are part of the JSON). Timings on a shared machine are noisy: the median of ``--repeats`` calls is taken.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from a2llm_rt.engine.builders import tiny_motion_models
from a2llm_rt.engine.motion_backend import OnnxRuntimeBackend, TorchBackend
from a2llm_rt.models.connector import ConnectorConfig, MotionConnector
from a2llm_rt.models.motion_tokenizer import MotionTokenizer, MotionTokenizerConfig
from a2llm_rt.utils.fileio import atomic_write_json
from export.build_engines import build

PAPER_CONNECTOR = ConnectorConfig(d_llm=3584, d_model=768, n_layers=6, n_heads=12, dropout=0.0, window=10)
PAPER_MOTION = MotionTokenizerConfig(dropout=0.0, kmeans_init=False)


def paper_models(window: int, tiny: bool = False, seed: int = 0) -> tuple[MotionConnector, MotionTokenizer]:
    if tiny:  # the one tiny motion stack (the engine's)
        return tiny_motion_models(seed, window=window)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        conn = MotionConnector(dataclasses.replace(PAPER_CONNECTOR, window=window)).eval()
        tok = MotionTokenizer(PAPER_MOTION).eval()
        # random codebooks (kmeans_init=False gives randn) and per-curve statistics like real FLAME data
        tok.set_normalization(torch.randn(tok.dim) * 0.1, torch.full((tok.dim,), 0.3))
    return conn, tok


def time_backend(backend, batch: int, window: int, d_llm: int, repeats: int, warmup: int = 3) -> list[float]:
    """Seconds per step over ``repeats`` steps of a running stream (prev codes and decoder state carried)."""
    g = torch.Generator().manual_seed(batch)
    xs = [torch.randn(batch, window, d_llm, generator=g) for _ in range(4)]
    state = backend.init_decode_state(batch)
    prev = None
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            t0 = time.perf_counter()
            codes = backend.greedy_codes(xs[i % 4], prev)
            out, state = backend.decode_step(codes, state)
            dt = time.perf_counter() - t0
            assert out.frames.shape[1] == window or backend.lookahead
            prev = codes
            if i >= warmup:
                times.append(dt)
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.motion_stack", description=__doc__.split("\n\n")[0])
    ap.add_argument("--window", type=int, default=10, help="W hidden states per step (default 10 = 2 motion tokens)")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--tiny", action="store_true", help="test-sized models (a smoke run of the script)")
    ap.add_argument("--engines", default=None, help="keep the exported engines in this folder (default: temporary)")
    ap.add_argument("--int8-schemes", nargs="*", default=["weight_only", "dynamic"], choices=["weight_only", "dynamic"],
                    help="int8 connector schemes to time (default both)")  # fmt: skip
    ap.add_argument("--out", default="bench/results/motion_stack.json")
    ap.add_argument("--device", default="cpu", help="cpu, or with --compare-graph a CUDA device")
    ap.add_argument("--compare-graph", action="store_true", help="torch eager vs CUDA graph on --device")
    args = ap.parse_args(argv)
    if args.compare_graph:
        return compare_graph(args)
    if args.device != "cpu":
        print(f"motion_stack measures the CPU backends; --device {args.device} skipped (GPU: bench/engine.py)")
        return 0

    load_start = _loadavg()
    connector, motion = paper_models(args.window, args.tiny)
    tokens = connector.cfg.tokens_per_window
    n_params = {"connector": sum(p.numel() for p in connector.parameters()),
                "tokenizer_decoder": sum(p.numel() for p in motion.decoder.parameters())}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.engines or tmp)
        print(f"exporting and verifying (connector {n_params['connector'] / 1e6:.1f} M parameters) ...", flush=True)
        schemes = args.int8_schemes or [None]
        folders, manifests = {}, {}
        for scheme in schemes:  # one engines folder per int8 scheme (the first also serves fp32)
            folders[scheme] = root / (scheme or "fp32")
            manifests[scheme] = build(connector, motion, folders[scheme], "fp32", max_batch=max(args.batches),
                                      int8=scheme is not None, trt=False, int8_scheme=scheme or "weight_only",
                                      log=lambda *_: None)  # fmt: skip
        manifest = manifests[schemes[0]]
        variants = [("torch eager", "torch", None), ("onnxruntime fp32", "ort", schemes[0])]
        variants += [(f"ort int8 {s}", "ort", s) for s in args.int8_schemes]
        rows = []
        for threads in args.threads:
            torch.set_num_threads(threads)
            for label, kind, scheme in variants:
                backend = (TorchBackend(connector, motion) if kind == "torch"
                           else OnnxRuntimeBackend(folders[scheme], int8="int8" in label, threads=threads))  # fmt: skip
                for b in args.batches:
                    ts = time_backend(backend, b, args.window, connector.cfg.d_llm, args.repeats)
                    med = statistics.median(ts)
                    rows.append({"variant": label, "threads": threads, "batch": b, "ms_per_step": med * 1e3,
                                 "ms_per_motion_token": med * 1e3 / tokens, "ms_min": min(ts) * 1e3,
                                 "ms_p90": sorted(ts)[int(0.9 * (len(ts) - 1))] * 1e3, "repeats": len(ts)})  # fmt: skip
                    print(f"  {label:20s} threads {threads} batch {b}: {med * 1e3:8.2f} ms/step", flush=True)
    by = {(r["variant"], r["threads"], r["batch"]): r for r in rows}
    for r in rows:
        base = by[("torch eager", r["threads"], r["batch"])]
        r["speedup_vs_torch"] = base["ms_per_step"] / r["ms_per_step"]
        one = by[(r["variant"], r["threads"], min(args.batches))]
        r["batch_cost_vs_batch1"] = r["ms_per_step"] / one["ms_per_step"]

    print(f"\nmotion stack per step: W={args.window} hidden states -> {args.window} frames ({tokens} motion tokens), "
          f"{'tiny' if args.tiny else 'paper'} sizes; median of {args.repeats}; shared machine, noisy\n")  # fmt: skip
    hdr = f"| {'variant':20s} | thr | batch | ms/step | ms/motion token | x torch | cost vs batch 1 |"
    print(hdr)
    print("|" + "|".join("-" * (len(c)) for c in hdr.split("|")[1:-1]) + "|")
    for r in rows:
        print(
            f"| {r['variant']:20s} | {r['threads']:3d} | {r['batch']:5d} | {r['ms_per_step']:7.2f} | "
            f"{r['ms_per_motion_token']:15.2f} | {r['speedup_vs_torch']:7.2f} | {r['batch_cost_vs_batch1']:15.2f} |"
        )
    print()
    int8_codes = {}
    for scheme in args.int8_schemes:
        int8_codes[scheme] = manifests[scheme]["artifacts"]["connector_int8_onnx"]["greedy_codes"]
        g = int8_codes[scheme]
        print(f"int8 connector ({scheme}): {g['fraction_unchanged']:.2%} of {g['codes']} greedy codes unchanged "
              f"(random weights; goal >= 99%)")  # fmt: skip
    result = {
        "bench": "motion_stack",
        "sizes": "tiny" if args.tiny else "paper",
        "connector": connector.cfg.to_dict(),
        "tokenizer": motion.cfg.to_dict(),
        "parameters": n_params,
        "window": args.window,
        "motion_tokens_per_step": tokens,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": _cpus(),
            "note": "shared with other jobs; timings are noisy",
        },  # fmt: skip
        "versions": manifest["versions"],
        "parity": {k: v["parity"] for k, v in manifest["artifacts"].items() if "parity" in v},
        "int8_greedy_codes": int8_codes,
        "int8_settings": {s: manifests[s]["artifacts"]["connector_int8_onnx"]["int8_settings"] for s in int8_codes},
        "load_average": {"start": load_start, "end": _loadavg()},  # 1, 5, 15 min (2 cores here)
        "rows": rows,
    }
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _median_ms(fn, dev: torch.device, repeats: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(dev)
        t0 = time.perf_counter()
        fn()
        _sync(dev)
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def graph_step_rows(connector, motion, dev: torch.device, batch: int, window: int, repeats: int) -> list[dict]:
    """Eager and CUDA-graph timings of one steady-state motion step (prev codes and decoder state carried)."""
    cfg = connector.cfg
    tokens = cfg.tokens_per_window
    dtype = next(connector.parameters()).dtype
    g = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, window, cfg.d_llm, generator=g).to(dev, dtype)
    prev = torch.zeros(batch, tokens, cfg.n_q, dtype=torch.long, device=dev)
    state = motion.init_decode_state(batch, dev)
    with torch.inference_mode():
        while int(state.filled.min()) < motion.lookahead:  # past the decoder's lookahead: the steady state
            _, state = motion.decode_step(connector.step(x, None).argmax(-1), state)
    box = {"state": state}

    def eager():
        codes = connector.step(x, prev).argmax(-1)
        frames, box["state"] = motion.decode_step(codes, box["state"])
        prev.copy_(codes)
        return frames

    rows = []
    with torch.inference_mode():
        ts = _median_ms(eager, dev, repeats)
    med = statistics.median(ts)
    rows.append({"variant": "torch eager", "device": str(dev), "batch": batch, "ms_per_step": med,
                 "ms_per_motion_token": med / tokens, "ms_min": min(ts), "repeats": len(ts)})  # fmt: skip
    if dev.type != "cuda":
        rows.append({"variant": "cuda graph", "device": str(dev), "batch": batch, "skipped": "needs CUDA"})
        return rows
    try:
        with torch.cuda.device(dev), torch.inference_mode():
            static = box["state"]

            def body():  # static shapes, no host read (decode_step_padded): capturable
                codes = connector.step(x, prev).argmax(-1)
                frames, _, new = motion.decode_step_padded(codes, static)
                for k, t in new.tensors().items():
                    getattr(static, k).copy_(t)
                prev.copy_(codes)
                return frames

            side = torch.cuda.Stream(device=dev)
            side.wait_stream(torch.cuda.current_stream(dev))
            with torch.cuda.stream(side):
                for _ in range(3):
                    body()
            torch.cuda.current_stream(dev).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=torch.cuda.Stream(device=dev)):
                body()
            ts = _median_ms(graph.replay, dev, repeats)
        med = statistics.median(ts)
        rows.append({"variant": "cuda graph", "device": str(dev), "batch": batch, "ms_per_step": med,
                     "ms_per_motion_token": med / tokens, "ms_min": min(ts), "repeats": len(ts)})  # fmt: skip
    except Exception as e:  # noqa: BLE001 - report, do not hide the eager figures
        rows.append({"variant": "cuda graph", "device": str(dev), "batch": batch, "error": f"{type(e).__name__}: {e}"})
    return rows


def compare_graph(args) -> int:
    dev = torch.device(args.device)
    connector, motion = paper_models(args.window, args.tiny)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32  # as the engine's full preset runs it
    connector = connector.to(dev, dtype)
    motion = motion.to(dev)
    rows = []
    for b in args.batches:
        rows += graph_step_rows(connector, motion, dev, b, args.window, args.repeats)
    print(f"motion stack on {dev}: W={args.window} ({connector.cfg.tokens_per_window} motion tokens per step), "
          f"{'tiny' if args.tiny else 'paper'} sizes, connector {str(dtype).replace('torch.', '')}")  # fmt: skip
    for r in rows:
        fig = (
            f"{r['ms_per_step']:8.3f} ms/step {r['ms_per_motion_token']:8.3f} ms/motion token"
            if "ms_per_step" in r
            else r.get("skipped") or r.get("error")
        )
        print(f"  {r['variant']:12s} batch {r['batch']:3d}: {fig}")
    result = {"bench": "motion_stack_graph", "sizes": "tiny" if args.tiny else "paper", "device": str(dev),
              "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor(),
              "torch": torch.__version__, "window": args.window,
              "motion_tokens_per_step": connector.cfg.tokens_per_window, "rows": rows}  # fmt: skip
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")
    return 1 if any("error" in r for r in rows) else 0


def _loadavg() -> list[float] | None:
    import os

    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0


if __name__ == "__main__":
    sys.exit(main())
