"""a2llm_rt.audio: every WAV sample format reads to the same float PCM, writing round-trips, resampling compares
PCM with the analytic signal, bad files are refused with InputError, and the time base is consistent."""

from __future__ import annotations

import wave

import numpy as np
import pytest
from scipy.io import wavfile

from a2llm_rt import audio
from a2llm_rt.errors import InputError

RATE = 16000


def steps(n: int = 4000, channels: int = 1) -> np.ndarray:
    """``[n, channels]`` int32 in [-128, 127]: values every format (8-bit upward) represents exactly."""
    t = np.arange(n)
    k = [np.round(127.5 * np.sin(2 * np.pi * (220 + 110 * c) * t / RATE) - 0.5) for c in range(channels)]
    return np.stack(k, 1).astype(np.int32)


def write_24bit(path, k: np.ndarray) -> None:
    """24-bit PCM by hand (scipy writes no 24-bit files): little-endian 3-byte two's complement."""
    v = (k.astype(np.int64) << 16).reshape(-1)
    raw = np.stack([(v >> s) & 0xFF for s in (0, 8, 16)], 1).astype(np.uint8).tobytes()
    with wave.open(str(path), "wb") as w:
        w.setnchannels(k.shape[1])
        w.setsampwidth(3)
        w.setframerate(RATE)
        w.writeframes(raw)


def write_format(path, k: np.ndarray, fmt: str) -> None:
    data = {
        "u8": (k + 128).astype(np.uint8),
        "s16": (k << 8).astype(np.int16),
        "s32": (k << 24).astype(np.int32),
        "f32": (k / 128.0).astype(np.float32),
        "f64": k / 128.0,
    }
    if fmt == "s24":
        write_24bit(path, k)
    else:
        wavfile.write(str(path), RATE, data[fmt][:, 0] if k.shape[1] == 1 else data[fmt])


FORMATS = ("u8", "s16", "s24", "s32", "f32", "f64")


@pytest.mark.parametrize("channels", [1, 2])
def test_every_sample_format_reads_the_same(tmp_path, channels):
    k = steps(channels=channels)
    want = (k / 128.0).astype(np.float32)  # [n, channels]
    for fmt in FORMATS:
        path = tmp_path / f"{fmt}.wav"
        write_format(path, k, fmt)
        x, sr = audio.read_wav(path, mono=False)
        assert sr == RATE
        expect = want[:, 0] if channels == 1 else want.T
        np.testing.assert_array_equal(x, expect, err_msg=fmt)
        assert x.dtype == np.float32
        mono, _ = audio.read_wav(path)
        np.testing.assert_allclose(mono, want.mean(1), atol=1e-7, err_msg=fmt)


def test_write_then_read_is_16bit_rounding(tmp_path):
    x = np.array([0.0, 0.5, -0.5, 1.0, -1.0, 2.0, -3.0, 1e-5, 0.49999 / 32767], np.float32)
    audio.write_wav(tmp_path / "a.wav", x, 24000)
    with wave.open(str(tmp_path / "a.wav")) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 24000)
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    np.testing.assert_array_equal(pcm, [0, 16384, -16384, 32767, -32767, 32767, -32767, 0, 0])
    y, sr = audio.read_wav(tmp_path / "a.wav")
    assert sr == 24000
    np.testing.assert_array_equal(y, pcm / np.float32(32768.0))
    assert audio.wav_bytes(x, 24000) == (tmp_path / "a.wav").read_bytes()
    with pytest.raises(InputError, match="NaN"):
        audio.write_wav(tmp_path / "b.wav", np.array([0.0, np.nan]), 16000)
    assert not (tmp_path / "b.wav").exists()


