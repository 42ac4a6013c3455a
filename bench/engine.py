"""Benchmark of the session engine: TTFT (first audio token), TTFA (first face frame), RTF and steps/s per batch size,
for several decode-step modes side by side (CUDA graph, torch.compile, eager) in one run, with GPU memory per session.

    python bench/engine.py                                   # tiny models on the CPU (seconds)
    python bench/engine.py --preset full --device cuda --modes cuda_graph compile none --batch 1 4 16 32
    python bench/engine.py --preset full --device cuda:0 --modes cuda_graph --batch 4 --trace trace.json

The full preset builds the real architecture (28 layers x 3584, vocab 158720, 32-layer audio encoder) with random
weights, the paper's connector (d 768, 6 layers) and RVQ-VAE, and the test vocoder (token2wav is not part of the
timing); the token layout gets bench-only ids for the specials no public source names (<|BOT|>, <|EOT|>,
<tts_pad>), and text goes through a byte-level stand-in tokenizer. Every session answers a question of
``--question-seconds`` with exactly ``--seconds`` of audio (stops are masked until then). Goal on one H100 at batch 1:
TTFA <= 200 ms, RTF <= 0.25. Prints a table and writes ``bench/results/engine_<preset>_<device>.json``.

On CUDA the bench first checks that attention runs a fused SDPA kernel (the math fallback is excluded and a step
must still run) and fails loudly otherwise. ``--budget-s``: (mode, batch) runs that would start after the budget is
spent are recorded as skipped. ``--trace PATH``: instead of the table, a torch-profiler Chrome trace of
``--trace-steps`` decode steps (the engine's NVTX range names appear as profiler ranges).
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from a2llm_rt.engine.builders import Stack, build_tiny_stack  # noqa: E402
from a2llm_rt.engine.engine import Engine, EngineConfig  # noqa: E402
from a2llm_rt.engine.events import TurnEnd  # noqa: E402
from a2llm_rt.engine.nvtx import backend as nvtx_backend  # noqa: E402
from a2llm_rt.engine.sampling import SamplingConfig  # noqa: E402
from a2llm_rt.engine.vocoder import ToneVocoder  # noqa: E402
from a2llm_rt.models.token_layout import SPECIAL_TOKENS, STEP_AUDIO2  # noqa: E402
from a2llm_rt.utils.fileio import atomic_write_json  # noqa: E402

#: Bench-only ids for the specials whose real ids come from the Step-Audio-2 tokenizer (see token_layout.py).
BENCH_LAYOUT = dataclasses.replace(STEP_AUDIO2, bot=151643, eot=151645, pad=151643, tts_pad=151695)


class ByteTokenizer:
    """Stand-in text tokenizer for random-weight benchmarks: bytes are ids 0..255, specials parse to the layout's."""

    def __init__(self, layout):
        self.special = {tok: getattr(layout, f) for f, tok in SPECIAL_TOKENS.items() if getattr(layout, f) is not None}
        self.inverse = {v: k for k, v in self.special.items()}
        self._re = re.compile("(" + "|".join(re.escape(t) for t in self.special) + ")")

    def encode(self, text: str) -> list[int]:
        out: list[int] = []
        for part in self._re.split(text):
            out += [self.special[part]] if part in self.special else list(part.encode("utf-8"))
        return out

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")

    def token_to_id(self, token: str) -> int | None:
        return self.special.get(token)


def build_full_stack(device: str, seed: int = 0) -> Stack:
    from a2llm_rt.models.backbone import PRESETS, StepAudio2Backbone
    from a2llm_rt.models.connector import ConnectorConfig, MotionConnector
    from a2llm_rt.models.motion_tokenizer import MotionTokenizer, MotionTokenizerConfig

    dtype = torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    torch.manual_seed(seed)
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            bb = StepAudio2Backbone(PRESETS["step_audio2_mini"], BENCH_LAYOUT).eval()
            con = MotionConnector(ConnectorConfig(d_llm=bb.cfg.hidden_size, dropout=0.0)).eval()
    finally:
        torch.set_default_dtype(old)
    mot = MotionTokenizer(MotionTokenizerConfig(kmeans_init=False, dropout=0.0)).to(device).eval()
    return Stack(bb, ByteTokenizer(BENCH_LAYOUT), con, mot, ToneVocoder(n_codes=BENCH_LAYOUT.audio_codes))


def build_stack(preset: str, device: str) -> Stack:
    if preset == "tiny":
        return build_tiny_stack(0, device=device)
    return build_full_stack(device)


def check_fused_attention(stack: Stack, device: str) -> dict:
    """Run one decode step with the math SDPA backend excluded: raises (loudly) when no fused kernel takes it."""
    if torch.device(device).type != "cuda":
        return {"checked": False, "reason": "not on CUDA"}
    from torch.nn.attention import SDPBackend, sdpa_kernel

    bb = stack.backbone
    cache = bb.new_cache(2, 256)
    ids = torch.zeros(2, 1, dtype=torch.long, device=device)
    fused = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]
    if hasattr(SDPBackend, "CUDNN_ATTENTION"):
        fused.append(SDPBackend.CUDNN_ATTENTION)
    try:
        with sdpa_kernel(fused), torch.no_grad():
            bb.step(ids, cache)
        torch.cuda.synchronize(device)
    except RuntimeError as e:
        raise SystemExit(f"FAIL: attention cannot run a fused SDPA kernel (it would fall to the math path): {e}") from e
    return {"checked": True, "fused": True, "backends": [b.name for b in fused]}


