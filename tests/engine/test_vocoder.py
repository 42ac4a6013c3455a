"""Vocoder interface: the ToneVocoder test vocoder (streaming == whole). The native token2wav: tests/speech."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from a2llm_rt.engine.vocoder import SAMPLES_PER_CODE, ToneVocoder, Vocoder
from a2llm_rt.errors import InputError

CODES = np.random.default_rng(0).integers(0, 6561, size=37)


def stream(voc: Vocoder, codes, sizes) -> tuple[np.ndarray, list[int]]:
    state = voc.init_state()
    out, offsets, i = [], [], 0
    for n in sizes:
        offsets.append(state.samples_out)
        pcm, state = voc.push(codes[i : i + n], state)
        out.append(pcm)
        i += n
    pcm, state = voc.push(codes[i:], state, final=True)
    out.append(pcm)
    assert state.finished and state.codes_in == len(codes) and state.samples_out == sum(len(p) for p in out)
    return np.concatenate(out), offsets


# -- ToneVocoder ------------------------------------------------------------------------------------------------------
def test_tone_vocoder_interface_numbers():
    voc = ToneVocoder()
    assert isinstance(voc, Vocoder)
    assert (voc.sample_rate, voc.samples_per_code, voc.lookahead_codes, voc.chunk_codes) == (24000, 960, 0, 1)
    pcm = voc.synthesize(CODES)
    assert pcm.dtype == np.float32 and pcm.shape == (len(CODES) * SAMPLES_PER_CODE,)
    assert np.isfinite(pcm).all() and np.abs(pcm).max() <= 1.0
    assert np.sqrt(np.mean(pcm**2)) > 0.02  # audible
    assert abs(pcm[0]) < 1e-3 and abs(pcm[-1]) < 1e-3  # fades in and out


@pytest.mark.parametrize("sizes", [[1] * 36, [5, 0, 7, 3, 13], [36], [2, 10, 1, 1, 1, 9]])
def test_tone_streaming_equals_whole_exactly(sizes):
    voc = ToneVocoder()
    whole = voc.synthesize(CODES)
    streamed, _ = stream(voc, CODES, sizes)
    np.testing.assert_array_equal(streamed, whole)


def test_tone_output_is_causal_and_code_dependent():
    voc = ToneVocoder()
    a = voc.synthesize(CODES)
    changed = CODES.copy()
    changed[20] = (changed[20] + 1) % 6561
    b = voc.synthesize(changed)
    np.testing.assert_array_equal(a[: 20 * 960], b[: 20 * 960])  # nothing before code 20 depends on it
    assert not np.allclose(a[20 * 960 : 21 * 960], b[20 * 960 : 21 * 960])
    # different codes have different pitches: dominant frequency of a steady segment follows f0's harmonics
    lo = voc.synthesize([0] * 25)[4800:]
    hi = voc.synthesize([13] * 25)[4800:]
    spec_lo, spec_hi = np.abs(np.fft.rfft(lo)), np.abs(np.fft.rfft(hi))
    assert np.argmax(spec_lo) != np.argmax(spec_hi)


def test_tone_phase_continuous_no_clicks():
    voc = ToneVocoder()
    pcm = voc.synthesize([5, 5, 300, 4000, 4000, 77])
    # sample-to-sample jumps stay small everywhere, code boundaries included (a click would be a large jump)
    assert np.abs(np.diff(pcm)).max() < 0.1


def test_tone_bad_codes_and_finished_stream():
    voc = ToneVocoder()
    with pytest.raises(InputError, match=r"\[0, 6561\)"):
        voc.synthesize([1, 6561])
    with pytest.raises(InputError, match="1-D"):
        voc.synthesize(np.zeros((2, 2), dtype=np.int64))
    _, state = voc.push(torch.tensor([1, 2]), voc.init_state(), final=True)
    with pytest.raises(ValueError, match="finished"):
        voc.push([3], state)
    assert voc.synthesize([]).shape == (0,)
    assert len(voc.init_states(3)) == 3
