"""The runtime library's import graph: ``a2llm_rt`` imports no transport, no application and no training code.

Every ``import`` statement in every module of ``a2llm_rt`` is read from its syntax tree (function-local imports too,
so a lazy import cannot hide), and also checked by importing the package in a fresh interpreter.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import a2llm_rt

RUNTIME = Path(a2llm_rt.__file__).resolve().parent
FORBIDDEN = {
    "plugin_bridge": "transport (the bridge)",
    "zmq": "transport (ZeroMQ)",
    "websockets": "transport (WebSocket)",
    "apps": "applications (chat, demo)",
    "training": "training code",
    "ray": "the distributed runtime of the bridge",
}


def imported_roots(path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every absolute import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value.split(".")[0]))
    return found


def test_walker_sees_lazy_and_dynamic_imports(tmp_path):
    """The walker itself: a function-local import and an importlib call are both found."""
    f = tmp_path / "m.py"
    f.write_text("import os\n\ndef f():\n    from plugin_bridge.server import x\n    importlib.import_module('zmq')\n")
    assert imported_roots(f) == [(1, "os"), (4, "plugin_bridge"), (5, "zmq")]


def test_runtime_imports_no_transport_app_or_training():
    files = sorted(RUNTIME.rglob("*.py"))
    assert len(files) > 50, files  # the walk really covers the package
    bad = [
        f"{p.relative_to(RUNTIME.parent)}:{line}: imports {root} ({FORBIDDEN[root]})"
        for p in files
        for line, root in imported_roots(p)
        if root in FORBIDDEN
    ]
    assert not bad, "\n".join(bad)


def test_importing_the_runtime_loads_no_transport():
    """Importing every runtime module (those that import without optional GPU packages) loads none of them."""
    code = (
        "import importlib, pkgutil, sys, a2llm_rt\n"
        "for m in pkgutil.walk_packages(a2llm_rt.__path__, 'a2llm_rt.'):\n"
        "    try:\n"
        "        importlib.import_module(m.name)\n"
        "    except ImportError as e:\n"
        "        if (e.name or '').split('.')[0] in ('tensorrt', 'nvtx', 'pycuda', 'cuda'):\n"
        "            continue\n"
        "        raise\n"
        f"bad = sorted(n for n in sys.modules if n.split('.')[0] in {sorted(FORBIDDEN)!r})\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