def _mem() -> tuple[float, float]:
    if not torch.cuda.is_available():
        return 0.0, 0.0
    return torch.cuda.memory_allocated() / 2**20, torch.cuda.max_memory_allocated() / 2**20


def run(engine: Engine, batch: int, question_s: float, turns: int, kv_mb: float = 0.0) -> dict:
    """Mean figures of ``turns`` timed turns of ``batch`` sessions (after a warm-up turn); ``kv_mb``: the KV cache of
    one session (MiB), counted in ``gpu_mem_per_session_mb``."""
    rng = np.random.default_rng(0)
    sessions = [engine.new_session() for _ in range(batch)]
    rows = []
    dev = torch.device(engine.device)
    cuda = dev.type == "cuda"
    if cuda:
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    base_mb = torch.cuda.memory_allocated(dev) / 2**20 if cuda else 0.0
    for turn in range(turns + 1):  # turn 0 warms up (graph capture, compile, allocator, kernels)
        for s in sessions:
            audio = (0.1 * rng.standard_normal(int(question_s * 16000))).astype(np.float32)
            engine.submit(s, audio)
        t0 = time.perf_counter()
        events = engine.run_until_idle()
        if cuda:
            torch.cuda.synchronize(dev)
        wall = time.perf_counter() - t0
        ends = [e for e in events if isinstance(e, TurnEnd)]
        if len(ends) != batch:
            raise RuntimeError(f"{batch - len(ends)} of {batch} turns did not end: {events[-3:]}")
        if turn == 0:
            continue
        steps = max(e.counts["steps"] for e in ends)
        rows.append({
            "ttft_s": float(np.mean([e.ttft_s for e in ends])),
            "ttfa_s": float(np.mean([e.ttfa_s for e in ends])),
            "rtf": float(np.mean([e.rtf for e in ends])),
            "step_ms": 1000 * wall / max(1, steps),
            "steps_per_s": steps / wall,
            "audio_s": float(np.mean([e.counts["audio_tokens"] / 25 for e in ends])),
        })  # fmt: skip
    for s in sessions:
        s.close()
    out = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} | {"batch": batch}
    peak_mb = torch.cuda.max_memory_allocated(dev) / 2**20 if cuda else 0.0
    out["peak_gpu_mem_mb"] = peak_mb
    out["working_gpu_mem_mb"] = peak_mb - base_mb if cuda else 0.0  # above weights + the preallocated cache
    # a session's KV-cache row plus its share of the working memory of this batch size
    out["gpu_mem_per_session_mb"] = kv_mb + out["working_gpu_mem_mb"] / batch if cuda else 0.0
    return out


