"""Motion tokenizer speed: encode throughput, streaming-decode throughput and per-token decode latency.

    python bench/tokenizer.py --device cpu [--ckpt runs/tok_arkit_rom] [--batch 1 8]

Uses the paper configuration (random weights unless ``--ckpt``). Prints a table and writes
``bench/results/tokenizer.json`` (or ``tokenizer_<device>.json`` with ``--tag``).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from a2llm_rt.models.motion_tokenizer import MotionTokenizer, MotionTokenizerConfig, count_parameters  # noqa: E402
from a2llm_rt.utils.fileio import atomic_write_json  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_one(model: MotionTokenizer, batch: int, seconds: int, tokens: int, device: torch.device) -> dict:
    g = model.group
    frames = tokens * g
    x = torch.rand(batch, frames, model.dim, device=device)
    codes = model.encode(x)
    # encode throughput (whole windows)
    for _ in range(3):
        model.encode(x)
    _sync(device)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        model.encode(x)
        n += 1
    _sync(device)
    enc_fps = n * batch * frames / (time.perf_counter() - t0)
    # full decode throughput
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        model.decode(codes)
        n += 1
    _sync(device)
    dec_full_fps = n * batch * frames / (time.perf_counter() - t0)
    # streaming decode: one token (G frames) per step
    lat = []
    t_start = time.perf_counter()
    total = 0
    while time.perf_counter() - t_start < seconds or len(lat) < 20:
        state = model.init_decode_state(batch, device)
        for i in range(tokens):
            t = time.perf_counter()
            _, state = model.decode_step(codes[:, i : i + 1], state)
            _sync(device)
            lat.append(time.perf_counter() - t)
            total += batch * g
    stream_fps = total / sum(lat)
    lat.sort()
    return {
        "batch": batch,
        "encode_frames_per_s": enc_fps,
        "decode_full_frames_per_s": dec_full_fps,
        "stream_decode_frames_per_s": stream_fps,
        "token_latency_ms_p50": 1e3 * statistics.median(lat),
        "token_latency_ms_p95": 1e3 * lat[int(0.95 * (len(lat) - 1))],
        "realtime_factor_per_stream": stream_fps / batch / model.cfg.fps,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--ckpt", default=None, help="a trained tokenizer (default: the paper config, random weights)")
    p.add_argument("--layout", default="flame58", help="layout of the random-weight model")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--tokens", type=int, default=50, help="tokens per sequence (x G frames)")
    p.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "tokenizer.json"))
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but CUDA is not available", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.ckpt:
        from training.train_tokenizer import load_tokenizer

        model = load_tokenizer(args.ckpt, device)
    else:
        torch.manual_seed(0)
        model = MotionTokenizer(MotionTokenizerConfig(layout=args.layout)).to(device).eval()
    rows = [bench_one(model, b, args.seconds, args.tokens, device) for b in args.batch]
    print(f"motion tokenizer ({model.cfg.layout}, {count_parameters(model) / 1e6:.2f} M params) on {args.device}")
    print(f"{'batch':>5} {'encode f/s':>12} {'decode f/s':>12} {'stream f/s':>12} {'tok p50 ms':>11} "
          f"{'tok p95 ms':>11} {'x realtime':>11}")  # fmt: skip
    for r in rows:
        print(
            f"{r['batch']:>5} {r['encode_frames_per_s']:>12.0f} {r['decode_full_frames_per_s']:>12.0f} "
            f"{r['stream_decode_frames_per_s']:>12.0f} {r['token_latency_ms_p50']:>11.3f} "
            f"{r['token_latency_ms_p95']:>11.3f} {r['realtime_factor_per_stream']:>11.1f}"
        )
    result = {
        "device": args.device,
        "device_name": torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu",
        "threads": args.threads,
        "torch": torch.__version__,
        "config": model.cfg.to_dict(),
        "params": count_parameters(model),
        "tokens_per_sequence": args.tokens,
        "rows": rows,
    }
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
