"""Answer one spoken question from the command line: text, speech and face motion, with TTFT/TTFA/RTF.

    python -m apps.chat --backbone DIR|tiny --motion DIR|tiny --wav question.wav --out OUT/
        [--motion-backend torch|onnxruntime|tensorrt --engines ENGINES/ [--int8]]

Writes into ``OUT/``: ``answer.wav`` (24 kHz mono 16-bit), ``face.npz`` (FLAME58, or ARKIT52 for an ARKit motion
tokenizer), ``face_arkit.npz``, ``face.csv`` (Live Link Face CSV, LIVELINK61), ``face.json`` (Audio2Face-style
ARKIT52), ``answer.txt`` and ``timings.json`` (TTFT = first audio token, TTFA = first face frame, RTF = generation
time / answer duration, counts, stop reason, sizes). With ``tiny`` for both, seeded random test models run on the
CPU in seconds (the answer is noise and the "voice" is the test vocoder's tones). ``--motion-backend`` runs the
motion stack (connector + RVQ decoder) with PyTorch (default) or from an engines folder written by
``python -m export.build_engines`` (onnxruntime, optionally ``--int8``; TensorRT), whose files are checked against its
manifest.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from a2llm_rt.audio import read_wav, write_wav
from a2llm_rt.engine.events import AudioChunk, Error, FaceFrames, TextDelta, TurnEnd
from a2llm_rt.engine.motion_backend import add_motion_backend_args, motion_backend_from_args
from a2llm_rt.errors import InputError
from a2llm_rt.utils.cli import cli_main
from a2llm_rt.utils.fileio import atomic_write, atomic_write_json


def collect(events: list) -> dict:
    """Assemble a turn's events: text, PCM ``[n]``, face frames per layout ``[T, D]``, the TurnEnd / Error."""
    text, pcm_parts, faces, end, error = [], [], {}, None, None
    for ev in events:
        if isinstance(ev, TextDelta):
            text.append(ev.text)
        elif isinstance(ev, AudioChunk):
            pcm_parts.append((ev.sample_offset, ev.pcm))
        elif isinstance(ev, FaceFrames):
            for name, v in ev.frames.items():
                faces.setdefault(name, []).append((ev.first_frame, v))
        elif isinstance(ev, TurnEnd):
            end = ev
        elif isinstance(ev, Error):
            error = ev
    n = max((o + p.size for o, p in pcm_parts), default=0)
    pcm = np.zeros(n, np.float32)
    for o, p in pcm_parts:
        pcm[o : o + p.size] = p
    frames = {}
    for name, parts in faces.items():
        t = max(f + v.shape[0] for f, v in parts)
        arr = np.zeros((t, parts[0][1].shape[1]), np.float32)
        for f, v in parts:
            arr[f : f + v.shape[0]] = v
        frames[name] = arr
    return {"text": "".join(text), "pcm": pcm, "frames": frames, "end": end, "error": error}


