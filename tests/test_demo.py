"""The interim demo (`make demo`): runs on the real capture, writes two sensible PNGs and prints Peak Align 80 ms."""

from __future__ import annotations

import json
import re

import numpy as np
from PIL import Image

from a2llm_rt import demo


def test_demo_runs(tmp_path, arkit_capture_csv, arkit_mesh_dir, capsys):
    out = tmp_path / "demo_out"
    rc = demo.main(["--out", str(out), "--capture", str(arkit_capture_csv), "--mesh", str(arkit_mesh_dir)])
    printed = capsys.readouterr().out
    assert rc == 0
    for name, min_w, min_h in (("curves.png", 800, 600), ("sheet.png", 800, 300)):
        with Image.open(out / name) as im:
            assert im.format == "PNG"
            assert im.size[0] >= min_w and im.size[1] >= min_h, (name, im.size)
            im.load()  # the whole file decodes
            assert len(np.unique(np.asarray(im.convert("L")))) > 20  # not a blank image
    m = re.search(r"^Peak Align\s+([0-9.]+)\s+ms", printed, re.MULTILINE)
    assert m and float(m.group(1)) == 80.0, printed
    assert str((out / "sheet.png").resolve()) in printed
    assert json.loads((out / "metrics.json").read_text())["peak_align_signed_ms"] == 80.0


def test_demo_missing_capture(tmp_path, capsys):
    rc = demo.main(["--out", str(tmp_path / "o"), "--capture", str(tmp_path / "none.csv")])
    assert rc == 2
    assert "missing" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
