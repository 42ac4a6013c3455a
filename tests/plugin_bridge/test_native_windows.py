"""The Windows x64 build of the native core (``make native-windows``: MinGW-w64 cross build in build/native-windows),
run as Windows executables under Wine: golden fixtures + mutation fuzz, decoder parity with protocol.py, the jitter
buffer / sync clock, the final-errors script, a live turn + barge-in cancel against the Python server on 127.0.0.1
(Wine programs share the host's loopback), and a reconnect after the server restarts.

Also checks that ``a2llm_client.dll`` is self-contained: it imports only Windows system DLLs (no libstdc++-6 /
libgcc_s / libwinpthread DLL to ship; libzmq's DLL, shipped beside it, is delay-loaded), and exports the whole C ABI.

Skips (with the reason) when the Windows build is missing (run ``make native-windows``) or Wine is not installed
(Debian: wine64).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.plugin_bridge.test_native import (  # noqa: F401  (live_server: a fixture)
    live_server,
    parity_file,
    reconnect_after_server_restart,
)

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build" / "native-windows"
PREFIX = ROOT / "build" / "wineprefix"
HEADER = ROOT / "plugin_bridge" / "native" / "include" / "a2llm_client.h"
OBJDUMP = "x86_64-w64-mingw32-objdump"
# DLLs every Windows x64 installation has (the C runtime msvcrt.dll included); anything else must ship with us.
SYSTEM_DLLS = {"kernel32.dll", "msvcrt.dll", "ws2_32.dll", "advapi32.dll", "user32.dll", "iphlpapi.dll"}


def c_abi_functions() -> list[str]:
    """The functions a2llm_client.h declares (A2LLM_API ... name(...))."""
    return re.findall(r"^A2LLM_API [^(]*?\b(a2llm_\w+)\(", HEADER.read_text(), flags=re.M)


def pe_imports_exports(path: Path) -> tuple[set[str], set[str]]:
    """(imported DLL names lower-cased, exported symbol names) of a PE file, read with MinGW's objdump."""
    out = subprocess.run([OBJDUMP, "-p", str(path)], capture_output=True, text=True, check=True).stdout
    imports = {m.lower() for m in re.findall(r"DLL Name: (\S+)", out)}
    table = out.split("[Ordinal/Name Pointer] Table", 1)
    exports = set(re.findall(r"^\s+\[\s*\d+\] (\w+)$", table[1], flags=re.M)) if len(table) == 2 else set()
    return imports, exports


@pytest.fixture(scope="module")
def wine_env() -> dict[str, str]:
    if not (BUILD / "a2llm_client.dll").exists() or not (BUILD / "test_protocol.exe").exists():
        pytest.skip(f"Windows build missing ({BUILD}): run `make native-windows`")
    wine = shutil.which("wine") or shutil.which("wine64")
    if wine is None:
        pytest.skip("Wine is not installed (Debian: apt-get install wine64 wine): Windows executables not run")
    env = {
        **os.environ,
        "WINEPREFIX": str(PREFIX),
        "WINEDEBUG": "-all",
        "WINEDLLOVERRIDES": "mscoree,mshtml=",  # no Mono / Gecko install dialogs in a fresh prefix
        "WINEARCH": "win64",
    }
    if not (PREFIX / "system.reg").exists():
        PREFIX.mkdir(parents=True, exist_ok=True)
        subprocess.run([wine, "wineboot", "-i"], env=env, capture_output=True, timeout=600, check=True)
    return env


def _ctest(env: dict[str, str], regex: str, extra: dict[str, str] | None = None) -> str:
    p = subprocess.run(
        ["ctest", "--test-dir", str(BUILD), "-R", regex, "--output-on-failure", "-V"],
        capture_output=True,
        text=True,
        timeout=1200,  # generous: one loaded core
        env={**env, **(extra or {})},
    )
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-6000:]
    assert "***Skipped" not in out, out[-4000:]
    assert "0 failed checks" in out, out[-4000:]
    return out


def test_dll_is_self_contained_and_exports_the_c_abi(wine_env: dict[str, str]) -> None:
    imports, exports = pe_imports_exports(BUILD / "a2llm_client.dll")
    assert imports <= SYSTEM_DLLS, f"imports DLLs that are not shipped: {sorted(imports - SYSTEM_DLLS)}"
    # libzmq is delay-loaded (from the core's own folder first): its name is in the DLL, the file beside it
    zmq = set(re.findall(rb"libzmq[-\w]*\.dll", (BUILD / "a2llm_client.dll").read_bytes()))
    assert len(zmq) == 1 and (BUILD / next(iter(zmq)).decode()).exists(), zmq
    want = set(c_abi_functions())
    assert len(want) >= 20
    assert want <= exports, f"missing exports: {sorted(want - exports)}"
    assert exports <= want, f"exports beyond the C ABI: {sorted(exports - want)}"


def test_fixtures_fuzz_sync_clock_and_final_errors_under_wine(wine_env: dict[str, str]) -> None:
    out = _ctest(wine_env, "^(protocol|playback|final_errors|characters)$")
    assert "golden_messages_decode_to_their_fields" in out
    assert "interpolates_between_frames" in out
    assert "ok   no_audio_is_sent_after_the_server_ends_the_utterance_and_nothing_is_resent" in out
    assert "ok   hands_free_speech_events_and_barge_in" in out  # protocol version 2 through the DLL's C ABI


def test_decoder_parity_with_protocol_py_under_wine(wine_env: dict[str, str], tmp_path: Path) -> None:
    path = parity_file(tmp_path / "parity.bin", 4000, seed=11)
    out = _ctest(wine_env, "^protocol_parity$", {"A2LLM_PARITY_FILE": str(path)})  # Z:\ maps the Unix root
    assert "parity: 4000 cases" in out


def test_live_turn_and_cancel_under_wine(wine_env: dict[str, str], live_server: str) -> None:  # noqa: F811
    out = _ctest(wine_env, "^live$", {"A2LLM_TEST_ENDPOINT": live_server})
    for name in ("one_turn_complete_in_order_and_in_sync", "cancel_mid_answer", "api_misuse_fails_cleanly"):
        assert f"ok   {name}" in out, out[-4000:]


def test_windows_client_reconnects_after_server_restart_under_wine(wine_env: dict[str, str]) -> None:
    """The Windows core notices a restarted server (NOT_WELCOMED), says Hello again by itself, and runs a turn."""
    wine = shutil.which("wine") or shutil.which("wine64")
    reconnect_after_server_restart([str(wine), str(BUILD / "test_live.exe"), "--reconnect"], env=wine_env, cwd=BUILD)