@cli_main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m apps.chat", description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbone", required=True, help="Step-Audio-2-format directory, or 'tiny'")
    ap.add_argument("--motion", required=True, help="motion directory (tokenizer/ + connector/), or 'tiny'")
    ap.add_argument("--wav", required=True, help="the question (any sample rate; resampled to 16 kHz)")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--vocoder", default="tone", help="'tone' (test vocoder) or a token2wav directory")
    ap.add_argument("--prompt-wav", default=None, help="reference voice for token2wav")
    ap.add_argument("--max-seconds", type=float, default=None, help="answer length limit (tiny: 3 s)")
    ap.add_argument("--min-seconds", type=float, default=None, help="answer length before a stop (tiny: 2 s)")
    ap.add_argument("--greedy", action="store_true", help="argmax decoding (default: sampling, seeded)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--system", default="You are a helpful assistant.", help="system prompt")
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads for torch and onnxruntime (tiny on the CPU: 1)")  # fmt: skip
    add_motion_backend_args(ap)
    args = ap.parse_args(argv)
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    import dataclasses

    import torch

    from a2llm_rt.engine.builders import load_stack
    from a2llm_rt.engine.engine import Engine
    from a2llm_rt.engine.presets import engine_config, preset
    from a2llm_rt.engine.sampling import SamplingConfig
    from a2llm_rt.face.clip import MotionClip
    from a2llm_rt.face.io import save_clip

    threads = args.threads if args.threads is not None else preset(args.backbone).threads
    if threads is not None and args.device == "cpu":
        torch.set_num_threads(max(1, threads))  # tiny models: thread start-up costs more than it saves
    out = Path(args.out)
    audio, sr = read_wav(args.wav, mono=False)  # the engine mixes channels after its full-scale check
    sampling = SamplingConfig.greedy(args.seed) if args.greedy else SamplingConfig(seed=args.seed)
    backend = motion_backend_from_args(args, threads=threads or 0)
    cfg = engine_config(args.backbone, max_seconds=args.max_seconds, min_seconds=args.min_seconds, max_sessions=1,
                        sampling=sampling, system_prompt=args.system, motion_backend=backend)  # fmt: skip
    t0 = time.perf_counter()
    stack = load_stack(args.backbone, args.motion, device=args.device, vocoder=args.vocoder,
                       prompt_wav=args.prompt_wav, seed=args.seed)  # fmt: skip
    engine = Engine(stack, cfg)
    load_s = time.perf_counter() - t0
    session = engine.new_session(sampling=sampling)
    with torch.inference_mode():
        res = collect(engine.run_turn(session, audio, sr))
    if res["error"] is not None:
        raise (
            InputError(res["error"].message, args.wav)
            if res["error"].kind == "input"
            else RuntimeError(res["error"].message)
        )
    end: TurnEnd = res["end"]
    out.mkdir(parents=True, exist_ok=True)
    write_wav(out / "answer.wav", res["pcm"], stack.vocoder.sample_rate)
    frames = res["frames"]
    fps = float(stack.motion.cfg.fps)
    if frames:
        main_layout = "flame58" if "flame58" in frames else "arkit52"
        save_clip(MotionClip(frames[main_layout], fps, main_layout, {"source": "apps.chat"}), out / "face.npz")
        save_clip(MotionClip(frames["arkit52"], fps, "arkit52", {}), out / "face_arkit.npz")
        save_clip(MotionClip(frames["livelink61"], fps, "livelink61", {}), out / "face.csv")
        save_clip(MotionClip(frames["arkit52"], fps, "arkit52", {}), out / "face.json")
    with atomic_write(out / "answer.txt") as f:
        f.write(res["text"] + "\n")
    timings = {
        "ttft_s": end.ttft_s,
        "ttfa_s": end.ttfa_s,
        "rtf": end.rtf,
        "reason": end.reason,
        "counts": end.counts,
        "answer_seconds": res["pcm"].size / stack.vocoder.sample_rate,
        "face_frames": int(next(iter(frames.values())).shape[0]) if frames else 0,
        "load_s": load_s,
        "backbone": args.backbone,
        "motion": args.motion,
        "device": str(stack.device),
        "motion_backend": backend.to_dict(),
        "sampling": dataclasses.asdict(sampling),
    }
    atomic_write_json(out / "timings.json", timings)
    print(f"answer: {timings['answer_seconds']:.2f} s audio, {timings['face_frames']} face frames, "
          f"{end.counts.get('text_tokens', 0)} text tokens (stop: {end.reason})")  # fmt: skip
    print(f"TTFT {end.ttft_s * 1000:.0f} ms | TTFA {end.ttfa_s * 1000:.0f} ms | RTF {end.rtf:.3f}")
    print(f"wrote {out}/answer.wav, face.npz, face_arkit.npz, face.csv, face.json, answer.txt, timings.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
