"""The CPU rehearsal of the GPU check: ``tools/gpu_check.sh --dry-run`` runs every part's plumbing (tiny presets, CPU,
this interpreter, a fake ``$OUT``) and writes a report that fits the schema, so a broken GPU check shows up here and
not in the few minutes a GPU machine is lent. Also: the script reaches no package manager but ``pip --no-index``."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tools" / "gpu_check.sh"


def _report_module():
    """``tools/gpu_check_report.py`` by path (``tools`` is not a package; another one may be installed)."""
    spec = importlib.util.spec_from_file_location("gpu_check_report", REPO / "tools" / "gpu_check_report.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_R = _report_module()
PARTS, SCHEMA, validate = _R.PARTS, _R.SCHEMA, _R.validate


def test_dry_run_exercises_every_part_and_writes_the_schema(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, OUT=str(out), GPU_CHECK_PYTHON=sys.executable)
    env.pop("PYTHONPATH", None)
    r = subprocess.run(["bash", str(SCRIPT), "--dry-run"], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=600)  # fmt: skip
    log = (out / "gpu_check.log").read_text() if (out / "gpu_check.log").exists() else ""
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:] + log[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert validate(report) == [] and report["schema"] == SCHEMA and report["dry_run"] is True
    status = {p["name"]: p["status"] for p in report["parts"]}
    assert list(status) == list(PARTS) and set(status.values()) == {"passed"}, status
    figs = report["figures"]
    assert figs["smoke.passed"] > 0 and figs["smoke.failures"] == 0
    assert figs["gpu.tests"] > 0 and figs["gpu.skipped"] == figs["gpu.tests"]  # collected, skipped without CUDA
    assert figs["engine.none.b1.rtf"] > 0 and figs["engine.none.b2.steps_per_s"] > 0
    assert figs["motion.torch_eager.b32.ms_per_motion_token"] > 0
    assert figs["trace.steps"] == 5 and figs["trace.ranges_found"] >= 2
    trace = json.loads((out / "trace.json").read_text())
    names = {e.get("name") for e in trace["traceEvents"]}
    assert {"step", "sample"} <= names
    engine = json.loads((out / "engine.json").read_text())
    skipped = {(row["mode"], row.get("skipped")) for row in engine["runs"] if "skipped" in row}
    assert skipped == {("cuda_graph", "needs CUDA"), ("compile", "needs CUDA")}
    assert "| part" in r.stdout and "DRY RUN" in r.stdout  # the one table


def test_validate_catches_a_broken_report():
    good = {"schema": SCHEMA, "dry_run": True, "date": "2026-01-01T00:00:00Z", "elapsed_s": 1.0, "machine": {},
            "figures": {"engine.none.b1.rtf": 0.1}, "ok": True,
            "parts": [{"name": n, "status": "passed", "rc": 0, "seconds": 1.0, "budget_s": 2.0, "message": "ok"}
                      for n in PARTS]}  # fmt: skip
    assert validate(good) == []
    bad = json.loads(json.dumps(good))
    bad["parts"] = bad["parts"][:-1]
    bad["parts"][0]["status"] = "fine"
    bad["figures"]["nonsense"] = "x"
    problems = validate(bad)
    assert any("every part" in p for p in problems) and any("status" in p for p in problems)
    assert any("nonsense" in p for p in problems)


def test_the_check_calls_no_package_manager_but_pip_no_index():
    text = SCRIPT.read_text()
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert not re.search(r"\b(apt|apt-get|conda|uv|npm|brew|dnf|yum)\b", code)
    assert "venv" not in code.replace(".venv/bin/python", "")  # the dry run only *uses* the project venv
    pip_calls = re.findall(r"pip install[^\n]*", code)
    assert pip_calls and all("--no-index" in c and "--target" in c for c in pip_calls)
    assert "pip download" not in code
