"""The native client core (plugin_bridge/native): builds it with CMake into build/native if needed, then runs its C++
tests through ctest: golden fixtures + fuzzing, the jitter buffer / sync clock, a decoder parity check against
protocol.py on mutated messages, and a live turn against ``python -m plugin_bridge.serve`` on a loopback port.

Skips (with the reason) only when cmake, pkg-config's libzmq or cppzmq's zmq.hpp are missing.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from plugin_bridge import protocol as P
from tests.plugin_bridge.helpers import free_port

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "plugin_bridge" / "native"
BUILD = ROOT / "build" / "native"
FIXTURES = ROOT / "plugin_bridge" / "fixtures"


def _missing_toolchain() -> str | None:
    if shutil.which("cmake") is None:
        return "cmake is not installed (Debian: cmake)"
    if shutil.which("pkg-config") is None or subprocess.run(["pkg-config", "--exists", "libzmq"]).returncode != 0:
        return "libzmq is not installed (Debian: libzmq3-dev, pkg-config)"
    if not any(Path(d, "zmq.hpp").exists() for d in ("/usr/include", "/usr/local/include")):
        return "cppzmq's zmq.hpp is not installed (Debian: cppzmq-dev)"
    return None


@pytest.fixture(scope="module")
def native_build() -> Path:
    """build/native, configured and built (incremental: a no-op after `make native`)."""
    reason = _missing_toolchain()
    if reason:
        pytest.skip(f"native client core not built: {reason}")
    if not (BUILD / "CMakeCache.txt").exists():
        _run(["cmake", "-S", str(SOURCE), "-B", str(BUILD), "-DCMAKE_BUILD_TYPE=Release"], timeout=120)
    _run(["cmake", "--build", str(BUILD), "-j2"], timeout=300)
    return BUILD


def _run(cmd: list[str], timeout: float, env: dict[str, str] | None = None) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    out = p.stdout + p.stderr
    assert p.returncode == 0, f"{' '.join(cmd)} failed ({p.returncode}):\n{out[-6000:]}"
    return out


def _ctest(build: Path, regex: str, env: dict[str, str] | None = None) -> str:
    out = _run(
        ["ctest", "--test-dir", str(build), "-R", regex, "--output-on-failure", "-V"],
        timeout=1200,  # generous: one loaded core
        env={**os.environ, **(env or {})},
    )
    assert "***Skipped" not in out, out[-4000:]
    assert "0 failed checks" in out, out[-4000:]
    return out


def test_fixtures_fuzz_and_sync_clock(native_build: Path) -> None:
    out = _ctest(native_build, "^(protocol|playback)$")
    assert "golden_messages_decode_to_their_fields" in out
    assert "interpolates_between_frames" in out
    assert "ok   barge_in_cancels_one_server_turn" in out and "ok   idle_face_plays_on_its_own_clock" in out


def test_final_errors_are_final(native_build: Path) -> None:
    """After AUDIO_TOO_LONG / TURN_FAILED / TurnEnd for the utterance being sent, the core sends and re-sends nothing
    of it (a scripted ZeroMQ server inside the test records every UserAudio)."""
    out = _ctest(native_build, "^final_errors$")
    assert "ok   no_audio_is_sent_after_the_server_ends_the_utterance_and_nothing_is_resent" in out
    assert "ok   cancel_closes_a_refused_utterance" in out


# --- decoder parity with protocol.py -------------------------------------------------------------------------------
def _mutations(n: int, seed: int) -> list[bytes]:
    """Deterministic mutations of the golden fixtures (bit flips, truncation, extension, splices, length fixes)."""
    rng = np.random.default_rng(seed)
    corpus = [p.read_bytes() for p in sorted(FIXTURES.glob("*.bin"))]
    out: list[bytes] = []
    for _ in range(n):
        b = bytearray(corpus[rng.integers(len(corpus))])
        for _ in range(int(rng.integers(1, 4))):
            op = int(rng.integers(5))
            if op == 0 and b:
                b[int(rng.integers(len(b)))] ^= 1 << int(rng.integers(8))
            elif op == 1 and b:
                b[int(rng.integers(len(b)))] = int(rng.integers(256))
            elif op == 2:
                del b[int(rng.integers(len(b) + 1)) :]
            elif op == 3:
                b += rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8).tobytes()
            elif op == 4 and len(b) >= 36:
                pos = 32 + int(rng.integers(len(b) - 35))
                b[pos : pos + 4] = struct.pack("<I", int(rng.choice([0, 1, 2, 255, 65535, 0xFFFFFFFF, 61])))
        if len(b) >= P.HEADER_SIZE and rng.integers(2):
            struct.pack_into("<I", b, 12, len(b) - P.HEADER_SIZE)
        out.append(bytes(b))
    return out


def parity_file(path: Path, n: int, seed: int) -> Path:
    """Writes ``n`` mutated fixtures with protocol.py's verdict on each (0 = accepted, else its ErrorCode) for the
    other decoders to match: ``u32 n``, then per case ``u32 length, u16 code, bytes``; both verdicts occur."""
    cases = _mutations(n, seed)
    blob = bytearray(struct.pack("<I", len(cases)))
    codes = []
    for b in cases:
        try:
            P.decode(b)
            code = 0
        except P.ProtocolError as e:
            code = int(e.code)
        codes.append(code)
        blob += struct.pack("<IH", len(b), code) + b
    assert 0 in codes and any(codes)
    path.write_bytes(bytes(blob))
    return path


def test_decoder_parity_with_protocol_py(native_build: Path, tmp_path: Path) -> None:
    """The C++ decoder accepts exactly what protocol.py accepts and rejects the rest with the same ErrorCode."""
    path = parity_file(tmp_path / "parity.bin", 4000, seed=7)
    out = _ctest(native_build, "^protocol_parity$", {"A2LLM_PARITY_FILE": str(path)})
    assert "parity: 4000 cases" in out


# --- live against the Python server ----------------------------------------------------------------------------------
def _wait_port(port: int, proc: subprocess.Popen, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}:\n{proc.stdout.read() if proc.stdout else ''}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError("server did not start listening")


@pytest.fixture
def live_server():
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "plugin_bridge.serve", "--backbone", "tiny", "--motion", "tiny", "--bind", endpoint]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_port(port, proc)
        yield endpoint
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_live_turn_against_python_server(native_build: Path, live_server: str) -> None:
    out = _ctest(native_build, "^live$", {"A2LLM_TEST_ENDPOINT": live_server})
    for name in (
        "one_turn_complete_in_order_and_in_sync",
        "cancel_mid_answer",
        "character_and_typed_turn_against_the_server",  # protocol version 2 through the C ABI
        "two_characters_talk_at_once",
        "api_misuse_fails_cleanly",
    ):
        assert f"ok   {name}" in out, out[-4000:]


def test_characters_against_a_scripted_server(native_build: Path) -> None:
    """Protocol version 2 through the C ABI against a scripted ZeroMQ server inside the test: Hello negotiation and
    the version 1 fallback, the character re-sent after a restart, typed turns, hands-free speech events, barge-in
    (15 ms fade, late audio dropped), idle face, local checks against ServerInfo."""
    out = _ctest(native_build, "^characters$")
    for name in (
        "version_2_session_with_a_character_typed_turn_and_idle_face",
        "hands_free_speech_events_and_barge_in",
        "the_character_is_re_sent_after_a_server_restart",
        "a_version_1_server_gets_a_version_1_session",
        "max_version_1_speaks_version_1_to_a_version_2_server",
    ):
        assert f"ok   {name}" in out, out[-4000:]


def reconnect_after_server_restart(client_argv: list[str], **popen: object) -> None:
    """Start a tiny server, start ``client_argv + [endpoint]`` (a ``test_live --reconnect`` build), restart the server
    once the client prints READY, and check that the client reconnected by itself and ran a turn."""
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "plugin_bridge.serve", "--backbone", "tiny", "--motion", "tiny", "--bind", endpoint]
    cmd += ["--script-seconds", "0.5"]
    servers = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)]
    client = None
    try:
        _wait_port(port, servers[0])
        client = subprocess.Popen(
            [*client_argv, endpoint], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen
        )
        assert client.stdout is not None
        line = client.stdout.readline()  # the client prints READY once welcomed (or fails and exits)
        assert line.strip() == "READY", line + client.stdout.read()
        servers[0].send_signal(signal.SIGTERM)
        servers[0].wait(timeout=10)
        servers.append(subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
        out, _ = client.communicate(timeout=600)
        assert client.returncode == 0, out
        assert "ok   reconnects_after_server_restart" in out, out
    finally:
        for p in [*servers, client]:
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()


def test_native_client_reconnects_after_server_restart(native_build: Path) -> None:
    """The core notices a restarted server (its heartbeat gets NOT_WELCOMED), says Hello again, and runs a turn."""
    reconnect_after_server_restart([str(native_build / "test_live"), "--reconnect"])
