"""One tiny engines folder per test process (the dynamo export is the slow part), built through the CLI."""

from __future__ import annotations

import atexit
import contextlib
import functools
import io
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from a2llm_rt.models.connector import MotionConnector
from a2llm_rt.models.motion_tokenizer import MotionTokenizer


@dataclass
class Built:
    folder: Path
    rc: int
    stdout: str
    stderr: str
    connector: MotionConnector
    motion: MotionTokenizer


@functools.cache
def tiny_engines() -> Built:
    """``python -m export.build_engines --motion tiny --out <tmp> --int8`` run once; the same seeded models."""
    from a2llm_rt.engine.builders import tiny_motion_models
    from export.build_engines import main

    folder = Path(tempfile.mkdtemp(prefix="a2llm-engines-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["--motion", "tiny", "--out", str(folder), "--int8"])
    connector, motion = tiny_motion_models()
    return Built(folder, rc, out.getvalue(), err.getvalue(), connector, motion)
