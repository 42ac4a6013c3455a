"""CharacterFace: idle -> crossfade -> emotion, per session, streaming."""

from __future__ import annotations

import numpy as np
import pytest

from a2llm_rt.errors import InputError
from a2llm_rt.face.character_face import CharacterFace
from a2llm_rt.face.emotion import EmotionBlender
from a2llm_rt.face.layouts import ARKIT_INDEX

JAW, SMILE = ARKIT_INDEX["jawOpen"], ARKIT_INDEX["mouthSmileLeft"]


def answer(n: int) -> np.ndarray:
    a = np.zeros((n, 61), np.float32)
    a[:, JAW] = 0.5 + 0.5 * np.sin(np.arange(n) / 2.0)  # a talking jaw that starts and ends mid-motion
    return a


def run(face: CharacterFace, seed: int, chunk: int) -> np.ndarray:
    st = face.set_emotion(face.init_state(seed), "happy", 0.8)
    plan = [("idle", 30), ("listen", 40), ("answer", 60), ("idle", 40)]
    out = []
    for what, n in plan:
        st = face.set_listening(st, what == "listen")
        ans = answer(n) if what == "answer" else None
        for i in range(0, n, chunk):
            k = min(chunk, n - i)
            f, st = face.step(k, st, None if ans is None else ans[i : i + k])
            out.append(f)
    return np.concatenate(out)


def test_deterministic_and_chunking_invariant():
    face = CharacterFace()
    a = run(face, 5, 25)
    assert np.array_equal(a, run(face, 5, 25))
    assert np.array_equal(a, run(face, 5, 1))
    assert not np.array_equal(a, run(face, 6, 25))


def test_answer_fades_in_and_out_and_the_mood_shows_throughout():
    face = CharacterFace()
    f = run(face, 1, 7)
    assert f[:, :52].min() >= 0 and f[:, :52].max() <= 1
    jaw = f[:, JAW]
    # answer frames 70..130: the jaw moves at most (pi/2)/6 + its own per-frame motion (0.25) per frame
    assert np.abs(np.diff(jaw)).max() <= np.pi / 12 + 0.25 + 1e-5
    assert jaw[:70].max() == 0 and jaw[140:].max() == 0
    # happy at 0.8: the smile offset 0.45 * 0.8 is reached after the 300 ms blend and stays between answers too
    assert f[20, SMILE] == pytest.approx(0.36, abs=1e-5) and f[-1, SMILE] == pytest.approx(0.36, abs=1e-5)
    assert 0 < f[0, SMILE] < 0.36


def test_bad_input():
    face = CharacterFace()
    st = face.init_state(0)
    with pytest.raises(InputError):
        face.step(3, st, np.zeros((2, 61)))
    with pytest.raises(InputError):
        face.set_emotion(st, "smug", 0.5)
    with pytest.raises(InputError):
        CharacterFace(emotions=EmotionBlender(fps=30.0))


def test_host_states_refuse_in_place_reset():
    face = CharacterFace()
    st = face.init_state(0)
    for s in (st, st.idle, st.fade, st.emotion):
        with pytest.raises(TypeError, match="init_state"):
            s.reset()
