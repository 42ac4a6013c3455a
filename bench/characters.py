"""Game-character building blocks: host cost per session of the VAD and of the face stream (idle + emotion).

The VAD runs one Silero window (512 samples, 32 ms) per step and session; the face stream makes 25 frames per second
per session (idle life -> crossfade -> emotion). Both are numpy/onnxruntime on the host, one stream per state, so the
number that matters is how many sessions one CPU core keeps in real time.

    python bench/characters.py --device cpu [--seconds 20]     -> table + bench/results/characters.json
Goal: 64 sessions of both on one core (real-time factor per session <= 1/64).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from a2llm_rt.audio_vad import SAMPLE_RATE, SileroVad, UtteranceSegmenter  # noqa: E402
from a2llm_rt.face.character_face import CharacterFace  # noqa: E402


def bench_vad(seconds: float, chunk: int) -> dict:
    seg = UtteranceSegmenter(vad=SileroVad(threads=1))
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    # a voiced-like signal switching on and off every second, so both paths (speech, silence) run
    sig = (0.2 * np.sin(2 * np.pi * 180 * t) * (np.floor(t) % 2) + rng.normal(0, 1e-3, t.size)).astype(np.float32)
    st = seg.init_state()
    t0 = time.perf_counter()
    for i in range(0, sig.size, chunk):
        _, st = seg.step(sig[i : i + chunk], st)
    dt = time.perf_counter() - t0
    return {"audio_s": seconds, "compute_s": dt, "rtf": dt / seconds, "sessions_per_core": seconds / dt}


def bench_face(seconds: float) -> dict:
    face = CharacterFace()
    st = face.set_emotion(face.init_state(0), "happy", 0.7)
    n = int(seconds * 25)
    ans = np.zeros((5, 61), np.float32)
    t0 = time.perf_counter()
    for k in range(0, n, 5):  # one call per 200 ms of frames, answering half the time
        _, st = face.step(5, st, ans if (k // 125) % 2 else None)
    dt = time.perf_counter() - t0
    return {"frames": n, "compute_s": dt, "rtf": dt / seconds, "sessions_per_core": seconds / dt}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu"], help="host-only pieces: cpu")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--chunk", type=int, default=320, help="microphone chunk in samples (320 = 20 ms)")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "characters.json"))
    a = p.parse_args(argv)
    rows = {"vad": bench_vad(a.seconds, a.chunk), "face": bench_face(a.seconds)}
    print(f"{'piece':<6} {'rtf/session':>12} {'sessions/core':>14}")
    for k, r in rows.items():
        print(f"{k:<6} {r['rtf']:>12.4f} {r['sessions_per_core']:>14.0f}")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"host": platform.processor() or platform.machine(), **rows}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