def trace(engine: Engine, batch: int, question_s: float, steps: int, path: Path) -> dict:
    """A torch-profiler Chrome trace of ``steps`` engine steps of ``batch`` sessions (after a warm-up turn)."""
    from torch.profiler import ProfilerActivity, profile

    from a2llm_rt.engine.nvtx import STAGES

    rng = np.random.default_rng(0)
    sessions = [engine.new_session() for _ in range(batch)]

    def submit():
        for s in sessions:
            engine.submit(s, (0.1 * rng.standard_normal(int(question_s * 16000))).astype(np.float32))

    submit()
    engine.run_until_idle()  # warm-up: capture / compile
    submit()
    engine.step()  # the prefills stay outside the trace
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.device(engine.device).type == "cuda" else [])
    done = 0
    with profile(activities=acts) as prof:
        while done < steps and engine.busy:
            engine.step()
            done += 1
    if torch.device(engine.device).type == "cuda":
        torch.cuda.synchronize(engine.device)
    engine.run_until_idle()
    for s in sessions:
        s.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    prof.export_chrome_trace(str(path))
    names = {e.name for e in prof.events()}
    return {"path": str(path), "steps": done, "bytes": path.stat().st_size,
            "ranges_found": sorted(n for n in STAGES if n in names)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", choices=("tiny", "full"), default="tiny")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--modes", nargs="+", default=None, choices=("auto", "none", "cuda_graph", "compile"),
                    help="decode-step modes, side by side (default: cuda_graph compile none on CUDA, none on CPU)")
    ap.add_argument("--graph", default=None, choices=("auto", "none", "cuda_graph", "compile"),
                    help="one mode (same as --modes MODE)")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--seconds", type=float, default=4.0, help="answer audio per turn")
    ap.add_argument("--question-seconds", type=float, default=3.0)
    ap.add_argument("--turns", type=int, default=2, help="timed turns per batch size (after one warm-up turn)")
    ap.add_argument("--max-len", type=int, default=4096, help="tokens per cache row")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (CPU device only)")
    ap.add_argument("--budget-s", type=float, default=0.0, help="skip runs that would start after this (0: none)")
    ap.add_argument("--trace", default=None, help="write a Chrome trace of --trace-steps decode steps here")
    ap.add_argument("--trace-steps", type=int, default=50)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)  # fmt: skip
    t_start = time.perf_counter()
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    if cuda:
        if dev.index is None:  # set_device and the figures want an index
            dev = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(dev)
        args.device = str(dev)
    else:
        torch.set_num_threads(args.threads)
    modes = args.modes or ([args.graph] if args.graph else (["cuda_graph", "compile", "none"] if cuda else ["none"]))
    t0 = time.perf_counter()
    stack = build_stack(args.preset, args.device)
    build_s = time.perf_counter() - t0
    sdpa = check_fused_attention(stack, args.device)
    bb = stack.backbone
    kv_bytes = 2 * bb.cfg.num_layers * bb.cfg.num_kv_heads * args.max_len * bb.cfg.head_dim
    kv_bytes *= next(bb.parameters()).element_size()
    info = {
        "bench": "engine",
        "preset": args.preset,
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if cuda else platform.processor(),
        "torch": torch.__version__,
        "dtype": str(next(bb.parameters()).dtype).replace("torch.", ""),
        "nvtx": nvtx_backend(),
        "sdpa": sdpa,
        "build_s": build_s,
        "max_len": args.max_len,
        "kv_cache_mb_per_session": kv_bytes / 2**20,
        "answer_seconds": args.seconds,
        "question_seconds": args.question_seconds,
        "goal_h100_batch1": {"ttfa_s": 0.2, "rtf": 0.25},
        "runs": [],
    }
    out = Path(args.out) if args.out else REPO / "bench" / "results" / f"engine_{args.preset}_{dev.type}.json"
    print(f"engine bench: preset {args.preset}, device {dev}, modes {modes}, nvtx {nvtx_backend()}, "
          f"build {build_s:.1f} s, KV cache {kv_bytes / 2**20:.0f} MiB per session")  # fmt: skip
    if args.trace:
        engine = Engine(stack, _config(args, max(args.batch), modes[0]))
        info["trace"] = trace(engine, max(args.batch), args.question_seconds, args.trace_steps, Path(args.trace))
        info["trace"]["mode"] = engine.runner.mode
        print(f"trace of {info['trace']['steps']} steps ({engine.runner.mode}, batch {max(args.batch)}): "
              f"{info['trace']['path']}; ranges {info['trace']['ranges_found']}")  # fmt: skip
    else:
        print(f"{'mode':>10} {'ran as':>10} {'batch':>5} {'TTFT ms':>9} {'TTFA ms':>9} {'RTF':>7} {'step ms':>8} "
              f"{'steps/s':>8} {'MiB/sess':>9}")  # fmt: skip
        for mode in modes:
            engine = None
            for b in args.batch:
                row = {"mode": mode, "batch": b}
                if args.budget_s and time.perf_counter() - t_start > args.budget_s:
                    row["skipped"] = f"budget of {args.budget_s:.0f} s spent"
                elif mode in ("cuda_graph", "compile") and not cuda:
                    row["skipped"] = "needs CUDA"
                else:
                    try:
                        if engine is None:
                            engine = Engine(stack, _config(args, max(args.batch), mode))
                        row |= run(engine, b, args.question_seconds, args.turns, kv_bytes / 2**20)
                        row["ran_as"] = engine.runner.mode
                        row["fallback"] = engine.runner.fallback
                    except Exception as e:  # noqa: BLE001 - one failing mode must not hide the others' figures
                        row["error"] = f"{type(e).__name__}: {e}"
                info["runs"].append(row)
                _print_row(row)
                atomic_write_json(out, info)  # after every run: a check stopped at its budget keeps these
            del engine
            if cuda:
                torch.cuda.empty_cache()
    atomic_write_json(out, info)
    print(f"wrote {out}")
    return 1 if any("error" in r for r in info["runs"]) else 0


def _config(args, sessions: int, mode: str) -> EngineConfig:
    return EngineConfig(max_sessions=sessions, max_len=args.max_len, max_seconds=args.seconds,
                        min_seconds=args.seconds, graph=mode, sampling=SamplingConfig.greedy())  # fmt: skip


def _print_row(r: dict) -> None:
    if "ttft_s" not in r:
        print(f"{r['mode']:>10} {'-':>10} {r['batch']:>5}  {r.get('skipped') or r.get('error')}")
        return
    print(f"{r['mode']:>10} {r['ran_as']:>10} {r['batch']:>5} {r['ttft_s'] * 1e3:>9.1f} {r['ttfa_s'] * 1e3:>9.1f} "
          f"{r['rtf']:>7.3f} {r['step_ms']:>8.2f} {r['steps_per_s']:>8.1f} {r['gpu_mem_per_session_mb']:>9.1f}")


if __name__ == "__main__":
    sys.exit(main())
