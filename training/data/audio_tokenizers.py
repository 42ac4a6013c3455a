"""Answer-audio tokenizers: waveform -> 25 Hz integer speech codes (one per motion frame).

- :class:`CosyVoice2SpeechTokenizer`: the real one for Step-Audio-2. It runs the checkpoint's own
  ``token2wav/speech_tokenizer_v2_25hz.onnx`` (CosyVoice2 25 Hz speech tokenizer, 6561 codes) with onnxruntime on
  Whisper-style 128-bin log-mel features of the 16 kHz waveform, the features and graph upstream uses
  (stepfun-ai/Step-Audio2 ``token2wav.py`` runs the same ONNX file through the ``s3tokenizer`` package:
  ``s3tokenizer.log_mel_spectrogram(audio)`` -> ``quantize(mels, mels_lens)``; CosyVoice2's frontend runs it with
  onnxruntime exactly as here: inputs ``[1, 128, T]`` float32 features and ``[1]`` int32 length, output the codes).
- :class:`ToyBandEnergyTokenizer`: a 64-code loudness/brightness toy for the tiny test backbone only.
  :class:`~training.data.builders.SequenceBuilder` refuses it for any other backbone, and refuses any tokenizer
  whose codebook does not match the backbone's audio codes (so a real backbone is never fine-tuned on toy codes).

Curation step (after ``python -m training.curate``): ``python -m training.data.audio_tokenizers SRC --tokenizer SPEC
--out DST`` writes a copy of a FLAME-QA dataset whose spoken samples carry ``answer_codes`` computed from their
answer audio (once, instead of at every training run); samples that already have codes are copied unchanged.

``load_audio_tokenizer(spec)``: ``"toy"`` (alias ``"builtin"``), ``"cosyvoice2:PATH/speech_tokenizer_v2_25hz.onnx"``
(or ``"cosyvoice2:CHECKPOINT_DIR"``: its ``token2wav/`` file), or ``"package.module:attribute"`` (a class or
factory called without arguments that follows :class:`AudioTokenizer`).
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from a2llm_rt.audio import resample
from a2llm_rt.errors import InputError
from a2llm_rt.utils.cli import cli_main

if TYPE_CHECKING:
    from training.data.format import FlameQASample

TOKEN_RATE = 25.0
TOY_SPECS = ("toy", "builtin")
COSYVOICE2_FILE = "speech_tokenizer_v2_25hz.onnx"
COSYVOICE2_CODES = 6561


@runtime_checkable
class AudioTokenizer(Protocol):
    """Waveform -> 25 Hz codes in ``[0, codebook_size)`` (``int64``, about ``N * 25 / sample_rate`` of them)."""

    codebook_size: int

    def encode(self, wave: np.ndarray, sample_rate: int) -> np.ndarray: ...


class ToyBandEnergyTokenizer:
    """TOY tokenizer for the tiny test backbone: per 40 ms frame, ``code = energy_level * n_bright + brightness``.

    ``energy_level``: frame RMS in dB, quantized in ``n_energy`` steps over [-60, 0] dBFS; ``brightness_level``:
    zero-crossing rate quantized in ``n_bright`` steps. ``codebook_size = n_energy * n_bright`` (64). Deterministic,
    no weights; its codes carry loudness and brightness so a tiny motion model can learn from them. Not speech codes:
    never train a real backbone on them.
    """

    toy = True

    def __init__(self, n_energy: int = 8, n_bright: int = 8):
        self.n_energy = n_energy
        self.n_bright = n_bright
        self.codebook_size = n_energy * n_bright

    def encode(self, wave: np.ndarray, sample_rate: int) -> np.ndarray:
        """``[ceil(N * 25 / sample_rate)]`` int64 codes."""
        w = np.asarray(wave, dtype=np.float64).reshape(-1)
        hop = sample_rate / TOKEN_RATE
        n = max(1, math.ceil(len(w) / hop))
        codes = np.empty(n, dtype=np.int64)
        for k in range(n):
            f = w[int(round(k * hop)) : int(round((k + 1) * hop))]
            if f.size == 0:
                f = np.zeros(1)
            db = 20 * np.log10(np.sqrt(np.mean(f * f)) + 1e-9)
            e = int(np.clip((db + 60.0) / 60.0 * self.n_energy, 0, self.n_energy - 1))
            zcr = np.mean(np.abs(np.diff(np.sign(f)))) / 2 if f.size > 1 else 0.0
            b = int(np.clip(zcr * 2 * self.n_bright, 0, self.n_bright - 1))
            codes[k] = e * self.n_bright + b
        return codes


def is_toy(tokenizer: object) -> bool:
    """Whether ``tokenizer`` declares itself a toy (not real speech codes)."""
    return bool(getattr(tokenizer, "toy", False))


class CosyVoice2SpeechTokenizer:
    """The CosyVoice2 25 Hz speech tokenizer (``speech_tokenizer_v2_25hz.onnx``) through onnxruntime.

    ``encode(wave, sample_rate)``: the waveform is resampled to 16 kHz, cut into pieces of at most
    ``max_seconds`` (30 s, the longest input the tokenizer takes; cut on 25 Hz code boundaries), and each piece
    becomes ``log_mel_spectrogram(piece, 128, padding=0)`` (Whisper's features, as ``s3tokenizer`` computes them)
    ``[1, 128, T]`` -> the graph -> about ``T / 4`` codes. The graph is checked when loaded (two inputs: float
    features ``[1, 128, T]`` and an integer length; an integer output) and every output code must lie in
    ``[0, 6561)``; :class:`InputError` naming the file otherwise.
    """

    toy = False
    sample_rate = 16000

    def __init__(self, path: str | Path, max_seconds: float = 30.0, threads: int = 1):
        import onnxruntime as ort

        p = Path(path)
        if p.is_dir():
            p = next((q for q in (p / COSYVOICE2_FILE, p / "token2wav" / COSYVOICE2_FILE) if q.is_file()), p)
        if not p.is_file():
            raise InputError(f"no CosyVoice2 speech tokenizer ({COSYVOICE2_FILE}) here", path)
        self.path = p
        self.codebook_size = COSYVOICE2_CODES
        self.max_seconds = float(max_seconds)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, int(threads))
        try:
            self.session = ort.InferenceSession(str(p), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types
            raise InputError(f"cannot load the speech tokenizer graph: {e}", p) from None
        ins, outs = self.session.get_inputs(), self.session.get_outputs()
        problems = []
        if len(ins) != 2:
            problems.append(f"{len(ins)} inputs (want features [1, 128, T] and length [1])")
        else:
            feats, lens = ins
            if feats.type != "tensor(float)" or len(feats.shape) != 3 or feats.shape[1] not in (128, "n_mels", None):
                problems.append(f"input {feats.name!r} is {feats.type} {feats.shape}, want float [1, 128, T]")
            if "int" not in lens.type:
                problems.append(f"input {lens.name!r} is {lens.type}, want an integer length")
        if not outs or "int" not in outs[0].type:
            problems.append("the first output is not integer codes")
        if problems:
            raise InputError("not a CosyVoice2 speech tokenizer: " + "; ".join(problems), p)
        self._feats, self._lens = ins[0].name, ins[1].name
        self._len_dtype = np.int64 if ins[1].type == "tensor(int64)" else np.int32

    def features(self, wave16k: np.ndarray) -> np.ndarray:
        """``[1, 128, T]`` float32 Whisper log-mel of a 16 kHz piece (``T = N // 160``)."""
        import torch

        from a2llm_rt.models.mel import log_mel_spectrogram

        return log_mel_spectrogram(torch.from_numpy(np.ascontiguousarray(wave16k, np.float32)), 128, 0)[None].numpy()

    def encode(self, wave: np.ndarray, sample_rate: int) -> np.ndarray:
        w = np.asarray(wave, dtype=np.float32).reshape(-1)
        if w.size == 0:
            raise InputError("empty answer audio")
        if not np.isfinite(w).all():
            raise InputError("answer audio holds NaN or inf samples")
        if sample_rate != self.sample_rate:
            w = resample(w, int(sample_rate), self.sample_rate)
        hop = int(self.sample_rate / TOKEN_RATE)  # 640 samples per code
        step = max(hop, int(self.max_seconds * self.sample_rate) // hop * hop)
        out = []
        for i in range(0, w.size, step):
            piece = w[i : i + step]
            if piece.size < 400:  # shorter than one STFT window: no code
                continue
            x = self.features(piece)
            codes = self.session.run(None, {self._feats: x, self._lens: np.array([x.shape[2]], self._len_dtype)})[0]
            codes = np.asarray(codes).reshape(-1).astype(np.int64)
            if codes.size and (codes.min() < 0 or codes.max() >= self.codebook_size):
                raise InputError(f"speech tokenizer returned codes outside [0, {self.codebook_size})", self.path)
            out.append(codes)
        return np.concatenate(out) if out else np.zeros(0, np.int64)


def load_audio_tokenizer(spec: str | None) -> AudioTokenizer:
    """An answer-audio tokenizer from its spec (see the module docstring)."""
    if spec in (None, "", *TOY_SPECS):
        return ToyBandEnergyTokenizer()
    kind, _, rest = spec.partition(":")
    if kind == "cosyvoice2":
        if not rest:
            raise InputError("cosyvoice2 needs a path: 'cosyvoice2:PATH/speech_tokenizer_v2_25hz.onnx' or a checkpoint")
        return CosyVoice2SpeechTokenizer(rest)
    if not rest:
        raise InputError(f"audio tokenizer {spec!r} must be 'toy', 'cosyvoice2:PATH' or 'package.module:attribute'")
    try:
        obj = getattr(importlib.import_module(kind), rest)()
    except (ImportError, AttributeError) as e:
        raise InputError(f"cannot load audio tokenizer {spec!r}: {e}") from None
    if not isinstance(obj, AudioTokenizer):
        raise InputError(f"audio tokenizer {spec!r} has no codebook_size / encode(wave, sample_rate)")
    return obj


def check_audio_tokenizer(tokenizer: AudioTokenizer, layout) -> None:
    """Refuse a tokenizer that cannot make the backbone's speech codes: a toy for any backbone but the tiny test
    one, or a codebook of another size than the layout's audio codes."""
    name = type(tokenizer).__name__
    if is_toy(tokenizer) and layout.name != "tiny":
        raise InputError(
            f"audio tokenizer {name} is a toy (loudness codes) for the tiny test backbone; backbone "
            f"{layout.name!r} needs its real speech codes: set audio_tokenizer to "
            f"'cosyvoice2:<checkpoint>/token2wav/{COSYVOICE2_FILE}'"
        )
    if tokenizer.codebook_size != layout.audio_codes:
        raise InputError(
            f"audio tokenizer {name} has {tokenizer.codebook_size} codes, backbone {layout.name!r} has "
            f"{layout.audio_codes} audio codes"
        )


def with_answer_codes(sample: FlameQASample, tokenizer: AudioTokenizer) -> FlameQASample:
    """``sample`` with ``answer_codes`` from its answer audio (unchanged when it has codes or no answer audio)."""
    import dataclasses

    from training.data.format import ANSWER_SR

    if sample.answer_codes is not None or sample.answer_audio is None:
        return sample
    codes = np.asarray(tokenizer.encode(sample.answer_audio, ANSWER_SR), dtype=np.int64)
    return dataclasses.replace(sample, answer_codes=codes)


def add_answer_codes(src: str | Path, dst: str | Path, tokenizer: AudioTokenizer, max_samples: int = 256) -> dict:
    """Copy the dataset ``src`` to ``dst`` with answer codes added (see :func:`with_answer_codes`); refuses to write
    into ``src``. Records the tokenizer in the index attrs. Returns counts ``{"coded": n, "kept": m}``."""
    from training.data.format import ShardWriter, iter_samples, read_index

    src, dst = Path(src), Path(dst)
    if dst.resolve() == src.resolve():
        raise InputError("write the coded dataset to another directory", dst)
    attrs = dict(read_index(src).get("attrs") or {})
    attrs["answer_codes"] = {"tokenizer": type(tokenizer).__name__, "codebook_size": int(tokenizer.codebook_size),
                             "source": str(getattr(tokenizer, "path", ""))}  # fmt: skip
    counts = {"coded": 0, "kept": 0}
    with ShardWriter(dst, max_samples=max_samples, attrs=attrs) as w:
        for s in iter_samples(src):
            t = with_answer_codes(s, tokenizer)
            counts["coded" if t is not s else "kept"] += 1
            w.write(t)
    return counts


@cli_main
def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m training.data.audio_tokenizers",
                                 description="Add answer speech codes to a FLAME-QA dataset.")  # fmt: skip
    ap.add_argument("src", type=Path)
    ap.add_argument("--tokenizer", required=True, help="'cosyvoice2:PATH' (Step-Audio-2), 'toy' or 'module:attr'")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    counts = add_answer_codes(args.src, args.out, load_audio_tokenizer(args.tokenizer))
    print(f"{counts['coded']} samples coded, {counts['kept']} unchanged -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
