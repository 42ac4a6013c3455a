"""Bridge benchmark: N sessions x (25 fps face + 24 kHz audio) on loopback; p50/p99 delivery latency and loss.

The server (``python -m plugin_bridge.serve``, scripted source paced in real time, one event per 40 ms frame: an
AudioChunk of 960 samples + a FaceFrames of one arkit52 frame) runs in its own process; one client process drives
all N sessions from one thread. Latency = client receive time - the server's ``send_time_us`` stamp (taken when
the turn worker encodes the event), both on the host's monotonic clock; the client takes every ready message off
all its sockets (stamping each) before decoding any, so its own decode work is not counted as delivery time.
Loss = audio samples and face frames the TurnEnd announced but the client did not receive, plus sequence-number gaps.
Server CPU per message = the server process's CPU time (user + system, all threads, from /proc) during the row over the
messages it delivered; its inverse is the most messages per second one fully used core could sustain.

    python bench/bridge.py [--sessions 1,16,64] [--seconds 5]     -> table + bench/results/bridge.json
Goal: 64 sessions with 0 loss and p99 <= 5 ms.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import zmq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from plugin_bridge import protocol as P  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc), or None where unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_sessions(endpoint: str, n: int, seconds: float, timeout_s: float, server_pid: int | None = None) -> dict:
    ctx = zmq.Context.instance()
    socks = []
    for _ in range(n):
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(endpoint)
        socks.append(s)
    poller = zmq.Poller()
    for s in socks:
        poller.register(s, zmq.POLLIN)
    for s in socks:  # handshake
        s.send_multipart(P.Hello(layouts=(2,), client_name="bench").encode_frames())
    deadline = time.monotonic() + 30
    welcomed = 0
    while welcomed < n and time.monotonic() < deadline:
        for s, _ in poller.poll(1000):
            if isinstance(P.decode_frames(s.recv_multipart()), P.Welcome):
                welcomed += 1
    if welcomed < n:
        raise RuntimeError(f"only {welcomed}/{n} sessions welcomed")
    question = np.zeros(1600, np.int16)
    state = {s: {"seq": None, "gaps": 0, "audio": 0, "face": 0, "end": None, "msgs": 0} for s in socks}
    gc.collect()
    gc.freeze()  # the client's own full collections would otherwise show up as delivery latency
    cpu0 = _cpu_s(server_pid) if server_pid else None
    for s in socks:
        s.send_multipart(P.UserAudio(question, 16000, 0, True, turn_id=1).encode_frames())
    lat: list[float] = []
    done = 0
    t0 = time.monotonic()
    next_hb = t0 + 1.0
    while done < n and time.monotonic() - t0 < timeout_s:
        # drain every ready socket first, stamping each message as it is taken off its socket, and decode after:
        # decoding while other sockets wait would count the client's own work as delivery latency
        batch: list[tuple[zmq.Socket, int, list]] = []
        for s, _ in poller.poll(200):
            while True:
                try:
                    frames = s.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                batch.append((s, time.monotonic_ns() // 1000, frames))
        for s, now_us, frames in batch:
            msg = P.decode_frames([f.bytes for f in frames])
            st = state[s]
            if st["seq"] is not None and msg.seq != st["seq"] + 1:
                st["gaps"] += 1
            st["seq"] = msg.seq
            if msg.turn_id != 1:
                continue
            st["msgs"] += 1
            if isinstance(msg, (P.AudioChunk, P.FaceFrames)):
                lat.append((now_us - msg.send_time_us) / 1000.0)
            if isinstance(msg, P.AudioChunk):
                if msg.sample_offset == st["audio"]:
                    st["audio"] += msg.samples.shape[0]
            elif isinstance(msg, P.FaceFrames):
                if msg.first_frame == st["face"]:
                    st["face"] += msg.values.shape[0]
            elif isinstance(msg, P.TurnEnd):
                st["end"] = msg
                done += 1
        if time.monotonic() >= next_hb:
            next_hb += 1.0
            for s in socks:
                s.send_multipart(P.Heartbeat(time.monotonic_ns() // 1000, 0).encode_frames())
    wall = time.monotonic() - t0
    cpu1 = _cpu_s(server_pid) if server_pid else None
    expected_frames = round(seconds * 25)
    lost_audio = lost_face = gaps = incomplete = 0
    for st in state.values():
        gaps += st["gaps"]
        end = st["end"]
        if end is None or end.status != P.TurnStatus.COMPLETED:
            incomplete += 1
        lost_audio += expected_frames * 960 - st["audio"]
        lost_face += expected_frames - st["face"]
    for s in socks:
        s.send_multipart(P.Bye().encode_frames())
        s.close(0)
    a = np.asarray(lat)
    msgs = int(sum(st["msgs"] for st in state.values()))
    cpu_us = None if cpu0 is None or cpu1 is None or not msgs else (cpu1 - cpu0) / msgs * 1e6
    return {
        "sessions": n,
        "seconds": seconds,
        "messages": msgs,
        "msgs_per_s": round(msgs / wall, 1),
        "server_cpu_us_per_msg": None if cpu_us is None else round(cpu_us, 1),
        "max_msgs_per_cpu_s": None if not cpu_us else round(1e6 / cpu_us),
        "p50_ms": round(float(np.percentile(a, 50)), 3) if a.size else None,
        "p99_ms": round(float(np.percentile(a, 99)), 3) if a.size else None,
        "max_ms": round(float(a.max()), 3) if a.size else None,
        "lost_audio_samples": int(lost_audio),
        "lost_face_frames": int(lost_face),
        "seq_gaps": int(gaps),
        "incomplete_turns": int(incomplete),
        "wall_s": round(wall, 2),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", default="1,16,64", help="comma-separated session counts")
    ap.add_argument("--seconds", type=float, default=5.0, help="answer length per session (s)")
    ap.add_argument("--device", default="cpu", help="ignored (the bridge has no model); kept for `make bench`")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "bridge.json")
    args = ap.parse_args(argv)
    counts = [int(x) for x in args.sessions.split(",") if x.strip()]
    port = _free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    server = subprocess.Popen(
        [
            sys.executable, "-m", "plugin_bridge.serve", "--bind", endpoint, "--log-level", "WARNING",
            "--script-seconds", str(args.seconds), "--script-frames-per-event", "1", "--script-pace", "1.0",
            "--max-turn-workers", str(max(counts) + 8), "--max-sessions", str(max(counts) + 8),
        ],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
    )  # fmt: skip
    rows = []
    try:
        time.sleep(0.5)
        for n in counts:
            rows.append(run_sessions(endpoint, n, args.seconds, timeout_s=args.seconds * 3 + 30, server_pid=server.pid))
            time.sleep(0.3)
    finally:
        server.terminate()
        server.wait(10)
    head = f"{'sessions':>8} {'msgs/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'lost aud':>9} {'lost face':>9}"
    print(head + f" {'seq gaps':>8} {'incompl':>7} {'cpu us/msg':>10} {'max msg/cpu-s':>13}")
    for r in rows:
        print(
            f"{r['sessions']:>8} {r['msgs_per_s']:>8} {r['p50_ms']:>8} {r['p99_ms']:>8} {r['max_ms']:>8} "
            f"{r['lost_audio_samples']:>9} {r['lost_face_frames']:>9} {r['seq_gaps']:>8} {r['incomplete_turns']:>7} "
            f"{r['server_cpu_us_per_msg']!s:>10} {r['max_msgs_per_cpu_s']!s:>13}"
        )
    goal = next((r for r in rows if r["sessions"] == 64), None)
    ok = goal is not None and goal["lost_audio_samples"] == goal["lost_face_frames"] == goal["incomplete_turns"] == 0
    ok = ok and goal["p99_ms"] is not None and goal["p99_ms"] <= 5.0
    result = {
        "benchmark": "bridge",
        "goal": "64 sessions, 0 loss, p99 <= 5 ms",
        "goal_met": ok if goal is not None else None,
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "zmq": zmq.zmq_version(),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from a2llm_rt.utils.fileio import atomic_write_json

    atomic_write_json(args.out, result)
    print(f"goal (64 sessions, 0 loss, p99 <= 5 ms): {'met' if ok else 'NOT met'}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
