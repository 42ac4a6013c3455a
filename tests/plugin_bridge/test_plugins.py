"""The installable engine plugins (``make plugins`` = tools/package_plugins.py) and the plugins' engine-free code.

- The Unity tarball and the Unreal zip are built into a temporary folder from build/native (Linux core) and
  build/native-windows (Windows core + libzmq DLLs), unpacked, and checked: layout, versions, the .meta import
  settings of every native (platform + CPU), and that every native exports the whole C ABI of a2llm_client.h
  (``x86_64-w64-mingw32-objdump -p`` for the DLL, ``nm -D`` for the .so) and nothing else, and that each DLL's
  imports are shipped beside it.
- The Unreal module's engine-free header (A2LLMNativeApi.h: the C ABI as a run-time-resolved function table) is
  compiled with g++ and clang at -Wall -Wextra -Wshadow -Werror and loads every function from the packaged Linux core;
  the MinGW-w64 build of the same program loads the packaged Windows core under Wine.

Skips (with the reason) when a core is not built (``make native native-windows``) or a tool is missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEADER = ROOT / "plugin_bridge" / "native" / "include" / "a2llm_client.h"
API_HEADER = ROOT / "plugin_bridge" / "unreal" / "Source" / "A2LLMBridge" / "Public" / "A2LLMNativeApi.h"
API_CHECK = ROOT / "plugin_bridge" / "native" / "tests" / "unreal_native_api.cpp"
LINUX_CORE = ROOT / "build" / "native" / "liba2llm_client.so"
WINDOWS_CORE = ROOT / "build" / "native-windows" / "a2llm_client.dll"
OBJDUMP = "x86_64-w64-mingw32-objdump"
MINGW_CXX = "x86_64-w64-mingw32-g++-posix"
WINDOWS_SYSTEM = {
    "kernel32.dll", "msvcrt.dll", "ws2_32.dll", "advapi32.dll", "iphlpapi.dll", "user32.dll", "msvcp140.dll",
    "vcruntime140.dll",
}  # fmt: skip
CXXFLAGS = ["-std=c++17", "-Wall", "-Wextra", "-Wshadow", "-Werror"]


def c_abi() -> set[str]:
    return set(re.findall(r"^A2LLM_API [^(]*?\b(a2llm_\w+)\(", HEADER.read_text(), flags=re.M))


def pe_imports_exports(data: bytes, tmp: Path) -> tuple[set[str], set[str]]:
    path = tmp / "pe.bin"
    path.write_bytes(data)
    out = subprocess.run([OBJDUMP, "-p", str(path)], capture_output=True, text=True, check=True).stdout
    imports = {m.lower() for m in re.findall(r"DLL Name: (\S+)", out)}
    table = out.split("[Ordinal/Name Pointer] Table", 1)
    exports = set(re.findall(r"^\s+\[\s*\d+\] (\w+)$", table[1], flags=re.M)) if len(table) == 2 else set()
    return imports, exports


def elf_exports(path: Path) -> set[str]:
    out = subprocess.run(["nm", "-D", "--defined-only", str(path)], capture_output=True, text=True, check=True).stdout
    return {line.split()[-1] for line in out.splitlines() if line.strip()}


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Runs tools/package_plugins.py into a temporary folder and unpacks both packages."""
    for core, target in ((LINUX_CORE, "native"), (WINDOWS_CORE, "native-windows")):
        if not core.exists():
            pytest.skip(f"{core} not built: run `make {target}`")
    if shutil.which(OBJDUMP) is None:
        pytest.skip(f"{OBJDUMP} not installed (Debian: binutils-mingw-w64-x86-64)")
    out = tmp_path_factory.mktemp("plugins")
    p = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "package_plugins.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    version = json.loads((ROOT / "plugin_bridge" / "unity" / "package.json").read_text())["version"]
    tgz = out / f"com.a2llm.bridge-{version}.tgz"
    zpath = out / f"A2LLMBridge-{version}.zip"
    assert tgz.is_file() and zpath.is_file(), sorted(x.name for x in out.iterdir())
    unity, unreal = out / "unity", out / "unreal"
    with tarfile.open(tgz) as t:
        names = t.getnames()
        assert all(n.startswith("package/") and ".." not in n for n in names), names
        t.extractall(unity, filter="data")
    with zipfile.ZipFile(zpath) as z:
        names = z.namelist()
        assert all(n.startswith("A2LLMBridge/") and ".." not in n for n in names), names
        z.extractall(unreal)
    return {"unity": unity / "package", "unreal": unreal / "A2LLMBridge", "tmp": out, "version": Path(version)}


