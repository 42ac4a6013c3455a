"""Packages the engine plugins with their native cores (``make plugins``).

- Unity: ``com.a2llm.bridge-<version>.tgz`` in npm-pack layout (everything under ``package/``), installable with
  *Package Manager > + > Add package from tarball*. The natives go to ``Runtime/Plugins/x86_64/`` with PluginImporter
  ``.meta`` files that set their platform and CPU (Windows x64 for the DLLs, Linux x64 for the .so, the Editor on
  the same OS), and every other file and folder keeps / gets its ``.meta`` (an immutable package needs them).
- Unreal: ``A2LLMBridge-<version>.zip`` with ``A2LLMBridge/`` = the .uplugin, ``Source/`` (the module and a copy of
  the C ABI header under ``Source/ThirdParty/a2llm_client/include``), ``Binaries/Win64`` and ``Binaries/Linux``
  (where the module loads the core from and Build.cs stages it from), the README and third-party notices.

Inputs: the Linux core from build/native (``make native``) and the Windows core + libzmq DLLs from
build/native-windows (``make native-windows``). The versions of package.json, the .uplugin and the cores must agree.

usage: python tools/package_plugins.py [--out build/plugins]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UNITY = ROOT / "plugin_bridge" / "unity"
UNREAL = ROOT / "plugin_bridge" / "unreal"
HEADER = ROOT / "plugin_bridge" / "native" / "include" / "a2llm_client.h"
LINUX_BUILD = ROOT / "build" / "native"
WINDOWS_BUILD = ROOT / "build" / "native-windows"
WINDOWS_DEPS = ROOT / "build" / "windows-deps"
MTIME = 1_700_000_000  # fixed timestamps: the same inputs give byte-identical packages


def _guid(path: str) -> str:
    """A stable Unity GUID (32 hex digits) for a package path."""
    return hashlib.md5(f"com.a2llm.bridge/{path}".encode()).hexdigest()


def _folder_meta(path: str) -> str:
    return (
        f"fileFormatVersion: 2\nguid: {_guid(path)}\nfolderAsset: yes\nDefaultImporter:\n  externalObjects: {{}}\n"
        "  userData: \n  assetBundleName: \n  assetBundleVariant: \n"
    )


def _text_meta(path: str) -> str:
    return (
        f"fileFormatVersion: 2\nguid: {_guid(path)}\nTextScriptImporter:\n  externalObjects: {{}}\n"
        "  userData: \n  assetBundleName: \n  assetBundleVariant: \n"
    )


def _plugin_meta(path: str, os_name: str) -> str:
    """PluginImporter settings: enabled for one standalone x86_64 platform and the Editor on that OS only."""
    win = os_name == "Windows"
    standalone = {"Linux64": not win, "OSXUniversal": False, "Win": False, "Win64": win}
    lines = [
        "fileFormatVersion: 2",
        f"guid: {_guid(path)}",
        "PluginImporter:",
        "  externalObjects: {}",
        "  serializedVersion: 2",
        "  iconMap: {}",
        "  executionOrder: {}",
        "  defineConstraints: []",
        "  isPreloaded: 0",
        "  isOverridable: 0",
        "  isExplicitlyReferenced: 0",
        "  validateReferences: 1",
        "  platformData:",
        "  - first:",
        "      : Any",
        "    second:",
        "      enabled: 0",
        "      settings:",
        "        Exclude Editor: 0",
        f"        Exclude Linux64: {0 if standalone['Linux64'] else 1}",
        "        Exclude OSXUniversal: 1",
        "        Exclude Win: 1",
        f"        Exclude Win64: {0 if standalone['Win64'] else 1}",
        "  - first:",
        "      Any: ",
        "    second:",
        "      enabled: 0",
        "      settings: {}",
        "  - first:",
        "      Editor: Editor",
        "    second:",
        "      enabled: 1",
        "      settings:",
        "        CPU: x86_64",
        "        DefaultValueInitialized: true",
        f"        OS: {os_name}",
    ]
    for target, on in standalone.items():
        lines += [
            "  - first:",
            f"      Standalone: {target}",
            "    second:",
            f"      enabled: {1 if on else 0}",
            "      settings:",
            f"        CPU: {'x86_64' if on else 'None'}",
        ]
    lines += ["  userData: ", "  assetBundleName: ", "  assetBundleVariant: ", ""]
    return "\n".join(lines)


def _natives() -> tuple[dict[str, Path], dict[str, Path]]:
    """({name: file} for Linux, {name: file} for Windows); exits with what to build when something is missing."""
    so = LINUX_BUILD / "liba2llm_client.so"
    if not so.exists():
        raise SystemExit(f"{so} missing: run `make native`")
    linux = {"liba2llm_client.so": so.resolve()}
    dll = WINDOWS_BUILD / "a2llm_client.dll"
    if not dll.exists():
        raise SystemExit(f"{dll} missing: run `make native-windows`")
    windows = {"a2llm_client.dll": dll}
    for p in sorted(WINDOWS_BUILD.glob("*.dll")):
        if p.name.startswith(("libzmq", "libsodium")):
            windows[p.name] = p
    if len(windows) != 3:
        raise SystemExit(
            f"expected a2llm_client.dll + libzmq + libsodium DLLs in {WINDOWS_BUILD}, got {sorted(windows)}"
        )
    return linux, windows


def _notices() -> str:
    text = [
        "Third-party software in the native folders of this package",
        "",
        "libzmq 4.3.4 (libzmq-v141-mt-4_3_4.dll): LGPL-3.0 with the ZeroMQ static-linking exception",
        "  https://github.com/zeromq/libzmq - the DLL is the one shipped in pyzmq 25.1.2's win_amd64 wheel (PyPI),",
        "  unmodified; it is a separate DLL you may replace with your own build of libzmq 4.3.x.",
        "libsodium (libsodium-ac42d648.dll): ISC licence, https://github.com/jedisct1/libsodium",
        "a2llm_client.dll links the GCC runtime (libstdc++, libgcc: GPL-3.0 with the GCC Runtime Library Exception)",
        "  and MinGW-w64's winpthreads (MIT) statically.",
        "liba2llm_client.so needs libzmq.so.5 (Debian/Ubuntu: libzmq5), found beside it or on the system.",
        "",
    ]
    for lic in sorted((WINDOWS_DEPS / "licenses").glob("*")):
        text += [f"----- {lic.name} -----", lic.read_text(errors="replace"), ""]
    return "\n".join(text)


def _versions() -> str:
    pkg = json.loads((UNITY / "package.json").read_text())["version"]
    upl = json.loads((UNREAL / "A2LLMBridge.uplugin").read_text())["VersionName"]
    cmake = re.search(
        r"project\(a2llm_native VERSION (\S+)", (ROOT / "plugin_bridge/native/CMakeLists.txt").read_text()
    )
    core = cmake.group(1) if cmake else "?"
    if not pkg == upl == core:
        raise SystemExit(f"versions disagree: package.json {pkg}, .uplugin {upl}, native core {core}")
    return pkg


def _add_bytes_tar(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = MTIME
    info.mode = mode
    tar.addfile(info, io.BytesIO(data))


def unity_package(out: Path, version: str, linux: dict[str, Path], windows: dict[str, Path]) -> Path:
    files: dict[str, bytes] = {}
    for p in sorted(UNITY.rglob("*")):
        if p.is_file():
            files[p.relative_to(UNITY).as_posix()] = p.read_bytes()
    plugins = "Runtime/Plugins/x86_64"
    for name, path in {**windows, **linux}.items():
        rel = f"{plugins}/{name}"
        files[rel] = path.read_bytes()
        files[f"{rel}.meta"] = _plugin_meta(rel, "Windows" if name.endswith(".dll") else "Linux").encode()
    for folder in ("Runtime/Plugins", plugins):
        files[f"{folder}.meta"] = _folder_meta(folder).encode()
    files["Third Party Notices.md"] = _notices().encode()
    files["Third Party Notices.md.meta"] = _text_meta("Third Party Notices.md").encode()
    tgz = out / f"com.a2llm.bridge-{version}.tgz"
    with tarfile.open(tgz, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for rel in sorted(files):
            _add_bytes_tar(tar, f"package/{rel}", files[rel])
    return tgz


def unreal_package(out: Path, version: str, linux: dict[str, Path], windows: dict[str, Path]) -> Path:
    zpath = out / f"A2LLMBridge-{version}.zip"
    entries: dict[str, tuple[bytes, int]] = {}
    for p in sorted(UNREAL.rglob("*")):
        if p.is_file():
            entries[p.relative_to(UNREAL).as_posix()] = (p.read_bytes(), 0o644)
    entries["Source/ThirdParty/a2llm_client/include/a2llm_client.h"] = (HEADER.read_bytes(), 0o644)
    for name, path in windows.items():
        entries[f"Binaries/Win64/{name}"] = (path.read_bytes(), 0o755)
    for name, path in linux.items():
        entries[f"Binaries/Linux/{name}"] = (path.read_bytes(), 0o755)
    entries["ThirdPartyNotices.txt"] = (_notices().encode(), 0o644)
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as z:
        for rel in sorted(entries):
            data, mode = entries[rel]
            info = zipfile.ZipInfo(f"A2LLMBridge/{rel}", date_time=(2023, 11, 14, 22, 13, 20))
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data)
    return zpath


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "plugins")
    args = ap.parse_args()
    version = _versions()
    linux, windows = _natives()
    args.out.mkdir(parents=True, exist_ok=True)
    for path in (unity_package(args.out, version, linux, windows), unreal_package(args.out, version, linux, windows)):
        print(f"{path} ({path.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
