"""The wheels the GPU check needs on the lent GPU machine, which reaches no package index.

    python tools/gpu_wheels.py download [--wheel-dir .whl]      # `make gpu-wheels`, where an index is reachable
    python tools/gpu_wheels.py check [--wheel-dir .whl] [--installed DIR] [--out wheels.json]

The lent machine has python3 3.12 with torch, transformers, peft, onnx, onnxruntime (CPU), safetensors, numpy, scipy,
pytest, hypothesis, pyyaml, tqdm and matplotlib (and their dependencies). What ``tools/gpu_check.sh`` imports beyond
that (measured with an import trace of the check's test collection, benches and engine): nothing required; ``nvtx``
(optional in ``a2llm_rt/engine/nvtx.py``) gives the NVTX ranges their ``a2llm`` domain, so it travels. pyzmq is not
imported by any part of the check (the bridge has no gpu-marked tests), so it does not travel. ``check`` verifies the
folder holds exactly these wheels, for CPython 3.12 on manylinux x86_64, and with ``--installed`` that each module
imports from that folder.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

#: distribution -> (pinned requirement, module it provides). Exactly what the check needs that the machine lacks.
WHEELS: dict[str, tuple[str, str]] = {"nvtx": ("nvtx==0.2.17", "nvtx")}
PYTHON = "3.12"
PLATFORM = "manylinux2014_x86_64"


def _parse(name: str) -> dict | None:
    """Wheel filename -> {dist, version, python, abi, platform} (PEP 427), None when it is not a wheel name."""
    m = re.fullmatch(r"(?P<dist>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-(?P<py>[^-]+)-(?P<abi>[^-]+)-(?P<plat>[^-]+)\.whl",
                     name)  # fmt: skip
    return None if m is None else {"dist": m["dist"].lower().replace("_", "-"), "version": m["version"],
                                   "python": m["py"], "abi": m["abi"], "platform": m["plat"]}  # fmt: skip


def download(wheel_dir: Path) -> int:
    wheel_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--platform", PLATFORM,
           "--python-version", PYTHON, "--implementation", "cp", "--no-deps", "-d", str(wheel_dir),
           *(req for req, _ in WHEELS.values())]  # fmt: skip
    print(" ".join(cmd), flush=True)
    return subprocess.call(cmd)


def check(wheel_dir: Path, installed: Path | None = None, allow_missing: bool = False) -> dict:
    """The wheel set's report: ``ok`` when the folder holds exactly the wanted wheels for cp312 manylinux x86_64."""
    problems, wheels = [], []
    files = sorted(wheel_dir.glob("*.whl")) if wheel_dir.is_dir() else []
    seen = set()
    for f in files:
        w = _parse(f.name)
        if w is None:
            problems.append(f"{f.name}: not a wheel file name")
            continue
        w["file"], w["bytes"] = f.name, f.stat().st_size
        wheels.append(w)
        seen.add(w["dist"])
        if w["dist"] not in WHEELS:
            problems.append(f"{f.name}: not needed by the GPU check (only {sorted(WHEELS)})")
        pys = w["python"].split(".")
        if not ({"cp312", "py3"} & set(pys)):
            problems.append(f"{f.name}: not for CPython 3.12")
        plats = w["platform"].split(".")
        if not any(p == "any" or (p.startswith("manylinux") and p.endswith("x86_64")) for p in plats):
            problems.append(f"{f.name}: not manylinux x86_64")
        want = WHEELS.get(w["dist"], ("", ""))[0].split("==")[-1]
        if want and w["version"] != want:
            problems.append(f"{f.name}: version {w['version']}, pinned {want}")
    missing = sorted(set(WHEELS) - seen)
    if missing and not allow_missing:
        problems.append(f"missing wheels: {missing} (run make gpu-wheels where a package index is reachable)")
    imports = {}
    if installed is not None:
        for dist, (_, module) in WHEELS.items():
            code = f"import {module}; print({module}.__file__)"
            r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               env={"PYTHONPATH": str(installed), "PATH": "/usr/bin:/bin"})  # fmt: skip
            where = r.stdout.strip()
            imports[dist] = where
            if r.returncode != 0 or not where.startswith(str(installed)):
                problems.append(f"{module} does not import from {installed}: {r.stderr.strip()[-200:] or where}")
    return {"wheel_dir": str(wheel_dir), "wanted": {d: r for d, (r, _) in WHEELS.items()}, "wheels": wheels,
            "missing": missing, "imports": imports, "problems": problems, "ok": not problems}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=("download", "check"))
    ap.add_argument("--wheel-dir", default=".whl")
    ap.add_argument("--installed", default=None, help="check: the folder the wheels were installed into")
    ap.add_argument("--out", default=None, help="check: write the report here (JSON)")
    ap.add_argument("--allow-missing", action="store_true", help="check: absent wheels are not a problem (dry run)")
    args = ap.parse_args(argv)
    wheel_dir = Path(args.wheel_dir)
    if args.command == "download":
        return download(wheel_dir)
    report = check(wheel_dir, Path(args.installed) if args.installed else None, args.allow_missing)
    for p in report["problems"]:
        print(f"wheels: {p}")
    note = f" (absent: {report['missing']})" if report["missing"] else ""
    print(f"wheels: {len(report['wheels'])} in {wheel_dir}{note}, {'ok' if report['ok'] else 'NOT ok'}")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
