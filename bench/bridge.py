"""Bridge benchmark: N sessions x (25 fps face + 24 kHz audio) on loopback; p50/p99 delivery latency and loss.

The server (``python -m plugin_bridge.serve``, scripted source paced in real time, one event per 40 ms frame: an
AudioChunk of 960 samples + a FaceFrames of one arkit52 frame) runs in its own process; one client process drives
all N sessions from one thread. Latency = client receive time - the server's ``send_time_us`` stamp (taken when the
server's loop wakes to send a batch, so a batch's own sending time counts), both on the host's monotonic clock; the
client takes every ready message off all its sockets (stamping each) before reading any, and reads only headers and
the few payload fields it counts (decoding every message in Python would make the client, not the server, the
bottleneck at 256 sessions). Jitter = how late an audio chunk arrives relative to its place in the answer: per
session, ``arrival - sample_offset / 24000`` minus its smallest value over the turn (0 for a perfectly paced stream; it
also shows a scheduler that sends late, which the send stamp alone would hide).
Loss = audio samples and face frames the TurnEnd announced but the client did not receive, plus sequence-number gaps.
Server CPU per message = the server process's CPU time (user + system, all threads, from /proc) during the row over the
messages it delivered; its inverse is the most messages per second one fully used core could sustain. The machine's
load average is recorded with each row: on a shared machine the figures track it.

    python bench/bridge.py [--sessions 1,16,64] [--seconds 5]     -> table + bench/results/bridge.json
Goal: 64 sessions with 0 loss and p99 <= 5 ms.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import socket
import struct
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


def _wait_ready(endpoint: str, timeout_s: float = 120.0) -> None:
    """Until the server answers a Hello (it imports torch first), so that no row measures its start-up."""
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(endpoint)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            s.send_multipart(P.Hello(layouts=(2,), client_name="bench-probe").encode_frames())
            if s.poll(1000) and isinstance(P.decode_frames(s.recv_multipart()), P.Welcome):
                s.send_multipart(P.Bye().encode_frames())
                return
        raise RuntimeError(f"the server at {endpoint} did not answer within {timeout_s:g} s")
    finally:
        s.close(0)


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
    arrivals: dict[zmq.Socket, list[float]] = {s: [] for s in socks}  # arrival - sample_offset / 24000 (s)
    hdr = P.HEADER
    audio_kind, face_kind, end_kind = int(P.Kind.AUDIO_CHUNK), int(P.Kind.FACE_FRAMES), int(P.Kind.TURN_END)
    load0 = os.getloadavg()[0]
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
                    frames = s.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                batch.append((s, time.monotonic_ns() // 1000, frames))
        for s, now_us, frames in batch:
            header, payload = frames
            _, _, kind, turn_id, _, seq, send_us = hdr.unpack(header)
            st = state[s]
            if st["seq"] is not None and seq != st["seq"] + 1:
                st["gaps"] += 1
            st["seq"] = seq
            if turn_id != 1:
                continue
            st["msgs"] += 1
            if kind == audio_kind:
                lat.append((now_us - send_us) / 1000.0)
                offset, count = struct.unpack_from("<QI", payload, 8)
                if offset == st["audio"]:
                    st["audio"] += count
                arrivals[s].append(now_us / 1e6 - offset / 24000)
            elif kind == face_kind:
                lat.append((now_us - send_us) / 1000.0)
                first, count = struct.unpack_from("<Q", payload, 0)[0], struct.unpack_from("<I", payload, 16)[0]
                if first == st["face"]:
                    st["face"] += count
            elif kind == end_kind:
                st["end"] = P.decode_frames([header, payload])
                done += 1
        if time.monotonic() >= next_hb:
            next_hb += 1.0
            for s in socks:
                s.send_multipart(P.Heartbeat(time.monotonic_ns() // 1000, 0).encode_frames())
    wall = time.monotonic() - t0
    cpu1 = _cpu_s(server_pid) if server_pid else None
    load1 = os.getloadavg()[0]
    jitter = np.concatenate([np.asarray(v) - min(v) for v in arrivals.values() if v]) * 1000.0 if lat else np.zeros(0)
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
        "jitter_p99_ms": round(float(np.percentile(jitter, 99)), 3) if jitter.size else None,
        "load_avg": [round(load0, 2), round(load1, 2)],
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
    ap.add_argument("--server-args", default="", help="extra serve options, e.g. '--pace-lookahead-s 0.5'")
    args = ap.parse_args(argv)
    counts = [int(x) for x in args.sessions.split(",") if x.strip()]
    port = _free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    server = subprocess.Popen(
        [
            sys.executable, "-m", "plugin_bridge.serve", "--bind", endpoint, "--log-level", "WARNING",
            "--script-seconds", str(args.seconds), "--script-frames-per-event", "1", "--script-pace", "1.0",
            "--max-turn-workers", str(max(counts) + 8), "--max-sessions", str(max(counts) + 8),
            *args.server_args.split(),
        ],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
    )  # fmt: skip
    rows = []
    try:
        _wait_ready(endpoint)
        for n in counts:
            rows.append(run_sessions(endpoint, n, args.seconds, timeout_s=args.seconds * 3 + 30, server_pid=server.pid))
            time.sleep(0.3)
    finally:
        server.terminate()
        server.wait(10)
    head = f"{'sessions':>8} {'msgs/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'jit99 ms':>8} {'lost aud':>9}"
    print(head + f" {'lost face':>9} {'seq gaps':>8} {'incompl':>7} {'cpu us/msg':>10} {'max msg/cpu-s':>13} load avg")
    for r in rows:
        print(
            f"{r['sessions']:>8} {r['msgs_per_s']:>8} {r['p50_ms']:>8} {r['p99_ms']:>8} {r['max_ms']:>8} "
            f"{r['jitter_p99_ms']!s:>8} {r['lost_audio_samples']:>9} {r['lost_face_frames']:>9} {r['seq_gaps']:>8} "
            f"{r['incomplete_turns']:>7} {r['server_cpu_us_per_msg']!s:>10} {r['max_msgs_per_cpu_s']!s:>13} "
            f"{r['load_avg'][0]}-{r['load_avg'][1]}"
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
        "server_args": args.server_args,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from a2llm_rt.utils.fileio import atomic_write_json

    atomic_write_json(args.out, result)
    print(f"goal (64 sessions, 0 loss, p99 <= 5 ms): {'met' if ok else 'NOT met'}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
