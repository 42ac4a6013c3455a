"""Pseudo-oracle interface of the §6.3 evaluation: the precomputed-files oracle and loading a user's own model."""

from __future__ import annotations

import numpy as np
import pytest

from a2llm_rt.errors import InputError
from a2llm_rt.face.clip import MotionClip
from a2llm_rt.face.io import save_clip
from training.pseudo_oracle import PrecomputedOracle, PseudoOracle, load_oracle


class JawFromLoudness:
    """A stand-in audio-driven model: jawOpen follows the loudness of each 40 ms of speech (25 fps)."""

    name = "loudness"

    def motion(self, key: str, audio: np.ndarray, sample_rate: int) -> MotionClip | None:
        hop = sample_rate // 25
        n = len(audio) // hop
        v = np.zeros((n, 52), np.float32)
        v[:, 17] = np.sqrt((audio[: n * hop].reshape(n, hop) ** 2).mean(1))  # jawOpen
        return MotionClip(v, 25.0, "arkit52")


NOT_AN_ORACLE = 42


def test_precomputed_oracle_reads_key_files_and_checks_the_duration(tmp_path):
    save_clip(MotionClip(np.zeros((50, 52), np.float32), 25.0, "arkit52"), tmp_path / "a.npz")
    save_clip(MotionClip(np.zeros((100, 58), np.float32), 50.0, "flame58"), tmp_path / "b.npz")
    oracle = PrecomputedOracle(tmp_path, "DiffPoseTalk")
    assert isinstance(oracle, PseudoOracle) and oracle.name == "DiffPoseTalk"
    two_seconds = np.zeros(48000, np.float32)
    assert oracle.motion("a", two_seconds, 24000).num_frames == 50
    assert oracle.motion("b", two_seconds, 24000).layout == "flame58"  # any frame rate: 2 s at 50 fps
    assert oracle.motion("missing", two_seconds, 24000) is None
    with pytest.raises(InputError, match="not computed from this answer"):
        oracle.motion("a", np.zeros(24000, np.float32), 24000)  # 1 s of speech, 2 s of face
    for bad in ("../a", "", ".hidden", "x/y"):
        with pytest.raises(InputError, match="cannot name a file"):
            oracle.motion(bad, two_seconds, 24000)
    with pytest.raises(InputError, match="does not exist"):
        PrecomputedOracle(tmp_path / "nope")


def test_load_oracle_specs(tmp_path):
    assert isinstance(load_oracle(f"precomputed:{tmp_path}"), PrecomputedOracle)
    assert load_oracle(str(tmp_path), "named").name == "named"
    own = load_oracle("tests.training.test_pseudo_oracle:JawFromLoudness", "mine")  # a class: instantiated
    assert own.name == "mine"
    speech = np.concatenate([np.zeros(960, np.float32), np.full(960, 0.5, np.float32)])
    clip = own.motion("k", speech, 24000)
    assert clip.values[:, 17].tolist() == pytest.approx([0.0, 0.5])
    with pytest.raises(InputError, match="no `name` and `motion"):
        load_oracle("tests.training.test_pseudo_oracle:NOT_AN_ORACLE")
    with pytest.raises(InputError, match="cannot be loaded"):
        load_oracle("tests.training.test_pseudo_oracle:Missing")
    with pytest.raises(InputError, match="precomputed:DIR or module:attribute"):
        load_oracle("just-a-word")
