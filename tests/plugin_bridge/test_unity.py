"""The Unity package (plugin_bridge/unity): compiled with mcs against the UnityEngine stubs, run with mono.

- the package Runtime (and its sample) must compile against tests/plugin_bridge/unity_stubs (any error fails);
- the console program (tests/plugin_bridge/unity_console) runs pure C# unit tests (resampler, blend shape map, head
  rotation, microphone path), then checks the C ABI round trips through the package's own P/Invoke classes, then
  drives the real ``A2LLMAvatar`` component through one turn against a live ``python -m plugin_bridge.serve``
  (tiny scripted source): microphone in, answer audio out through OnAudioFilterRead on an "audio" thread, face
  frames sampled through the A/V clock onto blend shapes, text and TurnEnd events on the main thread.

Skips (with the reason) only when mcs / mono are missing or the native core was not built into build/native
(``cmake -S plugin_bridge/native -B build/native && cmake --build build/native``).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.plugin_bridge.helpers import free_port

REPO = Path(__file__).resolve().parents[2]
UNITY = REPO / "plugin_bridge" / "unity"
STUBS = REPO / "tests" / "plugin_bridge" / "unity_stubs"
CONSOLE = REPO / "tests" / "plugin_bridge" / "unity_console"
NATIVE_DIR = REPO / "build" / "native"
NATIVE_LIB = NATIVE_DIR / "liba2llm_client.so"


def _need_mono() -> None:
    missing = [tool for tool in ("mcs", "mono") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (Debian: apt-get install mono-mcs mono-runtime)")


def _mcs(out: Path, sources: list[Path], refs: list[Path], target: str) -> None:
    cmd = ["mcs", f"-target:{target}", f"-out:{out}", *(f"-r:{r}" for r in refs), *map(str, sources)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        pytest.fail(f"mcs failed for {out.name}:\n{proc.stdout}\n{proc.stderr}")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Compiles stubs -> UnityEngine.dll, Runtime -> A2LLM.Runtime.dll, sample, console test; returns the folder."""
    _need_mono()
    out = tmp_path_factory.mktemp("unity_build")
    engine = out / "UnityEngine.dll"
    runtime = out / "A2LLM.Runtime.dll"
    _mcs(engine, sorted(STUBS.glob("*.cs")), [], "library")
    _mcs(runtime, sorted((UNITY / "Runtime").glob("*.cs")), [engine], "library")
    _mcs(out / "A2LLM.Samples.dll", sorted((UNITY / "Samples~").rglob("*.cs")), [engine, runtime], "library")
    _mcs(out / "A2LLMUnityConsoleTest.exe", sorted(CONSOLE.glob("*.cs")), [engine, runtime], "exe")
    # Mono's DllMap: resolve DllImport("a2llm_client") to the library built by CMake (LD_LIBRARY_PATH also set).
    (out / "A2LLM.Runtime.dll.config").write_text(
        f'<configuration>\n  <dllmap dll="a2llm_client" target="{NATIVE_LIB}" />\n</configuration>\n'
    )
    return out


