"""``python -m training.curate --clips DIR --out DIR [--workers N | --ray]``: build a FLAME-QA dataset from clips.

See :mod:`training.curate.pipeline` for the inputs next to each clip and the output layout. Exit code 0 when every
clip produced samples, 1 when some stages failed or were skipped, 2 on bad input.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from a2llm_rt.utils.cli import cli_main
from training.curate.pipeline import CurateConfig, curate
from training.data.format import TASKS


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.curate", description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=Path, required=True, help="folder of {stem}.wav clips + their face files")
    ap.add_argument("--out", type=Path, required=True, help="output folder (work/, manifest.json, dataset/)")
    ap.add_argument("--workers", type=int, default=1, help="local process pool size (default 1)")
    ap.add_argument("--ray", action="store_true", help="run the clips as Ray tasks (needs the ray package)")
    ap.add_argument("--ray-address", default=None, help="Ray cluster address (default: start or join locally)")
    ap.add_argument("--ray-local-mode", action="store_true", help="start a local single-node Ray here (tests)")
    ap.add_argument("--asr", default="auto", help="auto | transcripts | faster-whisper | whisper | module:attr")
    ap.add_argument("--asr-model", default="small")
    ap.add_argument("--face-fps", type=float, default=30.0, help="fps of face files that do not state theirs")
    ap.add_argument("--emotion", default="sidecar", help="sidecar | none | module:attr")
    ap.add_argument("--llm-url", default=None, help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    ap.add_argument("--llm-model", default="gpt-4o-mini")
    ap.add_argument("--llm-key-env", default="OPENAI_API_KEY", help="env var holding the API key")
    ap.add_argument("--prompt", default="qa.txt", help="prompt file under training/curate/prompts")
    ap.add_argument("--tts", default="espeak-ng", help="espeak-ng | none | module:attr")
    ap.add_argument("--tasks", default=",".join(TASKS), help=f"comma list of {', '.join(TASKS)}")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    cfg = CurateConfig.from_dict(
        dict(
            asr=args.asr,
            asr_model=args.asr_model,
            face_fps=args.face_fps,
            emotion=args.emotion,
            llm_url=args.llm_url,
            llm_model=args.llm_model,
            llm_key_env=args.llm_key_env,
            prompt=args.prompt,
            tts=args.tts,
            tasks=tuple(t.strip() for t in args.tasks.split(",") if t.strip()),
        )
    )
    man = curate(
        args.clips,
        args.out,
        cfg,
        workers=args.workers,
        use_ray=args.ray,
        ray_address=args.ray_address,
        ray_local_mode=args.ray_local_mode,
        progress=not args.no_progress,
    )
    problems = 0
    for stem, rec in sorted(man["clips"].items()):
        for stage, s in rec["stages"].items():
            if s.startswith(("skipped", "failed")) or "failed" in s:
                print(f"{stem}: {stage}: {s}")
                problems += s.startswith("failed") or "failed" in s
    for stem, notes in sorted(man["summary"]["pack_notes"].items()):
        print(f"{stem}: packing: {'; '.join(notes)}")
    summ = man["summary"]
    print(f"{summ['clips']} clips -> {summ['samples']} samples in {args.out / 'dataset'}; stages: {summ['stages']}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