def test_unity_package_layout_and_import_settings(packages: dict[str, Path]) -> None:
    pkg = packages["unity"]
    meta = json.loads((pkg / "package.json").read_text())
    assert meta["name"] == "com.a2llm.bridge" and meta["version"] == str(packages["version"])
    natives = pkg / "Runtime" / "Plugins" / "x86_64"
    names = sorted(p.name for p in natives.iterdir() if p.suffix != ".meta")
    assert names == ["a2llm_client.dll", "liba2llm_client.so", "libsodium-ac42d648.dll", "libzmq-v141-mt-4_3_4.dll"]
    guids: dict[str, Path] = {}
    for p in pkg.rglob("*"):
        rel = p.relative_to(pkg)
        if p.suffix == ".meta" or any(part.endswith("~") for part in rel.parts):
            continue  # folders ending in ~ (Samples~) are not imported
        m = Path(f"{p}.meta")
        assert m.is_file(), f"{rel} has no .meta (an immutable package needs one for every asset)"
        guid = re.search(r"^guid: ([0-9a-f]{32})$", m.read_text(), flags=re.M)
        assert guid, m
        assert guid.group(1) not in guids, f"{rel} and {guids[guid.group(1)]} share a GUID"
        guids[guid.group(1)] = rel
        assert ("folderAsset: yes" in m.read_text()) == p.is_dir(), rel
    for name in names:
        text = (natives / f"{name}.meta").read_text()
        assert "PluginImporter:" in text
        platforms = dict(re.findall(r"Standalone: (\w+)\n    second:\n      enabled: (\d)", text))
        editor_os = re.search(
            r"Editor: Editor\n    second:\n      enabled: 1\n      settings:\n(?:.*\n)*?\s+OS: (\w+)", text
        )
        assert editor_os, text
        if name.endswith(".dll"):
            assert platforms == {"Linux64": "0", "OSXUniversal": "0", "Win": "0", "Win64": "1"}, (name, platforms)
            assert editor_os.group(1) == "Windows"
        else:
            assert platforms == {"Linux64": "1", "OSXUniversal": "0", "Win": "0", "Win64": "0"}, (name, platforms)
            assert editor_os.group(1) == "Linux"
        assert "CPU: x86_64" in text
    assert "libzmq" in (pkg / "Third Party Notices.md").read_text()


def _check_windows_natives(folder: Path, tmp: Path) -> None:
    shipped = {p.name.lower(): p for p in folder.glob("*.dll")}
    core = shipped["a2llm_client.dll"].read_bytes()
    imports, exports = pe_imports_exports(core, tmp)
    assert c_abi() <= exports, f"missing exports: {sorted(c_abi() - exports)}"
    assert exports <= c_abi(), f"exports beyond the C ABI: {sorted(exports - c_abi())}"
    assert imports <= WINDOWS_SYSTEM, f"imports beyond Windows' own DLLs: {sorted(imports - WINDOWS_SYSTEM)}"
    zmq = sorted({m.decode().lower() for m in re.findall(rb"libzmq[-\w]*\.dll", core)})  # delay-loaded
    assert len(zmq) == 1 and zmq[0] in shipped, (zmq, sorted(shipped))
    zmq_bytes = shipped[zmq[0]].read_bytes()
    _, zmq_exports = pe_imports_exports(zmq_bytes, tmp)
    assert {"zmq_ctx_new", "zmq_curve_keypair", "zmq_poll", "zmq_msg_send"} <= zmq_exports
    sodium = re.findall(rb"libsodium[-\w]*\.dll", zmq_bytes)  # libzmq's import (objdump cannot list it)
    assert sodium and all(s.decode().lower() in shipped for s in sodium if s != b"libsodium.dll"), sodium


def _check_linux_native(path: Path) -> None:
    exports = elf_exports(path)
    assert c_abi() <= exports and exports <= c_abi(), sorted(exports ^ c_abi())
    needed = subprocess.run(["readelf", "-d", str(path)], capture_output=True, text=True, check=True).stdout
    assert "libzmq.so.5" in needed and "$ORIGIN" in needed


def test_unity_natives_export_the_c_abi(packages: dict[str, Path]) -> None:
    natives = packages["unity"] / "Runtime" / "Plugins" / "x86_64"
    _check_windows_natives(natives, packages["tmp"])
    _check_linux_native(natives / "liba2llm_client.so")


