"""A synthetic FLAME-QA dataset with a known audio -> motion relation, for proving that the curriculum learns.

Relation (ARKIT52, 25 fps, one motion frame per 25 Hz answer audio code; tiny token layout with 64 codes):

- the answer's audio codes come in "syllables" of 3-7 frames; a syllable has a class ``c`` in 0..3 and every code in
  it is ``16 c + r`` (``r`` random), so the *class* of a code is ``code // 16``;
- ``jawOpen`` follows the class of the code ``LAG`` frames earlier (``LAG`` = 2 frames = 80 ms): target
  ``LEVELS[c]`` = 0, 0.3, 0.6, 0.9, through a causal one-pole smoother
  (``jaw[t] = jaw[t-1] + 0.6 (target - jaw[t-1])``);
  ``mouthClose`` = 0.15 (1 - jawOpen), ``mouthFunnel`` = 0.3 jawOpen;
- a quarter of the samples are labelled ``happy`` and smile (``mouthSmileLeft/Right`` 0.5), the rest ``neutral``;
  the separate affective set (stage 3's own dataset, as the paper's emotion-rich subset) is all ``happy``.

Samples are TTS tasks (text -> speech + motion; the tiny tokenizer's sentences). The motion tokens come from a small
RVQ-VAE trained on the synthetic motion with ``training.train_tokenizer`` and are stored in the samples
(``motion_codes``). ``python -m training.synthetic_qa --out DIR`` writes ``DIR/train``, ``DIR/val``,
``DIR/affective`` (FLAME-QA; the last for stage 3), ``DIR/clips`` (npz motion for the tokenizer) and
``DIR/motion_tokenizer``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from a2llm_rt.face.clip import MotionClip
from a2llm_rt.face.io import save_clip
from a2llm_rt.face.layouts import ARKIT_INDEX
from a2llm_rt.models.tokenizer import TINY_CORPUS
from a2llm_rt.utils.cli import cli_main
from training.data.format import FlameQASample, ShardWriter

LAG = 2
LEVELS = (0.0, 0.3, 0.6, 0.9)
CODES_PER_CLASS = 16
SMOOTH = 0.6
JAW = ARKIT_INDEX["jawOpen"]

TOKENIZER_RECIPE = {
    "model": {
        "layout": "arkit52",
        "width": 48,
        "num_res_blocks": 1,
        "latent_dim": 16,
        "num_quantizers": 2,
        "codebook_size": 32,
        "dropout": 0.0,
        "dead_code_threshold": 0.5,
    },
    "loss": {"vertex_terms": False, "vel_acc_space": "params"},  # no face model for the synthetic motion
    "data": {"window": 50, "holdout": 0.0, "mirror": False},
    "train": {"steps": 600, "batch_size": 16, "lr": 3.0e-3, "warmup_steps": 20, "ckpt_every": 600, "eval_every": 0},
}


def audio_codes(frames: int, rng: np.random.Generator) -> np.ndarray:
    """``[frames]`` codes in syllables of 3-7 frames, each of one class (``code // 16``)."""
    out = np.empty(frames, np.int64)
    t = 0
    while t < frames:
        n = int(rng.integers(3, 8))
        c = int(rng.integers(0, len(LEVELS)))
        m = min(n, frames - t)
        out[t : t + m] = c * CODES_PER_CLASS + rng.integers(0, CODES_PER_CLASS, m)
        t += m
    return out


def jaw_from_codes(codes: np.ndarray, lag: int = LAG) -> np.ndarray:
    """The known relation: ``jawOpen`` ``[T]`` from codes ``[T]`` (class -> level, lagged, smoothed)."""
    target = np.asarray(LEVELS, np.float32)[np.asarray(codes) // CODES_PER_CLASS]
    shifted = np.concatenate([np.zeros(lag, np.float32), target[: len(target) - lag]]) if lag else target
    jaw = np.zeros(len(codes), np.float32)
    prev = 0.0
    for t, x in enumerate(shifted):
        prev = prev + SMOOTH * (float(x) - prev)
        jaw[t] = prev
    return jaw


def motion_from_codes(codes: np.ndarray, happy: bool, lag: int = LAG) -> np.ndarray:
    """ARKIT52 motion ``[T, 52]`` for ``codes`` ``[T]``."""
    jaw = jaw_from_codes(codes, lag)
    m = np.zeros((len(codes), 52), np.float32)
    m[:, JAW] = jaw
    m[:, ARKIT_INDEX["mouthClose"]] = 0.15 * (1 - jaw)
    m[:, ARKIT_INDEX["mouthFunnel"]] = 0.3 * jaw
    if happy:
        m[:, ARKIT_INDEX["mouthSmileLeft"]] = 0.5
        m[:, ARKIT_INDEX["mouthSmileRight"]] = 0.5
    return m


def make_samples(
    n: int, seed: int, prefix: str, min_frames: int = 50, max_frames: int = 100, happy_fraction: float = 0.25
) -> list[FlameQASample]:
    """``n`` synthetic TTS samples (seeded); a ``happy_fraction`` of them smile and are labelled ``happy``."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        frames = int(rng.integers(min_frames // 5, max_frames // 5 + 1)) * 5
        codes = audio_codes(frames, rng)
        happy = bool(rng.random() < happy_fraction)
        text = TINY_CORPUS[int(rng.integers(0, 6))]
        out.append(
            FlameQASample(
                key=f"{prefix}{i:05d}",
                task="tts",
                question_text=text,
                answer_text=text,
                answer_codes=codes,
                motion=motion_from_codes(codes, happy),
                motion_layout="arkit52",
                emotion="happy" if happy else "neutral",
                meta={"synthetic": True, "lag_frames": LAG},
            )
        )
    return out


def train_motion_tokenizer(samples: list[FlameQASample], out: Path, steps: int, progress: bool = True) -> Path:
    """Train (or resume) the small RVQ-VAE on the samples' motion; returns its output folder."""
    from training.train_tokenizer import TokenizerRecipe, train

    clips = out / "clips"
    for s in samples:
        p = clips / f"{s.key}.npz"
        if not p.is_file():
            save_clip(MotionClip(s.motion, 25.0, "arkit52"), p)
    recipe = dict(TOKENIZER_RECIPE)
    recipe["train"] = {**recipe["train"], "steps": steps, "ckpt_every": steps}
    tok_out = out / "motion_tokenizer"
    train(TokenizerRecipe.from_dict(recipe), [str(clips)], tok_out, device="cpu", progress=progress)
    return tok_out


def build(
    out: Path,
    n_train: int = 240,
    n_val: int = 40,
    seed: int = 0,
    tokenizer_steps: int = 600,
    progress: bool = True,
    n_affective: int = 40,
) -> dict:
    """Write the synthetic train/val/affective datasets with motion codes; returns a summary."""
    from training.train_tokenizer import load_tokenizer

    train_s = make_samples(n_train, seed, "tr")
    val_s = make_samples(n_val, seed + 1, "va")
    aff_s = make_samples(n_affective, seed + 2, "af", happy_fraction=1.0)
    tok_dir = train_motion_tokenizer(train_s, out, tokenizer_steps, progress)
    tok = load_tokenizer(tok_dir)
    err = []
    for s in train_s + val_s + aff_s:
        with torch.no_grad():
            codes = tok.encode(torch.from_numpy(s.motion)[None])
            s.motion_codes = codes[0].numpy().astype(np.int64)
            rec = tok.decode(codes)[0].numpy()
        err.append(float(np.abs(rec[:, JAW] - s.motion[:, JAW]).mean()))
    for name, samples in (("train", train_s), ("val", val_s), ("affective", aff_s)):
        with ShardWriter(out / name, max_samples=128, attrs={"synthetic": True, "lag_frames": LAG}) as w:
            for s in samples:
                w.write(s)
    return {"train": n_train, "val": n_val, "affective": n_affective, "tokenizer_jaw_mae": float(np.mean(err))}


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.synthetic_qa", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--train", type=int, default=240)
    ap.add_argument("--val", type=int, default=40)
    ap.add_argument("--affective", type=int, default=40, help="samples of the stage-3 affective set")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tokenizer-steps", type=int, default=600)
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    summary = build(
        args.out, args.train, args.val, args.seed, args.tokenizer_steps, not args.no_progress, args.affective
    )
    print(
        f"wrote {summary['train']} train / {summary['val']} val / {summary['affective']} affective samples to "
        f"{args.out}; motion tokenizer jawOpen "
        f"reconstruction MAE {summary['tokenizer_jaw_mae']:.4f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
