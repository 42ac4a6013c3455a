"""Gets what the Windows (MinGW-w64) build of the native core links against: libzmq's Windows x64 DLL and headers.

Neither the libzmq source tarball nor Debian's source packages are reachable from these build machines, so the DLL
comes from PyPI: pyzmq's ``win_amd64`` wheel of version ``PYZMQ_VERSION`` (a release that ships libzmq as a separate
DLL, built with MSVC by the pyzmq project; pyzmq 27 links it into its extension instead) is downloaded with pip,
checked against ``PYZMQ_SHA256``, and its ``libzmq-*.dll`` and ``libsodium-*.dll`` (which libzmq imports by that
exact name) are extracted with the wheel's licence texts (libzmq 4.3.4: LGPL-3.0 with the ZeroMQ static-linking
exception, shipped as a separate DLL; libsodium: ISC). These two DLLs need Microsoft's Visual C++ 2015-2022 x64
runtime (msvcp140/vcruntime140; Unreal's prerequisites installer installs it). MinGW's linker links a DLL directly,
so no import library is needed.

The headers are Debian's (``libzmq3-dev`` and ``cppzmq-dev``): ``zmq.h`` is the same file on every platform, and its
version must equal the DLL's (checked here against the DLL's file name).

usage: python fetch_libzmq.py OUT_DIR     ->  OUT_DIR/bin/*.dll, OUT_DIR/include/{zmq.h,zmq.hpp}, OUT_DIR/licenses/,
                                              OUT_DIR/lib/libzmq.def (libzmq's exports, for a delay-import library)
Skips the download when OUT_DIR already holds a verified copy.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

PYZMQ_VERSION = "25.1.2"
WHEEL = f"pyzmq-{PYZMQ_VERSION}-cp311-cp311-win_amd64.whl"
PYZMQ_SHA256 = "25c2dbb97d38b5ac9fd15586e048ec5eb1e38f3d47fe7d92167b0c77bb3584e9"
LIBZMQ_VERSION = (4, 3, 4)  # of the DLL in that wheel (libzmq-v141-mt-4_3_4-*.dll)
HEADERS = {"zmq.h": "libzmq3-dev", "zmq.hpp": "cppzmq-dev"}
HEADER_DIRS = (Path("/usr/include"), Path("/usr/local/include"))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _download(cache: Path) -> Path:
    wheel = cache / WHEEL
    if wheel.exists() and _sha256(wheel) == PYZMQ_SHA256:
        return wheel
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", f"pyzmq=={PYZMQ_VERSION}", "--platform", "win_amd64"]
    cmd += ["--python-version", "3.11", "--only-binary=:all:", "--no-deps", "-q", "-d", str(cache)]
    subprocess.run(cmd, check=True)
    got = _sha256(wheel)
    if got != PYZMQ_SHA256:
        wheel.unlink()
        raise SystemExit(f"{WHEEL}: sha256 {got} != expected {PYZMQ_SHA256} (refusing to use it)")
    return wheel


def _header_version(zmq_h: Path) -> tuple[int, int, int]:
    text = zmq_h.read_text()
    parts = [re.search(rf"#define ZMQ_VERSION_{k}\s+(\d+)", text) for k in ("MAJOR", "MINOR", "PATCH")]
    if not all(parts):
        raise SystemExit(f"{zmq_h}: no ZMQ_VERSION_* defines")
    return tuple(int(m.group(1)) for m in parts)  # type: ignore[union-attr,return-value]


def _file_name(wheel_name: str, data: bytes) -> str:
    """The name a DLL must have on disk. delvewheel renamed libzmq in the wheel (``libzmq-v141-mt-4_3_4-0a6f51ca.dll``)
    but not inside it: a program linked against it imports the name in its export table
    (``libzmq-v141-mt-4_3_4.dll``), so libzmq is stored under that name. libsodium keeps the wheel's name, which
    libzmq's import table was rewritten to."""
    if not wheel_name.startswith("libzmq-"):
        return wheel_name
    inner = re.sub(r"-[0-9a-f]{8}\.dll$", ".dll", wheel_name)
    if (inner.encode() + b"\0") not in data:
        raise SystemExit(f"{wheel_name}: its export table does not name it {inner}")
    return inner