def sine(seconds: float, rate: int, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize(
    ("src", "dst"), [(44100, 16000), (22050, 16000), (48000, 24000), (16000, 24000), (8000, 16000)]
)
def test_resample_compares_with_the_analytic_signal(src, dst):
    y = audio.resample(sine(0.5, src), src, dst)
    want = sine(0.5, dst)
    assert y.dtype == np.float32 and y.shape == want.shape
    edge = dst // 50  # the filter's start-up at both ends (20 ms)
    np.testing.assert_allclose(y[edge:-edge], want[edge:-edge], atol=2e-3)
    assert np.abs(y - want).max() < 0.05


def test_resample_is_a_copy_at_equal_rates_and_works_on_channels():
    x = sine(0.1, 16000)
    y = audio.resample(x, 16000, 16000)
    np.testing.assert_array_equal(y, x)
    assert y is not x
    stereo = np.stack([sine(0.5, 44100), sine(0.5, 44100, 330.0)])
    out = audio.resample(stereo, 44100, 16000)
    assert out.shape == (2, 8000)
    np.testing.assert_array_equal(out[1], audio.resample(stereo[1], 44100, 16000))
    with pytest.raises(InputError):
        audio.resample(x, 0, 16000)


def test_read_wav_resamples_and_bounds_the_duration(tmp_path):
    audio.write_wav(tmp_path / "q.wav", sine(1.0, 44100), 44100)
    x, sr = audio.read_wav(tmp_path / "q.wav", sample_rate=16000)
    assert sr == 16000 and x.shape == (16000,)
    np.testing.assert_allclose(x[320:-320], sine(1.0, 16000)[320:-320], atol=2e-3)
    with pytest.raises(InputError, match="exceeds"):
        audio.read_wav(tmp_path / "q.wav", max_seconds=0.5)


@pytest.mark.parametrize("case", ["missing", "garbage", "truncated_header", "empty", "nan", "inf"])
def test_bad_files_are_refused(tmp_path, case):
    path = tmp_path / "bad.wav"
    if case == "garbage":
        path.write_bytes(b"this is not a RIFF file at all" * 4)
    elif case == "truncated_header":
        audio.write_wav(path, sine(0.1, 16000), 16000)
        path.write_bytes(path.read_bytes()[:30])
    elif case == "empty":
        wavfile.write(str(path), 16000, np.zeros(0, np.int16))
    elif case in ("nan", "inf"):
        x = sine(0.1, 16000)
        x[10] = np.nan if case == "nan" else np.inf
        wavfile.write(str(path), 16000, x)
    with pytest.raises(InputError) as e:
        audio.read_wav(path)
    assert str(path) in str(e.value)


def test_damaged_files_raise_input_error_only(tmp_path):
    """Truncated files and files with random header bytes: InputError or a result, never another exception."""
    import random

    good = audio.wav_bytes(sine(0.05, 16000), 16000)
    rng = random.Random(0)
    path = tmp_path / "d.wav"
    refused = 0
    for i in range(400):
        d = bytearray(good[: rng.randrange(len(good))] if i % 2 else good)
        for _ in range(rng.randrange(1, 5)):
            if d:
                d[rng.randrange(min(len(d), 60))] = rng.randrange(256)
        path.write_bytes(bytes(d))
        try:
            x, sr = audio.read_wav(path)
        except InputError:
            refused += 1
            continue
        assert x.dtype == np.float32 and x.ndim == 1 and sr > 0 and np.isfinite(x).all()
    assert refused > 100


def test_time_base():
    assert audio.OUTPUT_SAMPLE_RATE / audio.FACE_FPS == audio.SAMPLES_PER_FRAME == 960
    assert (audio.INPUT_SAMPLE_RATE, audio.OUTPUT_SAMPLE_RATE) == (16000, 24000)
    from a2llm_rt.engine import events
    from a2llm_rt.models import mel
    from training.data import format as fmt

    assert events.OUTPUT_SAMPLE_RATE is audio.OUTPUT_SAMPLE_RATE and events.FACE_FPS is audio.FACE_FPS
    assert mel.SAMPLE_RATE == fmt.QUESTION_SR == audio.INPUT_SAMPLE_RATE
    assert fmt.SAMPLES_PER_FRAME == audio.SAMPLES_PER_FRAME
