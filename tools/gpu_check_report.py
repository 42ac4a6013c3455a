"""Collect the parts of ``tools/gpu_check.sh`` into one JSON of every figure, check its schema, print one table.

    python tools/gpu_check_report.py --out-dir DIR [--dry-run 0|1] [--elapsed S]

Reads ``DIR/parts.jsonl`` (one line per part: name, status, rc, seconds, budget_s, message, result) and each part's
result file (pytest JUnit XML, the benches' JSON), writes ``DIR/gpu_check.json`` and prints the table. Exit status 1
when a part failed or ran past its budget, or the report does not fit :data:`SCHEMA` (skipped parts are fine).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

SCHEMA = "a2llm-gpu-check/1"
PARTS = ("wheels", "smoke", "gpu", "engine", "motion", "trace")
STATUSES = ("passed", "failed", "timeout", "skipped")
PART_KEYS = {"name": str, "status": str, "rc": int, "seconds": float, "budget_s": float, "message": str}
TOP_KEYS = {"schema": str, "dry_run": bool, "date": str, "elapsed_s": float, "machine": dict, "parts": list,
            "figures": dict, "ok": bool}  # fmt: skip
ENGINE_METRICS = ("ttft_s", "ttfa_s", "rtf", "steps_per_s", "step_ms", "gpu_mem_per_session_mb", "peak_gpu_mem_mb",
                  "working_gpu_mem_mb")


def junit_counts(path: Path) -> dict[str, int] | None:
    """tests / failures / errors / skipped / passed of a pytest JUnit XML file (None when absent or unreadable)."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    c = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    c["passed"] = c["tests"] - c["failures"] - c["errors"] - c["skipped"]
    return c


def _load(path: str | None) -> dict | None:
    if not path:
        return None
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def figures_of(part: dict) -> dict[str, float]:
    """The numeric figures a part's result file holds, under flat keys ``<part>.<...>``."""
    name, res = part["name"], part.get("result")
    out: dict[str, float] = {}
    if name in ("smoke", "gpu"):
        c = junit_counts(Path(res)) if res else None
        for k, v in (c or {}).items():
            out[f"{name}.{k}"] = float(v)
    elif name == "engine":
        r = _load(res) or {}
        if "kv_cache_mb_per_session" in r:
            out["engine.kv_cache_mb_per_session"] = float(r["kv_cache_mb_per_session"])
        for row in r.get("runs", []):
            for m in ENGINE_METRICS:
                if isinstance(row.get(m), (int, float)):
                    out[f"engine.{row['mode']}.b{row['batch']}.{m}"] = float(row[m])
    elif name == "motion":
        for row in (_load(res) or {}).get("rows", []):
            for m in ("ms_per_step", "ms_per_motion_token"):
                if isinstance(row.get(m), (int, float)):
                    out[f"motion.{row['variant'].replace(' ', '_')}.b{row['batch']}.{m}"] = float(row[m])
    elif name == "trace":
        t = (_load(res) or {}).get("trace") or {}
        for m in ("steps", "bytes"):
            if isinstance(t.get(m), (int, float)):
                out[f"trace.{m}"] = float(t[m])
        if "ranges_found" in t:
            out["trace.ranges_found"] = float(len(t["ranges_found"]))
    elif name == "wheels":
        w = _load(res) or {}
        if "wheels" in w:
            out["wheels.count"] = float(len(w["wheels"]))
    return out


def notes_of(part: dict) -> list[str]:
    """Non-numeric things worth a line: skipped/failed runs inside a bench, fallbacks, trace ranges."""
    res = _load(part.get("result"))
    if not res:
        return []
    notes = []
    for row in res.get("runs", []) + res.get("rows", []):
        label = row.get("mode") or row.get("variant")
        for k in ("skipped", "error", "fallback"):
            if row.get(k):
                notes.append(f"{label} b{row.get('batch')}: {k}: {row[k]}")
        if row.get("ran_as") and row.get("mode") and row["ran_as"] != row["mode"]:
            notes.append(f"{row['mode']} b{row['batch']} ran as {row['ran_as']}")
    if "trace" in res:
        notes.append(f"trace {res['trace'].get('path')}: ranges {res['trace'].get('ranges_found')}")
    if res.get("sdpa"):
        notes.append(f"sdpa: {res['sdpa']}")
    return notes


