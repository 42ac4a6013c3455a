"""Vocoder interface: the ToneVocoder test vocoder (streaming == whole), the token2wav adapter with a fake backend."""

from __future__ import annotations

import io
import wave

import numpy as np
import pytest
import torch

from a2llm_rt.engine.token2wav import (
    REQUIRED_FILES,
    Token2WavUnavailableError,
    Token2WavVocoder,
    load_token2wav_class,
    pcm_to_float32,
)
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


# -- token2wav adapter (fake backend) -----------------------------------------------------------------------------
class FakeFlow:
    pre_lookahead_len = 3


class FakeToken2wav:
    """Mimics Step-Audio2's streaming Token2wav: instance-owned caches, int16 bytes out.

    Each non-final call returns 960 samples for each of the first 25 codes, the final call 960 per code; the values
    encode the codes and a running counter kept in the flow cache, so a mixed-up cache changes the output.
    """

    def __init__(self):
        self.flow = FakeFlow()
        self.calls: list[tuple[list[int], bool]] = []
        self.stream_cache = None
        self.hift_cache_dict = None

    def set_stream_cache(self, prompt_wav):
        self.stream_cache = {"n": torch.zeros(1)}
        self.hift_cache_dict = {"speech": torch.zeros(1, 0)}

    def stream(self, tokens, prompt_wav, last_chunk=False):
        self.calls.append((list(tokens), last_chunk))
        n = self.stream_cache["n"] + 1
        self.stream_cache = {"n": n}
        emit = tokens if last_chunk else tokens[:25]
        vals = np.repeat(np.asarray(emit) % 100 + 100 * int(n.item()), 960).astype("<i2")
        return vals.tobytes()


def test_token2wav_chunking_with_lookahead():
    backend = FakeToken2wav()
    voc = Token2WavVocoder(backend, "prompt.wav")
    assert (voc.chunk_codes, voc.lookahead_codes, voc.sample_rate) == (25, 3, 24000)
    codes = list(range(60))
    state = voc.init_state()
    pcm1, state = voc.push(codes[:27], state)  # 27 < 25 + 3: nothing yet
    assert pcm1.shape == (0,) and backend.calls == []
    pcm2, state = voc.push(codes[27:56], state)  # 56 codes: chunks [0:28], [25:53]
    assert [c for c, _ in backend.calls] == [codes[0:28], codes[25:53]]
    assert pcm2.shape == (50 * 960,) and state.buffer == codes[50:56]
    pcm3, state = voc.push(codes[56:], state, final=True)
    assert backend.calls[-1] == (codes[50:60], True)
    assert pcm3.shape == (10 * 960,)
    assert state.samples_out == 60 * 960 and state.finished
    np.testing.assert_allclose(pcm2[:960], (0 + 100) / 32767.0)


def test_token2wav_sessions_keep_separate_caches():
    voc = Token2WavVocoder(FakeToken2wav(), "prompt.wav")
    a_codes, b_codes = list(range(100, 160)), list(range(300, 390))
    alone_a = voc.synthesize(a_codes)
    alone_b = voc.synthesize(b_codes)
    sa, sb, out_a, out_b = voc.init_state(), voc.init_state(), [], []
    for i in range(0, 90, 10):  # interleave the two streams on one backend
        if i < 60:
            p, sa = voc.push(a_codes[i : i + 10], sa, final=i + 10 >= 60)
            out_a.append(p)
        p, sb = voc.push(b_codes[i : i + 10], sb, final=i + 10 >= 90)
        out_b.append(p)
    np.testing.assert_array_equal(np.concatenate(out_a), alone_a)
    np.testing.assert_array_equal(np.concatenate(out_b), alone_b)


def test_token2wav_non_streaming_backend_synthesises_on_final():
    class Whole:
        def __call__(self, tokens, prompt_wav):
            buf = io.BytesIO()
            with wave.open(buf, "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(24000)
                w.writeframes(np.full(960 * len(tokens), 1000, dtype="<i2").tobytes())
            return buf.getvalue()

    voc = Token2WavVocoder(Whole(), "p.wav")
    assert not voc.streaming
    state = voc.init_state()
    pcm, state = voc.push(list(range(40)), state)
    assert pcm.shape == (0,)
    pcm, state = voc.push([1, 2], state, final=True)
    assert pcm.shape == (42 * 960,)
    np.testing.assert_allclose(pcm, 1000 / 32767.0)


def test_pcm_conversion():
    np.testing.assert_allclose(pcm_to_float32(np.array([32767, -32767], dtype="<i2").tobytes()), [1.0, -1.0])
    np.testing.assert_array_equal(pcm_to_float32(torch.ones(1, 4)), np.ones(4, dtype=np.float32))


def test_token2wav_clear_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        Token2WavVocoder.from_directory(tmp_path / "nope", tmp_path / "p.wav")
    (tmp_path / "flow.pt").write_bytes(b"")
    with pytest.raises(InputError, match="missing flow.yaml, hift.pt"):
        Token2WavVocoder.from_directory(tmp_path, tmp_path / "p.wav")
    for f in REQUIRED_FILES:
        (tmp_path / f).write_bytes(b"")
    with pytest.raises(InputError, match="prompt wav"):
        Token2WavVocoder.from_directory(tmp_path, tmp_path / "p.wav")
    (tmp_path / "p.wav").write_bytes(b"")
    # the real token2wav needs packages that are not installed here: a clear error, not a traceback from deep inside
    code = tmp_path / "code"
    code.mkdir()
    (code / "token2wav.py").write_text("import s3tokenizer_not_installed_here\nclass Token2wav: pass\n")
    with pytest.raises(Token2WavUnavailableError, match="stepfun-ai/Step-Audio2"):
        Token2WavVocoder.from_directory(tmp_path, tmp_path / "p.wav", code_dir=code)
    with pytest.raises(Token2WavUnavailableError, match="pass the clone's folder as code_dir"):
        load_token2wav_class(module="a2llm_no_such_token2wav_module")


def test_token2wav_loads_backend_from_code_dir(tmp_path):
    for f in REQUIRED_FILES:
        (tmp_path / f).write_bytes(b"")
    (tmp_path / "p.wav").write_bytes(b"")
    code = tmp_path / "code"
    code.mkdir()
    (code / "token2wav.py").write_text(
        "class Token2wav:\n"
        "    def __init__(self, model_path, float16=False):\n"
        "        self.model_path, self.float16 = model_path, float16\n"
    )
    voc = Token2WavVocoder.from_directory(tmp_path, tmp_path / "p.wav", code_dir=code, float16=True)
    assert voc.backend.model_path == str(tmp_path) and voc.backend.float16 is True
    assert not voc.streaming and voc.lookahead_codes == 3