def pe_exports(data: bytes) -> tuple[str, list[str]]:
    """(internal DLL name, exported names) from a PE32+ file's export directory."""
    pe = struct.unpack_from("<I", data, 0x3C)[0]
    if data[pe : pe + 4] != b"PE\0\0":
        raise ValueError("not a PE file")
    n_sections, opt_size = struct.unpack_from("<H", data, pe + 6)[0], struct.unpack_from("<H", data, pe + 20)[0]
    opt = pe + 24
    if struct.unpack_from("<H", data, opt)[0] != 0x20B:
        raise ValueError("not PE32+ (64-bit)")
    export_rva = struct.unpack_from("<I", data, opt + 112)[0]  # data directory 0 (PE32+ optional header + 112)
    sections = [struct.unpack_from("<IIII", data, opt + opt_size + 40 * i + 8) for i in range(n_sections)]

    def off(rva: int) -> int:  # (virtual size, virtual address, raw size, raw pointer)
        for vsize, vaddr, rsize, raw in sections:
            if vaddr <= rva < vaddr + max(vsize, rsize):
                return raw + rva - vaddr
        raise ValueError(f"RVA {rva:#x} outside every section")

    def cstr(rva: int) -> str:
        o = off(rva)
        return data[o : data.index(b"\0", o)].decode("ascii")

    e = off(export_rva)
    name_rva, _, _, n_names, _, names_rva = struct.unpack_from("<IIIIII", data, e + 12)
    names = [cstr(struct.unpack_from("<I", data, off(names_rva) + 4 * i)[0]) for i in range(n_names)]
    return cstr(name_rva), names


def fetch(out: Path) -> None:
    """Fills ``out`` (idempotent)."""
    (out / "bin").mkdir(parents=True, exist_ok=True)
    (out / "include").mkdir(parents=True, exist_ok=True)
    (out / "licenses").mkdir(parents=True, exist_ok=True)
    for name, package in HEADERS.items():
        src = next((d / name for d in HEADER_DIRS if (d / name).exists()), None)
        if src is None:
            raise SystemExit(f"{name} not found in {', '.join(map(str, HEADER_DIRS))}: install {package}")
        shutil.copyfile(src, out / "include" / name)
    got = _header_version(out / "include" / "zmq.h")
    if got != LIBZMQ_VERSION:
        raise SystemExit(f"zmq.h is libzmq {got}, the DLL is {LIBZMQ_VERSION}: the headers must match the DLL")

    wheel = _download(out / "cache")
    with zipfile.ZipFile(wheel) as z:
        for info in z.infolist():
            name = Path(info.filename)
            if name.parent.as_posix() == "pyzmq.libs" and re.match(r"(libzmq|libsodium)-.*\.dll$", name.name):
                data = z.read(info)
                (out / "bin" / _file_name(name.name, data)).write_bytes(data)
            elif name.parent.name.endswith(".dist-info") and name.name.startswith("LICENSE"):
                (out / "licenses" / f"pyzmq-{name.name}").write_bytes(z.read(info))
    dlls = sorted(p.name for p in (out / "bin").glob("*.dll"))
    (out / "lib").mkdir(exist_ok=True)
    for dll in (out / "bin").glob("libzmq-*.dll"):
        inner, names = pe_exports(dll.read_bytes())
        if inner != dll.name or "zmq_ctx_new" not in names:
            raise SystemExit(f"{dll.name}: export table names {inner} with {len(names)} functions")
        # the .def MinGW's dlltool turns into a delay-import library (CMakeLists.txt, A2LLM_ZMQ_DEF)
        (out / "lib" / "libzmq.def").write_text(f"LIBRARY {inner}\nEXPORTS\n" + "".join(f"{n}\n" for n in names))
    if not any(d.startswith("libzmq-") for d in dlls) or not any(d.startswith("libsodium-") for d in dlls):
        raise SystemExit(f"{WHEEL} has no libzmq/libsodium DLL (found {dlls})")
    print(f"libzmq {'.'.join(map(str, LIBZMQ_VERSION))} for Windows x64 from {WHEEL}: {', '.join(dlls)}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    fetch(Path(sys.argv[1]))
