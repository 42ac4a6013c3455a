"""Emotion table (data file) and the streaming offset/gain blender."""

from __future__ import annotations

import json

import numpy as np
import pytest

from a2llm_rt.errors import InputError
from a2llm_rt.face.emotion import EMOTIONS_FILE, EmotionBlender, EmotionTable, check_intensity, default_emotions
from a2llm_rt.face.layouts import ARKIT_INDEX

SMILE = ARKIT_INDEX["mouthSmileLeft"]
FROWN = ARKIT_INDEX["mouthFrownLeft"]
BROW_IN = ARKIT_INDEX["browInnerUp"]
JAW = ARKIT_INDEX["jawOpen"]


def test_default_table_has_the_documented_set():
    t = default_emotions()
    for name in ("neutral", "happy", "sad", "angry", "surprised", "afraid", "disgusted"):
        emo = t.get(name)
        assert emo.instruction and emo.offset.shape == (52,) and emo.gain.shape == (52,)
        assert np.abs(emo.offset).max() <= 0.6 and emo.gain.min() >= 0 and emo.gain.max() <= 2
    assert np.all(t.get("neutral").offset == 0) and np.all(t.get("neutral").gain == 1)
    assert t.get("happy").offset[SMILE] > 0 and t.get("sad").offset[BROW_IN] > 0
    assert t.blend_ms == 300


def test_instruction_text():
    t = default_emotions()
    assert t.instruction("happy", 0.0) == ""
    assert t.instruction("happy", 0.2).startswith("Emotion: slightly happy. ")
    assert t.instruction("happy", 0.5).startswith("Emotion: happy. ")
    assert t.instruction("sad", 1.0).startswith("Emotion: very sad. ")
    assert "Speak" in t.instruction("angry", 1.0)


@pytest.mark.parametrize("bad", [-0.01, 1.5, float("nan"), float("inf"), "0.5", None, True])
def test_intensity_out_of_range_is_refused(bad):
    with pytest.raises(InputError, match="intensity"):
        check_intensity(bad)
    blender = EmotionBlender()
    st = blender.init_state()
    with pytest.raises(InputError):
        blender.set_emotion(st, "happy", bad)


def test_unknown_emotion_is_refused_with_the_known_names():
    blender = EmotionBlender()
    with pytest.raises(InputError, match="unknown emotion 'smug'.*happy"):
        blender.set_emotion(blender.init_state(), "smug", 0.5)
    with pytest.raises(InputError):
        default_emotions().instruction("", 1.0)


def test_applies_offset_and_gain_exactly_when_steady():
    t = default_emotions()
    blender = EmotionBlender(t)
    st = blender.init_state("sad", 0.5)
    x = np.full((4, 52), 0.4, np.float32)
    y, st2 = blender.step(x, st)
    emo = t.get("sad")
    expect = np.clip(x * (1 + (emo.gain - 1) * 0.5) + emo.offset * 0.5, 0, 1)
    assert np.allclose(y, expect, atol=1e-6)
    assert y[0, BROW_IN] == pytest.approx(0.4 + 0.25)
    assert y[0, SMILE] == pytest.approx(0.4 * 0.7)
    assert y[0, JAW] == pytest.approx(0.4 * (1 - 0.15 * 0.5))


def test_blend_is_gradual_and_reaches_the_target():
    blender = EmotionBlender(fps=25.0)  # 300 ms = 8 frames (7.5 rounded)
    st = blender.init_state()
    st = blender.set_emotion(st, "happy", 1.0)
    x = np.zeros((20, 61), np.float32)
    x[:, 52:] = 0.3  # Live Link rotations pass through
    y, st = blender.step(x, st)
    smile = y[:, SMILE]
    assert np.all(np.diff(smile) >= -1e-7)
    assert 0 < smile[0] < 0.1  # no pop on the first frame
    assert np.abs(np.diff(np.r_[0.0, smile])).max() < 0.45 / 4
    assert smile[blender.blend_frames - 1] == pytest.approx(0.45)
    assert np.allclose(smile[blender.blend_frames :], 0.45)
    assert np.allclose(y[:, 52:], 0.3)
    # blending out again, from mid-blend, to another emotion
    st = blender.set_emotion(st, "sad", 1.0)
    y2, st = blender.step(np.zeros((3, 52), np.float32), st)
    st = blender.set_emotion(st, "neutral", 0.0)  # change of mind mid-blend: continues from what is applied
    y3, st = blender.step(np.zeros((20, 52), np.float32), st)
    seq = np.concatenate([y[:, :52], y2, y3])
    assert np.abs(np.diff(seq, axis=0)).max() < 0.15
    assert np.allclose(y3[-1], 0.0)


def test_chunking_does_not_change_the_output():
    blender = EmotionBlender()
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (40, 52)).astype(np.float32)
    st0 = blender.set_emotion(blender.init_state("angry", 0.3), "surprised", 0.9)
    full, _ = blender.step(x, st0)
    parts, st = [], st0
    for a, b in ((0, 1), (1, 5), (5, 5), (5, 17), (17, 40)):
        y, st = blender.step(x[a:b], st)
        parts.append(y)
    assert np.array_equal(np.concatenate(parts), full)
    # the state passed in is untouched
    again, _ = blender.step(x, st0)
    assert np.array_equal(again, full)


def test_values_stay_in_range():
    blender = EmotionBlender(blend_ms=0)
    for name in default_emotions().names:
        y, _ = blender.step(np.ones((2, 52), np.float32), blender.set_emotion(blender.init_state(), name, 1.0))
        assert y.min() >= 0 and y.max() <= 1


def test_bad_frames():
    blender = EmotionBlender()
    st = blender.init_state()
    with pytest.raises(InputError, match="flame_to_livelink"):
        blender.step(np.zeros((2, 58)), st)
    with pytest.raises(InputError):
        blender.step(np.full((2, 52), np.nan), st)
    with pytest.raises(InputError):
        blender.step(np.zeros(52), st)


def _data() -> dict:
    return json.loads(EMOTIONS_FILE.read_text())


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda d: d["emotions"]["happy"]["offsets"].update(mouthSmileLeft=0.9), "outside"),
        (lambda d: d["emotions"]["happy"]["gains"].update(jawOpen=-1), "outside"),
        (lambda d: d["emotions"]["happy"]["offsets"].update(notACurve=0.1), "not an ARKit curve"),
        (lambda d: d["emotions"]["happy"].pop("instruction"), "needs exactly"),
        (lambda d: d["emotions"].pop("neutral"), "neutral"),
        (lambda d: d.update(blend_ms=1e9), "blend_ms"),
        (lambda d: d.update(version=2), "version 1"),
        (lambda d: d["emotions"]["sad"]["offsets"].update(browInnerUp=float("nan")), "outside"),
    ],
)
def test_bad_table_is_refused(mutate, match):
    d = _data()
    mutate(d)
    with pytest.raises(InputError, match=match):
        EmotionTable.from_dict(d, source="emotions.json")


def test_bad_file(tmp_path):
    p = tmp_path / "e.json"
    p.write_text("{nope")
    with pytest.raises(InputError, match="not a JSON file"):
        EmotionTable.from_file(p)
    with pytest.raises(InputError, match="not found"):
        EmotionTable.from_file(tmp_path / "missing.json")