def _run_console(built: Path, *args: str, timeout: float = 60, extra_env: dict[str, str] | None = None) -> str:
    env = dict(
        os.environ,
        **(extra_env or {}),
        LD_LIBRARY_PATH=f"{NATIVE_DIR}:{os.environ.get('LD_LIBRARY_PATH', '')}",
        A2LLM_FIXTURES=str(REPO / "plugin_bridge" / "fixtures"),
    )
    proc = subprocess.run(
        ["mono", "--debug", str(built / "A2LLMUnityConsoleTest.exe"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=built,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"console test failed (exit {proc.returncode}):\n{out}"
    assert "FAIL" not in out and ", 0 failed" in out, out
    return out


def _wait_for_port(server: subprocess.Popen, port: int, timeout_s: float = 60.0) -> None:
    """Waits until the server listens (its start imports numpy/scipy, slow on a loaded machine)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"server exited with {server.returncode}:\n{server.stdout.read() if server.stdout else ''}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    pytest.fail(f"server did not listen on port {port} within {timeout_s} s")


def test_package_layout() -> None:
    pkg = json.loads((UNITY / "package.json").read_text())
    assert pkg["name"].startswith("com.") and pkg["name"] == pkg["name"].lower()
    assert pkg["version"].count(".") == 2 and pkg["unity"]
    for sample in pkg["samples"]:
        assert (UNITY / sample["path"]).is_dir(), sample
    asmdef = json.loads((UNITY / "Runtime" / "A2LLM.Runtime.asmdef").read_text())
    assert asmdef["name"] == "A2LLM.Runtime"
    assert (UNITY / "README.md").is_file()
    # an immutable (git / registry) package needs a .meta beside every asset, or Unity ignores the asset
    missing = [p.name for p in (UNITY / "Runtime").iterdir() if p.suffix != ".meta" and not Path(f"{p}.meta").exists()]
    assert not missing, f"Runtime files without a .meta: {missing}"


def test_runtime_compiles_and_unit_tests_pass(built: Path) -> None:
    out = _run_console(built, "--unit-only")
    assert "PASS 24k->48k: chunked output == full output" in out
    assert "PASS weights = clamp01(curve * scale) * 100" in out
    # the managed codec (A2LLMProtocol.cs) against every golden fixture, versions 1 and 2
    assert "PASS a golden fixture of every kind 1-21 (versions 1 and 2)" in out
    assert any(x.startswith("PASS C# decodes ") and "byte for byte" in x for x in out.splitlines()), out
    assert any(x.startswith("PASS C# rejects ") for x in out.splitlines()), out


def test_managed_decoder_parity_with_protocol_py(built: Path, tmp_path: Path) -> None:
    """A2LLMProtocol.cs accepts exactly what protocol.py accepts (and re-encodes it byte for byte) and rejects the
    rest with the same ErrorCode, on deterministic mutations of every golden fixture (versions 1 and 2)."""
    from tests.plugin_bridge.test_native import parity_file

    path = parity_file(tmp_path / "parity.bin", 3000, seed=11)
    out = _run_console(built, "--unit-only", timeout=300, extra_env={"A2LLM_PARITY_FILE": str(path)})
    line = next(x for x in out.splitlines() if "C# decoder parity with protocol.py" in x)
    assert line.startswith("PASS") and "3000 cases" in line and " 0 differ" in line, line


@pytest.mark.slow
def test_live_turn_through_native_core(built: Path) -> None:
    if not NATIVE_LIB.exists():
        pytest.skip(f"native core not built ({NATIVE_LIB} missing): cmake -S plugin_bridge/native -B build/native")
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "plugin_bridge.serve", "--backbone", "tiny", "--motion", "tiny", "--bind", endpoint,
         "--script-pace", "0", "--script-seconds", "2", "--log-level", "WARNING"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        _wait_for_port(server, port)
        out = _run_console(built, endpoint)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
    for line in (
        "PASS connected (Welcome received)",
        "PASS Welcome curve names == A2LLMCurves.LiveLink61",
        "PASS one TurnEnd, completed, 48000 answer samples",
        "PASS the A/V clock never runs backwards within the turn",
        "PASS Connect again reuses the AudioSource clip",
        "PASS nothing of the refused utterance is sent or re-sent",
        "PASS no further errors for the refused utterance (28)",
        "PASS the next utterance is a new turn and completes",
        "PASS protocol version 2 negotiated",
        "PASS character and game context applied",
        "PASS a typed turn is answered with speech",
        "PASS an unknown emotion is refused by the core",
    ):
        assert line in out or any(x.startswith(line) for x in out.splitlines()), out


def test_platform_gating_and_dependencies() -> None:
    """WebGL has no Microphone and iOS needs a statically linked core (__Internal): both are excluded until supported,
    or the user's whole build fails; the package depends on Unity's audio module (AudioSource, Microphone)."""
    pkg = json.loads((UNITY / "package.json").read_text())
    assert pkg["dependencies"].get("com.unity.modules.audio") == "1.0.0"
    for asmdef in (
        UNITY / "Runtime" / "A2LLM.Runtime.asmdef",
        UNITY / "Samples~" / "PushToTalk" / "A2LLM.Samples.PushToTalk.asmdef",
    ):
        a = json.loads(asmdef.read_text())
        assert not a["includePlatforms"] and {"WebGL", "iOS"} <= set(a["excludePlatforms"]), asmdef.name
    sample = json.loads((UNITY / "Samples~" / "PushToTalk" / "A2LLM.Samples.PushToTalk.asmdef").read_text())
    assert "Unity.InputSystem" in sample["references"]
    assert {"name": "com.unity.inputsystem", "expression": "1.0.0", "define": "A2LLM_INPUT_SYSTEM"} in sample[
        "versionDefines"
    ]


_INPUT_SYSTEM_STUB = """
namespace UnityEngine.InputSystem
{
    public enum Key { None = 0, Space = 1 }
    public sealed class KeyControl { public bool wasPressedThisFrame; public bool wasReleasedThisFrame; }
    public sealed class Keyboard
    {
        public static Keyboard current;
        private readonly KeyControl _space = new KeyControl();
        public KeyControl this[Key key] { get { return _space; } }
    }
}
"""


def test_sample_compiles_with_the_input_system(built: Path, tmp_path: Path) -> None:
    """With com.unity.inputsystem installed (A2LLM_INPUT_SYSTEM) the sample uses Keyboard.current (the legacy Input
    API throws in projects set to the new Input System only); the legacy branch is compiled by `built`."""
    stub = tmp_path / "InputSystemStub.cs"
    stub.write_text(_INPUT_SYSTEM_STUB)
    stub_dll = tmp_path / "Unity.InputSystem.dll"
    _mcs(stub_dll, [stub], [built / "UnityEngine.dll"], "library")
    sources = sorted((UNITY / "Samples~").rglob("*.cs"))
    cmd = ["mcs", "-target:library", "-define:A2LLM_INPUT_SYSTEM", f"-out:{tmp_path / 'Sample.dll'}"]
    cmd += [f"-r:{r}" for r in (built / "UnityEngine.dll", built / "A2LLM.Runtime.dll", stub_dll)]
    proc = subprocess.run([*cmd, *map(str, sources)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = (UNITY / "Samples~" / "PushToTalk" / "A2LLMPushToTalk.cs").read_text()
    assert "Keyboard.current" in text and "#else" in text and "Input.GetKeyDown" in text
