"""``python -m plugin_bridge.serve --ray``: without Ray installed, or with a cluster address where nothing answers,
a clear error at start (exit 2), never a hang. Kept apart from test_ray.py, whose module keeps a Ray cluster running
in this process (the CLI would join it)."""

from __future__ import annotations

import sys

import pytest

from plugin_bridge.serve import main


def test_serve_cli_without_ray_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    assert main(["--ray", "--replicas", "2", "--bind", "tcp://127.0.0.1:0"]) == 2
    err = capsys.readouterr().err
    assert "--ray needs Ray" in err and "pip install" in err


def test_serve_cli_unreachable_cluster_is_a_clear_error(capsys):
    ray = pytest.importorskip("ray", reason="Ray is not installed")
    if ray.is_initialized():
        pytest.skip("this process already joined a Ray cluster (the CLI would use it)")
    for address in ("127.0.0.1:1", "ray://127.0.0.1:1"):  # nothing listens on port 1
        assert main(["--ray", address, "--replicas", "1", "--bind", "tcp://127.0.0.1:0"]) == 2
        assert f"error: cannot reach Ray at {address}: nothing answers at 127.0.0.1:1" in capsys.readouterr().err
    assert main(["--ray", "not-an-address", "--bind", "tcp://127.0.0.1:0"]) == 2
    assert "expected auto, HOST:PORT or ray://HOST:PORT" in capsys.readouterr().err