def machine(dry_run: bool = False) -> dict:
    info = {"hostname": platform.node(), "python": platform.python_version(), "platform": platform.platform()}
    if dry_run:  # no GPU to name: spare the rehearsal a torch import
        from importlib.metadata import PackageNotFoundError, version

        try:
            info |= {"torch": version("torch"), "cuda": None, "gpus": []}
        except PackageNotFoundError:
            info["torch_error"] = "torch not installed"
        return info
    try:
        import torch

        info |= {"torch": torch.__version__, "cuda": torch.version.cuda,
                 "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}  # fmt: skip
    except Exception as e:  # noqa: BLE001 - the report must still be written
        info["torch_error"] = str(e)
    return info


def validate(report: dict) -> list[str]:
    """Problems of a report against the schema (empty: it fits)."""
    problems = []
    for k, t in TOP_KEYS.items():
        if not isinstance(report.get(k), t):
            problems.append(f"{k}: expected {t.__name__}, got {type(report.get(k)).__name__}")
    if report.get("schema") != SCHEMA:
        problems.append(f"schema: {report.get('schema')!r} != {SCHEMA!r}")
    names = []
    for p in report.get("parts", []):
        for k, t in PART_KEYS.items():
            v = p.get(k)
            if not (isinstance(v, t) or (t is float and isinstance(v, int))):
                problems.append(f"part {p.get('name')}: {k} expected {t.__name__}, got {v!r}")
        if p.get("status") not in STATUSES:
            problems.append(f"part {p.get('name')}: status {p.get('status')!r} not in {STATUSES}")
        names.append(p.get("name"))
    if names != list(PARTS):
        problems.append(f"parts: {names} != {list(PARTS)} (every part is recorded, in order)")
    for k, v in report.get("figures", {}).items():
        if k.split(".")[0] not in PARTS or not isinstance(v, float):
            problems.append(f"figure {k}: {v!r}")
    return problems


def build(out_dir: Path, dry_run: bool, elapsed: float) -> dict:
    parts = []
    lines = (out_dir / "parts.jsonl").read_text().splitlines() if (out_dir / "parts.jsonl").exists() else []
    for line in lines:
        if line.strip():
            parts.append(json.loads(line))
    figures: dict[str, float] = {}
    for p in parts:
        p["figures"] = figures_of(p)
        p["notes"] = notes_of(p)
        figures |= p["figures"]
    report = {
        "schema": SCHEMA,
        "dry_run": dry_run,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "elapsed_s": float(elapsed),
        "machine": machine(dry_run),
        "parts": parts,
        "figures": figures,
        "ok": all(p["status"] in ("passed", "skipped") for p in parts),
    }
    return report


def table(report: dict) -> str:
    rows = [f"| {'part':7s} | {'status':8s} | {'s':>6s} | {'figure':44s} | {'value':>12s} |",
            f"|{'-' * 9}|{'-' * 10}|{'-' * 8}|{'-' * 46}|{'-' * 14}|"]  # fmt: skip
    for p in report["parts"]:
        head = f"| {p['name']:7s} | {p['status']:8s} | {p['seconds']:6.1f} |"
        figs = list(p["figures"].items())
        if not figs:
            rows.append(f"{head} {p['message'][:44]:44s} | {'':>12s} |")
        for i, (k, v) in enumerate(figs):
            lead = head if i == 0 else f"| {'':7s} | {'':8s} | {'':6s} |"
            rows.append(f"{lead} {k.split('.', 1)[1][:44]:44s} | {v:12.4g} |")
        for n in p["notes"]:
            rows.append(f"| {'':7s} | {'':8s} | {'':6s} | {n[:59]:59s} |")
    m = report["machine"]
    rows.append(f"\n{'DRY RUN (CPU rehearsal) ' if report['dry_run'] else ''}{report['date']} on {m.get('hostname')}: "
                f"{', '.join(m.get('gpus') or ['no GPU'])}, torch {m.get('torch')}, {report['elapsed_s']:.0f} s; "
                f"{'ok' if report['ok'] else 'NOT ok'}")  # fmt: skip
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--dry-run", type=int, default=0)
    ap.add_argument("--elapsed", type=float, default=0.0)
    args = ap.parse_args(argv)
    out_dir = Path(args.out_dir)
    report = build(out_dir, bool(args.dry_run), args.elapsed)
    problems = validate(report)
    report["schema_problems"] = problems
    (out_dir / "gpu_check.json").write_text(json.dumps(report, indent=1))
    print(table(report))
    for p in problems:
        print(f"schema: {p}")
    print(f"wrote {out_dir / 'gpu_check.json'}")
    return 0 if report["ok"] and not problems else 1


if __name__ == "__main__":
    sys.exit(main())
