"""Shared fixtures: the real captures in ../shared/data (skipped cleanly when absent), ``one_thread`` and the gpu
marker."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("A2LLM_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_path(*parts: str) -> Path:
    """A path inside ../shared/data; skips the calling test with a clear reason when it is absent."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real test data not found at {p} (the shared data folder is not beside this checkout)")
    return p


@pytest.fixture
def arkit_mesh_dir() -> Path:
    return shared_path("arkit_mesh")


@pytest.fixture
def arkit_capture_csv() -> Path:
    return shared_path("arkit_capture", "livelinkface_rom_3.csv")


@pytest.fixture
def livelink_dir() -> Path:
    return shared_path("livelink")


@pytest.fixture
def one_thread():
    """Tiny models on a shared 2-core machine run far faster on one thread (no OpenMP contention)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
