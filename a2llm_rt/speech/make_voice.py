"""Turn a prompt recording into a cached voice file: ``python -m a2llm_rt.speech.make_voice WAV OUT --token2wav DIR``.

Upstream (Step-Audio-2 ``Token2wav._prepare_prompt``) computes, from the prompt wav:

1. prompt codes: 16 kHz audio -> 128-bin log mel (Whisper recipe, no padding) -> ``speech_tokenizer_v2_25hz.onnx``
   (upstream converts the ONNX to torch with ``s3tokenizer``; we run the ONNX with onnxruntime, as CosyVoice's
   frontend does: inputs ``feats`` [1, 128, T] float32 and ``feats_length`` [1] int32);
2. the speaker embedding: 80-bin Kaldi fbank of the 16 kHz audio (dither 0), mean-normalised over time ->
   ``campplus.onnx`` -> [192];
3. the prompt mel: audio at 24 kHz -> 80-bin log mel (n_fft 1920, hop 480, Hann, 0..8 kHz, reflect pad 720,
   natural log clamped at 1e-5), padded with its last frame to two frames per code.

Not compared with upstream here (no real ONNX models nor torchaudio in the test environment): our resampler
(``scipy.signal.resample_poly``) differs slightly from torchaudio's, and our Kaldi fbank is written from Kaldi's
definition. Tests run the pipeline with tiny synthetic ONNX graphs of the same input/output signatures.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch

from a2llm_rt.audio import INPUT_SAMPLE_RATE, OUTPUT_SAMPLE_RATE, read_wav, resample
from a2llm_rt.errors import InputError
from a2llm_rt.models.mel import log_mel_spectrogram, slaney_mel_filterbank
from a2llm_rt.speech.voice import MIN_PROMPT_CODES, Voice
from a2llm_rt.utils.cli import cli_main

MIN_SECONDS = 1.0
MAX_SECONDS = 30.0
SILENCE_RMS = 1e-3
"""A prompt quieter than this (RMS of [-1, 1] samples, about -60 dBFS) is refused as silent."""


def kaldi_fbank(wav16k: torch.Tensor, num_mel_bins: int = 80) -> torch.Tensor:
    """Kaldi ``compute-fbank-feats`` defaults (25 ms frames, 10 ms shift, snip edges, DC removal, pre-emphasis 0.97,
    Povey window, 512-point power spectrum, mel banks 20 Hz .. Nyquist, natural log), dither 0: [N] -> [T, bins]."""
    sr, flen, shift, nfft = 16000, 400, 160, 512
    x = wav16k.to(torch.float64)
    if x.numel() < flen:
        raise InputError("prompt too short for a filterbank frame")
    n = 1 + (x.numel() - flen) // shift
    frames = x.unfold(0, flen, shift)[:n]
    frames = frames - frames.mean(dim=1, keepdim=True)
    frames = torch.cat([frames[:, :1] - 0.97 * frames[:, :1], frames[:, 1:] - 0.97 * frames[:, :-1]], dim=1)
    window = torch.hann_window(flen, periodic=False, dtype=torch.float64).pow(0.85)
    spec = torch.fft.rfft(frames * window, n=nfft).abs().pow(2)  # [T, 257]

    def mel(f: np.ndarray | float) -> np.ndarray:
        return 1127.0 * np.log(1.0 + np.asarray(f) / 700.0)

    lo, hi = mel(20.0), mel(sr / 2)
    delta = (hi - lo) / (num_mel_bins + 1)
    bins = mel(np.arange(nfft // 2) * sr / nfft)
    banks = np.zeros((num_mel_bins, nfft // 2 + 1))
    for m in range(num_mel_bins):
        left, center, right = lo + m * delta, lo + (m + 1) * delta, lo + (m + 2) * delta
        up = (bins - left) / (center - left)
        down = (right - bins) / (right - center)
        banks[m, : nfft // 2] = np.maximum(0.0, np.minimum(up, down))
    feats = spec @ torch.from_numpy(banks).T
    return torch.log(torch.clamp(feats, min=float(np.finfo(np.float32).eps))).float()


def prompt_mel_24k(wav24k: torch.Tensor) -> torch.Tensor:
    """[N] 24 kHz -> [frames, 80] log mel (upstream ``flashcosyvoice.utils.audio.mel_spectrogram`` settings)."""
    n_fft, hop = 1920, 480
    pad = (n_fft - hop) // 2
    if wav24k.numel() <= pad:
        raise InputError("prompt too short for a 24 kHz mel frame")
    y = torch.nn.functional.pad(wav24k[None, None].float(), (pad, pad), mode="reflect")[0]
    spec = torch.stft(y, n_fft, hop, n_fft, window=torch.hann_window(n_fft), center=False, return_complex=True)
    mag = torch.sqrt(spec.real.pow(2) + spec.imag.pow(2) + 1e-9)
    mel = slaney_mel_filterbank(80, 24000, n_fft, 0.0, 8000.0) @ mag
    return torch.log(torch.clamp(mel, min=1e-5))[0].T.contiguous()


class VoiceMaker:
    """The two ONNX models of a ``token2wav/`` folder, loaded once, turning prompt recordings into :class:`Voice`."""

    def __init__(self, tokenizer_onnx: str | Path, campplus_onnx: str | Path, threads: int = 1):
        import onnxruntime as ort

        for p in (tokenizer_onnx, campplus_onnx):
            if not Path(p).is_file():
                raise InputError("file not found", path=p)
        opt = ort.SessionOptions()
        opt.intra_op_num_threads = threads
        self.tokenizer = ort.InferenceSession(str(tokenizer_onnx), opt, providers=["CPUExecutionProvider"])
        self.campplus = ort.InferenceSession(str(campplus_onnx), opt, providers=["CPUExecutionProvider"])

    @classmethod
    def from_folder(cls, folder: str | Path) -> VoiceMaker:
        folder = Path(folder)
        return cls(folder / "speech_tokenizer_v2_25hz.onnx", folder / "campplus.onnx")

    def __call__(self, samples: np.ndarray, sample_rate: int, name: str = "voice") -> Voice:
        x = np.asarray(samples, dtype=np.float32)
        if x.ndim == 2:
            x = x.mean(axis=0)
        if x.ndim != 1 or sample_rate < 8000:
            raise InputError(f"voice {name}: need mono or multi-channel audio at >= 8 kHz")
        if not np.isfinite(x).all():
            raise InputError(f"voice {name}: prompt audio holds NaN or inf")
        seconds = x.size / sample_rate
        if seconds < MIN_SECONDS:
            raise InputError(f"voice {name}: prompt is {seconds:.2f} s; need at least {MIN_SECONDS} s of speech")
        if seconds > MAX_SECONDS:
            raise InputError(f"voice {name}: prompt is {seconds:.1f} s; at most {MAX_SECONDS} s")
        rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
        if rms < SILENCE_RMS:
            raise InputError(f"voice {name}: prompt is silent (RMS {rms:.2e})")
        a16 = torch.from_numpy(resample(x, sample_rate, INPUT_SAMPLE_RATE))
        feats = log_mel_spectrogram(a16, 128, padding=0)[None]
        ins = self.tokenizer.get_inputs()
        tokens = self.tokenizer.run(None, {ins[0].name: feats.numpy(),
                                           ins[1].name: np.array([feats.shape[2]], dtype=np.int32)})[0]
        tokens = torch.from_numpy(np.asarray(tokens)).flatten().to(torch.int64)
        if tokens.numel() < MIN_PROMPT_CODES:
            raise InputError(f"voice {name}: the speech tokenizer gave {tokens.numel()} codes")
        fb = kaldi_fbank(a16)
        fb = fb - fb.mean(dim=0, keepdim=True)
        emb = self.campplus.run(None, {self.campplus.get_inputs()[0].name: fb[None].numpy()})[0]
        emb = torch.from_numpy(np.asarray(emb, dtype=np.float32)).flatten()
        mel = prompt_mel_24k(torch.from_numpy(resample(x, sample_rate, OUTPUT_SAMPLE_RATE)))
        if not math.isfinite(float(emb.sum())):
            raise InputError(f"voice {name}: the speaker model returned non-finite values")
        return Voice.from_prompt(tokens, mel, emb, name)

    def from_wav(self, path: str | Path, name: str | None = None) -> Voice:
        samples, sr = read_wav(path)
        return self(samples, sr, name or Path(path).stem)


@cli_main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Make a voice file (prompt codes, speaker embedding, prompt mel) "
                                            "from a prompt WAV, using a token2wav folder's ONNX models.")
    p.add_argument("wav")
    p.add_argument("out", help="output file, e.g. alice.voice.safetensors")
    p.add_argument("--token2wav", required=True, help="folder with speech_tokenizer_v2_25hz.onnx and campplus.onnx")
    p.add_argument("--name", default=None)
    a = p.parse_args(argv)
    voice = VoiceMaker.from_folder(a.token2wav).from_wav(a.wav, a.name)
    voice.save(a.out)
    print(f"{a.out}: {voice.prompt_tokens.numel()} prompt codes, {voice.prompt_mel.shape[0]} mel frames")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
