"""Benchmark of the session engine: TTFT (first audio token), TTFA (first face frame) and RTF per batch size.

    python bench/engine.py                                   # tiny models on the CPU (seconds)
    python bench/engine.py --preset full --device cuda       # Step-Audio-2-mini size, random bf16 weights, CUDA graph
    python bench/engine.py --preset full --device cuda --graph none --batch 1 4 8

The full preset builds the real architecture (28 layers x 3584, vocab 158720, 32-layer audio encoder) with random
weights, the paper's connector (d 768, 6 layers) and RVQ-VAE, and the test vocoder (token2wav is not part of the
timing); the token layout gets bench-only ids for the specials no public source names (<|BOT|>, <|EOT|>,
<tts_pad>), and text goes through a byte-level stand-in tokenizer. Every session answers a question of
``--question-seconds`` with exactly ``--seconds`` of audio (stops are masked until then). Goal on one H100 at batch 1:
TTFA <= 200 ms, RTF <= 0.25. Prints a table and writes ``bench/results/engine_<preset>_<device>.json``.
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

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
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


def run(engine: Engine, batch: int, question_s: float, turns: int) -> dict:
    rng = np.random.default_rng(0)
    sessions = [engine.new_session() for _ in range(batch)]
    rows = []
    for turn in range(turns + 1):  # turn 0 warms up (graph capture, allocator, kernels)
        for s in sessions:
            audio = (0.1 * rng.standard_normal(int(question_s * 16000))).astype(np.float32)
            engine.submit(s, audio)
        t0 = time.perf_counter()
        events = engine.run_until_idle()
        wall = time.perf_counter() - t0
        ends = [e for e in events if isinstance(e, TurnEnd)]
        if turn == 0:
            continue
        steps = max(e.counts["steps"] for e in ends)
        rows.append({
            "ttft_s": float(np.mean([e.ttft_s for e in ends])),
            "ttfa_s": float(np.mean([e.ttfa_s for e in ends])),
            "rtf": float(np.mean([e.rtf for e in ends])),
            "step_ms": 1000 * wall / max(1, steps),
            "audio_s": float(np.mean([e.counts["audio_tokens"] / 25 for e in ends])),
        })  # fmt: skip
    for s in sessions:
        s.close()
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} | {"batch": batch}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", choices=("tiny", "full"), default="tiny")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--graph", default="auto", choices=("auto", "none", "cuda_graph", "compile"))
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--seconds", type=float, default=4.0, help="answer audio per turn")
    ap.add_argument("--question-seconds", type=float, default=3.0)
    ap.add_argument("--turns", type=int, default=2, help="timed turns per batch size (after one warm-up turn)")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (CPU device only)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    stack = build_tiny_stack(0, device=args.device) if args.preset == "tiny" else build_full_stack(args.device)
    build_s = time.perf_counter() - t0
    cfg = EngineConfig(
        max_sessions=max(args.batch),
        max_len=4096,
        max_seconds=args.seconds,
        min_seconds=args.seconds,
        graph=args.graph,
        sampling=SamplingConfig.greedy(),
    )
    engine = Engine(stack, cfg)
    results = []
    print(f"engine bench: preset {args.preset}, device {args.device}, graph {engine.runner.mode}, "
          f"nvtx {nvtx_backend()}, build {build_s:.1f} s")  # fmt: skip
    print(f"{'batch':>5} {'TTFT ms':>9} {'TTFA ms':>9} {'RTF':>7} {'step ms':>8} {'audio s':>8}")
    for b in args.batch:
        r = run(engine, b, args.question_seconds, args.turns)
        results.append(r)
        print(f"{b:>5} {r['ttft_s'] * 1e3:>9.1f} {r['ttfa_s'] * 1e3:>9.1f} {r['rtf']:>7.3f} {r['step_ms']:>8.2f} "
              f"{r['audio_s']:>8.2f}")  # fmt: skip
    info = {
        "preset": args.preset,
        "device": args.device,
        "device_name": torch.cuda.get_device_name() if args.device == "cuda" else platform.processor(),
        "graph": engine.runner.mode,
        "torch": torch.__version__,
        "answer_seconds": args.seconds,
        "question_seconds": args.question_seconds,
        "goal_h100_batch1": {"ttfa_s": 0.2, "rtf": 0.25},
        "results": results,
    }
    out = Path(args.out) if args.out else REPO / "bench" / "results" / f"engine_{args.preset}_{args.device}.json"
    atomic_write_json(out, info)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
