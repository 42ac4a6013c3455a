"""Scale benchmark: sessions answered in real time vs engine replicas on Ray (``plugin_bridge.ray_source``).

For each replica count R (``--replicas 1,2``) a :class:`RaySource` starts R engine replicas (Ray actors; one GPU each
where the cluster has GPUs, else CPU actors with ``--threads`` torch threads), then for each session count N
(``--sessions``) N sessions each ask one question at the same moment (threads calling ``run_turn``, as the bridge's
turn workers do; ZeroMQ is left out: ``bench/bridge.py`` measures the bridge). Events are released as generated
(pace 0). A session is served in *real time* when every audio chunk arrives before a player who starts playing at
the first chunk + ``--buffer-s`` needs it: ``arrival_k <= first + buffer + offset_k / 24000``. Reported per (R, N):
sessions in real time, TTFA p50/max (first audio), worst lateness (negative: the smallest margin), aggregate answer
audio per wall second, and the CPU the bridge's process spent per event received through Ray; and per R
the largest N with every session in real time.

    python bench/scale.py [--replicas 1,2] [--sessions 1,2,4,8] [--seconds 2]     -> table + bench/results/scale.json
    python bench/scale.py --address auto --backbone DIR --motion DIR --replicas 1,2,4 --sessions 8,16,32  (GPU)

On this shared 2-core CPU with the tiny random models the figures say how the replicas share the CPU, not what a GPU
fleet does; the tiny model also speaks mostly text tokens (about ten per audio token), so "real time" here needs far
more decode steps per second of speech than Step-Audio-2 does.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from a2llm_rt.engine.presets import engine_config  # noqa: E402
from plugin_bridge.engine_source import StackOptions  # noqa: E402
from plugin_bridge.turn_source import OUTPUT_SAMPLE_RATE, AudioChunk, TurnEnd  # noqa: E402


def question(i: int, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(16000 * seconds)) / 16000
    return (0.2 * np.sin(2 * np.pi * (150 + 23 * i) * t)).astype(np.float32)


def one_round(source, n: int, base_sid: int, buffer_s: float, timeout_s: float) -> dict:
    """N sessions open, ask at once, close; per-session real-time verdicts and timings."""
    sids = [base_sid + i for i in range(n)]
    for s in sids:
        source.open_session(s)
    stats: list[dict] = [{} for _ in sids]
    counts = [0] * n
    go = threading.Barrier(n + 1)

    def run(k: int) -> None:
        go.wait()
        t0 = time.monotonic()
        first = None
        late = -float("inf")
        samples = 0
        ok = False
        try:
            for e in source.run_turn(sids[k], question(k), threading.Event()):
                now = time.monotonic()
                counts[k] += 1
                if isinstance(e, AudioChunk):
                    if first is None:
                        first = now
                    due = first + buffer_s + e.sample_offset / OUTPUT_SAMPLE_RATE
                    late = max(late, now - due)
                    samples = e.sample_offset + e.pcm.shape[0]
                elif isinstance(e, TurnEnd):
                    ok = not e.cancelled
                if now - t0 > timeout_s:
                    break
        except Exception as exc:  # noqa: BLE001
            stats[k] = {"error": f"{type(exc).__name__}: {exc}"}
            return
        stats[k] = {
            "completed": ok,
            "ttfa_s": (first - t0) if first is not None else None,
            "late_s": late,
            "audio_s": samples / OUTPUT_SAMPLE_RATE,
            "wall_s": time.monotonic() - t0,
            "real_time": ok and first is not None and late <= 0,
        }

    threads = [threading.Thread(target=run, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    go.wait()
    t0, cpu0 = time.monotonic(), time.process_time()
    for t in threads:
        t.join(timeout_s + 30)
    wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
    for s in sids:
        source.close_session(s)
    good = [s for s in stats if "error" not in s]
    ttfa = [s["ttfa_s"] for s in good if s.get("ttfa_s") is not None]
    return {
        "sessions": n,
        "real_time": sum(1 for s in good if s["real_time"]),
        "failed": sum(1 for s in stats if "error" in s or not s.get("completed")),
        "ttfa_p50_s": round(float(np.median(ttfa)), 3) if ttfa else None,
        "ttfa_max_s": round(max(ttfa), 3) if ttfa else None,
        "worst_late_s": round(max((s["late_s"] for s in good if s["ttfa_s"] is not None), default=0.0), 3),
        "audio_s_per_wall_s": round(sum(s["audio_s"] for s in good) / wall, 2),
        "events": sum(counts),
        "bridge_cpu_us_per_event": round(1e6 * cpu / max(1, sum(counts)), 1),
        "errors": sorted({s["error"] for s in stats if "error" in s})[:3],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicas", default="1,2", help="comma-separated replica counts")
    ap.add_argument("--sessions", default="1,2,4,8,16", help="comma-separated session counts")
    ap.add_argument("--seconds", type=float, default=2.0, help="answer audio per session (s)")
    ap.add_argument("--buffer-s", type=float, default=0.25, help="player's jitter buffer before playing (s)")
    ap.add_argument("--max-new-tokens", type=int, default=None, help="tokens per answer (default: engine's)")
    ap.add_argument("--backbone", default="tiny")
    ap.add_argument("--motion", default="tiny")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda (GPU replicas: one GPU each)")
    ap.add_argument("--address", default=None, help="Ray cluster (default: a local one with --cpus CPUs)")
    ap.add_argument("--cpus", type=int, default=None, help="CPUs of the local Ray (default: all)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per CPU replica")
    ap.add_argument("--timeout-s", type=float, default=300.0, help="per round")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "scale.json")
    args = ap.parse_args(argv)
    try:
        import ray
    except ImportError:
        print("bench/scale.py: skipped, Ray is not installed (pip install 'ray>=2.40')")
        return 0
    from plugin_bridge.ray_source import RaySource, ReplicaSpec

    replica_counts = [int(x) for x in args.replicas.split(",")]
    session_counts = [int(x) for x in args.sessions.split(",")]
    if args.address is None:
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    else:
        ray.init(address=args.address, log_to_driver=False)
    gpus = 1.0 if args.device.startswith("cuda") else 0.0
    rows = max(session_counts)
    spec = ReplicaSpec(
        args.backbone, args.motion,
        StackOptions(device=args.device),
        engine_config(args.backbone, max_sessions=rows, max_seconds=args.seconds, min_seconds=args.seconds),
        pace=0.0, threads=args.threads, max_new_tokens=args.max_new_tokens,
    )  # fmt: skip
    rows_out = []
    best: dict[int, int] = {}
    try:
        for r in replica_counts:
            t = time.monotonic()
            source = RaySource(spec, replicas=r, gpus=gpus, cpus=1.0)
            print(f"{r} replica(s) up in {time.monotonic() - t:.1f} s", flush=True)
            try:
                one_round(source, 1, 10_000_000, args.buffer_s, args.timeout_s)  # warm-up
                best[r] = 0
                for k, n in enumerate(session_counts):
                    row = {"replicas": r, **one_round(source, n, 1000 * (k + 1), args.buffer_s, args.timeout_s)}
                    rows_out.append(row)
                    print(row, flush=True)
                    if row["real_time"] == n:
                        best[r] = max(best[r], n)
            finally:
                source.close()
    finally:
        ray.shutdown()
    print(f"\n{'replicas':>8} {'sessions':>8} {'real time':>9} {'TTFA p50':>9} {'TTFA max':>9} {'worst late':>10} "
          f"{'audio s/s':>9} {'us/event':>8}")  # fmt: skip
    for row in rows_out:
        print(f"{row['replicas']:>8} {row['sessions']:>8} {row['real_time']:>9} {row['ttfa_p50_s']!s:>9} "
              f"{row['ttfa_max_s']!s:>9} {row['worst_late_s']:>10} {row['audio_s_per_wall_s']:>9} "
              f"{row['bridge_cpu_us_per_event']:>8}")  # fmt: skip
    print("largest session count with every session in real time: "
          + ", ".join(f"{r} replica(s): {n}" for r, n in best.items()))  # fmt: skip
    result = {
        "bench": "scale",
        "backbone": args.backbone,
        "motion": args.motion,
        "device": args.device,
        "seconds": args.seconds,
        "buffer_s": args.buffer_s,
        "rows": rows_out,
        "max_real_time_sessions": {str(r): n for r, n in best.items()},
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
                 "load_avg": os.getloadavg()},
    }  # fmt: skip
    from a2llm_rt.utils.fileio import atomic_write_json

    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