def test_unreal_plugin_layout_and_natives(packages: dict[str, Path]) -> None:
    plugin = packages["unreal"]
    upl = json.loads((plugin / "A2LLMBridge.uplugin").read_text())
    assert upl["VersionName"] == str(packages["version"])
    assert [m["Name"] for m in upl["Modules"]] == ["A2LLMBridge"]
    assert (plugin / "Source" / "A2LLMBridge" / "A2LLMBridge.Build.cs").is_file()
    assert (plugin / "Source" / "ThirdParty" / "a2llm_client" / "include" / "a2llm_client.h").read_bytes() == (
        HEADER.read_bytes()
    )
    assert sorted(p.name for p in (plugin / "Binaries" / "Win64").iterdir()) == [
        "a2llm_client.dll",
        "libsodium-ac42d648.dll",
        "libzmq-v141-mt-4_3_4.dll",
    ]
    assert sorted(p.name for p in (plugin / "Binaries" / "Linux").iterdir()) == ["liba2llm_client.so"]
    _check_windows_natives(plugin / "Binaries" / "Win64", packages["tmp"])
    _check_linux_native(plugin / "Binaries" / "Linux" / "liba2llm_client.so")
    build_cs = (plugin / "Source" / "A2LLMBridge" / "A2LLMBridge.Build.cs").read_text()
    assert "PublicAdditionalLibraries" not in build_cs and "PublicDelayLoadDLLs" not in build_cs  # run-time loading
    assert '"$(PluginDir)/Binaries/" + Platform' in build_cs and "MinorVersion < 3" in build_cs


def test_native_api_table_lists_every_c_function() -> None:
    listed = re.findall(r"^\tX\((a2llm_\w+)\)", API_HEADER.read_text(), flags=re.M)
    assert len(listed) == len(set(listed)) and set(listed) == c_abi(), sorted(set(listed) ^ c_abi())
    assert '#include "a2llm_client.h"' in API_HEADER.read_text()
    assert not re.search(r'#include\s+"(CoreMinimal|Engine|UObject|HAL)', API_HEADER.read_text())


@pytest.mark.parametrize("cxx", ["g++", "clang++"])
def test_engine_free_plugin_code_compiles_warning_free_and_loads_the_core(
    cxx: str, packages: dict[str, Path], tmp_path: Path
) -> None:
    if shutil.which(cxx) is None:
        pytest.skip(f"{cxx} not installed (Debian: {'clang' if cxx == 'clang++' else 'g++'})")
    plugin = packages["unreal"]
    exe = tmp_path / "api_check"
    inc = [
        f"-I{plugin / 'Source' / 'A2LLMBridge' / 'Public'}",
        f"-I{plugin / 'Source/ThirdParty/a2llm_client/include'}",
    ]
    p = subprocess.run([cxx, *CXXFLAGS, *inc, str(API_CHECK), "-o", str(exe), "-ldl"], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    run = subprocess.run([str(exe), str(plugin / "Binaries" / "Linux" / "liba2llm_client.so")], capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert run.returncode == 0 and ", 0 failed checks" in run.stdout, run.stdout + run.stderr


def _wine(exe: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    wine = shutil.which("wine") or shutil.which("wine64")
    assert wine is not None
    env = {**os.environ, "WINEPREFIX": str(ROOT / "build" / "wineprefix"), "WINEDEBUG": "-all",
           "WINEDLLOVERRIDES": "mscoree,mshtml="}  # fmt: skip
    return subprocess.run([wine, str(exe), *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


def test_engine_free_plugin_code_loads_the_windows_core_under_wine(packages: dict[str, Path], tmp_path: Path) -> None:
    """As Unity and Unreal do: the host runs from another folder and loads the core by its full path. Windows does
    not search that folder for the core's own imports, so libzmq is delay-loaded by the core from its own folder
    (a plainly imported libzmq made LoadLibrary fail here); without libzmq beside it, create fails cleanly."""
    if (shutil.which("wine") or shutil.which("wine64")) is None or shutil.which(MINGW_CXX) is None:
        pytest.skip("Wine or MinGW-w64 not installed (Debian: wine64, g++-mingw-w64-x86-64-posix)")
    plugin = packages["unreal"]
    host = tmp_path / "host"
    host.mkdir()
    exe = host / "api_check.exe"
    inc = [
        f"-I{plugin / 'Source' / 'A2LLMBridge' / 'Public'}",
        f"-I{plugin / 'Source/ThirdParty/a2llm_client/include'}",
    ]
    p = subprocess.run([MINGW_CXX, *CXXFLAGS, "-static", *inc, str(API_CHECK), "-o", str(exe)], capture_output=True,
                       text=True)  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr

    def windows_path(path: Path) -> str:
        return "Z:" + str(path).replace("/", "\\")

    win64 = plugin / "Binaries" / "Win64"
    run = _wine(exe, windows_path(win64 / "a2llm_client.dll"), cwd=host)
    assert run.returncode == 0 and ", 0 failed checks" in run.stdout, run.stdout + run.stderr

    bare = tmp_path / "without_libzmq"
    bare.mkdir()
    for dll in win64.glob("*.dll"):
        if not dll.name.startswith("libzmq"):
            shutil.copy(dll, bare / dll.name)
    run = _wine(exe, windows_path(bare / "a2llm_client.dll"), "--without-libzmq", cwd=host)
    assert run.returncode == 0 and ", 0 failed checks" in run.stdout, run.stdout + run.stderr
    assert "cannot load libzmq-v141-mt-4_3_4.dll" in run.stdout
